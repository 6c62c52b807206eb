"""The invalidation log: deletes, revocations, signing changes and alias moves reach every edge
even when Redis stalls, dies or loses its data, with real processes (an origin, two edges, a
private redis-server) where the gap is between processes.

How long each change took to reach every edge is printed (run with -s) and recorded as a
test property, never asserted: the deadlines below only keep a broken build from hanging.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cache.invalidation import EPOCH_KEY, EVERYTHING, STREAM, Invalidation, RedisBus
from cache.settings import Settings
from origin.db import make_engine, sessions
from origin.keys import create_key
from tests.fake_gemini import FakeGemini
from tests.harness import png_bytes
from tests.running import Banatie
from tests.servers import RedisServer
from tests.test_edge import open_site
from tests.test_multiprocess import (
    Deployment,
    assert_envelope,
    assert_image,
    cache_key_of,
    client,
    deployed,
    deployment_env,
    live_path,
    redis_get,
)
from tests.waiting import until

KEY_CACHE_TTL_S = 300  # so long that the key cache's expiry cannot be what refuses a key
REACH_DEADLINE_S = 20.0  # only a bound for a broken build; the time taken is reported
OUTAGE_S = 2.0


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for one test: it is paused, killed and flushed here."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def report(record_property):  # type: ignore[no-untyped-def]
    def note(what: str, seconds: list[float]) -> None:
        text = ", ".join(f"{s:.2f} s" for s in seconds)
        print(f"\n[invalidation] {what}: {text}")
        record_property(what, text)

    return note


def new_key(app: Banatie, type: str) -> tuple[str, str]:
    """(id, secret) of a new key (a project key for acme/web), written into app's database."""

    async def create() -> tuple[str, str]:
        engine = make_engine(Settings.from_env(app.env).resolved_database_url)
        try:
            async with sessions(engine)() as session:
                org, project = ("acme", "web") if type == "project" else (None, None)
                created = await create_key(session, type, org, project, "tests")
                await session.commit()
        finally:
            await engine.dispose()
        return created.row.id, created.secret

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, create()).result()


async def revoke(http: httpx.AsyncClient, d: Deployment, key_id: str, master: str) -> None:
    revoked = await http.delete(
        f"{d.origin.url}/api/admin/keys/{key_id}", headers={"X-API-Key": master}
    )
    assert revoked.status_code == 200, revoked.text


def env_for(gemini: FakeGemini, redis_server: RedisServer) -> dict[str, str]:
    return deployment_env(gemini, REDIS_URL=redis_server.url, KEY_CACHE_TTL_S=str(KEY_CACHE_TTL_S))


async def until_every_edge(
    http: httpx.AsyncClient,
    d: Deployment,
    path: str,
    status: int,
    headers: dict[str, str] | None = None,
) -> list[float]:
    """Seconds until each edge answers `status` for `path` (polled together)."""
    started = time.monotonic()

    async def one(edge: Banatie) -> float:
        async def answers() -> bool:
            return (await http.get(edge.url + path, headers=headers)).status_code == status

        await until(answers, f"{edge.url}{path} to answer {status}", REACH_DEADLINE_S, 0.02)
        return time.monotonic() - started

    return list(await asyncio.gather(*(one(edge) for edge in d.edges)))


async def cached_everywhere(http: httpx.AsyncClient, d: Deployment, prompt: str) -> str:
    """Generate `prompt` and have every edge hold it in L1, by live URL and by id; its id."""
    path = live_path(prompt)
    image_id = assert_image(await http.get(d.edges[0].url + path, headers=d.headers), "MISS")
    for edge in d.edges:
        assert assert_image(await http.get(edge.url + path, headers=d.headers), "HIT") == image_id
        assert assert_image(await http.get(f"{edge.url}/cdn/acme/web/img/{image_id}")) == image_id
    return image_id


