"""The error types of cache/errors.py: one code per type, the envelope they render, and the
headers that tell a client when to try again."""

from __future__ import annotations

import json

from cache import errors
from cache.errors import (
    STORAGE_RETRY_AFTER_S,
    ApiError,
    MethodNotAllowed,
    RateLimitExceeded,
    UpstreamUnavailable,
    ValidationError,
    render_error,
    storage_unavailable,
    wants_image,
)


def _error_types() -> list[type[ApiError]]:
    found: list[type[ApiError]] = []
    pending = [ApiError]
    while pending:
        kind = pending.pop()
        found.append(kind)
        pending.extend(kind.__subclasses__())
    return [k for k in found if k.__module__ == errors.__name__]


def test_every_error_type_has_a_client_or_server_status_and_a_code() -> None:
    for kind in _error_types():
        assert 400 <= kind.status < 600, kind
        assert kind.code.isupper() and " " not in kind.code, kind


def test_the_envelope_names_code_message_and_details() -> None:
    error = ValidationError("prompt is required.", details={"field": "prompt"})
    assert error.status == 400
    assert json.loads(error.body()) == {
        "success": False,
        "error": {
            "code": error.code,
            "message": "prompt is required.",
            "details": {"field": "prompt"},
        },
    }


def test_no_details_means_no_details_key() -> None:
    assert "details" not in json.loads(ApiError("x").body())["error"]


def test_refusals_that_pass_say_when_to_retry() -> None:
    assert RateLimitExceeded("spent", retry_after=0).headers["Retry-After"] == "1"  # never 0
    limited = RateLimitExceeded("spent", retry_after=30, headers={"X-RateLimit-Limit": "10"})
    assert limited.status == 429
    assert limited.headers == {"Retry-After": "30", "X-RateLimit-Limit": "10"}
    busy = UpstreamUnavailable("busy")
    assert busy.status == 503 and busy.headers["Retry-After"] == "5"


def test_one_type_per_code() -> None:
    kinds = [k for k in _error_types() if k is not ApiError]  # the base renders as 500 too
    codes = [k.code for k in kinds]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_the_edges_own_refusals_are_error_types_here() -> None:
    codes = {k.code: k.status for k in _error_types()}
    assert codes["METHOD_NOT_ALLOWED"] == 405
    assert codes["RANGE_NOT_SATISFIABLE"] == 416


def test_an_error_renders_as_the_envelope_with_its_headers() -> None:
    error = MethodNotAllowed("no", headers={"Allow": "GET, HEAD"})
    status, headers, body = render_error(error, extra=[(b"x-request-id", b"r1")])
    assert status == 405
    assert json.loads(body)["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert headers == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        (b"x-request-id", b"r1"),
        (b"allow", b"GET, HEAD"),
    ]


def test_an_error_for_an_image_load_renders_as_an_svg_that_runs_nothing() -> None:
    status, headers, body = render_error(storage_unavailable(), as_image=True, request_id="r1")
    assert status == 503
    assert body.startswith(b"<svg") and b"request r1" in body
    assert dict(headers)[b"content-type"] == b"image/svg+xml"
    assert dict(headers)[b"content-security-policy"] == b"default-src 'none'"
    assert dict(headers)[b"retry-after"] == str(STORAGE_RETRY_AFTER_S).encode()


def test_an_image_load_is_told_by_fetch_dest_or_accept() -> None:
    assert wants_image(b"image", None)
    assert wants_image(None, b"image/avif,image/webp,*/*;q=0.8")
    assert not wants_image(None, b"application/json")
    assert not wants_image(b"empty", None)
