"""JSON in and out: the success envelope, pagination, and strict request parsing."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any, overload

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cache.errors import PayloadTooLarge, ValidationError

MAX_OFFSET = 2**62  # past any real table; keeps the value inside a BIGINT
MAX_JSON_DEPTH = 32  # objects and arrays; far past any body the API defines
UUID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def ok(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"success": True, "data": data}, status_code=status, headers=headers)


def page(items: list[Any], total: int, limit: int, offset: int) -> JSONResponse:
    return JSONResponse(
        {
            "success": True,
            "data": items,
            "pagination": {
                "total": total,
                "limit": limit,
                "offset": offset,
                "hasMore": offset + len(items) < total,
            },
        }
    )


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def pagination(request: Request) -> tuple[int, int]:
    """`limit` (default 20, clamped to 100) and `offset`; junk or negatives → 400."""
    limit = _non_negative_int(request.query_params.get("limit"), "limit", 20)
    offset = _non_negative_int(request.query_params.get("offset"), "offset", 0)
    return min(limit, 100), min(offset, MAX_OFFSET)


def _non_negative_int(raw: str | None, field: str, default: int) -> int:
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,100}", raw):
        raise ValidationError(f"{field} must be a non-negative integer.", field=field)
    return int(raw)


def query_bool(request: Request, field: str, default: bool = False) -> bool:
    raw = request.query_params.get(field)
    if raw is None:
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise ValidationError(f"{field} must be true or false.", field=field)


async def read_json(request: Request, max_bytes: int, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; malformed, oversized or non-object bodies are 400/413."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    if not body.strip():
        if required:
            raise ValidationError("A JSON object body is required.", field="body")
        return {}
    value = parse_json(body, "body")
    if not isinstance(value, dict):
        raise ValidationError("The body must be a JSON object.", field="body")
    return value


def parse_json(text: bytes | bytearray | str, field: str) -> Any:
    """JSON a client sent: 400 when malformed, nested deeper than MAX_JSON_DEPTH, or holding
    a NUL anywhere (PostgreSQL cannot store one in text or JSONB)."""
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(f"{field} is not valid JSON.", field=field) from None
    except RecursionError:  # the decoder recurses per level: 2 KB of brackets exhaust the stack
        raise _too_deep(field) from None
    _check_json(value, field)
    return value


def _too_deep(field: str) -> ValidationError:
    return ValidationError(f"{field} is nested deeper than {MAX_JSON_DEPTH} levels.", field=field)


def _check_json(value: Any, field: str) -> None:
    # Iterative, so checking a deep value cannot itself overflow the stack.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                raise ValidationError(f"{field} contains a NUL character.", field=field)
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > MAX_JSON_DEPTH:
            raise _too_deep(field)
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            pending.extend((child, depth + 1) for child in item.values())
        else:
            pending.extend((child, depth + 1) for child in item)


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and bool(UUID_PATTERN.fullmatch(value.lower()))


def path_uuid(value: str, not_found: type[Exception], what: str) -> str:
    """A path id; anything that is not a UUID cannot exist, so it is simply not found."""
    if not is_uuid(value):
        raise not_found(f"{what} not found.")
    return str(uuid.UUID(value))


def optional_str(body: dict[str, Any], field: str, max_len: int | None = None) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{field} must be a string.", field=field)
    if max_len is not None and len(value) > max_len:
        raise ValidationError(f"{field} is longer than {max_len} characters.", field=field)
    return value


def optional_bool(body: dict[str, Any], field: str, default: bool) -> bool:
    value = body.get(field, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ValidationError(f"{field} must be true or false.", field=field)
    return value


# An int default makes the result an int (absent or null → the default).
@overload
def optional_int(
    body: dict[str, Any], field: str, default: int, lo: int = ..., hi: int = ...
) -> int: ...
@overload
def optional_int(
    body: dict[str, Any], field: str, default: None, lo: int = ..., hi: int = ...
) -> int | None: ...
def optional_int(
    body: dict[str, Any], field: str, default: int | None, lo: int = 0, hi: int = 2**31 - 1
) -> int | None:
    value = body.get(field, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValidationError(f"{field} must be an integer in [{lo}, {hi}].", field=field)
    return value


def meta_field(body: dict[str, Any], max_bytes: int, field: str = "meta") -> dict[str, Any] | None:
    """`meta`: a JSON object of at most `max_bytes` once serialised; None when absent."""
    if field not in body or body[field] is None:
        return None
    value = body[field]
    if not isinstance(value, dict):
        raise ValidationError(f"{field} must be a JSON object.", field=field)
    if len(json.dumps(value, separators=(",", ":")).encode()) > max_bytes:
        raise ValidationError(f"{field} is larger than {max_bytes} bytes.", field=field)
    return value


def reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"Unknown field {unknown[0]}.", details={"field": unknown[0], "unknown": unknown}
        )


def resource(path: str, **handlers: Any) -> Route:
    """One route per path, dispatching on the method, so a 405 lists every allowed method."""
    by_method = {method.upper(): handler for method, handler in handlers.items()}

    async def dispatch(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await by_method[method](request)

    return Route(path, dispatch, methods=list(by_method))
