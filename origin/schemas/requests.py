"""What a client sends: every JSON body, form and query of the REST API, one model each.

Absent and null differ where the API says so (`flowId: null` detaches, an absent one leaves it):
such fields are read with `given`, which asks pydantic's `model_fields_set`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, WithJsonSchema, field_validator, model_validator

from cache.errors import ScopeInvalidFormat, ValidationError
from origin.envelope import parse_json
from origin.generation_input import GenerationInput
from origin.schemas.fields import (
    ALIAS_SCHEMA,
    MAX_OFFSET,
    MAX_PAGE,
    UUID_SCHEMA,
    Alias,
    AspectRatio,
    JsonInt,
    KeyType,
    Meta,
    Prompt,
    QueryBool,
    QueryInt,
    References,
    Scope,
    Slug,
    Source,
    Status,
    Template,
    Uuid,
)
from origin.schemas.validation import RequestModel

MAX_NAME = 200
MAX_URL_CHARS = 16 * 1024
MAX_EXPIRES_IN_S = 10 * 365 * 24 * 3600
SCOPE_LIMIT = 1_000_000
Name = Annotated[str, Field(max_length=MAX_NAME)]


def given(model: RequestModel, field: str) -> bool:
    """The client sent `field` (null included)."""
    return field in model.model_fields_set


def flow_alias_needs_a_flow(model: RequestModel, flow_alias: str | None, flow: str | None) -> None:
    """`flowId: null` with a `flowAlias`: no flow to hold the alias."""
    if flow_alias is not None and given(model, "flow_id") and flow is None:
        raise ValidationError("flowAlias needs a flow; flowId is null.", field="flowAlias")


# -- generations ------------------------------------------------------------------------------


class EnhancementOptions(RequestModel):
    template: Template | None = None


class GenerationBody(RequestModel):
    """POST /api/v1/generations."""

    prompt: Prompt
    aspect_ratio: AspectRatio | None = None
    auto_enhance: bool | None = None
    enhancement_options: EnhancementOptions | None = None
    reference_images: References | None = None
    flow_id: Uuid | None = None
    alias: Alias | None = None
    flow_alias: Alias | None = None
    meta: Meta | None = None

    @model_validator(mode="after")
    def _flow_alias_needs_a_flow(self) -> GenerationBody:
        flow_alias_needs_a_flow(self, self.flow_alias, self.flow_id)
        return self

    def input(self) -> GenerationInput:
        options = self.enhancement_options
        return GenerationInput(
            prompt=self.prompt,
            aspect_ratio=self.aspect_ratio or "1:1",
            auto_enhance=self.auto_enhance is not False,
            template=(options.template if options else None) or "general",
            reference_inputs=list(self.reference_images or []),
            flow=self.flow_id,
            flow_given=given(self, "flow_id"),
            alias=self.alias,
            flow_alias=self.flow_alias,
            meta=self.meta or {},
        )


class RetryBody(RequestModel):
    """POST /api/v1/generations/{id}/retry: what to change before trying again."""

    prompt: Prompt | None = None
    aspect_ratio: AspectRatio | None = None
    auto_enhance: bool | None = None
    reference_images: References | None = None


class GenerationUpdate(RequestModel):
    meta: Meta | None = None
    flow_id: Uuid | None = None


class PageQuery(RequestModel):
    """?limit=&offset= of a list."""

    limit: QueryInt = 20
    offset: QueryInt = 0

    def window(self) -> tuple[int, int]:
        """(limit, offset), clamped: at most MAX_PAGE rows, an offset inside a BIGINT."""
        return min(self.limit, MAX_PAGE), min(self.offset, MAX_OFFSET)


class GenerationQuery(PageQuery):
    status: Status | None = None
    flow_id: Uuid | None = None
    include_deleted: QueryBool = False


# -- flows ------------------------------------------------------------------------------------


class FlowBody(RequestModel):
    meta: Meta | None = None


class FlowAliases(RequestModel):
    """PUT /api/v1/flows/{id}/aliases: merged into the flow's aliases."""

    aliases: dict[Alias, Uuid]


# -- images -----------------------------------------------------------------------------------


class FocalPoint(RequestModel):
    x: Annotated[float, Field(ge=0, le=1)]
    y: Annotated[float, Field(ge=0, le=1)]


class ImageUpdate(RequestModel):
    alias: Alias | None = None
    focal_point: FocalPoint | None = None
    meta: Meta | None = None


class ImageAlias(RequestModel):
    alias: Alias | None  # required: null removes it


