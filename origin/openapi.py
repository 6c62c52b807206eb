"""The OpenAPI 3.1 document: the REST routes from their operations and models, the edge's
image routes (bytes, not JSON; answered by edge/app.py) described here; /docs shows it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from cache.contract import FITS, FORMATS
from cache.live_key import SCOPE_PATTERN
from cache.patterns import SLUG_PATTERN
from origin.envelope import Operation, Resource
from origin.generators import ASPECT_RATIOS, TEMPLATES
from origin.routes import flows, generations, images, keys, live_scopes, live_signing
from origin.schemas.fields import ALIAS_SCHEMA, PROMPT_SCHEMA, UUID_SCHEMA, anchored
from origin.schemas.responses import ErrorOut, Ok, Page

REF = "#/components/schemas/{model}"
# What a caller of each kind may meet besides success (the edge's routes list theirs below).
ERROR_STATUSES = {
    "none": ["400", "403", "429"],
    "master": ["400", "401", "403", "404"],
    "project": ["400", "401", "403", "404", "409", "413", "415", "429", "502", "503"],
}
# Path parameters: ids that are not UUIDs are simply not found, so any string is valid.
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string"},
    "alias": {"type": "string", "pattern": ALIAS_SCHEMA["pattern"]},
    "slug": {"type": "string"},
}
REST_ROUTES = [
    *keys.routes,
    *generations.routes,
    *flows.routes,
    *images.routes,
    *live_scopes.routes,
    *live_signing.routes,
]


def operations(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, str, Operation]]:
    """(method, path, operation) of every described route."""
    for route in routes:
        if isinstance(route, Resource):
            for method, op in route.operations.items():
                yield method, route.path, op


# (method, path, summary, auth) of the REST API: what tests walk to cover every route.
ROUTES = [(m, p, op.summary, op.auth) for m, p, op in operations(REST_ROUTES)]


def _envelope(op: Operation) -> Any:
    """Ok[data] or Page[item]: the model of the success answer."""
    return (Page if op.paged else Ok).__class_getitem__(op.response)


def _schemas(ops: list[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    """Every model the operations use, as components; the key map gives each one's $ref."""
    wanted: list[tuple[type[BaseModel], Any]] = [(ErrorOut, "serialization")]
    for op in ops:
        wanted.append((_envelope(op), "serialization"))
        wanted += [(m, "validation") for m in (op.body, op.form) if m is not None]
    refs, document = models_json_schema(list(dict.fromkeys(wanted)), ref_template=REF)
    return refs, document.get("$defs", {})


def _query(model: type[BaseModel]) -> list[dict[str, Any]]:
    """A query model's fields as parameters (all optional; null is no value in a query)."""
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    params = []
    for name, field in schema["properties"].items():
        options = [s for s in field.get("anyOf", [field]) if s.get("type") != "null"]
        param_schema = dict(options[0])
        if field.get("default") is not None:
            param_schema["default"] = field["default"]
        params.append(
            {"name": name, "in": "query", "required": name in required, "schema": param_schema}
        )
    return params


def _error(description: str = "error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}},
    }


