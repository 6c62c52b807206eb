"""Telling every edge that an image is gone: direct calls in one process, Redis pub/sub across."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cache.index.redis import REDIS_ERRORS, open_pubsub

log = logging.getLogger("banatie.invalidation")

CHANNEL = "banatie:invalidate"
EVERYTHING = "*"  # image id of the event a bus sends when it may have missed some


@dataclass(frozen=True, slots=True)
class Invalidation:
    image_id: str  # "" when only a project changed
    digests: tuple[str, ...]  # live cache keys that served this image
    project_id: str | None = None  # a project whose settings (signing) changed


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


class RedisBus:
    """Across processes: Invalidation as JSON on CHANNEL; one listener task per process.

    `publish` also calls this process's listeners directly (and the listener skips its own
    messages), so the local edge drops its entries even while Redis is down. A publish that
    cannot reach Redis is logged, not raised: the delete it reports has already happened.

    Pub/sub keeps nothing for a listener that is away, so after the listener loses Redis and
    subscribes again it delivers `Invalidation(EVERYTHING, ())`: listeners drop whatever
    they cached, as they may have missed a delete. (Its connection never retries silently,
    so no such gap goes unnoticed.)
    """

    def __init__(self, client: Any, listen_client: Any = None, retry_s: float = 1.0) -> None:
        self._redis = client
        self._listen_redis = listen_client if listen_client is not None else client
        self._retry_s = retry_s
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._origin = uuid.uuid4().hex  # tags our own messages
        self.subscribed = asyncio.Event()  # set while the listener holds its subscription

    @classmethod
    def from_url(cls, url: str) -> RedisBus:
        from cache.index.redis import connect

        return cls(connect(url), listen_client=connect(url, retries=0))

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def publish(self, event: Invalidation) -> None:
        await self._dispatch(event)
        payload = {"imageId": event.image_id, "digests": list(event.digests), "from": self._origin}
        if event.project_id is not None:
            payload["projectId"] = event.project_id
        message = json.dumps(payload)
        try:
            await self._redis.publish(CHANNEL, message)
        except Exception as e:  # REDIS_ERRORS, or a cluster client failing mid-reinitialise
            log.warning(
                "invalidation of image %s not published (Redis down: %s)", event.image_id, e
            )

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="banatie-invalidation-listener"
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self.subscribed.clear()
        clients = [self._redis] + (
            [self._listen_redis] if self._listen_redis is not self._redis else []
        )
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self) -> None:
        """Subscribe, deliver, and on any Redis error wait a moment and subscribe again."""
        lost = False
        while True:
            pubsub = None
            try:
                pubsub = await open_pubsub(self._listen_redis)
                await pubsub.subscribe(CHANNEL)
                self.subscribed.set()
                if lost:
                    log.info("invalidation listener is back; dropping cached entries")
                    await self._dispatch(Invalidation(EVERYTHING, ()))
                    lost = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._receive(message["data"])
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as e:
                if self.subscribed.is_set():
                    log.warning("invalidation listener lost Redis (%s); reconnecting", e)
                self.subscribed.clear()
                lost = True
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(self._retry_s)

    async def _receive(self, raw: bytes | str) -> None:
        try:
            payload = json.loads(raw)
            if payload.get("from") == self._origin:
                return
            project_id = payload.get("projectId")
            event = Invalidation(
                str(payload["imageId"]),
                tuple(map(str, payload["digests"])),
                None if project_id is None else str(project_id),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed invalidation message %r", raw[:200])
            return
        await self._dispatch(event)

    async def _dispatch(self, event: Invalidation) -> None:
        for listener in self._listeners:
            try:
                result = listener(event)
                if result is not None:
                    await result
            except Exception:
                log.exception("invalidation listener failed for image %s", event.image_id)
