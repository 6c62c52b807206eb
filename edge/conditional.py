"""Conditional requests and ranges: If-None-Match → 304, Range (and If-Range) → 206 or 416.

Every path that sends an image asks `conditional` what to send: the L1/disk entry, the
server protocol's fast path, and a body streamed from storage."""

from __future__ import annotations

import re

from cache.errors import RangeNotSatisfiable
from edge.request import Headers, Request

_RANGE = re.compile(r"^bytes=[ \t]*([0-9]*)-([0-9]*)[ \t]*$", re.IGNORECASE)  # one range


def conditional(request: Request, etag: str, size: int) -> tuple[int, int, int]:
    """(status, first byte, last byte) to answer with: 304, 206 with its span, or 200 with
    the whole body. An unsatisfiable range raises RangeNotSatisfiable (416)."""
    if request.if_none_match is not None and etag_matches(request.if_none_match, etag):
        return 304, 0, -1
    if request.range is not None:
        span = range_for(request, etag, size)
        if span is not None:
            return 206, span[0], span[1]
    return 200, 0, size - 1


def etag_matches(header: bytes, etag: str) -> bool:
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


def range_for(request: Request, etag: str, size: int) -> tuple[int, int] | None:
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


def partial_headers(headers: Headers, start: int, end: int, size: int) -> Headers:
    """A 200's headers made a 206's for bytes [start, end] of `size`."""
    partial = [(k, v) for k, v in headers if k != b"content-length"]
    partial.append((b"content-length", str(end - start + 1).encode()))
    partial.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
    return partial


def _position(digits: str) -> int:
    # int() refuses strings over 4300 digits; any position past 10**18 is past every body.
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18
