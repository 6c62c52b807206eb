"""What the API answers: the success envelope and each resource, one model each.

Built from rows by the functions named for the resource (`image_json` in origin/images.py,
`generation_json` in origin/generation_view.py, ...); times are ISO 8601 strings in UTC.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from origin.schemas.fields import ALIAS_SCHEMA, KEY_TYPES, SOURCES, STATUSES, UUID_SCHEMA

T = TypeVar("T")
Time = str  # 2026-01-02T03:04:05.678Z


def _enum(*values: str) -> Any:
    """A string the rows hold as text, documented as the values it takes."""
    return Field(json_schema_extra={"enum": list(values)})


ImageSource = Annotated[str, _enum(*SOURCES)]
GenerationStatus = Annotated[str, _enum(*STATUSES)]
KeyType = Annotated[str, _enum(*KEY_TYPES)]
AliasScope = Annotated[str, _enum("technical", "flow", "project")]
SecretRole = Annotated[str, _enum("current", "previous")]


class ResponseModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        serialize_by_alias=True,
        json_schema_serialization_defaults_required=True,
    )


class Ok(ResponseModel, Generic[T]):
    success: Literal[True] = True
    data: T


class ErrorDetail(ResponseModel):
    model_config = ConfigDict(json_schema_serialization_defaults_required=False)

    code: str = Field(description="One per error type (cache/errors.py), e.g. VALIDATION_ERROR")
    message: str
    details: dict[str, Any] = Field(
        default_factory=dict, description="Absent when empty; `field` names the field at fault"
    )


class ErrorOut(ResponseModel):
    """The error envelope (rendered by cache/errors.py `ApiError.body`)."""

    success: Literal[False] = False
    error: ErrorDetail


class Pagination(ResponseModel):
    total: int
    limit: int
    offset: int
    has_more: bool


class Page(ResponseModel, Generic[T]):
    success: Literal[True] = True
    data: list[T]
    pagination: Pagination


class Health(ResponseModel):
    status: Literal["ok"]


class Ready(ResponseModel):
    status: Literal["ready"]
    generator: str


class Deleted(ResponseModel):
    id: str


class Point(ResponseModel):
    x: float
    y: float


class ImageOut(ResponseModel):
    id: str
    project_id: str
    flow_id: str | None
    generation_id: str | None
    source: ImageSource
    alias: str | None
    storage_key: str
    storage_url: str = Field(description="The image on the CDN: /cdn/{org}/{project}/img/{id}")
    mime_type: str
    file_size: int
    width: int
    height: int
    content_hash: str
    focal_point: Point | None
    meta: dict[str, Any]
    created_at: Time
    updated_at: Time
    deleted_at: Time | None


class Enhancement(ResponseModel):
    template: str


class Reference(ResponseModel):
    image_id: str
    alias: str | None


class GenerationOut(ResponseModel):
    id: str
    project_id: str
    flow_id: str | None
    status: GenerationStatus
    prompt: str
    original_prompt: str
    auto_enhance: bool
    aspect_ratio: str
    enhancement_options: Enhancement
    referenced_images: list[Reference]
    output_image_id: str | None
    output_image: ImageOut | None
    error_message: str | None
    retry_count: int
    processing_time_ms: int | None
    meta: dict[str, Any]
    created_at: Time
    updated_at: Time
    deleted_at: Time | None


class FlowOut(ResponseModel):
    id: str
    project_id: str
    aliases: dict[str, str] = Field(
        json_schema_extra={
            "propertyNames": ALIAS_SCHEMA,
            "additionalProperties": UUID_SCHEMA,
        }
    )
    generation_count: int
    image_count: int
    meta: dict[str, Any]
    created_at: Time
    updated_at: Time


class ResolvedAlias(ResponseModel):
    alias: str
    image_id: str
    scope: AliasScope
    flow_id: str | None
    image: ImageOut


class ScopeOut(ResponseModel):
    id: str
    slug: str
    allow_new_generations: bool
    new_generations_limit: int
    current_generations: int
    last_generated_at: Time | None
    meta: dict[str, Any]
    created_at: Time
    updated_at: Time


class ScopeDeleted(ResponseModel):
    id: str
    slug: str


class Regenerated(ResponseModel):
    previous_image_id: str | None
    image_id: str | None
    generation: GenerationOut


class ScopeRegenerated(ResponseModel):
    slug: str
    regenerated: list[Regenerated]


class SignedUrl(ResponseModel):
    url: str
    path: str
    expires_at: int | None = Field(description="Epoch seconds; null: never")


class Secret(ResponseModel):
    role: SecretRole
    created_at: Time | None
    hint: str = Field(description="The secret's last four characters")


class SigningState(ResponseModel):
    require_signed_urls: bool
    secrets: list[Secret]


class RotatedSecret(SigningState):
    secret: str = Field(description="The new signing secret; shown only this once")


class KeyOut(ResponseModel):
    id: str
    type: KeyType
    organization_slug: str | None
    project_slug: str | None
    name: str | None
    expires_at: Time | None
    revoked_at: Time | None
    created_at: Time


class CreatedKey(ResponseModel):
    id: str
    key: str = Field(description="The key itself; shown only this once")
    type: KeyType
    organization_slug: str | None
    project_slug: str | None
    name: str | None
    expires_at: Time | None
    created_at: Time