def rest_paths(routes: Iterable[BaseRoute]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) of the described routes."""
    found = list(operations(routes))
    refs, components = _schemas([op for _, _, op in found])
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op in found:
        success = {
            "description": "success",
            "content": {"application/json": {"schema": refs[(_envelope(op), "serialization")]}},
        }
        operation: dict[str, Any] = {
            "summary": op.summary,
            "parameters": [
                {"name": name, "in": "path", "required": True, "schema": schema}
                for name, schema in PATH_SCHEMAS.items()
                if "{" + name + "}" in path
            ]
            + (_query(op.query) if op.query else []),
            "responses": {
                **{str(status): success for status in (op.status, *op.also)},
                **{code: _error() for code in ERROR_STATUSES[op.auth]},
            },
        }
        if op.auth != "none":
            operation["security"] = [{"apiKey": []}]
        if op.body is not None:
            schema = refs[(op.body, "validation")]
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {"application/json": {"schema": schema}},
            }
        if op.form is not None:
            form = components[op.form.__name__]
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            **form,
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                **form["properties"],
                            },
                        }
                    }
                },
            }
        paths.setdefault(path, {})[method] = operation
    return paths, components


# -- the edge's routes: image bytes, not the JSON envelope ------------------------------------

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/avif")
SLUG = {"type": "string", "pattern": anchored(SLUG_PATTERN)}
SCOPE = {"type": "string", "pattern": anchored(SCOPE_PATTERN)}
LIVE_QUERY = [
    {
        "name": "prompt",
        "in": "query",
        "required": True,
        "description": "What to draw; with the other live parameters, the cache key.",
        "schema": PROMPT_SCHEMA,
    },
    {
        "name": "aspectRatio",
        "in": "query",
        "description": "Empty: 1:1.",
        "schema": {"type": "string", "enum": [*ASPECT_RATIOS, ""]},
    },
    {
        "name": "autoEnhance",
        "in": "query",
        "description": "Rewrite the prompt before drawing (default true).",
        "schema": {"type": "string", "enum": ["true", "false", "1", "0", ""]},
    },
    {
        "name": "template",
        "in": "query",
        "description": "Empty: general.",
        "schema": {"type": "string", "enum": [*TEMPLATES, ""]},
    },
]
SIGNED_QUERY = [
    {
        "name": name,
        "in": "query",
        "description": text + " (projects that require signed URLs: POST /api/v1/live/sign).",
        "schema": {"type": "string"},
    }
    for name, text in (("sig", "The URL's signature"), ("expires", "Its end, in epoch seconds"))
]
CONDITIONAL_HEADERS = [
    {
        "name": "If-None-Match",
        "in": "header",
        "description": "An ETag sent before: 304 when it still matches.",
        "schema": {"type": "string"},
    },
    {
        "name": "Range",
        "in": "header",
        "description": "One byte range (`bytes=a-b`, `a-`, `-n`): 206; outside the image: 416; "
        "anything else is ignored.",
        "schema": {"type": "string"},
    },
]


def _variant_query(max_dimension: int) -> list[dict[str, Any]]:
    """?w=&h=&fit=&format=&q=&dpr=: a resized or re-encoded image (README, Image variants)."""
    side = {"type": "integer", "minimum": 1, "maximum": max_dimension}
    return [
        {"name": "w", "in": "query", "description": "Width in CSS pixels.", "schema": side},
        {"name": "h", "in": "query", "description": "Height in CSS pixels.", "schema": side},
        {
            "name": "fit",
            "in": "query",
            "description": "How the image fills w x h (default cover).",
            "schema": {"type": "string", "enum": list(FITS)},
        },
        {
            "name": "format",
            "in": "query",
            "description": "auto: AVIF or WebP as the Accept header allows (Vary: Accept).",
            "schema": {"type": "string", "enum": list(FORMATS)},
        },
        {
            "name": "q",
            "in": "query",
            "description": "Quality of lossy formats.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        {
            "name": "dpr",
            "in": "query",
            "description": "Device pixel ratio: w and h are multiplied by it.",
            "schema": {"type": "number", "minimum": 1, "maximum": 3},
        },
    ]


def _header(text: str) -> dict[str, Any]:
    return {"description": text, "schema": {"type": "string"}}


IMAGE_HEADERS = {
    "ETag": _header("The image's tag, for If-None-Match."),
    "Cache-Control": _header("public, max-age=31536000, immutable (an @alias: max-age=60)."),
    "X-Cache-Status": _header("HIT, or MISS when this request generated or derived it."),
    "X-Image-Id": _header("The image's id."),
}
RATE_HEADERS = {
    "X-RateLimit-Limit": _header("Size of the budget that paid for a MISS."),
    "X-RateLimit-Remaining": _header("What is left of it."),
    "X-RateLimit-Reset": _header("Seconds until it is full again."),
}
CORS_HEADERS = {
    "Access-Control-Allow-Origin": _header("*: any page may draw, read and time the image."),
    "Timing-Allow-Origin": _header("*"),
}


def _image_responses(errors: list[str], cors: bool, rate: bool) -> dict[str, Any]:
    """An image route's answers: the bytes, 206, 304, and errors (JSON; SVG for <img>)."""
    headers = {**IMAGE_HEADERS, **(RATE_HEADERS if rate else {}), **(CORS_HEADERS if cors else {})}
    binary = {media: {"schema": {"type": "string", "format": "binary"}} for media in IMAGE_TYPES}
    error_content = {
        "application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}},
        "image/svg+xml": {
            "schema": {"type": "string"},
            "description": "An image naming the error, for a request that is an image load "
            "(Sec-Fetch-Dest: image, or an Accept preferring images); ERROR_IMAGES=false: JSON.",
        },
    }
    error_headers = {
        "X-Request-Id": _header("The request's id."),
        "Retry-After": _header("Seconds to wait (429, 503)."),
        **(RATE_HEADERS if rate else {}),
        **(CORS_HEADERS if cors else {}),
    }
    return {
        "200": {"description": "the image", "headers": headers, "content": binary},
        "206": {
            "description": "the byte range asked for",
            "headers": {**headers, "Content-Range": _header("bytes a-b/size")},
            "content": binary,
        },
        "304": {"description": "the client's copy (If-None-Match) is current", "headers": headers},
        **{
            code: {"description": "error", "headers": error_headers, "content": error_content}
            for code in errors
        },
    }


