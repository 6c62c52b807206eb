"""Budgets are token buckets: a burst at once, then the refill rate rules; in-process and in
Redis (one Lua script, shared by every client). A page of new live images from one browser
loads whole on the defaults."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cache.budget import MemoryBudget, Rate, RedisBudget
from cache.index.redis import connect
from tests.servers import RedisServer
from tests.test_edge import Site, open_site
from tests.waiting import until

BROWSER_CONNECTIONS = 6  # what a browser opens per host over HTTP/1.1


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_bucket_gives_its_burst_then_one_per_interval() -> None:
    clock = Clock()
    budget = MemoryBudget(clock)
    rate = Rate(per_hour=10, burst=3)  # one unit every 360 s
    states = [await budget.take("ip:a", rate) for _ in range(4)]
    assert [s.allowed for s in states] == [True, True, True, False]
    assert [s.remaining for s in states] == [2, 1, 0, 0]
    assert {s.limit for s in states} == {3}
    refused = states[-1]
    assert refused.retry_after == 360
    assert refused.reset_at == int(clock.now) + 3 * 360  # full again after three intervals
    clock.now += 359
    assert not (await budget.take("ip:a", rate)).allowed
    clock.now += 1
    again = await budget.take("ip:a", rate)
    assert again.allowed and again.remaining == 0
    assert not (await budget.take("ip:a", rate)).allowed  # one unit, not a new window
    clock.now += 10 * 3600  # idle for long: full, never more than the burst
    assert [(await budget.take("ip:a", rate)).allowed for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]


async def test_a_take_of_several_units_is_all_or_none() -> None:
    budget = MemoryBudget(Clock())
    rate = Rate(per_hour=100, burst=5)
    assert (await budget.take("key:k", rate, 3)).remaining == 2
    refused = await budget.take("key:k", rate, 3)
    assert not refused.allowed and refused.remaining == 2  # nothing was spent
    assert (await budget.take("key:k", rate, 2)).remaining == 0


async def test_a_zero_rate_refuses_everything() -> None:
    assert not (await MemoryBudget().take("ip:z", Rate(per_hour=0, burst=30))).allowed


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[object]:
    client = connect(redis_server.url)
    yield client
    await client.aclose()


async def test_redis_bucket_is_shared_and_atomic(redis_server: RedisServer) -> None:
    """Two processes' clients on one bucket: concurrent takes never give more than the burst."""
    first, second = connect(redis_server.url), connect(redis_server.url)
    try:
        budgets = [RedisBudget(first), RedisBudget(second)]
        name, rate = f"ip:{uuid.uuid4()}", Rate(per_hour=10, burst=30)
        states = await asyncio.gather(*(budgets[n % 2].take(name, rate) for n in range(50)))
        assert sum(s.allowed for s in states) == 30
        assert sorted(s.remaining for s in states if s.allowed) == list(range(30))
        refused = [s for s in states if not s.allowed]
        assert {s.remaining for s in refused} == {0}
        # Redis's clock: the next unit is one interval (360 s) away, give or take the test.
        assert {s.retry_after for s in refused} <= {359, 360}
        assert all(s.reset_at >= time.time() + 30 * 360 - 5 for s in refused)
    finally:
        await first.aclose()
        await second.aclose()


async def test_redis_bucket_refills_at_its_rate(redis_client: object) -> None:
    budget = RedisBudget(redis_client)
    name, rate = f"key:{uuid.uuid4()}", Rate(per_hour=36_000, burst=2)  # 100 ms a unit
    assert [(await budget.take(name, rate)).allowed for _ in range(3)] == [True, True, False]

    async def refilled() -> bool:  # within an interval or so
        return (await budget.take(name, rate)).allowed

    await until(refilled, "the bucket to refill")


async def test_redis_bucket_takes_several_units_all_or_none(redis_client: object) -> None:
    budget = RedisBudget(redis_client)
    name, rate = f"key:{uuid.uuid4()}", Rate(per_hour=1, burst=5)
    assert (await budget.take(name, rate, 4)).remaining == 1
    refused = await budget.take(name, rate, 2)
    assert not refused.allowed and refused.remaining == 1
    assert (await budget.take(name, rate, 1)).allowed


async def test_without_redis_each_process_keeps_its_own_bucket(
    redis_server: RedisServer, redis_client: object
) -> None:
    budget = RedisBudget(redis_client)
    name, rate = f"ip:{uuid.uuid4()}", Rate(per_hour=1, burst=2)
    with redis_server.stopped():
        states = [await budget.take(name, rate) for _ in range(3)]
    assert [s.allowed for s in states] == [True, True, False]


# -- a page of new images, through the edge ------------------------------------------------


def page_urls(scope: str, count: int, start: int = 0) -> list[str]:
    return [f"/cdn/acme/web/live/{scope}?prompt=tile%20{n}" for n in range(start, start + count)]


async def load_like_a_browser(site: Site, urls: list[str]) -> list[httpx.Response]:
    connections = asyncio.Semaphore(BROWSER_CONNECTIONS)

    async def get(url: str) -> httpx.Response:
        async with connections:
            return await site.http.get(url)

    return await asyncio.gather(*(get(url) for url in urls))


@pytest.fixture(params=["in-process", "redis"])
async def default_site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Site]:
    """An edge on the default budgets, counting them in-process or in the real Redis."""
    overrides = {}
    if request.param == "redis":
        overrides["redis_url"] = request.getfixturevalue("redis_server").url
    async with open_site(tmp_path, **overrides) as site:
        yield site


async def test_a_page_of_new_images_from_one_browser_loads_whole(default_site: Site) -> None:
    site = default_site
    page = await load_like_a_browser(site, page_urls("page", 24))
    assert [r.status_code for r in page] == [200] * 24
    assert {r.headers["x-cache-status"] for r in page} == {"MISS"}
    more = await load_like_a_browser(site, page_urls("page", 6, start=24))  # 25th to 30th
    assert [r.status_code for r in more] == [200] * 6
    # The burst is spent: from now on the refill rate (IP_BUDGET_PER_HOUR=10) rules, in any
    # scope of the project (a 31st image in "page" would meet its scope's limit of 30 first).
    refused = await site.http.get(page_urls("other", 1)[0])
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(refused.headers["retry-after"]) <= 360
    assert refused.headers["x-ratelimit-limit"] == "30"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    hit = await site.http.get(page_urls("page", 1)[0])
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT"  # hits are free
