"""Telling every edge what changed: direct calls in one process, a Redis stream across.

An event names an image that is gone (or whose record changed), a project whose signing
changed, a revoked key, or aliases that moved. Across processes every event is an entry of
one Redis stream, the invalidation log: the origin appends it (XADD, trimmed to about
MAX_LOG_ENTRIES), every edge reads it in order from the last entry it saw (XREAD BLOCK).
Nothing is lost to a moment without Redis:

- an origin that cannot append keeps the event in an outbox, in order, and retries every
  `retry_s` until Redis takes it (the index entries the event names are removed first);
- an edge that loses Redis reads on from where it stopped once Redis is back;
- an edge that cannot know what it missed drops everything it caches: when the log's epoch
  (a random value at EPOCH_KEY, set by the first reader that finds none) changed, because
  Redis lost its data (restart without persistence, FLUSHALL); when entries after its
  position were trimmed; or when it reaches Redis for the first time after a failed try.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cache.index.redis import SOCKET_TIMEOUT_S, record_key

log = logging.getLogger("banatie.invalidation")

STREAM = "banatie:invalidations"
EPOCH_KEY = "banatie:invalidations:epoch"
EVERYTHING = "*"  # image id of the event a bus delivers when it may have missed some
MAX_LOG_ENTRIES = 10_000  # an edge further behind than this drops everything instead
MAX_OUTBOX = 100_000  # events an origin keeps while Redis is away (about 200 bytes each)
READ_BLOCK_MS = 500  # also how often an idle edge compares the epoch
RETRY_S = 0.5
READ_BATCH = 500


@dataclass(frozen=True, slots=True)
class Invalidation:
    image_id: str  # "" when no image changed; EVERYTHING: drop every cached thing
    digests: tuple[str, ...] = ()  # live cache keys that served this image
    project_id: str | None = None  # a project whose settings (signing) changed
    key_hash: str | None = None  # a project key that was revoked (sha256 hex)
    aliases: tuple[tuple[str, str], ...] = ()  # (project id, "@alias") now naming another image

    def to_json(self, sender: str) -> str:
        payload: dict[str, Any] = {"imageId": self.image_id, "digests": list(self.digests)}
        if self.project_id is not None:
            payload["projectId"] = self.project_id
        if self.key_hash is not None:
            payload["keyHash"] = self.key_hash
        if self.aliases:
            payload["aliases"] = [list(pair) for pair in self.aliases]
        payload["from"] = sender
        return json.dumps(payload)

    @classmethod
    def from_json(cls, raw: bytes | str) -> tuple[Invalidation, str]:
        """(event, sender); ValueError, KeyError or TypeError when malformed."""
        payload = json.loads(raw)
        project_id, key_hash = payload.get("projectId"), payload.get("keyHash")
        event = cls(
            str(payload["imageId"]),
            tuple(map(str, payload["digests"])),
            None if project_id is None else str(project_id),
            None if key_hash is None else str(key_hash),
            tuple((str(p), str(a)) for p, a in payload.get("aliases", ())),
        )
        return event, str(payload.get("from", ""))


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


def open_bus(redis_url: str | None) -> InvalidationBus:
    """The invalidation log in Redis when a URL is given (single node or cluster), else direct
    calls within this process."""
    return RedisBus.from_url(redis_url) if redis_url else LocalBus()


class RedisBus:
    """Across processes: the invalidation log in Redis; one reader task per process.

    `publish` calls this process's listeners directly first (the reader skips our own
    entries), so the local edge drops its entries even while Redis is down, then appends the
    event to the log, or leaves it in the outbox for the retry task. It never raises: the
    change it reports has already happened.
    """

    def __init__(
        self,
        client: Any,
        listen_client: Any = None,
        retry_s: float = RETRY_S,
        max_entries: int = MAX_LOG_ENTRIES,
    ) -> None:
        self._redis = client
        self._listen_redis = listen_client if listen_client is not None else client
        self._retry_s = retry_s
        self._max_entries = max_entries
        self._listeners: list[Listener] = []
        self._task: asyncio.Task[None] | None = None
        self._sender = uuid.uuid4().hex  # tags our own entries
        self._outbox: deque[Invalidation] = deque()
        self._appending = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self._new_epoch = False  # the outbox overflowed: every edge must drop everything
        self.subscribed = asyncio.Event()  # set while the reader follows the log

    @classmethod
    def from_url(cls, url: str) -> RedisBus:
        from cache.index.redis import connect

        # The reader's socket waits out a blocking XREAD.
        read_timeout = READ_BLOCK_MS / 1000 + SOCKET_TIMEOUT_S
        return cls(connect(url), listen_client=connect(url, read_timeout, retries=0))

    @property
    def pending(self) -> int:
        """Events published here and not yet in the log."""
        return len(self._outbox)

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- the origin's side: append, or keep and retry -----------------------------------------

    async def publish(self, event: Invalidation) -> None:
        await self._dispatch(event)
        if len(self._outbox) >= MAX_OUTBOX:
            log.error(
                "%d invalidations wait for Redis; dropping them: every edge will drop "
                "everything it caches instead",
                len(self._outbox),
            )
            self._outbox.clear()
            self._new_epoch = True
        self._outbox.append(event)
        if self._retry is not None and not self._retry.done():
            return  # Redis is away: the retry task appends it, in order
        if not await self._append_outbox() and (self._retry is None or self._retry.done()):
            log.warning(
                "invalidation of image %r not in the log yet (Redis unreachable); retrying "
                "every %.1f s",
                event.image_id,
                self._retry_s,
            )
            self._retry = asyncio.get_running_loop().create_task(
                self._retry_until_appended(), name="banatie-invalidation-outbox"
            )

    async def _append_outbox(self) -> bool:
        """Append the outbox to the log, oldest first; False when Redis failed (the rest
        stays queued). An event whose answer was lost is appended again: edges apply an
        event twice without harm."""
        async with self._appending:
            try:
                if self._new_epoch:
                    await self._redis.set(EPOCH_KEY, uuid.uuid4().hex)
                    self._new_epoch = False
                while self._outbox:
                    await self._append(self._outbox[0])
                    self._outbox.popleft()
            except Exception as e:  # REDIS_ERRORS, or a cluster client failing mid-reinitialise
                log.debug("invalidation log unreachable: %s", e)
                return False
        return True

    async def _append(self, event: Invalidation) -> None:
        # The index entries go first: an edge that drops its L1 on this entry must not find
        # the gone image in the index.
        for digest in event.digests:
            await self._redis.delete(record_key(digest))
        await self._redis.xadd(
            STREAM,
            {"event": event.to_json(self._sender)},
            maxlen=self._max_entries,
            approximate=True,
        )

    async def _retry_until_appended(self) -> None:
        while True:
            if await self._append_outbox():
                break
            await asyncio.sleep(self._retry_s)
        log.info("Redis is back: the invalidations that waited are in the log")

    # -- the edge's side: follow the log ------------------------------------------------------

    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._follow(), name="banatie-invalidation-reader"
            )

    async def close(self) -> None:
        tasks = [task for task in (self._task, self._retry) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a Redis client stuck in a read must not hold the shutdown
            await asyncio.wait(tasks, timeout=READ_BLOCK_MS / 1000 + 2 * SOCKET_TIMEOUT_S)
        self._task = self._retry = None
        self.subscribed.clear()
        if self._outbox:  # one last try, then say what is lost
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._append_outbox(), 2 * SOCKET_TIMEOUT_S)
            if self._outbox:
                log.error(
                    "closing with %d invalidations not in the log: edges that cached those "
                    "images keep serving them",
                    len(self._outbox),
                )
        clients = [self._redis] + (
            [self._listen_redis] if self._listen_redis is not self._redis else []
        )
        for client in clients:
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _follow(self) -> None:
        """Read the log from our position; on any Redis error wait a moment and go on."""
        epoch: bytes | None = None
        position: bytes | None = None  # the last entry delivered; None until first contact
        failed = False  # a try failed: before first contact, we may have cached meanwhile
        redis = self._listen_redis
        while True:
            try:
                current = await self._epoch()
                info = await self._log_state()
                last = info[1] if info is not None else b"0-0"
                if position is None or current != epoch or _lost(info, position):
                    if position is not None or failed:
                        log.warning(
                            "invalidations may have been missed (%s); dropping everything cached",
                            "first contact after a failed one" if position is None
                            else "new epoch: Redis lost its data" if current != epoch
                            else "entries after ours were trimmed",
                        )  # fmt: skip
                        await self._dispatch(Invalidation(EVERYTHING))
                    epoch, position = current, last
                if not self.subscribed.is_set():
                    log.info("following the invalidation log from %s", position.decode())
                    self.subscribed.set()
                answer = await redis.xread(
                    {STREAM: position}, count=READ_BATCH, block=READ_BLOCK_MS
                )
                for entry_id, fields in _entries(answer):
                    position = entry_id
                    await self._receive(fields.get(b"event", b""))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # REDIS_ERRORS, or a cluster client failing mid-reinitialise
                if self.subscribed.is_set():
                    log.warning("invalidation reader lost Redis (%s); retrying", e)
                self.subscribed.clear()
                failed = True
                await asyncio.sleep(self._retry_s)

    async def _epoch(self) -> bytes:
        """The log's epoch, set now if Redis has none (it lost its data, or is new)."""
        redis = self._listen_redis
        value: bytes | None = await redis.get(EPOCH_KEY)
        if value is None:
            await redis.set(EPOCH_KEY, uuid.uuid4().hex, nx=True)
            value = await redis.get(EPOCH_KEY)
        # Gone again (flushed meanwhile): an epoch no one has, so the caller resyncs as for None.
        return value if value is not None else b""

    async def _log_state(self) -> tuple[bytes | None, bytes] | None:
        """(id of the oldest entry kept, id of the last entry ever added); None: no log."""
        from redis.exceptions import ResponseError

        try:
            info = await self._listen_redis.xinfo_stream(STREAM)
        except ResponseError as e:
            if "no such key" in str(e).lower():
                return None
            raise
        first = info.get("first-entry")
        return (first[0] if first else None), info["last-generated-id"]

    async def _receive(self, raw: bytes | str) -> None:
        try:
            event, sender = Invalidation.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed invalidation entry %r", raw[:200])
            return
        if sender != self._sender:
            await self._dispatch(event)

    async def _dispatch(self, event: Invalidation) -> None:
        for listener in self._listeners:
            try:
                result = listener(event)
                if result is not None:
                    await result
            except Exception:
                log.exception("invalidation listener failed for image %s", event.image_id)


def _lost(info: tuple[bytes | None, bytes] | None, position: bytes) -> bool:
    """Entries after `position` are gone from the log: trimmed, deleted, or the log is older
    than what we read (Redis restored from an older snapshot)."""
    if info is None:
        return _id(position) != (0, 0)
    first, last = info
    if _id(last) < _id(position):
        return True
    if first is None:
        return _id(last) > _id(position)
    # From (0, 0) (there was no log when we started) every entry kept is ours to read.
    return _id(position) != (0, 0) and _id(first) > _id(position)


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _entries(answer: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's entries, whatever the protocol version shaped them as."""
    if not answer:
        return []
    if isinstance(answer, dict):  # RESP3
        return [entry for entries in answer.values() for entry in entries[0]]
    return [entry for _stream, entries in answer for entry in entries]
