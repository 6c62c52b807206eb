"""A generation request body: read and checked into a GenerationInput (nothing stored)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache.errors import ValidationError
from origin.aliases import check_alias
from origin.envelope import is_uuid, meta_field, optional_bool, optional_str
from origin.generators import ASPECT_RATIOS, TEMPLATES

MAX_PROMPT = 5000
MAX_REFERENCES = 3


@dataclass
class GenerationInput:
    prompt: str
    aspect_ratio: str
    auto_enhance: bool
    template: str
    reference_inputs: list[str]
    flow: str | None  # "absent" | None | uuid, see flow_choice
    flow_given: bool
    alias: str | None
    flow_alias: str | None
    meta: dict[str, Any]


def check_prompt(value: object, field: str = "prompt") -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{field} is required and must be a string.", field=field)
    text = value.strip()
    if not 1 <= len(text) <= MAX_PROMPT:
        raise ValidationError(f"{field} must be 1 to {MAX_PROMPT} characters.", field=field)
    if "\x00" in text:
        raise ValidationError(f"{field} must not contain NUL characters.", field=field)
    return text


def check_ratio(value: object, field: str = "aspectRatio") -> str:
    if value is None:
        return "1:1"
    if not isinstance(value, str) or value not in ASPECT_RATIOS:
        raise ValidationError(f"{field} must be one of {', '.join(ASPECT_RATIOS)}.", field=field)
    return value


def check_template(value: object, field: str = "enhancementOptions.template") -> str:
    if value is None:
        return "general"
    if not isinstance(value, str) or value not in TEMPLATES:
        raise ValidationError(f"template must be one of {', '.join(TEMPLATES)}.", field=field)
    return value


def check_references(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("referenceImages must be a list of strings.", field="referenceImages")
    if len(value) > MAX_REFERENCES:
        raise ValidationError(
            f"At most {MAX_REFERENCES} reference images are accepted.", field="referenceImages"
        )
    return list(value)


def check_flow_id(body: dict[str, Any], field: str = "flowId") -> tuple[bool, str | None]:
    """(given, value): absent → (False, None); null → (True, None); uuid → (True, uuid)."""
    if field not in body:
        return False, None
    value = body[field]
    if value is None:
        return True, None
    if not is_uuid(value):
        raise ValidationError(f"{field} must be a UUID or null.", field=field)
    return True, value.lower()


def parse_generation(body: dict[str, Any], max_meta_bytes: int) -> GenerationInput:
    options = body.get("enhancementOptions")
    if options is not None and not isinstance(options, dict):
        raise ValidationError("enhancementOptions must be an object.", field="enhancementOptions")
    flow_given, flow = check_flow_id(body)
    alias = optional_str(body, "alias")
    flow_alias = optional_str(body, "flowAlias")
    if flow_alias is not None and flow_given and flow is None:
        raise ValidationError("flowAlias needs a flow; flowId is null.", field="flowAlias")
    return GenerationInput(
        prompt=check_prompt(body.get("prompt")),
        aspect_ratio=check_ratio(body.get("aspectRatio")),
        auto_enhance=optional_bool(body, "autoEnhance", True),
        template=check_template((options or {}).get("template")),
        reference_inputs=check_references(body.get("referenceImages")),
        flow=flow,
        flow_given=flow_given,
        alias=check_alias(alias) if alias is not None else None,
        flow_alias=check_alias(flow_alias, "flowAlias") if flow_alias is not None else None,
        meta=meta_field(body, max_meta_bytes) or {},
    )
