"""The OpenAPI 3 document of every route (the edge's image routes too); /docs shows it."""

from __future__ import annotations

from typing import Any

from cache.variants import FITS, FORMATS
from origin.generators import ASPECT_RATIOS
from origin.generators import TEMPLATES as GENERATOR_TEMPLATES

ENVELOPE_ERROR = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        },
    },
}
RATIOS = list(ASPECT_RATIOS)
TEMPLATES = list(GENERATOR_TEMPLATES)
ALIAS_RE = "^@[A-Za-z0-9_-]{1,49}$"
RESERVED = {"not": {"enum": ["@last", "@first", "@upload"]}}
ALIAS = {"type": "string", "pattern": ALIAS_RE, **RESERVED}
ALIAS_OR_NULL = {"anyOf": [{"type": "null"}, ALIAS]}
UUID_RE = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
UUID = {"type": "string", "format": "uuid", "pattern": UUID_RE}
UUID_OR_NULL = {"anyOf": [{"type": "null"}, UUID]}
META = {"type": ["object", "null"]}

# Any: the schemas below reuse parts of these by key.
GENERATION_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        "prompt": {
            "type": "string",
            "minLength": 1,
            "maxLength": 5000,
            "pattern": "^[^\\u0000]*\\S[^\\u0000]*$",
        },
        "aspectRatio": {"enum": [*RATIOS, None]},
        "referenceImages": {"type": ["array", "null"], "items": {"type": "string"}, "maxItems": 3},
        "flowId": UUID_OR_NULL,
        "alias": ALIAS_OR_NULL,
        "flowAlias": ALIAS_OR_NULL,
        "autoEnhance": {"type": ["boolean", "null"]},
        "enhancementOptions": {
            "type": ["object", "null"],
            "properties": {"template": {"enum": [*TEMPLATES, None]}},
        },
        "meta": META,
    },
}
RETRY_BODY = {
    "type": "object",
    "properties": {
        k: GENERATION_BODY["properties"][k]
        for k in ("prompt", "aspectRatio", "autoEnhance", "referenceImages")
    },
}
SCOPE_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "slug": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "allowNewGenerations": {"type": ["boolean", "null"]},
        "newGenerationsLimit": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000000},
        "meta": META,
    },
}
SCOPE_UPDATE = {
    "type": "object",
    "properties": {k: v for k, v in SCOPE_BODY["properties"].items() if k != "slug"},
}
IMAGE_UPDATE = {
    "type": "object",
    "properties": {
        "alias": ALIAS_OR_NULL,
        "focalPoint": {
            "type": ["object", "null"],
            "required": ["x", "y"],
            "properties": {
                "x": {"type": "number", "minimum": 0, "maximum": 1},
                "y": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        "meta": META,
    },
}
SIGN_BODY = {
    "type": "object",
    "description": "Either `path` (a live CDN URL or path of this project), or `scope` and "
    "`prompt` with the other live parameters.",
    "properties": {
        "path": {"type": "string", "maxLength": 16384},
        "scope": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
        "prompt": GENERATION_BODY["properties"]["prompt"],
        "aspectRatio": {"enum": [*RATIOS, None]},
        "autoEnhance": {"type": ["boolean", "null"]},
        "template": {"enum": [*TEMPLATES, None]},
        "expiresInSeconds": {"type": ["integer", "null"], "minimum": 1, "maximum": 315360000},
    },
}
SIGNING_BODY = {
    "type": "object",
    "required": ["requireSignedUrls"],
    "properties": {"requireSignedUrls": {"type": "boolean"}},
}
KEY_BODY = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["project", "master"]},
        "organizationSlug": {"type": "string"},
        "projectSlug": {"type": "string"},
        "name": {"type": "string"},
        "expiresInDays": {"type": "integer", "minimum": 1, "maximum": 3650},
    },
}
UPLOAD_BODY = {
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "alias": {"type": "string"},
                    "flowId": {"type": "string"},
                    "flowAlias": {"type": "string"},
                    "meta": {"type": "string"},
                },
            }
        }
    }
}

PAGING = ["limit", "offset"]

