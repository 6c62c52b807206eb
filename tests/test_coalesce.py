"""In-process coalescing: one piece of work per key, whatever the callers do."""

from __future__ import annotations

import asyncio

import pytest

from cache.errors import GatewayTimeout, GenerationFailed, RateLimitExceeded, UpstreamUnavailable
from edge.coalesce import Coalescer
from tests.waiting import suspended, until


class Work:
    """A factory that counts its runs and finishes when told to."""

    def __init__(self, result: str = "image") -> None:
        self.runs = 0
        self.finished = 0
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.result = result

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        await self.release.wait()
        self.finished += 1
        return self.result


class Clock:
    """A clock the test moves: remembered failures expire when it says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def coalescer(**kw: object) -> Coalescer[str]:
    options: dict[str, object] = dict(max_concurrent=16, timeout_s=5.0, failure_ttl_s=0.2)
    return Coalescer(**{**options, **kw})  # type: ignore[arg-type]


async def joined(caller: asyncio.Task[str]) -> None:
    """Until `caller` waits on the key's task (`run` does not suspend before it joins)."""
    await suspended(caller, "the caller to join the key's task")


async def test_concurrent_callers_share_one_run() -> None:
    c, work = coalescer(), Work()
    callers = [asyncio.create_task(c.run("k", work)) for _ in range(200)]
    await work.started.wait()  # the run's task was created by the first caller, after them all
    work.release.set()
    results = await asyncio.gather(*callers)
    assert results == ["image"] * 200
    assert work.runs == 1
    assert c.in_flight == 0


async def test_a_finished_key_runs_again_on_the_next_call() -> None:
    c, work = coalescer(), Work()
    work.release.set()
    assert await c.run("k", work) == "image"
    assert await c.run("k", work) == "image"
    assert work.runs == 2  # results are cached by the caller (L1/index), not here


async def test_cancelled_caller_does_not_cancel_the_work() -> None:
    c, work = coalescer(), Work()
    first = asyncio.create_task(c.run("k", work))
    await work.started.wait()
    first.cancel()  # the browser went away
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(c.run("k", work))
    await joined(second)
    work.release.set()
    assert await second == "image"
    assert (work.runs, work.finished) == (1, 1)


async def test_work_finishes_even_when_every_caller_left() -> None:
    c, work = coalescer(), Work()
    caller = asyncio.create_task(c.run("k", work))
    await work.started.wait()
    caller.cancel()
    work.release.set()
    await until(lambda: c.in_flight == 0, "the work to finish with nobody waiting")
    assert work.finished == 1


async def test_failure_answers_waiters_is_remembered_then_retried() -> None:
    clock = Clock()
    c = coalescer(failure_ttl_s=5.0, clock=clock)
    runs = 0

    async def failing() -> str:
        nonlocal runs
        runs += 1  # the five callers have joined: its task was created after them
        raise GenerationFailed("model said no")

    callers = [asyncio.create_task(c.run("k", failing)) for _ in range(5)]
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, GenerationFailed) for r in results)
    assert runs == 1

    with pytest.raises(GenerationFailed):  # within the ttl: the same answer, no new run
        await c.run("k", failing)
    assert runs == 1

    clock.now += 4.9
    with pytest.raises(GenerationFailed):
        await c.run("k", failing)
    clock.now += 0.2  # past the ttl
    work = Work()
    work.release.set()
    assert await c.run("k", work) == "image"  # forgotten: tried again
    assert work.runs == 1


async def test_failure_of_one_key_does_not_touch_others() -> None:
    c = coalescer()

    async def failing() -> str:
        raise GenerationFailed("no")

    with pytest.raises(GenerationFailed):
        await c.run("bad", failing)
    work = Work()
    work.release.set()
    assert await c.run("good", work) == "image"


async def test_over_the_cap_is_503_with_retry_after_not_a_queue() -> None:
    c = coalescer(max_concurrent=2)
    works = [Work(), Work()]
    running = [asyncio.create_task(c.run(f"k{i}", w)) for i, w in enumerate(works)]
    for w in works:
        await w.started.wait()
    with pytest.raises(UpstreamUnavailable) as refused:
        await c.run("k3", Work())
    assert refused.value.status == 503
    assert int(refused.value.headers["Retry-After"]) >= 1

    # A key already in flight is joined, not refused.
    joined = asyncio.create_task(c.run("k0", works[0]))
    for w in works:
        w.release.set()
    await asyncio.gather(*running, joined)
    assert works[0].runs == 1

    third = Work()
    third.release.set()
    assert await c.run("k3", third) == "image"  # capacity is back


async def test_work_over_the_timeout_is_504() -> None:
    c = coalescer(timeout_s=0.05)
    with pytest.raises(GatewayTimeout) as timed_out:
        await c.run("k", Work())  # never released
    assert timed_out.value.status == 504
    assert c.in_flight == 0


async def test_a_refusal_of_the_leader_is_not_passed_on_to_the_others() -> None:
    c = coalescer()
    started = asyncio.Event()
    release = asyncio.Event()

    async def over_budget() -> str:
        started.set()
        await release.wait()
        raise RateLimitExceeded("this caller's budget is spent", retry_after=60)

    work = Work()
    work.release.set()
    leader = asyncio.create_task(c.run("k", over_budget))
    await started.wait()
    follower = asyncio.create_task(c.run("k", work))
    await joined(follower)
    release.set()
    with pytest.raises(RateLimitExceeded):
        await leader
    assert await follower == "image"  # ran its own factory
    assert work.runs == 1
    assert await c.run("k", work) == "image"  # refusals are not remembered
