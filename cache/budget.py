"""Fixed-window budgets (per key, per client IP): in-process, or shared through Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BudgetState:
    allowed: bool
    limit: int
    remaining: int
    reset_at: int  # epoch seconds when the window ends

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_at - int(time.time()))


class Budget(Protocol):
    async def take(self, name: str, limit: int, window_s: int = 3600) -> BudgetState:
        """Spend one unit of `name`'s budget if any is left."""
        ...

    async def peek(self, name: str, limit: int, window_s: int = 3600) -> BudgetState: ...


class MemoryBudget:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[int, int]] = {}  # name → (window start, used)

    def _window(self, name: str, window_s: int) -> tuple[int, int]:
        start = int(time.time()) // window_s * window_s
        begun, used = self._windows.get(name, (start, 0))
        return (start, 0) if begun != start else (begun, used)

    async def take(self, name: str, limit: int, window_s: int = 3600) -> BudgetState:
        start, used = self._window(name, window_s)
        if used >= limit:
            return BudgetState(False, limit, 0, start + window_s)
        self._windows[name] = (start, used + 1)
        return BudgetState(True, limit, limit - used - 1, start + window_s)

    async def peek(self, name: str, limit: int, window_s: int = 3600) -> BudgetState:
        start, used = self._window(name, window_s)
        return BudgetState(used < limit, limit, max(0, limit - used), start + window_s)


class RedisBudget:
    """INCR on a key named for the window; the key expires with it. While Redis is down each
    process counts on its own, so budgets stay enforced (per process) instead of failing."""

    def __init__(self, redis) -> None:  # type: ignore[no-untyped-def]
        self._redis = redis
        self._local = MemoryBudget()

    async def take(self, name: str, limit: int, window_s: int = 3600) -> BudgetState:
        try:
            return await self._take(name, limit, window_s)
        except Exception:  # Redis errors, or a cluster client failing mid-reinitialise
            return await self._local.take(name, limit, window_s)

    async def peek(self, name: str, limit: int, window_s: int = 3600) -> BudgetState:
        try:
            return await self._peek(name, limit, window_s)
        except Exception:  # Redis errors, or a cluster client failing mid-reinitialise
            return await self._local.peek(name, limit, window_s)

    async def _take(self, name: str, limit: int, window_s: int) -> BudgetState:
        start = int(time.time()) // window_s * window_s
        key = f"budget:{{{name}}}:{start}"
        used = await self._redis.incr(key)
        if used == 1:
            await self._redis.expire(key, window_s + 60)
        if used > limit:
            return BudgetState(False, limit, 0, start + window_s)
        return BudgetState(True, limit, limit - used, start + window_s)

    async def _peek(self, name: str, limit: int, window_s: int) -> BudgetState:
        start = int(time.time()) // window_s * window_s
        used = int(await self._redis.get(f"budget:{{{name}}}:{start}") or 0)
        return BudgetState(used < limit, limit, max(0, limit - used), start + window_s)
