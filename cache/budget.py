"""Generation budgets (per key, per client IP) as token buckets: in-process, or shared through
Redis.

A bucket holds up to `burst` units and refills at `per_hour`; a generation takes one. It is
kept as GCRA's one number, the theoretical arrival time (TAT): the moment the bucket would be
full again. Taking `n` moves the TAT `n` intervals on; it is refused when that would put the
TAT more than `burst` intervals ahead of now.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # redis is imported only where a Redis URL is set
    from redis.asyncio import Redis, RedisCluster

HOUR_MS = 3_600_000
PRUNE_EVERY = 1024  # takes between sweeps of the in-process buckets that are full again


@dataclass(frozen=True, slots=True)
class Rate:
    """A bucket of `burst` units refilled at `per_hour`; either at 0 refuses everything."""

    per_hour: int
    burst: int

    @property
    def interval_ms(self) -> int:
        """Time to refill one unit (whole milliseconds: the Lua script's arithmetic is exact)."""
        return max(1, round(HOUR_MS / self.per_hour)) if self.per_hour > 0 else HOUR_MS

    @property
    def closed(self) -> bool:
        return self.per_hour <= 0 or self.burst <= 0


@dataclass(frozen=True, slots=True)
class BudgetState:
    allowed: bool
    limit: int  # the burst
    remaining: int  # whole units left after this take
    reset_at: int  # epoch seconds when the bucket is full again
    retry_after: int = 0  # seconds until a refused take would pass (0 when allowed)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }


class Budget(Protocol):
    async def take(self, name: str, rate: Rate, cost: int = 1) -> BudgetState:
        """Take `cost` units of `name`'s bucket, all or none."""
        ...


def _gcra(tat_ms: int | None, now_ms: int, rate: Rate, cost: int) -> tuple[int | None, BudgetState]:
    """(the new TAT, or None when nothing was taken; the answer). The Lua script below is the
    same arithmetic."""
    if rate.closed:
        return None, BudgetState(False, 0, 0, math.ceil(now_ms / 1000) + 3600, 3600)
    interval = rate.interval_ms
    tat = max(tat_ms or now_ms, now_ms)
    new_tat = tat + cost * interval
    allow_at = new_tat - rate.burst * interval
    if now_ms < allow_at:
        left = (rate.burst * interval - (tat - now_ms)) // interval
        return None, _state(False, rate, left, tat, allow_at - now_ms)
    left = (rate.burst * interval - (new_tat - now_ms)) // interval
    return new_tat, _state(True, rate, left, new_tat, 0)


def _state(allowed: bool, rate: Rate, left: int, tat_ms: int, wait_ms: int) -> BudgetState:
    return BudgetState(
        allowed,
        rate.burst,
        max(0, int(left)),
        math.ceil(tat_ms / 1000),
        max(1, math.ceil(wait_ms / 1000)) if not allowed else 0,
    )


class MemoryBudget:
    """Buckets of one process. `clock` gives epoch seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tats: dict[str, int] = {}  # name → TAT, epoch ms
        self._takes = 0

    async def take(self, name: str, rate: Rate, cost: int = 1) -> BudgetState:
        now = int(self._clock() * 1000)
        tat, state = _gcra(self._tats.get(name), now, rate, cost)
        if tat is not None:
            self._tats[name] = tat
        self._takes += 1
        if self._takes % PRUNE_EVERY == 0:  # a full bucket is the same as none: forget it
            self._tats = {k: v for k, v in self._tats.items() if v > now}
        return state


# KEYS[1] the bucket; ARGV interval ms, burst, cost. Redis's clock, so every process agrees.
# → {allowed, units left, ms until it would pass, TAT (epoch ms)}
_TAKE = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, math.floor((burst * interval - (tat - now)) / interval), allow_at - now, tat}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat),
  'PX', string.format('%d', math.max(1, new_tat - now)))
return {1, math.floor((burst * interval - (new_tat - now)) / interval), 0, new_tat}
"""


class RedisBudget:
    """One Lua script per take, on one key (so any Redis Cluster node that owns it runs it).
    While Redis is down each process counts on its own, so budgets stay enforced (per
    process) instead of failing."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self._script = redis.register_script(_TAKE)
        self._local = MemoryBudget()

    async def take(self, name: str, rate: Rate, cost: int = 1) -> BudgetState:
        if rate.closed:
            return await self._local.take(name, rate, cost)
        try:
            allowed, left, wait_ms, tat = await self._script(
                keys=[f"bucket:{{{name}}}"], args=[rate.interval_ms, rate.burst, cost]
            )
        except Exception:  # Redis errors, or a cluster client failing mid-reinitialise
            return await self._local.take(name, rate, cost)
        return _state(bool(allowed), rate, int(left), int(tat), int(wait_ms))


def open_budget(redis_url: str | None) -> Budget:
    """Buckets shared through Redis when a URL is given (single node or cluster), else
    in-process. (A URL, not Settings: cache.settings imports this module for `Rate`.)"""
    if redis_url:
        from cache.index.redis import connect

        return RedisBudget(connect(redis_url))
    return MemoryBudget()
