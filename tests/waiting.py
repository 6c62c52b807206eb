"""Waiting on a condition, never on the clock: poll it until it holds, or fail naming it.

For what no event tells the test (another process's state, a metric, a file on disk); where
the test or a fake can set an asyncio/threading Event, wait on that instead.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from loadtests.processes import TimedOut, poll

T = TypeVar("T")

TIMEOUT_S = 30.0  # a bound for a broken test, not a measure: conditions come long before
POLL_S = 0.05


def wait_until(
    condition: Callable[[], T],
    what: str,
    timeout_s: float = TIMEOUT_S,
    poll_s: float = POLL_S,
    detail: Callable[[], str] = lambda: "",
) -> T:
    """`condition()`'s first true value (loadtests.processes.poll); fails with "timed out ...
    waiting for `what`" and whatever `detail()` adds then (a log's tail, say)."""
    try:
        return poll(condition, what, timeout_s, poll_s)
    except TimedOut as timed_out:
        pytest.fail(f"{timed_out}{detail()}")


async def until(
    condition: Callable[[], T | Awaitable[T]],
    what: str,
    timeout_s: float = TIMEOUT_S,
    poll_s: float = POLL_S,
) -> T:
    """`wait_until` for the event loop: `condition` may be sync or async."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return held  # type: ignore[return-value]
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(poll_s)


async def suspended(task: asyncio.Task[Any], what: str) -> None:
    """Until `task` has started and waits on something (the event loop gave it its turn)."""
    await until(lambda: inspect.getcoroutinestate(task.get_coro()) == inspect.CORO_SUSPENDED, what)
