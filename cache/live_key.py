"""The canonical live cache key: what makes two live requests "the same image"."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import xxhash

# The live vocabulary, shared by the edge (parsing) and the origin (generating).
ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
TEMPLATES = (
    "general", "photorealistic", "illustration", "minimalist", "sticker", "product", "comic",
)  # fmt: skip
SCOPE_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")  # use with fullmatch

_SPACES = re.compile(r"\s+")
_SEP = "\x1f"  # unit separator: cannot survive prompt normalisation, so fields never blur
VERSION = "v1"


def normalise_prompt(prompt: str) -> str:
    """Unicode NFC, trimmed, inner whitespace runs collapsed to one space."""
    return _SPACES.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


@dataclass(frozen=True, slots=True)
class LiveKey:
    project_id: str
    scope: str  # "" for /api/v1/live
    prompt: str  # already normalised
    aspect_ratio: str
    auto_enhance: bool
    template: str
    model: str

    @property
    def canonical(self) -> str:
        return _SEP.join(
            (
                VERSION,
                self.project_id,
                self.scope,
                self.prompt,
                self.aspect_ratio,
                "1" if self.auto_enhance else "0",
                self.template,
                self.model,
            )
        )

    @property
    def digest(self) -> str:
        """xxh3_128 hex of the canonical bytes: the name in Redis and object storage."""
        return xxhash.xxh3_128_hexdigest(self.canonical.encode())


def live_key(
    project_id: str,
    scope: str,
    prompt: str,
    aspect_ratio: str,
    auto_enhance: bool,
    template: str,
    model: str,
) -> LiveKey:
    return LiveKey(
        project_id,
        scope,
        normalise_prompt(prompt),
        aspect_ratio,
        auto_enhance,
        template,
        model,
    )


def manifest_key(org: str, project: str, digest: str) -> str:
    """Object-store key of the per-key manifest the edge falls back to without Redis."""
    return f"{org}/{project}/live/{digest}.json"


def image_key(org: str, project: str, image_id: str) -> str:
    return f"{org}/{project}/img/{image_id}"
