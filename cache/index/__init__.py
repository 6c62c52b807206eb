"""The live index: cache-key digest → where the image is. One file per backend."""

from __future__ import annotations

from cache.index.base import (
    Index,
    LiveRecord,
)
from cache.settings import Settings

# The interface lives in base.py so the backends, imported lazily below, need not
# import this package back.
__all__ = [
    "Index",
    "LiveRecord",
    "open_index",
]


def open_index(settings: Settings) -> Index:
    """Redis when `REDIS_URL` is set (single node or cluster), else in-process."""
    if settings.redis_url:
        from cache.index.redis import RedisIndex

        return RedisIndex.from_url(settings.redis_url)
    from cache.index.memory import MemoryIndex

    return MemoryIndex()