async def assert_regenerated(http: httpx.AsyncClient, d: Deployment, prompt: str, old: str) -> None:
    """The live URL of a deleted image is a new image on every edge (the index forgot it)."""
    for edge in d.edges:
        new = assert_image(await http.get(edge.url + live_path(prompt), headers=d.headers))
        assert new != old


async def upload(http: httpx.AsyncClient, d: Deployment, alias: str, colour: str) -> str:
    response = await http.post(
        f"{d.origin.url}/api/v1/images/upload",
        headers=d.headers,
        files={"file": ("a.png", png_bytes(colour=colour), "image/png")},
        data={"alias": alias},
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["id"]


# -- real processes ------------------------------------------------------------------------------


async def test_changes_made_while_redis_is_paused_reach_every_edge_once_it_resumes(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer, report
) -> None:
    with deployed(tmp_path, env_for(gemini, redis_server), edges=2) as d:
        other_id, other_key = new_key(d.origin, "project")
        _, master = new_key(d.origin, "master")
        prompt = f"deleted during a pause {time.time_ns()}"
        scoped = f"/cdn/acme/web/live/hero?prompt=signed%20later%20{time.time_ns()}"
        async with client() as http:
            image_id = await cached_everywhere(http, d, prompt)
            digest = await cache_key_of(http, d, prompt)
            aliased = await upload(http, d, "@pause", "teal")
            rotated = await http.post(
                f"{d.origin.url}/api/v1/live/signing/rotate", headers=d.headers
            )
            assert rotated.status_code == 200, rotated.text  # a secret, not yet required
            for edge in d.edges:
                other = await http.get(
                    edge.url + live_path(prompt), headers={"X-API-Key": other_key}
                )
                assert_image(other)
                assert_image(await http.get(edge.url + scoped))
                aliased_path = "/cdn/acme/web/img/@pause"
                assert assert_image(await http.get(edge.url + aliased_path)) == aliased

            with redis_server.paused():
                paused_at = time.monotonic()
                await d.delete_image(http, image_id)
                await revoke(http, d, other_id, master)
                signed = await http.put(
                    f"{d.origin.url}/api/v1/live/signing",
                    headers=d.headers,
                    json={"requireSignedUrls": True},
                )
                assert signed.status_code == 200, signed.text
                moved = await http.put(
                    f"{d.origin.url}/api/v1/images/{aliased}/alias",
                    headers=d.headers,
                    json={"alias": None},
                )
                assert moved.status_code == 200, moved.text
                # The outage lasts OUTAGE_S whatever the changes took: its length is the scenario.
                await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - paused_at)))

            # Every edge, every change, timed from the resume (polled together).
            gone, refused, unsigned, unaliased = await asyncio.gather(
                until_every_edge(http, d, f"/cdn/acme/web/img/{image_id}", 404),
                until_every_edge(http, d, live_path(prompt), 401, {"X-API-Key": other_key}),
                until_every_edge(http, d, scoped, 403),
                until_every_edge(http, d, "/cdn/acme/web/img/@pause", 404),
            )
            # Removed on resume (a request of the other key may have generated the URL anew
            # in the moment between the delete and the revocation reaching an edge).
            indexed = redis_get(redis_server.url, f"live:{{{digest}}}")
            assert indexed is None or json.loads(indexed)["image_id"] != image_id
            await assert_regenerated(http, d, prompt, image_id)
    report("paused 2 s, from the resume: deleted image 404 on each edge", gone)
    report("paused 2 s, from the resume: revoked key 401 on each edge", refused)
    report("paused 2 s, from the resume: unsigned URL 403 on each edge", unsigned)
    report("paused 2 s, from the resume: cleared alias 404 on each edge", unaliased)


