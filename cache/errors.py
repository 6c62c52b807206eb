"""The API's error envelope: one exception type per error code, rendered in one place."""

from __future__ import annotations

import json
from typing import Any, ClassVar


class ApiError(Exception):
    """Base of every error a client may see; subclasses fix the status and code."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"

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
            self.code = code  # type: ignore[misc]

    def body(self) -> bytes:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return json.dumps({"success": False, "error": error}).encode()


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


class PayloadTooLarge(ApiError):
    status, code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status, code = 415, "UNSUPPORTED_MEDIA_TYPE"


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


class GatewayTimeout(ApiError):
    status, code = 504, "GENERATION_TIMEOUT"


class InternalError(ApiError):
    status, code = 500, "INTERNAL_ERROR"


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
    exc.status = status  # type: ignore[misc]
    return exc
