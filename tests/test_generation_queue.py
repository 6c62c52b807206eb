"""Generations beyond MAX_CONCURRENT_GENERATIONS: a bounded queue, and refusals that cost
nothing. Gemini is the fake on loopback, held so that generations stay under way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.app import create_edge
from origin.app import create_origin
from origin.edge_api import InProcessOrigin
from tests.fake_gemini import FakeGemini
from tests.harness import Api, api_for
from tests.waiting import until

ASYNC = {"Prefer": "respond-async"}


async def slow_api(
    request: pytest.FixtureRequest, tmp_path: Path, gemini: FakeGemini, **overrides: Any
) -> AsyncIterator[Api]:
    """The API on the fixture's backend, its generator the fake Gemini."""
    async for api in api_for(
        request,
        tmp_path,
        None,
        gemini_api_key="test-key",
        gemini_base_url=gemini.url,
        generation_timeout_s=30.0,
        **overrides,
    ):
        yield api


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def two_slots(
    request: pytest.FixtureRequest, tmp_path: Path, gemini: FakeGemini
) -> AsyncIterator[Api]:
    """Two generations at once, the default queue behind them."""
    async for api in slow_api(request, tmp_path, gemini, max_concurrent_generations=2):
        yield api


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def one_slot_one_queued(
    request: pytest.FixtureRequest, tmp_path: Path, gemini: FakeGemini
) -> AsyncIterator[Api]:
    async for api in slow_api(
        request, tmp_path, gemini, max_concurrent_generations=1, generation_queue=1
    ):
        yield api


async def statuses(api: Api) -> list[str]:
    rows = (await api.get("/api/v1/generations?limit=100")).json()["data"]
    return sorted(g["status"] for g in rows)


def body(n: int) -> dict[str, Any]:
    return {"prompt": f"picture {n}", "autoEnhance": False}


async def test_async_generations_beyond_the_slots_wait_their_turn_and_all_run(
    two_slots: Api, gemini: FakeGemini
) -> None:
    gemini.hold()
    answers = [
        await two_slots.post("/api/v1/generations", json=body(n), headers=ASYNC) for n in range(6)
    ]
    assert [a.status_code for a in answers] == [202] * 6
    await until(lambda: len(gemini.image_requests) == 2, "two generations under way")
    assert await statuses(two_slots) == ["pending"] * 4 + ["processing"] * 2
    gemini.let_go()

    async def all_done() -> bool:
        return await statuses(two_slots) == ["success"] * 6

    await until(all_done, "all six accepted generations to succeed")
    assert gemini.generations == 6


async def test_sync_generations_beyond_the_slots_wait_their_turn(
    two_slots: Api, gemini: FakeGemini
) -> None:
    gemini.hold()
    calls = [
        asyncio.ensure_future(two_slots.post("/api/v1/generations", json=body(n))) for n in range(6)
    ]

    async def six_rows() -> bool:
        return len(await statuses(two_slots)) == 6 or any(c.done() for c in calls)

    await until(six_rows, "six generations accepted")
    await until(lambda: len(gemini.image_requests) == 2, "two generations under way")
    gemini.let_go()
    answers = await asyncio.gather(*calls)
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    remaining = sorted(a.headers["X-RateLimit-Remaining"] for a in answers)
    assert remaining == ["94", "95", "96", "97", "98", "99"]
    assert await statuses(two_slots) == ["success"] * 6


async def test_a_full_queue_is_503_and_stores_and_spends_nothing(
    one_slot_one_queued: Api, gemini: FakeGemini
) -> None:
    api = one_slot_one_queued
    earlier = await api.generate(**body(0))  # one unit spent
    gemini.hold()
    for n in (1, 2):  # one running, one queued
        answer = await api.post("/api/v1/generations", json=body(n), headers=ASYNC)
        assert answer.status_code == 202
    await until(lambda: len(gemini.image_requests) == 2, "the running generation")
    refused = [
        await api.post("/api/v1/generations", json=body(3)),
        await api.post("/api/v1/generations", json=body(4), headers=ASYNC),
        await api.post(f"/api/v1/generations/{earlier['id']}/regenerate"),
    ]
    for answer in refused:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert int(answer.headers["Retry-After"]) >= 1
    assert await statuses(api) == ["pending", "processing", "success"]
    gemini.let_go()

    async def both_done() -> bool:
        return await statuses(api) == ["success"] * 3

    await until(both_done, "the accepted generations to succeed")
    after = await api.post("/api/v1/generations", json=body(5))
    assert after.status_code == 201
    # Four units: the first generation, the two accepted ones, this one. Refusals cost none.
    assert after.headers["X-RateLimit-Remaining"] == "96"
    assert (await api.get(f"/api/v1/generations/{earlier['id']}")).json()["data"][
        "outputImageId"
    ] == earlier["outputImageId"]


def edge_client(api: Api) -> httpx.AsyncClient:
    """A new edge (its own coalescer and failure memory) in front of the API's origin."""
    services = api.services
    edge = create_edge(
        services.settings,
        InProcessOrigin(services),
        services.store,
        services.index,
        services.bus,
        create_origin(services.settings, services),
    )
    transport = httpx.ASGITransport(app=edge, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://edge")


async def test_a_live_miss_never_queues_and_a_refused_one_leaves_nothing(
    one_slot_one_queued: Api, gemini: FakeGemini
) -> None:
    api = one_slot_one_queued
    live = "/api/v1/live?prompt=a%20quiet%20harbour&autoEnhance=false"
    cdn = "/cdn/acme/web/live/hero?prompt=a%20quiet%20harbour&autoEnhance=false"
    assert (await api.post("/api/v1/live/scopes", json={"slug": "hero"})).status_code == 201
    gemini.hold()
    answer = await api.post("/api/v1/generations", json=body(1), headers=ASYNC)
    assert answer.status_code == 202
    await until(lambda: len(gemini.image_requests) == 1, "the running generation")
    async with edge_client(api) as http:
        # The queue has room, but a live miss asks for a free slot now.
        for refused in (await http.get(live, headers=api.headers), await http.get(cdn)):
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
            assert int(refused.headers["Retry-After"]) >= 1
    assert await statuses(api) == ["processing"]  # no row for the refused misses
    gemini.let_go()

    async def idle() -> bool:
        return await statuses(api) == ["success"]

    await until(idle, "the API generation to be stored")
    async with edge_client(api) as http:  # an edge that has not seen the refusals
        # The keys are free (no claim left, no failure remembered) and nothing was spent.
        served = await http.get(live, headers=api.headers)
        assert served.status_code == 200 and served.headers["X-Cache-Status"] == "MISS"
        assert served.headers["X-RateLimit-Remaining"] == "98"
        scope = (await api.get("/api/v1/live/scopes/hero")).json()["data"]
        assert scope["currentGenerations"] == 0
        served = await http.get(cdn)
        assert served.status_code == 200 and served.headers["X-Cache-Status"] == "MISS"
    scope = (await api.get("/api/v1/live/scopes/hero")).json()["data"]
    assert scope["currentGenerations"] == 1