async def test_a_delete_redis_would_not_write_reaches_every_edge_once_it_does(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer, report
) -> None:
    """CLIENT PAUSE WRITE: the origin's writes time out (and are dropped with its connection)
    while every edge still reads; nothing tells an edge it missed anything."""
    with deployed(tmp_path, env_for(gemini, redis_server), edges=2) as d:
        prompt = f"deleted while redis takes no writes {time.time_ns()}"
        async with client() as http:
            image_id = await cached_everywhere(http, d, prompt)
            with redis_server.writes_paused(OUTAGE_S * 5):
                await d.delete_image(http, image_id)
            gone = await until_every_edge(http, d, f"/cdn/acme/web/img/{image_id}", 404)
            await assert_regenerated(http, d, prompt, image_id)
    report("writes paused: deleted image 404 on each edge, from the unpause", gone)


async def test_a_delete_while_redis_is_down_reaches_every_edge_once_it_is_back_empty(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer, report
) -> None:
    with deployed(tmp_path, env_for(gemini, redis_server), edges=2) as d:
        prompt = f"deleted while redis is dead {time.time_ns()}"
        async with client() as http:
            image_id = await cached_everywhere(http, d, prompt)
            image_path = f"/cdn/acme/web/img/{image_id}"
            with redis_server.killed():
                # An edge restarted meanwhile has never read the log, and caches the image.
                restarted = d.edges[1]
                restarted.stop()
                restarted.start()
                assert assert_image(await http.get(restarted.url + image_path)) == image_id
                assert assert_image(await http.get(restarted.url + image_path)) == image_id
                await d.delete_image(http, image_id)
            gone = await until_every_edge(http, d, image_path, 404)
            await assert_regenerated(http, d, prompt, image_id)
    report("killed, restarted empty: delete reached edges after restart", gone)


async def test_a_revoked_key_is_refused_by_every_edge_at_once(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer, report
) -> None:
    with deployed(tmp_path, env_for(gemini, redis_server), edges=2) as d:
        key_id, key = new_key(d.origin, "project")
        _, master = new_key(d.origin, "master")
        path = live_path(f"paid for by a key soon revoked {time.time_ns()}")
        async with client() as http:
            for edge in d.edges:  # the key is in both edges' key caches, the image in L1
                assert_image(await http.get(edge.url + path, headers={"X-API-Key": key}))
            await revoke(http, d, key_id, master)
            refused = await until_every_edge(http, d, path, 401, {"X-API-Key": key})
            for edge in d.edges:
                error = assert_envelope(
                    await http.get(edge.url + live_path("a new one"), headers={"X-API-Key": key}),
                    401,
                )
                assert error["code"] == "UNAUTHORIZED"
    report(f"revocation reached every edge (KEY_CACHE_TTL_S={KEY_CACHE_TTL_S})", refused)
    assert gemini.generations == 1  # the revoked key paid for nothing more


async def test_every_edge_follows_an_alias_move_at_once(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer, report
) -> None:
    with deployed(tmp_path, env_for(gemini, redis_server), edges=2) as d:
        alias = f"@mv{time.time_ns()}"
        path = f"/cdn/acme/web/img/{alias}"
        async with client() as http:
            first = await upload(http, d, alias, "teal")
            for edge in d.edges:
                assert assert_image(await http.get(edge.url + path)) == first
            second = await upload(http, d, alias, "orange")
            started = time.monotonic()

            async def on_second(edge: Banatie) -> float:
                async def serves_second() -> bool:
                    return (await http.get(edge.url + path)).headers.get("x-image-id") == second

                await until(
                    serves_second, f"{edge.url} to follow the alias", REACH_DEADLINE_S, 0.02
                )
                return time.monotonic() - started

            moved = list(await asyncio.gather(*(on_second(edge) for edge in d.edges)))
            cleared = await http.put(
                f"{d.origin.url}/api/v1/images/{second}/alias",
                headers=d.headers,
                json={"alias": None},
            )
            assert cleared.status_code == 200, cleared.text
            unaliased = await until_every_edge(http, d, path, 404)
    report("alias moved to a new upload: every edge followed", moved)
    report("alias cleared: every edge answered 404", unaliased)