# A form field is text: "" is no value, and for flowId so is "null".
# (Its schema leaves out the reserved names: schemathesis cannot cover a `not` beside a file.)
FORM_ALIAS_SCHEMA = {"type": "string", "pattern": ALIAS_SCHEMA["pattern"]}
FormAlias = Annotated[Alias | None, WithJsonSchema({"anyOf": [FORM_ALIAS_SCHEMA, {"const": ""}]})]
FormFlowId = Annotated[
    Uuid | None, WithJsonSchema({"anyOf": [UUID_SCHEMA, {"enum": ["", "null"]}]})
]
FormMeta = Annotated[Meta | None, WithJsonSchema({"type": "string", "description": "JSON"})]


class UploadForm(RequestModel):
    """The text fields of POST /api/v1/images/upload (multipart, with the `file`)."""

    alias: FormAlias = None
    flow_id: FormFlowId = None  # absent: a new flow; "" or "null": none
    flow_alias: FormAlias = None
    meta: FormMeta = None

    @field_validator("alias", "flow_alias", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("flow_id", mode="before")
    @classmethod
    def _no_flow(cls, value: object) -> object:
        return None if value in ("", "null") else value

    @field_validator("meta", mode="before")
    @classmethod
    def _meta_json(cls, value: object) -> object:
        if value == "":
            return None
        return parse_json(value, "meta") if isinstance(value, str) else value

    @model_validator(mode="after")
    def _flow_alias_needs_a_flow(self) -> UploadForm:
        flow_alias_needs_a_flow(self, self.flow_alias, self.flow_id)
        return self


class ImageQuery(PageQuery):
    source: Source | None = None
    flow_id: Uuid | None = None
    alias: str | None = None
    include_deleted: QueryBool = False


class FlowScoped(RequestModel):
    """?flowId= of an image lookup: aliases resolve in that flow first."""

    flow_id: Uuid | None = None


# -- live scopes and signing ------------------------------------------------------------------

ScopeLimit = Annotated[JsonInt, Field(ge=0, le=SCOPE_LIMIT)]


class ScopeUpdate(RequestModel):
    allow_new_generations: bool | None = None
    new_generations_limit: ScopeLimit | None = None
    meta: Meta | None = None


class ScopeBody(ScopeUpdate):
    """POST /api/v1/live/scopes."""

    field_errors: ClassVar[dict[str, type[ValidationError]]] = {"slug": ScopeInvalidFormat}
    slug: Scope


class ScopeRegenerate(RequestModel):
    image_id: Uuid | None = None  # just the live key serving this image


class LiveInput(RequestModel):
    """The parameters of a live image (the cache key's), as the origin checks them."""

    scope: Scope | None = None  # none: /api/v1/live
    prompt: Prompt
    aspect_ratio: AspectRatio | None = None
    template: Template | None = None


class SignBody(RequestModel):
    """POST /api/v1/live/sign: either `path` (a live CDN URL or path of this project), or
    `scope` and `prompt` with the other live parameters."""

    path: Annotated[str, Field(max_length=MAX_URL_CHARS)] | None = None
    scope: Scope | None = None
    prompt: Prompt | None = None
    aspect_ratio: AspectRatio | None = None
    auto_enhance: bool | None = None
    template: Template | None = None
    expires_in_seconds: Annotated[JsonInt, Field(ge=1, le=MAX_EXPIRES_IN_S)] | None = None

    @model_validator(mode="after")
    def _path_or_fields(self) -> SignBody:
        if given(self, "path"):  # null too: a client that sends the field means it
            if self.path is None:
                raise ValidationError("path must be a string: a live URL or path.", field="path")
            for name in ("scope", "prompt", "aspect_ratio", "auto_enhance", "template"):
                if getattr(self, name) is not None:
                    field = type(self).model_fields[name].alias or name
                    raise ValidationError(f"Give either path or {field}, not both.", field=field)
        elif self.prompt is None:
            raise ValidationError("prompt is required.", field="prompt")
        elif self.scope is None:
            raise ValidationError("scope is required.", field="scope")
        return self


class SigningBody(RequestModel):
    require_signed_urls: bool


# -- keys -------------------------------------------------------------------------------------


class BootstrapBody(RequestModel):
    name: Name | None = None


class KeyBody(RequestModel):
    """POST /api/admin/keys: a project key names its organization and project."""

    type: KeyType = "project"
    organization_slug: Slug | None = None
    project_slug: Slug | None = None
    name: Name | None = None
    expires_in_days: Annotated[JsonInt, Field(ge=1, le=3650)] | None = None

    @model_validator(mode="after")
    def _project_key_names_its_project(self) -> KeyBody:
        if self.type == "project":
            for field, value in (
                ("organizationSlug", self.organization_slug),
                ("projectSlug", self.project_slug),
            ):
                if value is None:
                    raise ValidationError(f"{field} is required for a project key.", field=field)
        return self
