"""Responses: headers prepared once per image, and the ways a response goes out — an entry
over ASGI, the same entry as wire bytes for the server protocol's fast path, a body streamed
from storage, an error, a CORS preflight."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator

from cache.asgi import Send
from cache.errors import ApiError, ImageNotFound, render_error, wants_image
from cache.index import LiveRecord
from cache.metrics import Metrics
from cache.objects import ObjectNotFound, ObjectStore
from edge.conditional import conditional, etag_matches, partial_headers
from edge.disk_cache import Checked, FileBody
from edge.lru import Entry, Headers
from edge.request import REQUEST_ID_PATTERN, Request

log = logging.getLogger("banatie.edge")

IMMUTABLE = b"public, max-age=31536000, immutable"
ALIAS_CACHE_CONTROL = b"public, max-age=60"

# The public image routes (CDN live and img) may be used by any page: drawn on a canvas, read
# by fetch(), timed. No credentials are involved (the URL itself is what grants access), so
# `*` exposes nothing. /api/v1/live stays same-origin: its X-API-Key belongs on a server.
CDN_FAMILIES = ("cdn_live", "cdn_img")
CORS: Headers = [
    (b"access-control-allow-origin", b"*"),
    (
        b"access-control-expose-headers",
        b"ETag, X-Cache-Status, X-Image-Id, X-Generation-Id, X-Scope, X-Request-Id, "
        b"X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After, "
        b"Server-Timing, Content-Range",
    ),
    (b"timing-allow-origin", b"*"),
]
PREFLIGHT: Headers = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Range, If-None-Match, If-Range, If-Modified-Since, X-Request-Id",
    ),
    (b"access-control-max-age", b"86400"),
    (b"allow", b"GET, HEAD, OPTIONS"),
    (b"timing-allow-origin", b"*"),
    (b"x-content-type-options", b"nosniff"),
]


class ResponseStarted(Exception):
    """Failed after the status line went out: nothing left to do but drop the connection."""


# -- headers, prepared once --------------------------------------------------------------------


def record_headers(
    record: LiveRecord, status: bytes, cache_control: bytes, extra: Headers, size: int | None = None
) -> tuple[Headers, Headers]:
    """(200 headers, 304 headers) for a record."""
    caching: Headers = [
        (b"etag", record.etag.encode("latin-1")),
        (b"cache-control", cache_control),
        (b"x-cache-status", status),
        (b"x-image-id", record.image_id.encode("latin-1")),
        (b"x-content-type-options", b"nosniff"),
        *extra,
    ]
    full: Headers = [
        (b"content-type", record.content_type.encode("latin-1")),
        (b"content-length", str(record.size if size is None else size).encode()),
        (b"accept-ranges", b"bytes"),
        *caching,
    ]
    return full, caching


def make_entry(
    record: LiveRecord, body: bytes, status: bytes, cache_control: bytes, extra: Headers
) -> Entry:
    headers, not_modified = record_headers(record, status, cache_control, extra, len(body))
    return Entry(200, headers, not_modified, body, record.etag, record.image_id)


def with_cache_control(entry: Entry, cache_control: bytes) -> Entry:
    def swap(headers: Headers) -> Headers:
        return [(k, cache_control if k == b"cache-control" else v) for k, v in headers]

    return Entry(
        entry.status, swap(entry.headers), swap(entry.not_modified_headers),
        entry.body, entry.etag, entry.image_id,
    )  # fmt: skip


def server_timing(model_ms: float, miss_s: float) -> tuple[bytes, bytes]:
    """Where a MISS's time went: waiting on the model, and the whole miss at the edge."""
    return (b"server-timing", b"model;dur=%.1f, miss;dur=%.1f" % (model_ms, miss_s * 1000))


# -- sending -----------------------------------------------------------------------------------


def wire_answer(request: Request, entry: Entry, metrics: Metrics) -> tuple[int, bytes, bytes]:
    """An entry as the fast path sends it: (status, header lines, body); the 304 rule is
    `conditional`'s. No Range here: the fast path leaves those to `send_entry`."""
    if request.if_none_match is not None and etag_matches(request.if_none_match, entry.etag):
        metrics.responded(request.family, 304, 0)
        return 304, entry.wire_not_modified, b""
    body = b"" if request.head else entry.body
    metrics.responded(request.family, entry.status, len(body))
    return entry.status, entry.wire, body