# -- the bus on its own (timing inside one process is in the test's hands) -------------------------


@pytest.fixture
async def buses(redis_server: RedisServer) -> AsyncIterator[tuple[RedisBus, RedisBus]]:
    sender, receiver = RedisBus.from_url(redis_server.url), RedisBus.from_url(redis_server.url)
    try:
        yield sender, receiver
    finally:
        await receiver.close()
        await sender.close()


async def test_a_publish_redis_refused_is_recorded_once_redis_is_back(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    sender, receiver = buses
    got: list[Invalidation] = []
    receiver.subscribe(got.append)
    await receiver.start()
    await asyncio.wait_for(receiver.subscribed.wait(), 5.0)
    with redis_server.paused():
        await sender.publish(Invalidation("img-paused", ("d1",)))
        assert sender.pending == 1
    await until(lambda: sender.pending == 0, "the outbox to empty")
    await until(lambda: [e.image_id for e in got] == ["img-paused"], "the event to arrive")


async def test_a_reader_behind_a_trimmed_log_drops_everything(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    sender, receiver = buses
    got: list[Invalidation] = []
    held = asyncio.Event()

    async def slow(event: Invalidation) -> None:
        got.append(event)
        if event.image_id == "img-1":
            await held.wait()  # the reader is busy here, not reading the log

    receiver.subscribe(slow)
    await receiver.start()
    await asyncio.wait_for(receiver.subscribed.wait(), 5.0)
    await sender.publish(Invalidation("img-1"))
    await until(lambda: len(got) == 1, "the first event")
    await sender.publish(Invalidation("img-2"))
    with redis.Redis.from_url(redis_server.url) as r:
        r.xtrim(STREAM, maxlen=0)
    held.set()
    await until(lambda: any(e.image_id == EVERYTHING for e in got), "the reader to drop all")
    assert "img-2" not in [e.image_id for e in got]  # trimmed: it cannot be read, only covered


async def test_a_reader_drops_everything_when_redis_lost_the_log(
    redis_server: RedisServer, buses: tuple[RedisBus, RedisBus]
) -> None:
    sender, receiver = buses
    got: list[Invalidation] = []
    receiver.subscribe(got.append)
    await receiver.start()
    await asyncio.wait_for(receiver.subscribed.wait(), 5.0)
    with redis.Redis.from_url(redis_server.url) as r:
        epoch = r.get(EPOCH_KEY)
        assert epoch is not None
        r.flushall()
    await until(lambda: [e.image_id for e in got] == [EVERYTHING], "the reader to drop all")
    await sender.publish(Invalidation("img-after"))
    await until(lambda: got[-1].image_id == "img-after", "events after the loss")
    with redis.Redis.from_url(redis_server.url) as r:
        assert r.get(EPOCH_KEY) not in (None, epoch)


# -- one process: the origin's changes reach its own edge directly ---------------------------------


async def test_the_edge_follows_an_alias_a_generation_takes_or_a_regeneration_moves(
    tmp_path: Path,
) -> None:
    async with open_site(tmp_path) as site:
        path = "/cdn/acme/web/img/@hero"

        async def generate(prompt: str) -> dict[str, Any]:
            body = {"prompt": prompt, "alias": "@hero", "autoEnhance": False}
            response = await site.api("POST", "/api/v1/generations", json=body)
            assert response.status_code == 201, response.text
            return response.json()["data"]

        first = await generate("a lighthouse")
        assert (await site.http.get(path)).headers["x-image-id"] == first["outputImageId"]
        second = await generate("a harbour")
        assert (await site.http.get(path)).headers["x-image-id"] == second["outputImageId"]
        again = await site.api("POST", f"/api/v1/generations/{second['id']}/regenerate")
        assert again.status_code in (200, 201), again.text
        moved_to = again.json()["data"]["outputImageId"]
        assert moved_to != second["outputImageId"]
        assert (await site.http.get(path)).headers["x-image-id"] == moved_to
