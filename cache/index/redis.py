"""The live index in Redis (single node or Redis Cluster), plus the cross-process lock.

Keys carry a hash tag so a key's record and lock share one cluster slot:
`live:{<digest>}` holds the LiveRecord JSON, `lock:{<digest>}` the leader's token.
Ready notifications go to one channel, `banatie:ready`, with the digest as the message, so
each process needs a single subscription (one listener task) whatever the number of waiters;
in a cluster a plain PUBLISH reaches every node, so any node serves that subscription.

Redis being down must never cost a request more than a moment: sockets time out after
`socket_timeout` (0.5 s), and after a failure every call fails at once (IndexUnavailable)
until `retry_s` has passed, when one call tries again. The client reconnects by itself.

Cluster or not is chosen from the URL: `redis+cluster://host:port` or `rediss+cluster://`, or
`?cluster=true` on a plain `redis://` URL, gives a RedisCluster (the node named is the startup
node); anything else a single Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from cache.index.base import LiveRecord

log = logging.getLogger("banatie.redis")

READY_CHANNEL = "banatie:ready"
SOCKET_TIMEOUT_S = 0.5
RETRY_S = 1.0
MAX_CONNECTIONS = 4096

T = TypeVar("T")

# Errors meaning "the server is not there" (as opposed to a bad command).
_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    asyncio.TimeoutError,
)
with contextlib.suppress(ImportError):
    from redis.exceptions import ClusterDownError, MasterDownError, RedisClusterException

    # RedisClusterException ("cannot be connected", no slot owner) is not a RedisError.
    _DOWN_ERRORS = (*_DOWN_ERRORS, ClusterDownError, MasterDownError, RedisClusterException)

# Everything a Redis call may raise when Redis (single or cluster) is away or refuses.
REDIS_ERRORS: tuple[type[BaseException], ...] = (*_DOWN_ERRORS, RedisError)


def record_key(digest: str) -> str:
    """The Redis key of a live key's record (hash-tagged with its lock)."""
    return f"live:{{{digest}}}"


class IndexUnavailable(ConnectionError):
    """Redis cannot be reached right now; callers treat it as an index miss."""


_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""


async def open_pubsub(client: aioredis.Redis | RedisCluster) -> Any:
    """A PubSub on `client`, subscribed with plain SUBSCRIBE.

    In a cluster, redis-py's ClusterPubSub subscribes on the node owning the channel's slot,
    which it looks up in the client's slot cache: empty until the client has run a command, and
    then subscribe fails with a KeyError, so the client is initialised first. One node is
    enough: a plain PUBLISH is forwarded to every node over the cluster bus, so a subscriber on
    any node hears every message (sharded SPUBLISH would not be, and is not used).
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
    return client.pubsub()


def connect(
    url: str, socket_timeout: float = SOCKET_TIMEOUT_S, retries: int = 1
) -> aioredis.Redis | RedisCluster:
    """A client for `url`: RedisCluster for `redis+cluster://` or `?cluster=true`, else Redis.

    `retries` immediate retries per command: one replaces a pooled connection gone stale after
    a Redis restart on the spot, while a server that is really down still fails fast.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    cluster_flag = [v for k, v in query if k == "cluster"]
    cluster = parts.scheme.endswith("+cluster") or (
        bool(cluster_flag) and cluster_flag[-1].lower() in ("1", "true", "yes")
    )
    scheme = parts.scheme.removesuffix("+cluster")
    plain = urlunsplit(
        (scheme, parts.netloc, parts.path, urlencode([(k, v) for k, v in query if k != "cluster"]),
         parts.fragment)
    )  # fmt: skip
    options: dict[str, Any] = dict(
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), retries),
        # redis-py's asyncio pool stops at 100 connections with ConnectionError("Too many
        # connections"), which _call reads as "Redis is down" for RETRY_S: a herd would switch
        # off the cross-process lock. The real bound is the edge's own concurrency.
        max_connections=MAX_CONNECTIONS,
    )
    if cluster:
        return RedisCluster.from_url(plain, **options)
    return aioredis.Redis.from_url(plain, **options)


