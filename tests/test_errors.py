"""The error types of cache/errors.py: one code per type, the envelope they render, and the
headers that tell a client when to try again."""

from __future__ import annotations

import json

from cache import errors
from cache.errors import ApiError, RateLimitExceeded, UpstreamUnavailable, ValidationError


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
