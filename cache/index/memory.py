"""In-process index for a single process without Redis."""

from __future__ import annotations

from cache.index.base import LiveRecord


class MemoryIndex:
    def __init__(self) -> None:
        self._records: dict[str, LiveRecord] = {}

    async def get(self, digest: str) -> LiveRecord | None:
        return self._records.get(digest)

    async def set(self, digest: str, record: LiveRecord) -> None:
        self._records[digest] = record

    async def delete(self, digest: str) -> None:
        self._records.pop(digest, None)

    async def close(self) -> None:
        return None
