"""The index, the lock, ready notifications and the invalidation bus on a 3-master Redis Cluster."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio.cluster import RedisCluster

from cache.budget import Rate, RedisBudget
from cache.index.redis import IndexUnavailable, RedisIndex, connect
from cache.invalidation import Invalidation, RedisBus
from edge.app import create_edge
from tests.servers import free_port
from tests.test_edge import open_site
from tests.test_redis_index import generate_once_across_two_processes, new_digest, record
from tests.waiting import until


@pytest.fixture
async def index(redis_cluster_url: str) -> AsyncIterator[RedisIndex]:
    idx = RedisIndex.from_url(redis_cluster_url)
    yield idx
    await idx.close()


@pytest.fixture
async def other(redis_cluster_url: str) -> AsyncIterator[RedisIndex]:
    """A second client on the same cluster: another edge process."""
    idx = RedisIndex.from_url(redis_cluster_url)
    yield idx
    await idx.close()


async def test_the_url_gives_a_cluster_client(index: RedisIndex) -> None:
    assert isinstance(index.client, RedisCluster)
    assert await index.get(new_digest()) is None
    assert len(index.client.get_primaries()) == 3


async def test_records_round_trip_across_every_node(index: RedisIndex, other: RedisIndex) -> None:
    digests = [new_digest() for _ in range(30)]
    for digest in digests:
        await index.set(digest, record(digest))
    for digest in digests:
        found = await other.get(digest)
        assert found is not None and found.object_key.endswith(digest)
    cluster = index.client
    assert isinstance(cluster, RedisCluster)
    nodes = {cluster.get_node_from_key(f"live:{{{d}}}").name for d in digests}
    assert len(nodes) == 3  # the keys really spread over the masters
    for digest in digests:
        await other.delete(digest)
        assert await index.get(digest) is None


async def test_a_keys_record_and_lock_share_one_slot(index: RedisIndex) -> None:
    digest = new_digest()
    await index.set(digest, record(digest))
    assert await index.acquire(digest, "t", 10_000)
    cluster = index.client
    assert isinstance(cluster, RedisCluster)
    assert cluster.keyslot(f"live:{{{digest}}}") == cluster.keyslot(f"lock:{{{digest}}}")
    # A multi-key command is refused across slots: this one works because the tag matches.
    assert await cluster.exists(f"live:{{{digest}}}", f"lock:{{{digest}}}") == 2


async def test_lock_acquire_renew_release(index: RedisIndex, other: RedisIndex) -> None:
    for digest in (new_digest() for _ in range(6)):  # scripts routed to several nodes
        assert await index.acquire(digest, "mine", 10_000)
        assert not await other.acquire(digest, "theirs", 10_000)
        assert not await other.renew(digest, "theirs", 60_000)
        assert not await other.release(digest, "theirs")
        assert await index.renew(digest, "mine", 60_000)
        assert await index.client.pttl(f"lock:{{{digest}}}") > 30_000
        assert await index.release(digest, "mine")
        assert await other.acquire(digest, "theirs", 10_000)


async def test_ready_notifications_reach_another_process(
    index: RedisIndex, other: RedisIndex
) -> None:
    digests = [new_digest() for _ in range(6)]
    waiters = [asyncio.create_task(index.wait_ready(d, 5.0)) for d in digests]
    bystander = asyncio.create_task(index.wait_ready(new_digest(), 0.3))
    await asyncio.wait_for(index.listening.wait(), 3.0)
    for digest in digests:
        await other.notify(digest)
    assert all(await asyncio.gather(*waiters))
    assert await bystander is False


async def test_two_processes_generate_once(redis_cluster_url: str) -> None:
    await generate_once_across_two_processes(redis_cluster_url, callers=20)


async def test_invalidations_reach_another_process(redis_cluster_url: str) -> None:
    sender, receiver = RedisBus.from_url(redis_cluster_url), RedisBus.from_url(redis_cluster_url)
    got: list[Invalidation] = []
    receiver.subscribe(got.append)
    await receiver.start()
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 3.0)
        events = [
            Invalidation("img-1", ("d1", "d2")),
            Invalidation("", (), project_id="project-1"),
        ]
        for event in events:
            await sender.publish(event)
        await until(lambda: got == events, "both events to arrive, in order")
    finally:
        await receiver.close()
        await sender.close()


async def test_budgets_count_on_the_cluster(redis_cluster_url: str) -> None:
    """Two clients' takes share one bucket (each would count alone if the script failed)."""
    clients = [connect(redis_cluster_url), connect(redis_cluster_url)]
    budgets = [RedisBudget(client) for client in clients]
    name = f"key:{uuid.uuid4()}"
    try:
        rate = Rate(per_hour=2, burst=2)
        states = [await budgets[n % 2].take(name, rate) for n in range(3)]
        assert [s.allowed for s in states] == [True, True, False]
        assert states[-1].retry_after > 1000  # half an hour to the next unit
    finally:
        for client in clients:
            await client.aclose()


async def test_an_unreachable_cluster_is_an_index_miss_not_an_error() -> None:
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    index = RedisIndex.from_url(url)
    client = connect(url)
    try:
        with pytest.raises(IndexUnavailable):
            await index.get(new_digest())
        with pytest.raises(ConnectionError):  # what the coalescer expects when Redis is down
            await index.acquire(new_digest(), "t", 1_000)
        budget = await RedisBudget(client).take("key:x", Rate(1, 1))  # counted in-process instead
        assert budget.allowed
    finally:
        await index.close()
        await client.aclose()


async def test_two_edges_on_the_cluster_generate_once_and_hear_deletes(
    tmp_path: Path, redis_cluster_url: str
) -> None:
    bus = RedisBus.from_url(redis_cluster_url)
    index = RedisIndex.from_url(redis_cluster_url)
    async with open_site(tmp_path, index=index, bus=bus) as site:
        site.origin.delay_s = 0.3
        other_index, other_bus = (
            RedisIndex.from_url(redis_cluster_url),
            RedisBus.from_url(redis_cluster_url),
        )
        edge = create_edge(
            site.edge.settings, site.origin, site.services.store, other_index, other_bus
        )
        await edge.startup()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
        try:
            await asyncio.wait_for(other_bus.subscribed.wait(), 3.0)
            prompt = f"a lighthouse {uuid.uuid4()}"  # the cluster is shared by the session
            calls = [
                (site.http if n % 2 else http).get(
                    "/api/v1/live", params={"prompt": prompt}, headers={"X-API-Key": site.key}
                )
                for n in range(20)
            ]
            responses = await asyncio.gather(*calls)
            assert {r.status_code for r in responses} == {200}
            assert site.origin.calls == 1  # the cluster lock kept the other edge from asking
            image_id = responses[0].headers["x-image-id"]
            assert len(edge.l1) == 1
            await site.api("DELETE", f"/api/v1/images/{image_id}")
            await until(lambda: not len(edge.l1), "the other edge to drop the deleted image")
        finally:
            await http.aclose()
            await edge.shutdown()
            await other_index.close()
