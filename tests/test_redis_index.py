"""The Redis index, lock and notifications against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from cache.index import LiveRecord
from cache.index.redis import IndexUnavailable, RedisIndex
from cache.invalidation import EVERYTHING, Invalidation, RedisBus
from edge.coalesce import Coalescer
from tests.servers import RedisServer
from tests.waiting import until


def record(digest: str = "d") -> LiveRecord:
    return LiveRecord(
        image_id=str(uuid.uuid4()),
        generation_id=str(uuid.uuid4()),
        object_key=f"org/proj/img/{digest}",
        content_type="image/png",
        size=1234,
        etag='"abc"',
        canonical=f"v1\x1fproject\x1f\x1f{digest}",
    )


def new_digest() -> str:
    return uuid.uuid4().hex


@pytest.fixture
async def index(redis_url: str) -> AsyncIterator[RedisIndex]:
    idx = RedisIndex.from_url(redis_url)
    yield idx
    await idx.close()


@pytest.fixture
async def other(redis_url: str) -> AsyncIterator[RedisIndex]:
    """A second client on the same Redis: another edge process."""
    idx = RedisIndex.from_url(redis_url)
    yield idx
    await idx.close()


async def test_record_round_trip(index: RedisIndex, other: RedisIndex) -> None:
    digest = new_digest()
    assert await index.get(digest) is None
    rec = record(digest)
    await index.set(digest, rec)
    assert await other.get(digest) == rec
    await other.delete(digest)
    assert await index.get(digest) is None


async def test_keys_are_hash_tagged_per_digest(index: RedisIndex) -> None:
    digest = new_digest()
    await index.set(digest, record(digest))
    await index.acquire(digest, "t", 10_000)
    assert await index.client.exists(f"live:{{{digest}}}", f"lock:{{{digest}}}") == 2


async def test_lock_is_exclusive_until_released(index: RedisIndex, other: RedisIndex) -> None:
    digest = new_digest()
    assert await index.acquire(digest, "mine", 10_000)
    assert not await other.acquire(digest, "theirs", 10_000)
    assert not await other.release(digest, "theirs")  # not theirs to release
    assert not await other.acquire(digest, "theirs", 10_000)
    assert await index.release(digest, "mine")
    assert await other.acquire(digest, "theirs", 10_000)


async def test_renew_extends_only_the_holders_lease(index: RedisIndex, other: RedisIndex) -> None:
    digest = new_digest()
    assert await index.acquire(digest, "mine", 300)
    assert not await other.renew(digest, "theirs", 60_000)
    assert await index.renew(digest, "mine", 60_000)
    assert await index.client.pttl(f"lock:{{{digest}}}") > 30_000


async def test_lease_lapses_without_renewal(index: RedisIndex, other: RedisIndex) -> None:
    digest = new_digest()
    assert await index.acquire(digest, "dead-leader", 100)
    await until(lambda: _lapsed(index, digest), "the lease to lapse")
    assert not await index.renew(digest, "dead-leader", 10_000)
    assert await other.acquire(digest, "next", 10_000)


async def test_notify_wakes_a_waiter_in_another_process(
    index: RedisIndex, other: RedisIndex
) -> None:
    digest = new_digest()
    waiter = asyncio.create_task(index.wait_ready(digest, 5.0))
    bystander = asyncio.create_task(index.wait_ready(new_digest(), 0.3))
    await asyncio.wait_for(index.listening.wait(), 2.0)
    await other.notify(digest)
    assert await waiter is True  # woken: a wait that ran out would say False
    assert await bystander is False


async def test_one_listener_serves_every_waiter(index: RedisIndex, other: RedisIndex) -> None:
    digest = new_digest()
    waiters = [asyncio.create_task(index.wait_ready(digest, 5.0)) for _ in range(50)]
    await asyncio.wait_for(index.listening.wait(), 2.0)
    clients = await index.client.pubsub_numsub("banatie:ready")
    assert dict(clients)[b"banatie:ready"] == 1
    await other.notify(digest)
    assert all(await asyncio.gather(*waiters))


async def test_two_processes_generate_once(redis_url: str) -> None:
    await generate_once_across_two_processes(redis_url, callers=40)


async def generate_once_across_two_processes(url: str, callers: int) -> None:
    """Two coalescers (two edges) on one Redis at `url`: every caller, one generation."""
    indexes = [RedisIndex.from_url(url), RedisIndex.from_url(url)]
    coalescers = [
        Coalescer[LiveRecord](max_concurrent=8, timeout_s=10.0, locks=i, lease_ms=1_000)
        for i in indexes
    ]
    digest, runs = new_digest(), 0
    rec = record(digest)

    async def generate() -> LiveRecord:
        nonlocal runs
        runs += 1
        # Hold the lock until the other process waits on it: it listens for the ready notice
        # only once it found the lock taken (this process, the leader, never listens).
        await until(lambda: any(i.listening.is_set() for i in indexes), "the other to wait")
        await indexes[0].set(digest, rec)
        return rec

    def check(i: int):  # type: ignore[no-untyped-def]
        return lambda: indexes[i].get(digest)

    try:
        calls = [coalescers[n % 2].run(digest, generate, check(n % 2)) for n in range(callers)]
        results = await asyncio.gather(*calls)
    finally:
        for i in indexes:
            await i.close()
    assert runs == 1
    assert all(r == rec for r in results)


async def test_waiter_takes_over_when_the_leader_dies(index: RedisIndex) -> None:
    digest, rec, runs = new_digest(), record(), 0
    # A leader that took the lock and died: nobody renews it.
    assert await index.acquire(digest, "dead-leader", 400)

    async def generate() -> LiveRecord:
        nonlocal runs
        runs += 1
        await index.set(digest, rec)
        return rec

    coalescer = Coalescer[LiveRecord](max_concurrent=4, timeout_s=5.0, locks=index)
    assert await coalescer.run(digest, generate, lambda: index.get(digest)) == rec
    assert runs == 1


async def test_leader_renews_its_lease_while_it_works(index: RedisIndex, other: RedisIndex) -> None:
    digest, rec = new_digest(), record()
    working, finish = asyncio.Event(), asyncio.Event()

    async def slow() -> LiveRecord:
        working.set()  # the lock is held from here
        await finish.wait()
        await index.set(digest, rec)
        return rec

    coalescer = Coalescer[LiveRecord](max_concurrent=4, timeout_s=5.0, locks=index, lease_ms=300)
    leader = asyncio.create_task(coalescer.run(digest, slow, lambda: index.get(digest)))
    await asyncio.wait_for(working.wait(), 5.0)
    # A renewal (every lease/3) shows as the lock's time to live going up; after four of
    # them more than the whole 300 ms lease has passed, so only renewing kept it.
    renewals, last = 0, 0

    async def renewed_four_times() -> bool:
        nonlocal renewals, last
        ttl = await index.client.pttl(f"lock:{{{digest}}}")
        assert ttl > 0, "the lease lapsed while the leader worked"
        renewals += ttl > last and last > 0
        last = ttl
        return renewals >= 4

    # Sampled well within a renewal interval (100 ms), or a renewal could go unseen.
    await until(renewed_four_times, "four renewals of the lease", poll_s=0.01)
    assert not await other.acquire(digest, "intruder", 10_000)  # still held
    finish.set()
    assert await leader == rec
    assert await other.acquire(digest, "after", 10_000)  # released when done


async def test_waiters_give_up_after_the_timeout_with_504(index: RedisIndex) -> None:
    from cache.errors import GatewayTimeout

    digest = new_digest()
    assert await index.acquire(digest, "slow-leader", 60_000)
    coalescer = Coalescer[LiveRecord](max_concurrent=4, timeout_s=0.3, locks=index)

    async def never() -> LiveRecord:
        raise AssertionError("the lock is held: this process must not generate")

    with pytest.raises(GatewayTimeout):
        await coalescer.run(digest, never, lambda: index.get(digest))


async def test_redis_down_fails_fast_and_recovers(redis_server: RedisServer) -> None:
    index = RedisIndex.from_url(redis_server.url)
    digest = new_digest()
    try:
        await index.set(digest, record(digest))
        assert index.healthy
        with redis_server.stopped():
            with pytest.raises(IndexUnavailable):
                await index.get(digest)
            assert not index.healthy
            for _ in range(20):  # while down, every call says so (and does not even try)
                with pytest.raises(ConnectionError):
                    await index.acquire(digest, "t", 1_000)

            # In-process coalescing alone while Redis is down.
            coalescer = Coalescer[str](max_concurrent=4, timeout_s=5.0, locks=index)
            runs = 0

            async def generate() -> str:
                nonlocal runs
                runs += 1  # the ten callers have joined: its task was created after them
                return "image"

            results = await asyncio.gather(*(coalescer.run(digest, generate) for _ in range(10)))
            assert results == ["image"] * 10 and runs == 1

        # Back (and empty): the same object works again within about a second.
        async def reconnected() -> bool:
            try:
                assert await index.get(digest) is None
            except IndexUnavailable:
                return False
            return True

        await until(reconnected, "the index to reconnect", poll_s=0.1)
        assert index.healthy
        await index.set(digest, record(digest))
        assert await index.get(digest) is not None
    finally:
        await index.close()


async def test_notifications_resume_after_a_restart(redis_server: RedisServer) -> None:
    index = RedisIndex.from_url(redis_server.url)
    publisher = RedisIndex.from_url(redis_server.url)
    digest = new_digest()
    try:
        first = asyncio.create_task(index.wait_ready(digest, 5.0))
        await asyncio.wait_for(index.listening.wait(), 2.0)
        await publisher.notify(digest)
        assert await first
        with redis_server.stopped():
            await until(lambda: not index.listening.is_set(), "the listener to see the outage")
        second = asyncio.create_task(index.wait_ready(digest, 10.0))

        async def heard() -> bool:  # the listener resubscribes on its own
            with contextlib.suppress(IndexUnavailable):
                await publisher.notify(digest)
            return second.done()

        await until(heard, "the listener to come back", poll_s=0.2)
        assert await second
    finally:
        await index.close()
        await publisher.close()


async def test_redis_bus_reaches_other_processes_and_survives_a_restart(
    redis_server: RedisServer,
) -> None:
    sender, receiver = RedisBus.from_url(redis_server.url), RedisBus.from_url(redis_server.url)
    got: list[Invalidation] = []
    local: list[Invalidation] = []
    receiver.subscribe(got.append)
    sender.subscribe(local.append)
    await receiver.start()
    try:
        await asyncio.wait_for(receiver.subscribed.wait(), 2.0)
        event = Invalidation("img-1", ("d1", "d2"))
        await sender.publish(event)
        await until(lambda: got == [event], "the event to arrive")
        assert local == [event]  # the sender's own listeners, called once

        with redis_server.stopped():
            await sender.publish(Invalidation("img-2", ()))  # logged, not raised
            assert local[-1].image_id == "img-2"
        # Back: the receiver says it may have missed something, then hears new events.
        await until(lambda: any(e.image_id == EVERYTHING for e in got), "the drop-everything event")
        # Pub/sub drops what is sent while the listener resubscribes: send until it arrives.

        async def heard() -> bool:
            if got[-1].image_id == "img-3":
                return True
            await sender.publish(Invalidation("img-3", ("d3",)))
            return False

        await until(heard, "the listener to come back", poll_s=0.2)
    finally:
        await receiver.close()
        await sender.close()


async def test_the_url_chooses_single_redis_or_cluster() -> None:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster

    from cache.index.redis import connect

    for url, kind in (
        ("redis://127.0.0.1:6379/0", Redis),
        ("rediss://127.0.0.1:6379", Redis),
        ("redis+cluster://127.0.0.1:7000", RedisCluster),
        ("redis://127.0.0.1:7000/0?cluster=true", RedisCluster),
    ):
        client = connect(url)
        assert isinstance(client, kind), url
        await client.aclose()


async def _lapsed(index: RedisIndex, digest: str) -> bool:
    return await index.client.pttl(f"lock:{{{digest}}}") == -2  # -2: no such key
