"""In-process coalescing: one piece of work per key, whatever the callers do."""

from __future__ import annotations

import asyncio

import pytest

from cache.coalesce import Coalescer
from cache.errors import GatewayTimeout, GenerationFailed, RateLimitExceeded, UpstreamUnavailable


class Work:
    """A factory that counts its runs and finishes when told to."""

    def __init__(self, result: str = "image") -> None:
        self.runs = 0
        self.finished = 0
        self.release = asyncio.Event()
        self.result = result

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        self.finished += 1
        return self.result


def coalescer(**kw: object) -> Coalescer[str]:
    options: dict[str, object] = dict(max_concurrent=16, timeout_s=5.0, failure_ttl_s=0.2)
    return Coalescer(**{**options, **kw})  # type: ignore[arg-type]


async def test_concurrent_callers_share_one_run() -> None:
    c, work = coalescer(), Work()
    callers = [asyncio.create_task(c.run("k", work)) for _ in range(200)]
    await asyncio.sleep(0.01)
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
    await asyncio.sleep(0.01)
    first.cancel()  # the browser went away
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(c.run("k", work))
    await asyncio.sleep(0.01)
    work.release.set()
    assert await second == "image"
    assert (work.runs, work.finished) == (1, 1)


async def test_work_finishes_even_when_every_caller_left() -> None:
    c, work = coalescer(), Work()
    caller = asyncio.create_task(c.run("k", work))
    await asyncio.sleep(0.01)
    caller.cancel()
    work.release.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if work.finished:
            break
    assert work.finished == 1
    assert c.in_flight == 0


async def test_failure_answers_waiters_is_remembered_then_retried() -> None:
    c = coalescer(failure_ttl_s=0.2)
    runs = 0

    async def failing() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        raise GenerationFailed("model said no")

    callers = [asyncio.create_task(c.run("k", failing)) for _ in range(5)]
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(r, GenerationFailed) for r in results)
    assert runs == 1

    with pytest.raises(GenerationFailed):  # within the ttl: the same answer, no new run
        await c.run("k", failing)
    assert runs == 1

    await asyncio.sleep(0.25)
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
    await asyncio.sleep(0.01)
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
    await asyncio.sleep(0.01)
    release.set()
    with pytest.raises(RateLimitExceeded):
        await leader
    assert await follower == "image"  # ran its own factory
    assert work.runs == 1
    assert await c.run("k", work) == "image"  # refusals are not remembered
