"""The live index: cache-key digest → where the image is. One file per backend."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Protocol

from cache.settings import Settings


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """What the edge needs to serve a live key without asking the origin."""

    image_id: str
    generation_id: str | None
    object_key: str
    content_type: str
    size: int
    etag: str  # quoted strong ETag, e.g. '"sha256hex"'
    canonical: str  # compared before use, so a digest collision never serves a wrong image

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> LiveRecord:
        return cls(**json.loads(raw))


class Index(Protocol):
    async def get(self, digest: str) -> LiveRecord | None: ...

    async def set(self, digest: str, record: LiveRecord) -> None: ...

    async def delete(self, digest: str) -> None: ...

    async def close(self) -> None: ...


def open_index(settings: Settings) -> Index:
    """Redis when `REDIS_URL` is set (single node or cluster), else in-process."""
    if settings.redis_url:
        from cache.index.redis import RedisIndex

        return RedisIndex.from_url(settings.redis_url)
    from cache.index.memory import MemoryIndex

    return MemoryIndex()
