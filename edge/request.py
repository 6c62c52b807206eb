"""The request: its headers, read once, and what a live URL names (route, scope, query).

Both the server protocol's fast path (raw request target and headers) and the ASGI path
(a scope) read a request here, so they cannot disagree on what it asks for.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from cache.asgi import Scope
from cache.errors import ApiError, ValidationError
from cache.live_key import ASPECT_RATIOS, SCOPE_PATTERN, TEMPLATES, LiveKey, normalise_prompt
from cache.patterns import MAX_PROMPT_CHARS
from edge.variants import VariantSpec

Headers = list[tuple[bytes, bytes]]

LIVE_PARAMS = ("prompt", "aspectRatio", "autoEnhance", "template")

REQUEST_ID_PATTERN = re.compile(rb"[\x21-\x7e]{1,128}")  # patterns: fullmatch only
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


# The headers `Request.read` looks at; any other is passed over with one set lookup.
_READ = frozenset(
    (
        b"x-api-key",
        b"if-none-match",
        b"range",
        b"if-range",
        b"x-request-id",
        b"accept",
        b"sec-fetch-dest",
        b"x-forwarded-for",
    )
)


class Request:
    """The headers the edge reads from a request, once; `scope` is None on the fast path.

    Slots set in __init__, not a dataclass: a fast-path hit makes one per request, and a
    twelve-field dataclass __init__ costs twice as much."""

    __slots__ = (
        "accept",
        "api_key",
        "family",
        "fetch_dest",
        "forwarded_for",
        "headers",
        "if_none_match",
        "if_range",
        "method",
        "range",
        "request_id",
        "scope",
    )

    def __init__(self, method: str, headers: Headers, scope: Scope | None = None) -> None:
        self.method = method
        self.headers = headers
        self.scope = scope
        self.api_key: bytes | None = None
        self.if_none_match: bytes | None = None
        self.range: bytes | None = None
        self.if_range: bytes | None = None
        self.request_id: bytes | None = None
        self.forwarded_for: bytes | None = None
        self.accept: bytes | None = None
        self.fetch_dest: bytes | None = None  # Sec-Fetch-Dest: "image" for an <img> load
        self.family = ""  # route family in the metrics; "" when counted by a send wrapper

    @classmethod
    def read(cls, method: str, headers: Headers, scope: Scope | None = None) -> Request:
        request = cls(method, headers, scope)
        for name, value in headers:
            if name not in _READ:
                continue
            if name == b"x-api-key":
                request.api_key = value
            elif name == b"if-none-match":
                request.if_none_match = value
            elif name == b"range":
                request.range = value
            elif name == b"if-range":
                request.if_range = value
            elif name == b"x-request-id":
                request.request_id = value
            elif name == b"accept":
                prior = request.accept
                request.accept = value if prior is None else prior + b"," + value
            elif name == b"sec-fetch-dest":
                request.fetch_dest = value
            else:  # x-forwarded-for: several headers are one list, in order
                prior = request.forwarded_for
                request.forwarded_for = value if prior is None else prior + b"," + value
        return request

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        return cls.read(scope["method"], scope["headers"], scope)

    @property
    def head(self) -> bool:
        return self.method == "HEAD"


@dataclass(frozen=True, slots=True)
class LiveQuery:
    prompt: str  # normalised
    aspect_ratio: str
    auto_enhance: bool
    template: str


@dataclass(slots=True)
class Route:
    """What a live URL names. Its live key is filled in for the project that last asked
    (a URL's project does not change, but who asks is checked on every request)."""

    family: str  # "live" or "cdn_live"
    org: str | None  # None: /api/v1/live (the project comes from the key)
    project: str
    scope: str  # "" for /api/v1/live
    query: LiveQuery
    variant: VariantSpec | None
    # A malformed variant query: reported after who is asking (a 404 or 403 comes first).
    variant_error: ApiError | None = None
    key: LiveKey | None = None
    canonical: str = ""


def live_route_of(
    path: str, query: bytes, parse_variant: Callable[[bytes], VariantSpec | None]
) -> Route | None:
    """The live route of a path and raw query string; None for another route. Bad parameters
    are a 400 (the scope first, then the query; a bad variant query is kept in the route)."""
    if path == "/api/v1/live":
        family, org, project, scope = "live", None, "", ""
    elif path.startswith("/cdn/"):
        parts = path.split("/")  # "", "cdn", org, project, "live", scope
        if len(parts) != 6 or parts[4] != "live":
            return None
        family, org, project, scope = "cdn_live", parts[2], parts[3], parts[5]
        if not SCOPE_PATTERN.fullmatch(scope):
            raise ValidationError("scope must be 1-64 letters, digits, '_' or '-'.", field="scope")
    else:
        return None
    live = parse_live_query(query)
    try:
        return Route(family, org, project, scope, live, parse_variant(query))
    except ApiError as e:
        return Route(family, org, project, scope, live, None, e)


def parse_live_query(raw: bytes) -> LiveQuery:
    """The live parameters from a raw query string; anything malformed is a 400."""
    if _BAD_PERCENT.search(raw):
        raise ValidationError("The query string has a malformed percent-escape.", field="query")
    values: dict[str, str] = {}
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
            value = unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("The query string is not valid UTF-8.", field="query") from None
        if name not in LIVE_PARAMS:
            continue  # cache busters and tracking parameters do not change the image
        if name in values:
            raise ValidationError(f"{name} is given more than once.", field=name)
        if "\x00" in value:
            raise ValidationError(f"{name} contains a NUL character.", field=name)
        values[name] = value

    if "prompt" not in values:
        raise ValidationError("prompt is required.", field="prompt")
    prompt = normalise_prompt(values["prompt"])
    if not prompt:
        raise ValidationError("prompt must not be empty.", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValidationError(
            f"prompt is longer than {MAX_PROMPT_CHARS} characters.", field="prompt"
        )
    ratio = values.get("aspectRatio") or "1:1"
    if ratio not in ASPECT_RATIOS:
        raise ValidationError(
            f"aspectRatio must be one of {', '.join(ASPECT_RATIOS)}.", field="aspectRatio"
        )
    enhance = (values.get("autoEnhance") or "true").lower()
    if enhance not in ("true", "false", "1", "0"):
        raise ValidationError("autoEnhance must be true or false.", field="autoEnhance")
    template = values.get("template") or "general"
    if template not in TEMPLATES:
        raise ValidationError(f"template must be one of {', '.join(TEMPLATES)}.", field="template")
    return LiveQuery(prompt, ratio, enhance in ("true", "1"), template)