def file_answer(
    request: Request, checked: Checked, body: FileBody, metrics: Metrics
) -> tuple[int, bytes, bytes | FileBody]:
    """A disk hit as the fast path sends it, its body left in the file: the server protocol
    sends it with os.sendfile (no copy in this process: a disk hit of 100 KB then costs less
    than an L1 hit). The same answer as `wire_answer` gives from the entry."""
    not_modified = request.if_none_match is not None and etag_matches(
        request.if_none_match, checked.etag
    )
    if not_modified or request.head:
        body.close()
        if not_modified:
            metrics.responded(request.family, 304, 0)
            return 304, checked.wire_not_modified, b""
        metrics.responded(request.family, checked.status, 0)
        return checked.status, checked.wire, b""
    metrics.responded(request.family, checked.status, body.size)
    return checked.status, checked.wire, body


async def send_entry(send: Send, request: Request, entry: Entry, metrics: Metrics) -> None:
    """An entry over ASGI: 200, 304 or 206 as the request's conditions ask."""
    # Counted with plain ints here: a send wrapper would cost a tenth of a hit.
    size = len(entry.body)
    status, start, end = conditional(request, entry.etag, size)
    if status == 304:
        headers, body = entry.not_modified_headers, b""
    elif status == 206:
        headers = partial_headers(entry.headers, start, end, size)
        body = b"" if request.head else entry.body[start : end + 1]
    else:
        status, headers = entry.status, entry.headers
        body = b"" if request.head else entry.body
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    metrics.responded(request.family, status, len(body))


async def stream(
    send: Send,
    request: Request,
    store: ObjectStore,
    metrics: Metrics,
    record: LiveRecord,
    status: bytes,
    extra: Headers,
    cache_control: bytes = IMMUTABLE,
) -> None:
    """An image too large to keep, straight from storage in chunks."""
    headers, not_modified = record_headers(record, status, cache_control, extra)
    code, start, end = conditional(request, record.etag, record.size)
    if code == 304:
        headers = not_modified
    elif code == 206:
        headers = partial_headers(headers, start, end, record.size)
    if code == 304 or request.head:
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        metrics.responded(request.family, code, 0)
        return
    chunks = store.get(record.object_key, start, end)
    first = await _first_chunk(chunks)  # errors here can still become an envelope
    await send({"type": "http.response.start", "status": code, "headers": headers})
    metrics.responded(request.family, code, end - start + 1)
    try:
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except Exception as e:
        log.warning("stream of %s broke off: %s", record.object_key, e)
        raise ResponseStarted from e
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def send_error(
    send: Send, request: Request, error: ApiError, metrics: Metrics, error_images: bool
) -> None:
    """The error as cache/errors.py renders it; for an image load the SVG error image."""
    request_id = request.request_id
    if request_id is None or not REQUEST_ID_PATTERN.fullmatch(request_id):
        request_id = uuid.uuid4().hex.encode()
    as_image = error_images and wants_image(request.fetch_dest, request.accept)
    extra = [(b"x-content-type-options", b"nosniff"), (b"x-request-id", request_id)]
    if request.family in CDN_FAMILIES:
        extra += CORS
    status, headers, body = render_error(
        error, as_image=as_image, request_id=request_id.decode("latin-1"), extra=extra
    )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if request.head else body})
    if request.family:
        metrics.responded(request.family, status, 0 if request.head else len(body))


async def send_preflight(send: Send, request: Request, metrics: Metrics) -> None:
    """OPTIONS on a public image route: a CORS preflight (or a plain OPTIONS) → 204."""
    await send({"type": "http.response.start", "status": 204, "headers": PREFLIGHT})
    await send({"type": "http.response.body", "body": b""})
    metrics.responded(request.family, 204, 0)


async def _first_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return b""
    except ObjectNotFound:
        raise ImageNotFound("The image is no longer available.") from None
