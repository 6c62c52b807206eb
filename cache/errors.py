"""The API's error envelope: one exception type per error code, rendered in one place."""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape


class ApiError(Exception):
    """Base of every error a client may see; subclasses fix the status and code."""

    # Class defaults a subclass fixes; an instance may override them (a rebuilt upstream error).
    status: int = 500
    code: str = "INTERNAL_ERROR"

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return json.dumps({"success": False, "error": error}).encode()

    def image(self, request_id: str) -> bytes:
        """The error as a small SVG, for an `<img>` load (browsers block JSON answers to
        those): the status, the message and what to do, so the page shows the reason."""
        retry_after = next((v for k, v in self.headers.items() if k.lower() == "retry-after"), "")
        hint = _HINTS.get(self.code, "")
        if retry_after.isdigit():
            hint = f"try again in {_duration(int(retry_after))}"
        text = _xml_text(f"{self.status} · {self.message}" + (f" · {hint}" if hint else ""))
        lines = textwrap.wrap(text, _LINE_CHARS)[:_MAX_LINES]
        height = 2 * _PAD + _LINE_PX * (len(lines) + 1)
        rows = [
            f'<text x="{_PAD}" y="{_PAD + _LINE_PX * (i + 1) - 6}"{_BOLD if i == 0 else ""}>'
            f"{escape(line)}</text>"
            for i, line in enumerate(lines)
        ]
        footer = escape(_xml_text(f"{self.code} · request {request_id}"))
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
            f'viewBox="0 0 {_WIDTH} {height}" role="img" '
            f'aria-label="{escape(text, {chr(34): "&quot;"})}"><title>{escape(text)}</title>'
            f'<rect x="0.5" y="0.5" width="{_WIDTH - 1}" height="{height - 1}" rx="6" '
            'fill="#fef2f2" stroke="#dc2626"/>'
            '<g font-family="system-ui, sans-serif" font-size="15" fill="#7f1d1d">'
            f"{''.join(rows)}"
            f'<text x="{_PAD}" y="{height - _PAD}" font-size="12">{footer}</text></g></svg>'
        ).encode()


class ValidationError(ApiError):
    status, code = 400, "VALIDATION_ERROR"

    def __init__(self, message: str, field: str | None = None, **kw: Any) -> None:
        details = kw.pop("details", None) or ({"field": field} if field else None)
        super().__init__(message, details=details, **kw)


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class SignatureRequired(ApiError):
    status, code = 403, "SIGNATURE_REQUIRED"


class SignatureInvalid(ApiError):
    status, code = 403, "SIGNATURE_INVALID"


class SignatureExpired(ApiError):
    status, code = 403, "SIGNATURE_EXPIRED"


class ScopeGenerationsDisabled(ApiError):
    status, code = 403, "SCOPE_GENERATIONS_DISABLED"


class ScopeLimitReached(ApiError):
    status, code = 403, "SCOPE_LIMIT_REACHED"


class ScopeInvalidFormat(ValidationError):
    code = "SCOPE_INVALID_FORMAT"


class FlowHasNoGenerations(ValidationError):
    code = "FLOW_HAS_NO_GENERATIONS"


class VariantLimitReached(ApiError):
    status, code = 403, "VARIANT_LIMIT_REACHED"


class NotFound(ApiError):
    """404; `code` names what is missing (IMAGE_NOT_FOUND, ...)."""

    status, code = 404, "NOT_FOUND"


class GenerationNotFound(NotFound):
    code = "GENERATION_NOT_FOUND"


class ImageNotFound(NotFound):
    code = "IMAGE_NOT_FOUND"


class FlowNotFound(NotFound):
    code = "FLOW_NOT_FOUND"


class AliasNotFound(NotFound):
    code = "ALIAS_NOT_FOUND"


class ScopeNotFound(NotFound):
    code = "SCOPE_NOT_FOUND"


class ImageNotInScope(NotFound):
    code = "IMAGE_NOT_IN_SCOPE"


class ProjectNotFound(NotFound):
    code = "PROJECT_NOT_FOUND"


class KeyNotFound(NotFound):
    code = "KEY_NOT_FOUND"


class Conflict(ApiError):
    """409; the code names the conflict (GENERATION_NOT_FAILED, ...)."""

    status, code = 409, "CONFLICT"


class ScopeAlreadyExists(Conflict):
    code = "SCOPE_ALREADY_EXISTS"


class MethodNotAllowed(ApiError):
    """405; `headers` carries the Allow list."""

    status, code = 405, "METHOD_NOT_ALLOWED"


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


class RangeNotSatisfiable(ApiError):
    """416; `headers` carries `Content-Range: bytes */size`."""

    status, code = 416, "RANGE_NOT_SATISFIABLE"


class RateLimitExceeded(ApiError):
    status, code = 429, "RATE_LIMIT_EXCEEDED"

    def __init__(self, message: str, retry_after: int, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after)))} | kw.pop("headers", {})
        super().__init__(message, headers=headers, **kw)


class GenerationFailed(ApiError):
    status, code = 502, "GENERATION_FAILED"


class UpstreamUnavailable(ApiError):
    status, code = 503, "UPSTREAM_UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 5, **kw: Any) -> None:
        headers = {"Retry-After": str(max(1, int(retry_after)))} | kw.pop("headers", {})
        super().__init__(message, headers=headers, **kw)