def _preflight(*path_params: str) -> dict[str, Any]:
    """OPTIONS: answered for any path of the route, before anything in it is checked."""
    return {
        "summary": "CORS preflight",
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in path_params
        ],
        "responses": {
            "204": {
                "description": "what other origins may do",
                "headers": {
                    "Access-Control-Allow-Origin": _header("*"),
                    "Access-Control-Allow-Methods": _header("GET, HEAD, OPTIONS"),
                    "Access-Control-Allow-Headers": _header("Range, If-None-Match, ..."),
                    "Access-Control-Max-Age": _header("86400"),
                    "Allow": _header("GET, HEAD, OPTIONS"),
                },
            }
        },
    }


def edge_paths(max_dimension: int) -> dict[str, dict[str, Any]]:
    """The routes the edge answers: live images, images by id or alias, metrics."""
    variants = _variant_query(max_dimension)
    org_project = [
        {"name": "org", "in": "path", "required": True, "schema": SLUG},
        {"name": "project", "in": "path", "required": True, "schema": SLUG},
    ]
    live_errors = ["400", "403", "404", "416", "429", "502", "503", "504"]
    return {
        "/api/v1/live": {
            "get": {
                "summary": "A live image for the key's project: generated on the first "
                "request for these parameters, cached ever after",
                "security": [{"apiKey": []}],
                "parameters": [*LIVE_QUERY, *variants, *CONDITIONAL_HEADERS],
                "responses": _image_responses(["401", *live_errors], cors=False, rate=True),
            }
        },
        "/cdn/{org}/{project}/live/{scope}": {
            "parameters": [
                *org_project,
                {"name": "scope", "in": "path", "required": True, "schema": SCOPE},
            ],
            "get": {
                "summary": "A public live image (for <img src>): generated on the first request "
                "for these parameters, cached ever after; new images cost the client IP's "
                "budget (IP_BUDGET_BURST, IP_BUDGET_PER_HOUR)",
                "parameters": [*LIVE_QUERY, *variants, *SIGNED_QUERY, *CONDITIONAL_HEADERS],
                "responses": _image_responses(live_errors, cors=True, rate=True),
            },
            "options": _preflight("org", "project", "scope"),
        },
        "/cdn/{org}/{project}/img/{ref}": {
            "parameters": [
                *org_project,
                {
                    "name": "ref",
                    "in": "path",
                    "required": True,
                    "description": "An image id, or a project alias such as @logo.",
                    "schema": {
                        "anyOf": [
                            UUID_SCHEMA,
                            {"type": "string", "pattern": ALIAS_SCHEMA["pattern"]},
                        ]
                    },
                },
            ],
            "get": {
                "summary": "An image by id (cached for a year) or @alias (for a minute)",
                "parameters": [*variants, *CONDITIONAL_HEADERS],
                "responses": _image_responses(
                    ["400", "403", "404", "416", "503"], cors=True, rate=False
                ),
            },
            "options": _preflight("org", "project", "ref"),
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics; with METRICS_TOKEN set, only for "
                "Authorization: Bearer <token>",
                "responses": {
                    "200": {
                        "description": "the Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "401": {
                        "description": "METRICS_TOKEN is set and was not sent",
                        "content": {
                            "application/json": {"schema": {"$ref": REF.format(model="ErrorOut")}}
                        },
                    },
                },
            }
        },
    }


def openapi_document(
    routes: Iterable[BaseRoute], public_url: str, max_variant_dimension: int = 4096
) -> dict[str, Any]:
    """The document of `routes` (the origin app's) and of the edge's routes."""
    paths, components = rest_paths(routes)
    return {
        "openapi": "3.1.0",
        "info": {"title": "banatie", "version": "0.1.0"},
        "servers": [{"url": public_url}],
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "paths": {**edge_paths(max_variant_dimension), **paths},
    }