class RedisIndex:
    """Index over Redis, with the lock and ready-notification primitives the coalescer uses."""

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        retry_s: float = RETRY_S,
        listen_client: aioredis.Redis | RedisCluster | None = None,
    ) -> None:
        self._redis = client
        # The subscription on a client of its own: a cluster client that reinitialises after
        # an error drops every connection it holds, the subscribed one included.
        self._listen_redis = listen_client if listen_client is not None else client
        self._retry_s = retry_s
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self.healthy = True
        self._retry_at = 0.0
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closed = False
        self.listening = asyncio.Event()  # set while the ready listener holds its subscription

    @classmethod
    def from_url(cls, url: str, socket_timeout: float = SOCKET_TIMEOUT_S) -> RedisIndex:
        return cls(
            connect(url, socket_timeout), listen_client=connect(url, socket_timeout, retries=0)
        )

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        return self._redis

    # -- the Index protocol -----------------------------------------------------------------

    async def get(self, digest: str) -> LiveRecord | None:
        raw = await self._call(lambda: self._redis.get(record_key(digest)))
        if raw is None:
            return None
        try:
            return LiveRecord.from_json(raw)
        except (ValueError, TypeError):
            log.warning("ignoring unreadable index entry live:{%s}", digest)
            return None

    async def set(self, digest: str, record: LiveRecord) -> None:
        await self._call(lambda: self._redis.set(record_key(digest), record.to_json()))

    async def delete(self, digest: str) -> None:
        await self._call(lambda: self._redis.delete(record_key(digest)))

    async def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()
        for client in {id(c): c for c in (self._redis, self._listen_redis)}.values():
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- cross-process coalescing -----------------------------------------------------------

    async def acquire(self, digest: str, token: str, lease_ms: int) -> bool:
        """Take the key's lock for `lease_ms` unless someone holds it."""
        done = await self._call(
            lambda: self._redis.set(f"lock:{{{digest}}}", token, nx=True, px=lease_ms)
        )
        return bool(done)

    async def renew(self, digest: str, token: str, lease_ms: int) -> bool:
        """Extend our lease; False when the lock is no longer ours (it lapsed)."""
        keys, args = [f"lock:{{{digest}}}"], [token, str(lease_ms)]
        return bool(await self._call(lambda: self._renew(keys=keys, args=args)))

    async def release(self, digest: str, token: str) -> bool:
        """Delete the lock if it is still ours."""
        keys, args = [f"lock:{{{digest}}}"], [token]
        return bool(await self._call(lambda: self._release(keys=keys, args=args)))

    async def notify(self, digest: str) -> None:
        """Tell every process waiting on `digest` that its record is in the index."""
        await self._call(lambda: self._redis.publish(READY_CHANNEL, digest))

    async def wait_ready(self, digest: str, wait_s: float) -> bool:
        """Wait up to `wait_s` for a ready notification; False on timeout (or Redis down).

        Pub/sub may drop messages, so callers re-check the index after this either way.
        """
        self._ensure_listener()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(digest, set())
        waiters.add(future)
        try:
            await asyncio.wait_for(future, wait_s)
            return True
        except TimeoutError:
            return False
        finally:
            waiters.discard(future)
            if not waiters and self._waiters.get(digest) is waiters:
                del self._waiters[digest]

    # -- health -----------------------------------------------------------------------------

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        if not self.healthy:
            if now < self._retry_at:
                raise IndexUnavailable("Redis is down (retrying soon)")
            self._retry_at = now + self._retry_s  # others keep failing fast while we probe
        try:
            result = await command()
        except _DOWN_ERRORS as e:
            self._mark_down(e)
            raise IndexUnavailable(f"Redis is down: {e}") from e
        except REDIS_ERRORS as e:
            raise IndexUnavailable(f"Redis error: {e}") from e
        except Exception as e:
            # redis-py's cluster client, reinitialising after a timeout, closes connections
            # other commands are using; they fail with AttributeError and the like. The index
            # is a cache: whatever goes wrong in it is a miss, never a failed request.
            log.warning("Redis client failed (%s: %s); treating it as a miss", type(e).__name__, e)
            raise IndexUnavailable(f"Redis client error: {e}") from e
        if not self.healthy:
            log.info("Redis is back")
            self.healthy = True
        return result

    def _mark_down(self, error: BaseException) -> None:
        if self.healthy:
            log.warning("Redis is down (%s); retrying every %.1f s", error, self._retry_s)
        self.healthy = False
        self._retry_at = time.monotonic() + self._retry_s

    # -- the one pub/sub listener of this process --------------------------------------------

    def _ensure_listener(self) -> None:
        if self._closed:
            return
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(
                self._listen(), name="banatie-ready-listener"
            )

    async def _listen(self) -> None:
        while not self._closed:
            pubsub = None
            try:
                pubsub = await open_pubsub(self._listen_redis)
                await pubsub.subscribe(READY_CHANNEL)
                self.listening.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._wake(message["data"])
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as e:
                self.listening.clear()
                self._mark_down(e)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
            await asyncio.sleep(self._retry_s)

    def _wake(self, data: bytes | str) -> None:
        digest = data.decode() if isinstance(data, bytes) else data
        for future in self._waiters.get(digest, ()):
            if not future.done():
                future.set_result(None)