# Storage outages are retried by clients, not reported as bugs: 503 and this Retry-After.
STORAGE_RETRY_AFTER_S = 5


def storage_unavailable() -> UpstreamUnavailable:
    """What a client sees when object storage does not answer (edge and origin alike)."""
    return UpstreamUnavailable(
        "Image storage is unavailable; try again shortly.", STORAGE_RETRY_AFTER_S
    )


class NotReady(ApiError):
    """503 from /ready: `details` names what is failing (a database, storage or cache)."""

    status, code = 503, "NOT_READY"

    def __init__(self, message: str, failing: dict[str, str]) -> None:
        super().__init__(
            message, details=failing, headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)}
        )


class GatewayTimeout(ApiError):
    status, code = 504, "GENERATION_TIMEOUT"


class InternalError(ApiError):
    status, code = 500, "INTERNAL_ERROR"


# -- rendering: the one place an error becomes a response ----------------------------------------

Headers = list[tuple[bytes, bytes]]


def render_error(
    error: ApiError,
    *,
    as_image: bool = False,
    request_id: str = "",
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> tuple[int, Headers, bytes]:
    """(status, headers, body) of an error: the JSON envelope, or with `as_image` the SVG
    error image (for an `<img>` load, where browsers block JSON and show a broken icon).
    `extra` (the server's own headers: request id, CORS, ...) comes before the error's."""
    if as_image:
        body, content_type = error.image(request_id), b"image/svg+xml"
    else:
        body, content_type = error.body(), b"application/json"
    headers: Headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    if as_image:  # opened as a page, it may run nothing
        headers.append((b"content-security-policy", b"default-src 'none'"))
    headers += [(k.lower().encode(), v.encode("latin-1")) for k, v in error.headers.items()]
    return error.status, headers, body


def wants_image(fetch_dest: bytes | None, accept: bytes | None) -> bool:
    """Whether an error answer should be the SVG image: an `<img>` load asked for it
    (Sec-Fetch-Dest: image, or an Accept that ranks images above JSON)."""
    return fetch_dest == b"image" or (accept is not None and prefers_image(accept))


# -- the error as an image ---------------------------------------------------------------------

_WIDTH, _PAD, _LINE_PX, _LINE_CHARS, _MAX_LINES = 480, 14, 22, 54, 8
_BOLD = ' font-weight="bold"'
# Characters XML 1.0 cannot hold (controls, lone surrogates, non-characters).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# What to do about an error, by code (a Retry-After says when to try again instead).
_HINTS = {
    "UNAUTHORIZED": "an <img> cannot send X-API-Key: use a /cdn/ URL",
    "SIGNATURE_REQUIRED": "this project needs signed URLs (POST /api/v1/live/sign)",
    "SIGNATURE_INVALID": "sign the URL again and use it unchanged",
    "SIGNATURE_EXPIRED": "sign a new URL",
    "PROJECT_NOT_FOUND": "check the organization and project in the URL",
    "IMAGE_NOT_FOUND": "check the image id or @alias",
    "SCOPE_LIMIT_REACHED": "raise the scope's newGenerationsLimit, or use another scope",
    "SCOPE_GENERATIONS_DISABLED": "allow new generations in the scope, or use another scope",
    "VARIANT_LIMIT_REACHED": "use a size and format already made",
    "GENERATION_FAILED": "reload to try again",
    "GENERATION_TIMEOUT": "reload to try again",
    "INTERNAL_ERROR": "quote the request id when you report it",
}


def _xml_text(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _duration(seconds: int) -> str:
    """A Retry-After as a person reads it: 40 s, 6 min, 2 h."""
    if seconds < 90:
        return f"{max(1, seconds)} s"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 3600)} h"


def prefers_image(accept: bytes) -> bool:
    """Whether an Accept header ranks images above JSON: a browser's `<img>` load
    (`image/avif,image/webp,...,*/*;q=0.8`) does, an API client (`*/*`, JSON) does not.
    An image type listed by name beats JSON reached only through `*/*` at the same q."""
    image_q = -1.0  # the best q of a listed image/... range; -1: none listed
    json_q, json_rank = 0.0, -1  # q of the most specific range matching application/json
    for item in accept.decode("latin-1").split(","):
        media, *params = item.split(";")
        main, _, sub = media.strip().lower().partition("/")
        q = _q(params)
        if main == "image":
            image_q = max(image_q, q)
        rank = {("application", "json"): 2, ("application", "*"): 1, ("*", "*"): 0}.get(
            (main, sub), -1
        )
        if rank > json_rank:
            json_q, json_rank = q, rank
    return image_q > json_q or (image_q == json_q > 0 and json_rank == 0)


def _q(params: list[str]) -> float:
    for param in params:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return min(1.0, max(0.0, float(value)))
            except ValueError:
                return 0.0
    return 1.0


# Headers of an error the origin answers that the edge passes on to the client.
PASSED_THROUGH = ("retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


def error_from_envelope(status: int, payload: dict[str, Any], headers: dict[str, str]) -> ApiError:
    """Rebuild an ApiError from an envelope received over HTTP (edge ← origin)."""
    err = payload.get("error") or {}
    exc = ApiError(
        str(err.get("message", "upstream error")),
        details=err.get("details"),
        headers={k: v for k, v in headers.items() if k.lower() in PASSED_THROUGH},
        code=str(err.get("code", "INTERNAL_ERROR")),
    )
    exc.status = status
    return exc
