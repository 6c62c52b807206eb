"""What the edge asks of the origin: the same calls in-process or over HTTP."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from cache.index import LiveRecord

# The variant query's vocabulary (`?fit=`, `?format=`): the edge parses it (edge/variants.py),
# the origin's OpenAPI document lists it.
FITS = ("cover", "contain", "fill", "inside")
FORMATS = ("auto", "webp", "avif", "jpeg", "png")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A project key as the edge caches it (by SHA-256 of the secret)."""

    key_id: str
    project_id: str
    organization_slug: str
    project_slug: str


@dataclass(frozen=True, slots=True)
class ProjectRef:
    """A project as the edge caches it, with what a hit needs to authorise a live URL."""

    project_id: str
    organization_slug: str
    project_slug: str
    require_signed: bool = False  # live CDN URLs must carry a valid `sig`
    signing_secrets: tuple[str, ...] = ()  # that verify, current first (at most two)


@dataclass(frozen=True, slots=True)
class LiveParams:
    """One live miss. `key_id` for /api/v1/live (per-key budget), `client_ip` for the CDN form."""

    project_id: str
    organization_slug: str
    project_slug: str
    scope: str  # "" for /api/v1/live
    prompt: str
    aspect_ratio: str = "1:1"
    auto_enhance: bool = True
    template: str = "general"
    key_id: str | None = None
    client_ip: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LiveResult:
    record: LiveRecord
    created: bool  # True when this call ran the generation (a MISS that paid)
    rate_headers: dict[str, str]  # X-RateLimit-* of the bucket a generating miss spent from
    body: bytes | None = None  # the image, when the origin runs in the edge's process
    model_ms: float | None = None  # of the generation: time spent waiting on the model


class OriginAPI(Protocol):
    @property
    def model(self) -> str:
        """Model identity: part of every live cache key."""
        ...

    async def key(self, key_hash: str) -> KeyRef | None:
        """The live project key with this hash, or None (unknown, revoked, expired, master)."""
        ...

    async def project(self, organization_slug: str, project_slug: str) -> ProjectRef | None: ...

    async def live(self, params: LiveParams) -> LiveResult:
        """Existing image for the params' cache key, or generate it once. Raises ApiError."""
        ...

    async def image(self, project_id: str, ref: str) -> LiveRecord:
        """A live image by id or project alias (`@name`); raises ImageNotFound/AliasNotFound."""
        ...
