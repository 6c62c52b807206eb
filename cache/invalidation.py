"""Telling every edge that an image is gone: direct calls in one process, Redis pub/sub across."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

CHANNEL = "banatie:invalidate"


@dataclass(frozen=True, slots=True)
class Invalidation:
    image_id: str
    digests: tuple[str, ...]  # live cache keys that served this image


Listener = Callable[[Invalidation], Awaitable[None] | None]


class InvalidationBus(Protocol):
    def subscribe(self, listener: Listener) -> None: ...

    async def publish(self, event: Invalidation) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalBus:
    """One process: the origin's publish reaches the edge's listeners directly."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, event: Invalidation) -> None:
        for listener in self._listeners:
            result = listener(event)
            if result is not None:
                await result

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
