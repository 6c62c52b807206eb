"""The edge: live images at static-file speed, one paid generation per key.

A raw ASGI callable in front of everything else. Three routes are ours:

    /api/v1/live                          (X-API-Key)
    /cdn/{org}/{project}/live/{scope}     (public)
    /cdn/{org}/{project}/img/{id|@alias}  (public)

and every other request goes to `fallback` (the origin's Starlette app in one process).
A live request reads top to bottom as: parse → key → lookup (L1 → index → manifest) →
produce (a coalesced miss through the origin) → respond. A hit touches neither Redis, nor
storage, nor a thread: its status, headers and body were prepared when it entered the L1.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote_to_bytes

from cache.client_ip import TrustedProxies
from cache.coalesce import Coalescer, Locks
from cache.contract import KeyRef, LiveParams, LiveResult, OriginAPI, ProjectRef
from cache.errors import (
    ApiError,
    ImageNotFound,
    InternalError,
    NotFound,
    ProjectNotFound,
    Unauthorized,
    UpstreamUnavailable,
    ValidationError,
    prefers_image,
)
from cache.index import Index, LiveRecord
from cache.index.redis import RedisIndex
from cache.invalidation import EVERYTHING, Invalidation, InvalidationBus
from cache.live_key import (
    ASPECT_RATIOS,
    SCOPE_PATTERN,
    TEMPLATES,
    LiveKey,
    manifest_key,
    normalise_prompt,
)
from cache.lru import Entry, ExpiringMap, Headers, ResponseCache
from cache.metrics import Metrics, family_of, send_metrics
from cache.objects import ObjectNotFound, ObjectStore, StorageUnavailable
from cache.settings import Settings
from cache.signing import verify as verify_signature
from cache.variants import VariantSpec
from edge.disk_cache import DiskCache, WouldBlock
from edge.variant_cache import VARY_ACCEPT, VariantCache

log = logging.getLogger("banatie.edge")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_PROMPT_CHARS = 5000
LIVE_PARAMS = ("prompt", "aspectRatio", "autoEnhance", "template")

KEY_PATTERN = re.compile(rb"bnt_[0-9a-f]{64}")  # patterns: fullmatch only
SLUG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
UUID_PATTERN = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
REQUEST_ID_PATTERN = re.compile(rb"[\x21-\x7e]{1,128}")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_RANGE = re.compile(r"^bytes=[ \t]*([0-9]*)-([0-9]*)[ \t]*$", re.IGNORECASE)  # one range

IMMUTABLE = b"public, max-age=31536000, immutable"
ALIAS_CACHE_CONTROL = b"public, max-age=60"
ALIAS_TTL_S = 60.0
IMAGE_TTL_S = 300.0
NEGATIVE_TTL_S = 5.0
MAX_CACHED_REFS = 10_000
STORAGE_RETRY_AFTER_S = 5
MEMO_QUERIES = 4096  # parsed query strings kept, each at most MEMO_QUERY_BYTES long
MEMO_QUERY_BYTES = 2048

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


class MethodNotAllowed(ApiError):
    status, code = 405, "METHOD_NOT_ALLOWED"


GET_HEAD = {"Allow": "GET, HEAD"}


class RangeNotSatisfiable(ApiError):
    status, code = 416, "RANGE_NOT_SATISFIABLE"


class _ResponseStarted(Exception):
    """Failed after the status line went out: nothing left to do but drop the connection."""


@dataclass(slots=True)
class Request:
    """What the edge reads from an ASGI scope, once."""

    method: str
    scope: Scope
    api_key: bytes | None = None
    if_none_match: bytes | None = None
    range: bytes | None = None
    if_range: bytes | None = None
    request_id: bytes | None = None
    forwarded_for: bytes | None = None
    accept: bytes | None = None
    fetch_dest: bytes | None = None  # Sec-Fetch-Dest: "image" for an <img> load
    family: str = ""  # route family in the metrics; "" when counted by a send wrapper

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        request = cls(scope["method"], scope)
        for name, value in scope["headers"]:
            if name == b"x-api-key":
                request.api_key = value
            elif name == b"if-none-match":
                request.if_none_match = value
            elif name == b"range":
                request.range = value
            elif name == b"if-range":
                request.if_range = value
            elif name == b"x-request-id":
                request.request_id = value
            elif name == b"accept":
                prior = request.accept
                request.accept = value if prior is None else prior + b"," + value
            elif name == b"sec-fetch-dest":
                request.fetch_dest = value
            elif name == b"x-forwarded-for":
                # Several headers are one list, in order.
                prior = request.forwarded_for
                request.forwarded_for = value if prior is None else prior + b"," + value
        return request

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@dataclass(frozen=True, slots=True)
class LiveQuery:
    prompt: str  # normalised
    aspect_ratio: str
    auto_enhance: bool
    template: str


class Edge:
    """The edge ASGI app; `fallback` serves every path that is not a live or CDN route."""

    def __init__(
        self,
        settings: Settings,
        origin: OriginAPI,
        store: ObjectStore,
        index: Index,
        bus: InvalidationBus,
        fallback: ASGIApp | None = None,
        *,
        metrics: Metrics | None = None,
        disk: DiskCache | None = None,
    ) -> None:
        self.settings = settings
        self.origin = origin
        self.store = store
        self.index = index
        self.bus = bus
        self.fallback = fallback
        self.l1 = ResponseCache(settings.l1_bytes, settings.l1_max_entry_bytes)
        self.disk = disk  # between the L1 and the index + storage; None: no disk tier
        self.metrics = metrics if metrics is not None else Metrics()
        self.coalescer: Coalescer[LiveResult] = Coalescer(
            max_concurrent=settings.max_concurrent_generations,
            # Prompt enhancement and the image call are each bounded by the generation timeout.
            timeout_s=2 * settings.generation_timeout_s,
            failure_ttl_s=settings.failure_ttl_s,
            locks=index if isinstance(index, Locks) else None,
            lease_ms=settings.lock_lease_ms,
        )
        ttl = settings.key_cache_ttl_s
        self._keys: ExpiringMap[str, KeyRef] = ExpiringMap(ttl, MAX_CACHED_REFS)
        self._bad_keys: ExpiringMap[str, None] = ExpiringMap(
            min(ttl, NEGATIVE_TTL_S), MAX_CACHED_REFS
        )
        self._projects: ExpiringMap[tuple[str, str], ProjectRef | None] = ExpiringMap(
            ttl, MAX_CACHED_REFS
        )
        self._images: ExpiringMap[tuple[str, str], LiveRecord] = ExpiringMap(
            IMAGE_TTL_S, MAX_CACHED_REFS
        )
        self._proxies = TrustedProxies(settings.trusted_proxies)
        self._lookups: dict[str, asyncio.Future[LiveRecord | None]] = {}
        self._parsed = functools.lru_cache(maxsize=MEMO_QUERIES)(parse_live_query)
        self.variants = VariantCache(settings, store, index)
        self._fast_routes = functools.lru_cache(maxsize=MEMO_QUERIES)(
            functools.partial(_fast_route, variants=self.variants)
        )
        self.fast_answers = 0  # responses given by fast_hit
        self.invalidations = 0  # events heard; a lookup caches its answer only if none came
        bus.subscribe(self._invalidate)
        for name, read in (
            ("l1_hits", lambda: self.l1.hits),
            ("l1_bytes", lambda: self.l1.bytes),
            ("l1_entries", lambda: len(self.l1)),
            ("l1_evictions", lambda: self.l1.evictions),
            ("in_flight", lambda: self.coalescer.in_flight),
            ("fast_path", lambda: self.fast_answers),
        ):
            self.metrics.read(name, read)
        if disk is not None:
            for name, read in (
                ("disk_hits", lambda: disk.hits),
                ("disk_misses", lambda: disk.misses),
                ("disk_bytes", lambda: disk.bytes),
                ("disk_entries", lambda: disk.entries),
                ("disk_evictions", lambda: disk.evictions),
                ("disk_repairs", lambda: disk.repairs),
                ("disk_thread_reads", lambda: disk.thread_reads),
            ):
                self.metrics.read(name, read)

    # -- the fast path ------------------------------------------------------------------------

    def fast_hit(
        self, method: bytes, url: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, bytes, bytes] | None:
        """A live URL whose response is in L1 (or on disk, in the page cache), answered
        without the ASGI machinery: the server's protocol calls this as soon as a request's
        headers are read and, given (status, header lines, body), writes them itself. None
        means "not that simple" (not a live route, not cached, a Range, a signed project, an
        unknown key, anything to
        report): the request then takes the ASGI path, which answers every case. Nothing
        here awaits; every answer is one that path would give for the same request.

        What a URL means (route, scope, parsed query, variant) is remembered per URL;
        who may see it (the key or project, signing) is checked on every request."""
        if method != b"GET" and method != b"HEAD":
            return None
        route = (
            self._fast_routes(url)
            if len(url) <= MEMO_QUERY_BYTES
            else _fast_route(url, self.variants)
        )
        if route is None:
            return None
        api_key = if_none_match = None
        for name, value in headers:
            if name == b"x-api-key":
                api_key = value
            elif name == b"if-none-match":
                if_none_match = value
            elif name == b"range":
                return None
        if route.org is None:  # /api/v1/live
            if api_key is None:
                return None
            found, key_ref = self._keys.get(hashlib.sha256(api_key).hexdigest())
            if not found or key_ref is None:
                return None
            project_id = key_ref.project_id
        else:
            found, project_ref = self._projects.get((route.org, route.project))
            if not found or project_ref is None or project_ref.require_signed:
                return None
            project_id = project_ref.project_id
        if route.project_id != project_id:
            route.project_id = project_id
            route.canonical = self._live_key(project_id, route.scope, route.query).canonical
        l1_key = route.canonical
        if route.variant is not None:
            l1_key = self.variants.want(route.variant, headers).l1_key(l1_key)
        entry = self.l1.peek(l1_key) or self._disk_peek(l1_key)
        if entry is None:
            return None
        self.fast_answers += 1
        if if_none_match is not None and _etag_matches(if_none_match, entry.etag):
            self.metrics.responded(route.family, 304, 0)
            return 304, entry.wire_not_modified, b""
        body = b"" if method == b"HEAD" else entry.body
        self.metrics.responded(route.family, entry.status, len(body))
        return entry.status, entry.wire, body

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path == "/api/v1/live":
                request = Request.from_scope(scope)
                request.family = "live"
                return await self._guarded(self._api_live, request, send)
            if path.startswith("/cdn/"):
                parts = path.split("/")  # "", "cdn", org, project, kind, ref
                if len(parts) == 6 and parts[4] in ("live", "img"):
                    live = parts[4] == "live"
                    route = self._cdn_live if live else self._cdn_image
                    request = Request.from_scope(scope)
                    request.family = "cdn_live" if live else "cdn_img"
                    return await self._guarded(route, request, send, parts[2], parts[3], parts[5])
            if path == "/metrics" and scope["method"] in ("GET", "HEAD"):
                return await send_metrics(send, self.metrics, scope, self.settings.metrics_token)
            if path == "/metrics":
                error: ApiError = MethodNotAllowed(
                    "Only GET and HEAD are allowed here.", headers=GET_HEAD
                )
                return await self._send_error(send, Request.from_scope(scope), error)
            send = self.metrics.counting(send, family_of(path))
        elif scope["type"] == "lifespan":
            return await self._lifespan(scope, receive, send)
        if self.fallback is not None:
            return await self.fallback(scope, receive, send)
        if scope["type"] == "http" and scope["path"] == "/health":
            return await _send_health(send)
        if scope["type"] == "http":
            error = NotFound("No route matches this path.")
            return await self._send_error(send, Request.from_scope(scope), error)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})

    async def _guarded(
        self, route: Callable[..., Awaitable[None]], request: Request, send: Send, *args: str
    ) -> None:
        """Run a route; every failure becomes an error envelope, never a trace."""
        try:
            if request.method not in ("GET", "HEAD"):
                if request.family not in CDN_FAMILIES:
                    raise MethodNotAllowed("Only GET and HEAD are allowed here.", headers=GET_HEAD)
                if request.method == "OPTIONS":
                    return await self._preflight(request, send)
                raise MethodNotAllowed(
                    "Only GET, HEAD and OPTIONS are allowed here.",
                    headers={"Allow": "GET, HEAD, OPTIONS"},
                )
            await route(request, send, *args)
        except _ResponseStarted:
            return
        except ApiError as e:
            await self._send_error(send, request, e)
        except StorageUnavailable as e:
            log.warning("storage unavailable: %s", e)
            error = UpstreamUnavailable(
                "Image storage is unavailable; try again shortly.", STORAGE_RETRY_AFTER_S
            )
            await self._send_error(send, request, error)
        except Exception:
            log.exception("edge request failed: %s %s", request.method, request.scope["path"])
            await self._send_error(send, request, InternalError("Internal error."))

    async def _preflight(self, request: Request, send: Send) -> None:
        """OPTIONS on a public image route: a CORS preflight (or a plain OPTIONS) → 204."""
        await send({"type": "http.response.start", "status": 204, "headers": PREFLIGHT})
        await send({"type": "http.response.body", "body": b""})
        self.metrics.responded(request.family, 204, 0)

    # -- routes -------------------------------------------------------------------------------

    async def _api_live(self, request: Request, send: Send) -> None:
        ref = await self._authenticate(request.api_key)
        query = self._parse(request.scope["query_string"])
        key = self._live_key(ref.project_id, "", query)

        def params() -> LiveParams:
            return _live_params(ref, "", query, key_id=ref.key_id)

        await self._live(request, send, key, ref.organization_slug, ref.project_slug, params, [])

    async def _cdn_live(
        self, request: Request, send: Send, org: str, project: str, scope: str
    ) -> None:
        if not SCOPE_PATTERN.fullmatch(scope):
            raise ValidationError("scope must be 1-64 letters, digits, '_' or '-'.", field="scope")
        query = self._parse(request.scope["query_string"])
        ref = await self._project(org, project)
        if ref.require_signed:  # hits too: the signature is checked, never part of the key
            send = _signed(send, ref, request)
        key = self._live_key(ref.project_id, scope, query)

        def params() -> LiveParams:
            return _live_params(ref, scope, query, client_ip=self._client_ip(request))

        extra = [(b"x-scope", scope.encode()), *CORS]
        await self._live(request, send, key, org, project, params, extra)

    async def _cdn_image(
        self, request: Request, send: Send, org: str, project: str, ref: str
    ) -> None:
        is_alias = ref.startswith("@")
        if not is_alias and not UUID_PATTERN.fullmatch(ref):
            raise ImageNotFound("Image not found.")
        project_ref = await self._project(org, project)
        cache_key = (project_ref.project_id, ref if is_alias else ref.lower())
        seen = self.invalidations  # a delete or move heard meanwhile: cache nothing found
        found, record = self._images.get(cache_key)
        if not found or record is None:
            record = await self.origin.image(project_ref.project_id, ref)
            if seen == self.invalidations:
                self._images.set(cache_key, record, ALIAS_TTL_S if is_alias else None)
        cache_control = ALIAS_CACHE_CONTROL if is_alias else IMMUTABLE
        l1_key = "img\x1f" + record.image_id
        spec = self.variants.parse(request.scope["query_string"])
        if spec is not None:
            source = _known(record)
            return await self._variant(
                request, send, spec, l1_key, project_ref.project_id, org, project, source, CORS,
                cache_control,
            )  # fmt: skip
        entry = self.l1.get(l1_key) or await self._from_disk(l1_key)
        if entry is None:
            if not self._holds(record.size):
                return await self._stream(request, send, record, b"HIT", CORS, cache_control)
            entry = await self._load(record, b"HIT", CORS)
            if entry is None:
                self._images.pop(cache_key)
                raise ImageNotFound("Image not found.")
            if seen == self.invalidations:
                self._keep(l1_key, entry)
        if is_alias:
            entry = _with_cache_control(entry, cache_control)
        await self._respond(request, send, entry)

    # -- the live pipeline: parse → key → lookup → produce → respond --------------------------

    def _parse(self, raw: bytes) -> LiveQuery:
        # Hot URLs repeat byte for byte: remember their parse (failures are not remembered).
        if len(raw) <= MEMO_QUERY_BYTES:
            return self._parsed(raw)
        return parse_live_query(raw)

    def _live_key(self, project_id: str, scope: str, query: LiveQuery) -> LiveKey:
        # The prompt is already normalised (live_key would do it again).
        return LiveKey(
            project_id,
            scope,
            query.prompt,
            query.aspect_ratio,
            query.auto_enhance,
            query.template,
            self.origin.model,
        )

    async def _live(
        self,
        request: Request,
        send: Send,
        key: LiveKey,
        org: str,
        project: str,
        params: Callable[[], LiveParams],
        extra: Headers,
    ) -> None:
        canonical = key.canonical
        spec = self.variants.parse(request.scope["query_string"])
        if spec is not None:
            source = functools.partial(self._live_source, request, key, org, project, params)
            return await self._variant(
                request, send, spec, canonical, key.project_id, org, project, source, extra
            )
        entry = self.l1.get(canonical) or await self._from_disk(canonical)
        if entry is not None:
            return await self._respond(request, send, entry)

        digest = key.digest
        seen = self.invalidations
        record = await self._shared_lookup(digest, canonical, org, project)
        if record is not None:
            entry = await self._load(record, b"HIT", extra)
            if entry is not None:
                if seen == self.invalidations:  # else the image may be gone by now
                    self._keep(canonical, entry)
                return await self._respond(request, send, entry)
            if not self._holds(record.size):
                return await self._stream(request, send, record, b"HIT", extra)
            # The record points at bytes that are gone: regenerate through the origin.

        if request.head:
            raise ImageNotFound("This image is not cached; HEAD never starts a generation.")

        started = time.perf_counter()
        result, ran = await self._produce(digest, canonical, org, project, params)
        record = result.record
        status = b"MISS" if result.created else b"HIT"
        headers = list(extra)
        if result.created and record.generation_id:
            headers.append((b"x-generation-id", record.generation_id.encode()))
        if ran:
            headers += [(k.lower().encode(), v.encode()) for k, v in result.rate_headers.items()]
            if result.model_ms is not None:
                headers.append(_server_timing(result.model_ms, time.perf_counter() - started))
        # Waiters of one generation resume one after another: the first fills L1 for the rest.
        held = self.l1.get(canonical) if record.canonical == canonical else None
        cached = held
        if cached is None and result.body is not None and len(result.body) == record.size:
            cached = _entry(record, result.body, b"HIT", IMMUTABLE, extra)  # in-process origin
        if cached is None:
            cached = await self._load(record, b"HIT", extra)
        if cached is None:
            if self._holds(record.size):
                raise ImageNotFound("The generated image is no longer available.")
            return await self._stream(request, send, record, status, headers)
        if record.canonical == canonical:
            if held is None:
                self._keep(canonical, cached)
        else:
            log.warning("origin answered a record for another key (model changed?): %s", digest)
        entry = _entry(record, cached.body, status, IMMUTABLE, headers)
        await self._respond(request, send, entry)

    async def _variant(
        self,
        request: Request,
        send: Send,
        spec: VariantSpec,
        source_key: str,
        project_id: str,
        org: str,
        project: str,
        source: Callable[[], Awaitable[tuple[LiveRecord, Headers]]],
        extra: Headers,
        cache_control: bytes = IMMUTABLE,
    ) -> None:
        """A resized/re-encoded image (?w=&h=&fit=&format=&q=&dpr=): from the L1 by request,
        else derived from the original (`source`: its record, and what a MISS of it adds)."""
        wanted = self.variants.want(spec, request.scope["headers"])
        l1_key = wanted.l1_key(source_key)
        entry = self.l1.get(l1_key) or await self._from_disk(l1_key)
        if entry is None:
            seen = self.invalidations
            record, miss = await source()

            async def original() -> bytes:
                cached = self.l1.get(source_key) or await self._from_disk(source_key)
                if cached is not None:
                    return cached.body
                try:
                    return await self.store.read(record.object_key)
                except ObjectNotFound:
                    raise ImageNotFound("The image is no longer available.") from None

            variant = await self.variants.get(project_id, org, project, record, wanted, original)
            found = replace(variant.record, image_id=record.image_id)
            headers = extra + VARY_ACCEPT if wanted.vary else extra
            entry = _entry(found, variant.body, b"HIT", IMMUTABLE, headers)
            if seen == self.invalidations:  # else the source may be gone by now
                self._keep(l1_key, entry)
            if variant.made or miss:
                entry = _entry(found, variant.body, b"MISS", IMMUTABLE, headers + miss)
        if cache_control != IMMUTABLE:
            entry = _with_cache_control(entry, cache_control)
        await self._respond(request, send, entry)

    async def _live_source(
        self,
        request: Request,
        key: LiveKey,
        org: str,
        project: str,
        params: Callable[[], LiveParams],
    ) -> tuple[LiveRecord, Headers]:
        """The original behind a live variant, generated once under its own live key."""
        record = await self._lookup(key.digest, key.canonical, org, project)
        if record is not None:
            return record, []
        if request.head:
            raise ImageNotFound("This image is not cached; HEAD never starts a generation.")
        result, ran = await self._produce(key.digest, key.canonical, org, project, params)
        miss: Headers = []
        if result.created and result.record.generation_id:
            miss.append((b"x-generation-id", result.record.generation_id.encode()))
        if ran:
            miss += [(k.lower().encode(), v.encode()) for k, v in result.rate_headers.items()]
        return result.record, miss

    async def _shared_lookup(
        self, digest: str, canonical: str, org: str, project: str
    ) -> LiveRecord | None:
        """One lookup per key at a time: a herd of identical L1 misses shares it."""
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(digest, canonical, org, project))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        return await asyncio.shield(lookup)

    async def _lookup(
        self, digest: str, canonical: str, org: str, project: str, tally: bool = True
    ) -> LiveRecord | None:
        """The record for a key: the index, else the manifest (written back to the index).
        `tally` counts the answer as a cache hit of its tier."""
        index_up = True
        try:
            record = await self.index.get(digest)
        except ConnectionError:
            record, index_up = None, False
        if record is not None:
            if record.canonical == canonical:
                if tally:
                    self.metrics.hits["index"] += 1
                return record
            log.warning("index digest %s holds another key; ignoring it", digest)
        try:
            raw = await self.store.read(manifest_key(org, project, digest))
            record = LiveRecord.from_json(raw)
        except ObjectNotFound:
            return None
        except (ValueError, TypeError):
            log.warning("unreadable manifest for %s/%s %s", org, project, digest)
            return None
        if record.canonical != canonical:
            return None
        if index_up:
            try:
                await self.index.set(digest, record)
            except ConnectionError:
                pass
        if tally:
            self.metrics.hits["manifest"] += 1
        return record

    async def _produce(
        self,
        digest: str,
        canonical: str,
        org: str,
        project: str,
        params: Callable[[], LiveParams],
    ) -> tuple[LiveResult, bool]:
        """A coalesced miss; `ran` says whether this request's own call reached the origin."""
        ran = False
        self.metrics.misses += 1

        async def generate() -> LiveResult:
            nonlocal ran
            ran = True
            started = time.monotonic()
            result = await self.origin.live(params())
            if result.created:
                self.metrics.generation_seconds.observe(time.monotonic() - started)
            if result.record.canonical == canonical:
                try:
                    await self.index.set(digest, result.record)
                except ConnectionError:
                    pass
            return result

        async def produced_elsewhere() -> LiveResult | None:
            record = await self._lookup(digest, canonical, org, project, tally=False)
            return None if record is None else LiveResult(record, False, {})

        result = await self.coalescer.run(digest, generate, produced_elsewhere)
        if not ran:
            self.metrics.coalesced += 1
        return result, ran

    async def _load(self, record: LiveRecord, status: bytes, extra: Headers) -> Entry | None:
        """The record as an L1 entry (None: too large to keep, or its bytes are gone)."""
        if not self._holds(record.size):
            return None
        try:
            body = await self.store.read(record.object_key)
        except ObjectNotFound:
            log.warning("image %s missing from storage at %s", record.image_id, record.object_key)
            return None
        return _entry(record, body, status, IMMUTABLE, extra)

    # -- the disk tier: between the L1 and the index + storage --------------------------------

    def _holds(self, size: int) -> bool:
        """Whether a body of `size` is read whole and kept (L1 or disk), rather than streamed."""
        return self.l1.fits(size) or (self.disk is not None and size <= self.disk.max_entry_bytes)

    def _keep(self, key: str, entry: Entry) -> None:
        """A response just read from storage or made: into the L1 and onto the disk."""
        self.l1.put(key, entry)
        if self.disk is not None:
            self.disk.put(key, entry)

    def _disk_peek(self, key: str) -> Entry | None:
        """A disk hit without waiting, promoted into the L1; None when it is not on disk or
        not in the page cache (the ASGI path reads it then, on a thread)."""
        if self.disk is None:
            return None
        try:
            entry = self.disk.peek(key)
        except WouldBlock:
            return None
        if entry is not None:
            self.l1.put(key, entry)
        return entry

    async def _from_disk(self, key: str) -> Entry | None:
        """The disk tier's entry for `key`, promoted into the L1."""
        if self.disk is None:
            return None
        seen = self.invalidations
        entry = await self.disk.get(key)
        if entry is not None and seen == self.invalidations:
            self.l1.put(key, entry)
        return entry

    # -- respond ------------------------------------------------------------------------------

    async def _respond(self, request: Request, send: Send, entry: Entry) -> None:
        # Counted with plain ints here: a send wrapper would cost a tenth of a hit.
        if request.if_none_match is not None and _etag_matches(request.if_none_match, entry.etag):
            await send(
                {
                    "type": "http.response.start",
                    "status": 304,
                    "headers": entry.not_modified_headers,
                }
            )
            await send({"type": "http.response.body", "body": b""})
            self.metrics.responded(request.family, 304, 0)
            return
        if request.range is not None:
            span = _range_for(request, entry.etag, len(entry.body))
            if span is not None:
                start, end = span
                headers = _partial_headers(entry.headers, start, end, len(entry.body))
                await send({"type": "http.response.start", "status": 206, "headers": headers})
                body = b"" if request.head else entry.body[start : end + 1]
                await send({"type": "http.response.body", "body": body})
                self.metrics.responded(request.family, 206, len(body))
                return
        await send(
            {"type": "http.response.start", "status": entry.status, "headers": entry.headers}
        )
        body = b"" if request.head else entry.body
        await send({"type": "http.response.body", "body": body})
        self.metrics.responded(request.family, entry.status, len(body))

    async def _stream(
        self,
        request: Request,
        send: Send,
        record: LiveRecord,
        status: bytes,
        extra: Headers,
        cache_control: bytes = IMMUTABLE,
    ) -> None:
        """Serve an image too large for L1 straight from storage, in chunks."""
        headers, not_modified = _headers(record, status, cache_control, extra)
        if request.if_none_match is not None and _etag_matches(request.if_none_match, record.etag):
            await send({"type": "http.response.start", "status": 304, "headers": not_modified})
            await send({"type": "http.response.body", "body": b""})
            self.metrics.responded(request.family, 304, 0)
            return
        code, start, end = 200, 0, record.size - 1
        if request.range is not None:
            span = _range_for(request, record.etag, record.size)
            if span is not None:
                code, (start, end) = 206, span
                headers = _partial_headers(headers, start, end, record.size)
        if request.head:
            await send({"type": "http.response.start", "status": code, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            self.metrics.responded(request.family, code, 0)
            return
        chunks = self.store.get(record.object_key, start, end)
        first = await _first_chunk(chunks)  # errors here can still become an envelope
        await send({"type": "http.response.start", "status": code, "headers": headers})
        self.metrics.responded(request.family, code, end - start + 1)
        try:
            await send({"type": "http.response.body", "body": first, "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except Exception as e:
            log.warning("stream of %s broke off: %s", record.object_key, e)
            raise _ResponseStarted from e
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _send_error(self, send: Send, request: Request, error: ApiError) -> None:
        """The error envelope; for an image load (an <img>), the same error as an SVG image,
        since browsers block JSON there and show only a broken icon."""
        request_id = request.request_id
        if request_id is None or not REQUEST_ID_PATTERN.fullmatch(request_id):
            request_id = uuid.uuid4().hex.encode()
        if self.settings.error_images and (
            request.fetch_dest == b"image"
            or (request.accept is not None and prefers_image(request.accept))
        ):
            body = error.image(request_id.decode("latin-1"))
            content_type = b"image/svg+xml"
        else:
            body, content_type = error.body(), b"application/json"
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            (b"x-request-id", request_id),
        ]
        if content_type == b"image/svg+xml":  # opened as a page, it may run nothing
            headers.append((b"content-security-policy", b"default-src 'none'"))
        if request.family in CDN_FAMILIES:
            headers += CORS
        headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in error.headers.items()]
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if request.head else body})
        if request.family:
            self.metrics.responded(request.family, error.status, 0 if request.head else len(body))

    # -- who is asking ------------------------------------------------------------------------

    async def _authenticate(self, api_key: bytes | None) -> KeyRef:
        """The project key behind X-API-Key, from a short-lived in-process cache of hashes."""
        if not api_key:
            raise Unauthorized("An X-API-Key header is required.")
        key_hash = hashlib.sha256(api_key).hexdigest()
        found, ref = self._keys.get(key_hash)
        if found and ref is not None:
            return ref
        if self._bad_keys.get(key_hash)[0] or not KEY_PATTERN.fullmatch(api_key):
            raise Unauthorized("The API key is not valid.")
        seen = self.invalidations
        ref = await self.origin.key(key_hash)
        if ref is None:
            self._bad_keys.set(key_hash, None)
            raise Unauthorized("The API key is not valid.")
        if seen == self.invalidations:  # else it may have been revoked meanwhile
            self._keys.set(key_hash, ref)
        return ref

    async def _project(self, org: str, project: str) -> ProjectRef:
        if not SLUG_PATTERN.fullmatch(org) or not SLUG_PATTERN.fullmatch(project):
            raise ProjectNotFound("Project not found.")
        found, ref = self._projects.get((org, project))
        if not found:
            seen = self.invalidations
            ref = await self.origin.project(org, project)
            ttl = None if ref is not None else min(self.settings.key_cache_ttl_s, NEGATIVE_TTL_S)
            if seen == self.invalidations:
                self._projects.set((org, project), ref, ttl)
        if ref is None:
            raise ProjectNotFound("Project not found.")
        return ref

    def _client_ip(self, request: Request) -> str | None:
        """The socket address, or the first untrusted X-Forwarded-For hop behind our proxies."""
        client = request.scope.get("client")
        return self._proxies.client_ip(client[0] if client else None, request.forwarded_for)

    # -- invalidation and lifespan ------------------------------------------------------------

    def _invalidate(self, event: Invalidation) -> None:
        """An image is gone: drop its L1 entries and the records that point at it.
        A project changed (its signing state), a key was revoked, an alias moved: read them
        from the origin again."""
        self.invalidations += 1  # what a lookup started before now found may be stale
        if event.project_id is not None:
            pid = event.project_id
            self._projects.drop_where(lambda ref: ref is not None and ref.project_id == pid)
        if event.key_hash is not None:
            self._keys.pop(event.key_hash)
        for alias_key in event.aliases:
            self._images.pop(alias_key)
        if event.image_id == EVERYTHING:  # the bus may have missed some
            self.l1.clear()
            if self.disk is not None:
                self.disk.clear()
            self._images.clear()
            self._projects.clear()
            self._keys.clear()
            return
        if not event.image_id:
            return
        self.l1.drop_image(event.image_id)
        if self.disk is not None:
            self.disk.drop_image(event.image_id)
        self._images.drop_where(lambda record: record.image_id == event.image_id)

    async def startup(self) -> None:
        start = getattr(self.origin, "start", None)
        if start is not None:
            await start()
        await self.start_disk()
        await self.bus.start()

    async def start_disk(self) -> None:
        """Start the disk tier; with the invalidation log in Redis, it first catches up with
        the deletes it missed while this edge was down."""
        if self.disk is not None:
            subscribed = getattr(self.bus, "subscribed", None)
            redis = self.index.client if isinstance(self.index, RedisIndex) else None
            await self.disk.start(redis, subscribed.is_set if subscribed is not None else None)

    async def shutdown(self) -> None:
        await self.bus.close()
        self.variants.close()
        if self.disk is not None:
            await self.disk.close()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fallback is None:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        await self.startup()
                    except Exception as e:
                        log.exception("edge startup failed")
                        await send({"type": "lifespan.startup.failed", "message": str(e)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        # The fallback (origin) starts first and stops last: the edge depends on it.
        async def edge_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.shutdown()
            return message

        async def edge_send(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                try:
                    await self.startup()
                except Exception as e:
                    log.exception("edge startup failed")
                    message = {"type": "lifespan.startup.failed", "message": str(e)}
            await send(message)

        await self.fallback(scope, edge_receive, edge_send)


# -- parse ------------------------------------------------------------------------------------


async def _send_health(send: Send) -> None:
    """Liveness of an edge running alone (with the origin mounted, the origin answers)."""
    body = b'{"success":true,"data":{"status":"ok","role":"edge"}}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@dataclass(slots=True)
class FastRoute:
    """What a live URL names, for the fast path; the key's canonical form is filled in for
    the project that last asked (a URL's project id does not change, but is checked)."""

    family: str
    org: str | None  # None: /api/v1/live (the project comes from the key)
    project: str
    scope: str
    query: LiveQuery
    variant: VariantSpec | None
    project_id: str = ""
    canonical: str = ""


def _fast_route(url: bytes, variants: VariantCache) -> FastRoute | None:
    """The live route of a raw request target, or None (another route, or a request the
    ASGI path must answer: bad parameters, percent-encoded path, anything unusual)."""
    if b"#" in url:  # a fragment: let uvicorn's URL parser decide what the query is
        return None
    path, _, query = url.partition(b"?")
    if path == b"/api/v1/live":
        family, org, project, scope = "live", None, "", ""
    elif path.startswith(b"/cdn/") and b"%" not in path:
        parts = path.decode("latin-1").split("/")  # "", "cdn", org, project, "live", scope
        if len(parts) != 6 or parts[4] != "live" or not SCOPE_PATTERN.fullmatch(parts[5]):
            return None
        family, org, project, scope = "cdn_live", parts[2], parts[3], parts[5]
    else:
        return None
    try:
        parsed, variant = parse_live_query(query), variants.parse(query)
    except ApiError:
        return None
    return FastRoute(family, org, project, scope, parsed, variant)


def parse_live_query(raw: bytes) -> LiveQuery:
    """The live parameters from a raw query string; anything malformed is a 400."""
    if _BAD_PERCENT.search(raw):
        raise ValidationError("The query string has a malformed percent-escape.", field="query")
    values: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("The query string is not valid UTF-8.", field="query") from None
        if name not in LIVE_PARAMS:
            continue  # cache busters and tracking parameters do not change the image
        if name in values:
            raise ValidationError(f"{name} is given more than once.", field=name)
        if "\x00" in value:
            raise ValidationError(f"{name} contains a NUL character.", field=name)
        values[name] = value

    if "prompt" not in values:
        raise ValidationError("prompt is required.", field="prompt")
    prompt = normalise_prompt(values["prompt"])
    if not prompt:
        raise ValidationError("prompt must not be empty.", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            f"prompt is longer than {MAX_PROMPT_CHARS} characters.", field="prompt"
        )
    ratio = values.get("aspectRatio") or "1:1"
    if ratio not in ASPECT_RATIOS:
        raise ValidationError(
            f"aspectRatio must be one of {', '.join(ASPECT_RATIOS)}.", field="aspectRatio"
        )
    enhance = (values.get("autoEnhance") or "true").lower()
    if enhance not in ("true", "false", "1", "0"):
        raise ValidationError("autoEnhance must be true or false.", field="autoEnhance")
    template = values.get("template") or "general"
    if template not in TEMPLATES:
        raise ValidationError(f"template must be one of {', '.join(TEMPLATES)}.", field="template")
    return LiveQuery(prompt, ratio, enhance in ("true", "1"), template)


def _signed(send: Send, ref: ProjectRef, request: Request) -> Send:
    """Verify the request's signature (403 if unsigned, tampered or expired); for a URL that
    expires, a `send` that keeps shared caches from serving it past its `expires`."""
    expires_at = verify_signature(
        ref.signing_secrets, request.scope["path"], request.scope["query_string"]
    )
    if expires_at is None:
        return send
    max_age = f"public, max-age={max(0, expires_at - int(time.time()))}".encode()

    async def send_until_expiry(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, max_age if k == b"cache-control" and v != b"no-store" else v)
                for k, v in message["headers"]
            ]
            message = {**message, "headers": headers}
        await send(message)

    return send_until_expiry


def _live_params(
    ref: KeyRef | ProjectRef,
    scope: str,
    query: LiveQuery,
    key_id: str | None = None,
    client_ip: str | None = None,
) -> LiveParams:
    return LiveParams(
        project_id=ref.project_id,
        organization_slug=ref.organization_slug,
        project_slug=ref.project_slug,
        scope=scope,
        prompt=query.prompt,
        aspect_ratio=query.aspect_ratio,
        auto_enhance=query.auto_enhance,
        template=query.template,
        key_id=key_id,
        client_ip=client_ip,
    )


# -- respond: headers prepared once -----------------------------------------------------------


def _headers(
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


def _entry(
    record: LiveRecord, body: bytes, status: bytes, cache_control: bytes, extra: Headers
) -> Entry:
    headers, not_modified = _headers(record, status, cache_control, extra, len(body))
    return Entry(200, headers, not_modified, body, record.etag, record.image_id)


def _known(record: LiveRecord) -> Callable[[], Awaitable[tuple[LiveRecord, Headers]]]:
    async def source() -> tuple[LiveRecord, Headers]:
        return record, []

    return source


def _server_timing(model_ms: float, miss_s: float) -> tuple[bytes, bytes]:
    """Where a MISS's time went: waiting on the model, and the whole miss at the edge."""
    return (b"server-timing", b"model;dur=%.1f, miss;dur=%.1f" % (model_ms, miss_s * 1000))


def _with_cache_control(entry: Entry, cache_control: bytes) -> Entry:
    def swap(headers: Headers) -> Headers:
        return [(k, cache_control if k == b"cache-control" else v) for k, v in headers]

    return Entry(
        entry.status, swap(entry.headers), swap(entry.not_modified_headers),
        entry.body, entry.etag, entry.image_id,
    )  # fmt: skip


def _partial_headers(headers: Headers, start: int, end: int, size: int) -> Headers:
    partial = [(k, v) for k, v in headers if k != b"content-length"]
    partial.append((b"content-length", str(end - start + 1).encode()))
    partial.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    return partial


def _etag_matches(header: bytes, etag: str) -> bool:
    """If-None-Match: `*`, or any listed tag equal under weak comparison."""
    value = header.decode("latin-1")
    if value.strip() == "*":
        return True
    for tag in value.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def _range_for(request: Request, etag: str, size: int) -> tuple[int, int] | None:
    """The one byte span to send, None for the whole body; unsatisfiable → 416."""
    assert request.range is not None
    if request.if_range is not None and request.if_range.decode("latin-1").strip() != etag:
        return None  # the client's copy is another version: send it all
    span = parse_range(request.range, size)
    if isinstance(span, str):  # "unsatisfiable"
        raise RangeNotSatisfiable(
            "The requested range is outside the image.",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return span


def parse_range(header: bytes, size: int) -> tuple[int, int] | str | None:
    """A single `bytes=a-b | a- | -n` range as an inclusive span; None to ignore the header
    (malformed, other units, several ranges); "unsatisfiable" when it misses the body."""
    match = _RANGE.fullmatch(header.decode("latin-1").strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:
        suffix = _position(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored, as RFC 9110 says
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def _position(digits: str) -> int:
    # int() refuses strings over 4300 digits; any position past 10**18 is past every body.
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


async def _first_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return b""
    except ObjectNotFound:
        raise ImageNotFound("The image is no longer available.") from None


create_edge = Edge  # the factory name the process layouts and tests use
