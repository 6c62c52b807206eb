"""JSON in and out: the success envelope, reading a JSON body, and the routes' operations.

What a body or query may hold is its model's business (origin/schemas/); this module only
reads bytes into a JSON value, refusing what no model should ever see (too deep, NUL).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, overload

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cache.errors import PayloadTooLarge, ValidationError
from cache.patterns import UUID_PATTERN
from origin.schemas.responses import Ok, Page, Pagination

MAX_JSON_DEPTH = 32  # objects and arrays; far past any body the API defines


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def ok(
    data: BaseModel | Sequence[BaseModel], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = Ok[Any](data=data).model_dump_json()
    return Response(body, status, headers, media_type="application/json")


def page(items: Sequence[BaseModel], total: int, limit: int, offset: int) -> Response:
    more = offset + len(items) < total
    pagination = Pagination(total=total, limit=limit, offset=offset, has_more=more)
    body = Page[Any](data=list(items), pagination=pagination).model_dump_json()
    return Response(body, media_type="application/json")


@overload
def iso(value: datetime) -> str: ...
@overload
def iso(value: datetime | None) -> str | None: ...
def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


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
    if not body.strip(b" \t\r\n"):  # JSON whitespace only (a form feed is not JSON)
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

    def finite(number: str) -> float:
        value = float(number)
        if not math.isfinite(value):  # 1e400: no column or JSON document can hold it
            raise ValidationError(f"{field} holds a number out of range: {number}.", field=field)
        return value

    def no_constant(name: str) -> None:
        raise ValidationError(
            f"{field} is not valid JSON ({name} is not a JSON value).", field=field
        )

    try:
        value = json.loads(text, parse_float=finite, parse_constant=no_constant)
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
    return isinstance(value, str) and bool(UUID_PATTERN.fullmatch(value))


def path_uuid(value: str, not_found: type[Exception], what: str) -> str:
    """A path id; anything that is not a UUID cannot exist, so it is simply not found."""
    if not is_uuid(value):
        raise not_found(f"{what} not found.")
    return str(uuid.UUID(value))


Handler = Callable[[Request], Awaitable[Response]]
Auth = Literal["none", "master", "project"]


@dataclass(frozen=True)
class Operation:
    """What /openapi.json says of one method of a route; the models are the ones it uses."""

    summary: str
    response: Any  # the type of the envelope's `data`: a model, or list[model]
    status: int = 200
    auth: Auth = "project"
    body: type[BaseModel] | None = None  # a JSON body
    body_required: bool = True
    form: type[BaseModel] | None = None  # multipart text fields, beside a `file`
    query: type[BaseModel] | None = None
    paged: bool = False  # `data` is a page of `response`, with `pagination`
    also: tuple[int, ...] = ()  # other success statuses with the same body (202)


class Described:
    """A handler with its Operation; calls go straight to the handler."""

    def __init__(self, handler: Handler, operation: Operation) -> None:
        self.handler = handler
        self.operation = operation

    async def __call__(self, request: Request) -> Response:
        return await self.handler(request)


def operation(**spec: Any) -> Callable[[Handler], Described]:
    """Describe a handler for the OpenAPI document (origin/openapi.py reads it)."""

    def describe(handler: Handler) -> Described:
        return Described(handler, Operation(**spec))

    return describe


class Resource(Route):
    """One route per path, dispatching on the method, so a 405 lists every allowed method."""

    def __init__(self, path: str, **handlers: Handler) -> None:
        by_method = {method.upper(): handler for method, handler in handlers.items()}
        self.operations: dict[str, Operation] = {
            method.lower(): handler.operation
            for method, handler in by_method.items()
            if isinstance(handler, Described)
        }

        async def dispatch(request: Request) -> Response:
            method = "GET" if request.method == "HEAD" else request.method
            return await by_method[method](request)

        super().__init__(path, dispatch, methods=list(by_method))
