"""A request's body or query into its model; a refusal is the 400 envelope naming the field."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel
from starlette.requests import Request

from cache.errors import ApiError, ValidationError
from origin.envelope import read_json
from origin.schemas.fields import ERROR_TYPE

M = TypeVar("M", bound="RequestModel")


class RequestModel(BaseModel):
    """A body or query: camelCase on the wire, JSON types as they are (no "yes" for true);
    fields nobody declared are ignored, as they always were."""

    model_config = ConfigDict(strict=True, alias_generator=to_camel, validate_by_name=True)
    # A field whose refusal has its own code (a scope slug: SCOPE_INVALID_FORMAT).
    field_errors: ClassVar[dict[str, type[ValidationError]]] = {}


def field_name(loc: tuple[int | str, ...]) -> str:
    """`enhancementOptions.template`, `aliases.@hero`, `referenceImages.1`."""
    return ".".join(str(part) for part in loc if part != "[key]") or "body"


def refusal(model: type[RequestModel], exc: pydantic.ValidationError) -> ApiError:
    first = exc.errors(include_url=False)[0]
    field = field_name(first["loc"])
    if first["type"] == ERROR_TYPE:
        message = f"{field} {first['msg']}"
    elif first["type"] == "missing":
        message = f"{field} is required."
    else:
        message = f"{field}: {first['msg']}."
    return model.field_errors.get(field, ValidationError)(message, field=field)


def validate(model: type[M], data: Any, context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate(data, context=context)
    except pydantic.ValidationError as exc:
        raise refusal(model, exc) from None


async def read_body(request: Request, model: type[M], required: bool = True) -> M:
    """The JSON body as `model` (size, depth and NUL checked by read_json first)."""
    settings = request.app.state.services.settings
    body = await read_json(request, settings.max_body_bytes, required)
    return validate(model, body, {"max_meta_bytes": settings.max_meta_bytes})


def read_query(request: Request, model: type[M]) -> M:
    return validate(model, dict(request.query_params))
