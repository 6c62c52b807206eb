"""One generation per key: in this process (one task per key), and across processes (a lock).

In-process, the first caller for a key starts a task and every caller awaits it through
`asyncio.shield`, so a client that disconnects never cancels the work: the image is finished
and stored for the next request. A failure (5xx, or any non-API error) answers the task's
callers, is remembered for `failure_ttl_s`, then forgotten so the next request tries again.
A refusal (4xx: the leading caller's budget, say) is its caller's alone: the others retry
with their own factory.

Across processes (when given `locks`, e.g. a RedisIndex), the task's leader holds
`lock:{key}` with a lease it renews every lease/3; the other processes wait for the ready
notification or poll `check` with a backoff of 50 ms → 500 ms, and take the lock over when
the lease lapses without a result. If Redis is down, the in-process task simply produces:
the origin's unique live row is the last guard against paying twice.

The cap on concurrent work counts the keys in flight in this process, whether it generates
them or waits on another process's lock: either way the count is bounded and nothing queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar, runtime_checkable

from cache.errors import ApiError, GatewayTimeout, UpstreamUnavailable

log = logging.getLogger("banatie.coalesce")

T = TypeVar("T")

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 0.5
JOIN_ATTEMPTS = 3


@runtime_checkable
class Locks(Protocol):
    """The cross-process primitives (RedisIndex has them). Raise ConnectionError when down."""

    async def acquire(self, digest: str, token: str, lease_ms: int) -> bool: ...

    async def renew(self, digest: str, token: str, lease_ms: int) -> bool: ...

    async def release(self, digest: str, token: str) -> bool: ...

    async def notify(self, digest: str) -> None: ...

    async def wait_ready(self, digest: str, wait_s: float) -> bool: ...


class Coalescer(Generic[T]):
    """`await run(key, factory)`: the factory runs once per key at a time, across callers."""

    def __init__(
        self,
        max_concurrent: int,
        timeout_s: float,
        failure_ttl_s: float = 5.0,
        locks: Locks | None = None,
        lease_ms: int = 10_000,
        retry_after_s: int = 5,
        busy: str = "Too many images are being generated right now; try again shortly.",
        clock: Callable[[], float] = time.monotonic,  # when remembered failures expire
    ) -> None:
        self.clock = clock
        self.max_concurrent = max_concurrent
        self.busy = busy  # the 503's message over the cap: names what is being made
        self.timeout_s = timeout_s
        self.failure_ttl_s = failure_ttl_s
        self.locks = locks
        self.lease_ms = lease_ms
        self.retry_after_s = retry_after_s
        self._tasks: dict[str, asyncio.Task[T]] = {}
        # Insertion order is expiry order (one ttl), so expired failures sit at the front.
        self._failures: OrderedDict[str, tuple[BaseException, float]] = OrderedDict()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def run(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]],
        check: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """The key's result: from the task in flight, or a new one running `factory`.

        `check` finds a result another process produced (used while waiting on its lock).
        Over the concurrency cap → UpstreamUnavailable (503) at once; never a queue.
        """
        for attempt in range(JOIN_ATTEMPTS):
            failed = self._recent_failure(key)
            if failed is not None:
                raise failed
            task = self._tasks.get(key)
            joined = task is not None
            if task is None:
                if len(self._tasks) >= self.max_concurrent:
                    raise UpstreamUnavailable(self.busy, retry_after=self.retry_after_s)
                task = asyncio.get_running_loop().create_task(self._produce(key, factory, check))
                self._tasks[key] = task
                task.add_done_callback(lambda t: self._finished(key, t))
            try:
                return await asyncio.shield(task)
            except Exception as e:
                # A refusal of the caller whose factory ran (its budget, say) is not ours:
                # try with our own factory instead of passing their answer on.
                if not joined or _shared(e) or attempt == JOIN_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    # -- bookkeeping ------------------------------------------------------------------------

    def _recent_failure(self, key: str) -> BaseException | None:
        now = self.clock()
        while self._failures:
            oldest, (_, until) = next(iter(self._failures.items()))
            if until > now:
                break
            del self._failures[oldest]
        failure = self._failures.get(key)
        return None if failure is None else failure[0]

    def _finished(self, key: str, task: asyncio.Task[T]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if task.cancelled():
            return
        error = task.exception()  # also marks it retrieved when nobody awaited the task
        if error is not None and _shared(error) and self.failure_ttl_s > 0:
            self._failures.pop(key, None)
            self._failures[key] = (error, self.clock() + self.failure_ttl_s)

    # -- producing --------------------------------------------------------------------------

    async def _produce(
        self,
        key: str,
        factory: Callable[[], Awaitable[T]],
        check: Callable[[], Awaitable[T | None]] | None,
    ) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self.locks is None:
                    return await factory()
                return await self._produce_across(self.locks, key, factory, check)
        except TimeoutError:
            raise GatewayTimeout(
                f"The image was not ready within {self.timeout_s:g} s; try again later."
            ) from None

    async def _produce_across(
        self,
        locks: Locks,
        key: str,
        factory: Callable[[], Awaitable[T]],
        check: Callable[[], Awaitable[T | None]] | None,
    ) -> T:
        token = uuid.uuid4().hex
        backoff = BACKOFF_FIRST_S
        first = True
        while True:
            try:
                leader = await locks.acquire(key, token, self.lease_ms)
            except ConnectionError:
                return await factory()  # Redis down: this process's task is the only guard
            if leader:
                if not first and check is not None:
                    # Taking over (or the leader finished between our looks): check first.
                    found = await _checked(check)
                    if found is not None:
                        await _quietly(locks.release(key, token))
                        return found
                return await self._lead(locks, key, token, factory)
            first = False
            await locks.wait_ready(key, backoff)
            if check is not None:
                found = await _checked(check)
                if found is not None:
                    return found
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _lead(
        self, locks: Locks, key: str, token: str, factory: Callable[[], Awaitable[T]]
    ) -> T:
        renewer = asyncio.get_running_loop().create_task(self._keep_lease(locks, key, token))
        try:
            result = await factory()
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await _quietly(locks.release(key, token))
        await _quietly(locks.notify(key))
        return result

    async def _keep_lease(self, locks: Locks, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ms / 3000)
            try:
                if not await locks.renew(key, token, self.lease_ms):
                    log.warning("lost the generation lock for %s; carrying on", key)
                    return
            except ConnectionError:
                pass  # Redis down: keep working, the lease may lapse; the origin still guards
            current = asyncio.current_task()
            assert current is not None  # a coroutine of ours, run as a task
            if current.cancelling():
                # `_lead` cancelled us mid-renew and the Redis client turned the cancel into
                # an error (or an answer): stop here, or `_lead` waits for us forever.
                return


def _shared(error: BaseException) -> bool:
    """Whether a failure belongs to the key (the model failed: remembered, answers everyone)
    rather than to the caller whose factory ran (a 4xx refusal: its budget, its scope)."""
    return not isinstance(error, ApiError) or error.status >= 500


async def _checked(check: Callable[[], Awaitable[T | None]]) -> T | None:
    try:
        return await check()
    except ConnectionError:
        return None


async def _quietly(call: Awaitable[object]) -> None:
    with contextlib.suppress(ConnectionError):
        await call
