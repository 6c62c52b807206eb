"""The API's field types: each pattern and limit defined once, with its check and its schema.

A check here raises `invalid(...)`; `origin/schemas/validation.py` turns it into the 400
envelope naming the field. Regexes are used with fullmatch, so a trailing newline never passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from cache.live_key import SCOPE_PATTERN
from cache.patterns import MAX_PROMPT_CHARS, SLUG_PATTERN, UUID_PATTERN
from origin.generators import ASPECT_RATIOS, TEMPLATES

ALIAS_PATTERN = re.compile(r"@[A-Za-z0-9_-]{1,49}")  # use with fullmatch
TECHNICAL_ALIASES = frozenset({"@last", "@first", "@upload"})  # resolved, never assigned
MAX_REFERENCES = 3
MAX_INT = 2**31 - 1  # an INTEGER column
MAX_OFFSET = 2**62  # past any real table; keeps the value inside a BIGINT
MAX_PAGE = 100
STATUSES = ("pending", "processing", "success", "failed")
SOURCES = ("generated", "uploaded")
KEY_TYPES = ("project", "master")
ERROR_TYPE = "banatie"  # the pydantic error type of the checks below


def invalid(message: str) -> PydanticCustomError:
    """A failed check; `message` follows the field's name ("must be ...")."""
    return PydanticCustomError(ERROR_TYPE, "{message}", {"message": message})


def anchored(pattern: re.Pattern[str]) -> str:
    return f"^{pattern.pattern}$"


def _matching(pattern: re.Pattern[str], message: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise invalid(message)
        return value

    return check


def _one_of(values: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in values:
            raise invalid(f"must be one of {', '.join(values)}.")
        return value

    return check


def _enum(values: tuple[str, ...]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "enum": list(values)})


def _prompt(value: str) -> str:
    text = value.strip()
    if not 1 <= len(text) <= MAX_PROMPT_CHARS:
        raise invalid(f"must be 1 to {MAX_PROMPT_CHARS} characters.")
    if "\x00" in text:
        raise invalid("must not contain NUL characters.")
    return text


def _uuid(value: str) -> str:
    if not UUID_PATTERN.fullmatch(value):
        raise invalid("must be a UUID.")
    return value.lower()


def _alias(value: str) -> str:
    if not ALIAS_PATTERN.fullmatch(value):
        raise invalid(f"must match {ALIAS_PATTERN.pattern}.")
    if value in TECHNICAL_ALIASES:
        raise invalid(f"{value} is a reserved alias and cannot be assigned.")
    return value


def _meta_size(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    limit = (info.context or {}).get("max_meta_bytes")
    if limit is not None and len(json.dumps(value, separators=(",", ":")).encode()) > limit:
        raise invalid(f"is larger than {limit} bytes.")
    return value


def _integral(value: object) -> object:
    """JSON has one number type: 5.0 is the integer 5 (bools stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _query_int(value: object) -> object:
    if isinstance(value, str):
        if not re.fullmatch(r"\d{1,100}", value):
            raise invalid("must be a non-negative integer.")
        return int(value)
    return value


def _query_bool(value: object) -> object:
    if isinstance(value, str):
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0"):
            return False
        raise invalid("must be true or false.")
    return value


UUID_SCHEMA: dict[str, Any] = {
    "type": "string",
    "format": "uuid",
    "pattern": anchored(UUID_PATTERN),
}
ALIAS_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": anchored(ALIAS_PATTERN),
    "not": {"enum": sorted(TECHNICAL_ALIASES)},
}
PROMPT_SCHEMA: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_PROMPT_CHARS,
    "pattern": "^[^\\u0000]*\\S[^\\u0000]*$",  # not blank, no NUL
}

Prompt = Annotated[str, AfterValidator(_prompt), WithJsonSchema(PROMPT_SCHEMA)]
Uuid = Annotated[str, AfterValidator(_uuid), WithJsonSchema(UUID_SCHEMA)]
Alias = Annotated[str, AfterValidator(_alias), WithJsonSchema(ALIAS_SCHEMA)]
# Any alias, technical ones too, as a lookup may name them.
AliasName = Annotated[
    str,
    AfterValidator(_matching(ALIAS_PATTERN, f"must match {ALIAS_PATTERN.pattern}.")),
    WithJsonSchema({"type": "string", "pattern": anchored(ALIAS_PATTERN)}),
]
Scope = Annotated[
    str,
    AfterValidator(_matching(SCOPE_PATTERN, f"must match {SCOPE_PATTERN.pattern}.")),
    WithJsonSchema({"type": "string", "pattern": anchored(SCOPE_PATTERN)}),
]
Slug = Annotated[
    str,
    AfterValidator(_matching(SLUG_PATTERN, "must be 1-64 lowercase letters, digits, '-' or '_'.")),
    WithJsonSchema({"type": "string", "pattern": anchored(SLUG_PATTERN)}),
]
AspectRatio = Annotated[str, AfterValidator(_one_of(ASPECT_RATIOS)), _enum(ASPECT_RATIOS)]
Template = Annotated[str, AfterValidator(_one_of(TEMPLATES)), _enum(TEMPLATES)]
Status = Annotated[str, AfterValidator(_one_of(STATUSES)), _enum(STATUSES)]
Source = Annotated[str, AfterValidator(_one_of(SOURCES)), _enum(SOURCES)]
KeyType = Annotated[str, AfterValidator(_one_of(KEY_TYPES)), _enum(KEY_TYPES)]
Meta = Annotated[dict[str, Any], AfterValidator(_meta_size)]
References = Annotated[list[str], Field(max_length=MAX_REFERENCES)]
JsonInt = Annotated[int, BeforeValidator(_integral)]  # bound it with Field(ge=, le=)


QueryInt = Annotated[
    int,
    BeforeValidator(_query_int),
    WithJsonSchema({"type": "integer", "minimum": 0}),
]
QueryBool = Annotated[bool, BeforeValidator(_query_bool), WithJsonSchema({"type": "boolean"})]