# (method, path, summary, body schema, query params, success status, auth)
ROUTES: list[tuple[str, str, str, Any, list[str], int, str]] = [
    ("get", "/health", "Liveness", None, [], 200, "none"),
    ("get", "/ready", "Readiness of database, storage and cache", None, [], 200, "none"),
    (
        "post",
        "/api/bootstrap/initial-key",
        "Create the first master key: only while no key exists, from loopback or with the "
        "X-Bootstrap-Token printed at start",
        None,
        [],
        201,
        "none",
    ),
    ("post", "/api/admin/keys", "Create a key", KEY_BODY, [], 201, "master"),
    ("get", "/api/admin/keys", "List keys", None, [], 200, "master"),
    ("delete", "/api/admin/keys/{id}", "Revoke a key", None, [], 200, "master"),
    ("post", "/api/v1/generations", "Create a generation", GENERATION_BODY, [], 201, "project"),
    (
        "get",
        "/api/v1/generations",
        "List generations",
        None,
        [*PAGING, "status", "flowId", "includeDeleted"],
        200,
        "project",
    ),
    ("get", "/api/v1/generations/{id}", "Get a generation", None, [], 200, "project"),
    (
        "put",
        "/api/v1/generations/{id}",
        "Edit meta and flowId",
        {"type": "object", "properties": {"meta": META, "flowId": UUID_OR_NULL}},
        [],
        200,
        "project",
    ),
    ("delete", "/api/v1/generations/{id}", "Soft-delete a generation", None, [], 200, "project"),
    (
        "post",
        "/api/v1/generations/{id}/retry",
        "Retry a failed generation",
        RETRY_BODY,
        [],
        200,
        "project",
    ),
    (
        "post",
        "/api/v1/generations/{id}/regenerate",
        "Regenerate as a new image",
        None,
        [],
        200,
        "project",
    ),
    (
        "post",
        "/api/v1/flows",
        "Create a flow",
        {"type": "object", "properties": {"meta": META}},
        [],
        201,
        "project",
    ),
    ("get", "/api/v1/flows", "List flows", None, PAGING, 200, "project"),
    ("get", "/api/v1/flows/{id}", "Get a flow", None, [], 200, "project"),
    ("delete", "/api/v1/flows/{id}", "Delete a flow", None, [], 200, "project"),
    ("get", "/api/v1/flows/{id}/generations", "A flow's generations", None, PAGING, 200, "project"),
    ("get", "/api/v1/flows/{id}/images", "A flow's images", None, PAGING, 200, "project"),
    (
        "post",
        "/api/v1/flows/{id}/regenerate",
        "Regenerate the flow's newest generation as a new image",
        None,
        [],
        200,
        "project",
    ),
    (
        "put",
        "/api/v1/flows/{id}/aliases",
        "Merge flow aliases",
        {
            "type": "object",
            "required": ["aliases"],
            "properties": {"aliases": {"type": "object", "additionalProperties": UUID}},
        },
        [],
        200,
        "project",
    ),
    (
        "delete",
        "/api/v1/flows/{id}/aliases/{alias}",
        "Remove a flow alias",
        None,
        [],
        200,
        "project",
    ),
    ("post", "/api/v1/images/upload", "Upload an image", UPLOAD_BODY, [], 201, "project"),
    (
        "get",
        "/api/v1/images",
        "List images",
        None,
        [*PAGING, "source", "flowId", "alias", "includeDeleted"],
        200,
        "project",
    ),
    ("get", "/api/v1/images/resolve/{alias}", "Resolve an alias", None, ["flowId"], 200, "project"),
    ("get", "/api/v1/images/{id}", "Get an image by id or alias", None, ["flowId"], 200, "project"),
    (
        "put",
        "/api/v1/images/{id}",
        "Update alias, focal point, meta",
        IMAGE_UPDATE,
        [],
        200,
        "project",
    ),
    (
        "put",
        "/api/v1/images/{id}/alias",
        "Set the project alias",
        {
            "type": "object",
            "required": ["alias"],
            "properties": {"alias": ALIAS_OR_NULL},
        },
        [],
        200,
        "project",
    ),
    ("delete", "/api/v1/images/{id}", "Soft-delete an image", None, [], 200, "project"),
    (
        "post",
        "/api/v1/live/scopes",
        "Create a live scope",
        {**SCOPE_BODY, "required": ["slug"]},
        [],
        201,
        "project",
    ),
    ("get", "/api/v1/live/scopes", "List live scopes", None, PAGING, 200, "project"),
    ("get", "/api/v1/live/scopes/{slug}", "Get a live scope", None, [], 200, "project"),
    ("put", "/api/v1/live/scopes/{slug}", "Update a live scope", SCOPE_UPDATE, [], 200, "project"),
    ("delete", "/api/v1/live/scopes/{slug}", "Delete a live scope", None, [], 200, "project"),
    (
        "post",
        "/api/v1/live/scopes/{slug}/regenerate",
        "A new image for each live key of the scope, or for the one serving imageId",
        {"type": "object", "properties": {"imageId": UUID_OR_NULL}},
        [],
        200,
        "project",
    ),
    ("post", "/api/v1/live/sign", "Sign a live CDN URL", SIGN_BODY, [], 200, "project"),
    ("get", "/api/v1/live/signing", "Signed-URL settings (no secrets)", None, [], 200, "project"),
    (
        "put",
        "/api/v1/live/signing",
        "Require signed live URLs",
        SIGNING_BODY,
        [],
        200,
        "project",
    ),
    (
        "post",
        "/api/v1/live/signing/rotate",
        "New signing secret (shown once); the current one stays valid as the previous",
        None,
        [],
        200,
        "project",
    ),
]

QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 0},
    "offset": {"type": "integer", "minimum": 0},
    "status": {"type": "string", "enum": ["pending", "processing", "success", "failed"]},
    "flowId": UUID,
    "includeDeleted": {"type": "boolean"},
    "source": {"type": "string", "enum": ["generated", "uploaded"]},
    "alias": {"type": "string"},
}

PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": {"type": "string"},
    "alias": {"type": "string", "pattern": ALIAS_RE},
    "slug": {"type": "string"},
}
OPTIONAL_BODIES = {
    ("post", "/api/v1/flows"),
    ("post", "/api/v1/generations/{id}/retry"),
    ("post", "/api/bootstrap/initial-key"),
    ("post", "/api/v1/live/scopes/{slug}/regenerate"),
}

ERROR_STATUSES = {
    "none": ["400", "403", "429"],
    "master": ["400", "401", "403", "404"],
    "project": ["400", "401", "403", "404", "409", "413", "415", "429", "502", "503"],
}


# -- the edge's routes: image bytes, not the JSON envelope ------------------------------------

IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/avif")
SLUG = {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$"}
SCOPE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
LIVE_QUERY = [
    {
        "name": "prompt",
        "in": "query",
        "required": True,
        "description": "What to draw; with the other live parameters, the cache key.",
        "schema": GENERATION_BODY["properties"]["prompt"],
    },
    {
        "name": "aspectRatio",
        "in": "query",
        "description": "Empty: 1:1.",
        "schema": {"type": "string", "enum": [*RATIOS, ""]},
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
        "application/json": {"schema": ENVELOPE_ERROR},
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
                    "schema": {"anyOf": [UUID, {"type": "string", "pattern": ALIAS_RE}]},
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
                        "content": {"application/json": {"schema": ENVELOPE_ERROR}},
                    },
                },
            }
        },
    }


def openapi_document(public_url: str, max_variant_dimension: int = 4096) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = edge_paths(max_variant_dimension)
    for method, path, summary, body, query, status, auth in ROUTES:
        params = [
            {"name": name, "in": "path", "required": True, "schema": PATH_SCHEMAS[name]}
            for name in ("id", "alias", "slug")
            if "{" + name + "}" in path
        ] + [{"name": q, "in": "query", "schema": QUERY_SCHEMAS[q]} for q in query]
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": params,
            "responses": {
                str(status): {
                    "description": "success",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["success"],
                                "properties": {"success": {"type": "boolean", "enum": [True]}},
                            }
                        }
                    },
                },
                **{
                    code: {
                        "description": "error",
                        "content": {"application/json": {"schema": ENVELOPE_ERROR}},
                    }
                    for code in ERROR_STATUSES[auth]
                },
            },
        }
        if path == "/api/v1/generations" and method == "post":
            operation["responses"]["202"] = operation["responses"]["201"]
        if auth != "none":
            operation["security"] = [{"apiKey": []}]
        if body is not None:
            content = (
                body if "content" in body else {"content": {"application/json": {"schema": body}}}
            )
            operation["requestBody"] = {
                "required": (method, path) not in OPTIONAL_BODIES,
                **content,
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "banatie", "version": "0.1.0"},
        "servers": [{"url": public_url}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}
        },
        "paths": paths,
    }
