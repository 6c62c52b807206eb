"""The generator role's interface and its request/response types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from cache.live_key import TEMPLATES as TEMPLATES  # re-exported: the generators' templates

# Gemini's pixel size for each ratio of cache.live_key.ASPECT_RATIOS.
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "9:16": (768, 1344),
    "4:3": (1184, 864),
    "3:4": (864, 1184),
    "3:2": (1248, 832),
    "2:3": (832, 1248),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "21:9": (1536, 672),
}


@dataclass(frozen=True)
class ReferenceImage:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    mime_type: str
    model: str


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    aspect_ratio: str = "1:1"
    references: tuple[ReferenceImage, ...] = field(default_factory=tuple)


class GeneratorError(Exception):
    """The model refused or failed for this request (→ GENERATION_FAILED, 502)."""


class GeneratorUnavailable(Exception):
    """The model could not be reached, timed out or kept rate-limiting (→ 503)."""


class Generator(Protocol):
    """Turns a prompt into image bytes, and rewrites prompts for autoEnhance."""

    name: str
    model: str  # model identity, part of every live cache key

    async def generate(self, request: ImageRequest) -> GeneratedImage: ...

    async def enhance(self, prompt: str, template: str) -> str: ...

    async def close(self) -> None: ...
