"""The edge's "done when", with real processes: `banatie origin` plus `banatie edge` replicas
sharing Redis, PostgreSQL and object storage, Gemini played by the fake on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from cache.settings import Settings
from origin.db import make_engine, sessions
from origin.keys import create_key
from tests.fake_gemini import FakeGemini
from tests.running import Banatie
from tests.servers import RedisServer, new_bucket_name, s3_env, s3_store_for
from tests.waiting import until

SERVICE_TOKEN = "multiprocess-service-token"
CLIENT_TIMEOUT_S = 60.0
INVALIDATION_S = 1.0  # how soon a delete must reach every edge


# -- deployments --------------------------------------------------------------------------------


@dataclass
class Deployment:
    """One origin and its edges, all real `banatie` processes, with a project key for acme/web."""

    origin: Banatie
    edges: list[Banatie]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    async def delete_image(self, http: httpx.AsyncClient, image_id: str) -> None:
        """DELETE the image through the origin's API (200, or the test fails)."""
        deleted = await http.delete(
            f"{self.origin.url}/api/v1/images/{image_id}", headers=self.headers
        )
        assert deleted.status_code == 200, deleted.text


def deployment_env(gemini: FakeGemini, **env: str) -> dict[str, str]:
    """Settings every process of a deployment shares; `env` adds or overrides."""
    return {
        "GEMINI_API_KEY": "test-key",
        "GEMINI_BASE_URL": gemini.url,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "LOCK_LEASE_MS": "1000",
        "GENERATION_TIMEOUT_S": "30",
        "KEY_BUDGET_PER_HOUR": "10000",
        "IP_BUDGET_PER_HOUR": "10000",
        "DEFAULT_SCOPE_LIMIT": "10000",
        **env,
    }


@contextlib.contextmanager
def deployed(
    data_dir: Path,
    env: dict[str, str],
    edges: int = 2,
    edge_env: list[dict[str, str]] | None = None,
) -> Iterator[Deployment]:
    """`banatie origin` and `edges` replicas of `banatie edge`, all stopped on the way out.

    All share `data_dir`, so without S3 settings they share one local object directory.
    """
    origin = Banatie("origin", data_dir, env)
    replicas = [
        Banatie(
            "edge", data_dir, {**env, "ORIGIN_URL": origin.url, **(edge_env or [{}] * edges)[n]}
        )
        for n in range(edges)
    ]
    try:
        origin.start()  # first: an edge learns the model identity from it as it starts
        key = project_key(origin)
        with ThreadPoolExecutor(max_workers=edges) as pool:
            for started in [pool.submit(edge.start) for edge in replicas]:
                started.result()
        yield Deployment(origin, replicas, key)
    finally:
        try:
            with ThreadPoolExecutor(max_workers=max(edges, 1)) as pool:
                stopping = [pool.submit(edge.stop) for edge in replicas]
            for stopped in stopping:
                stopped.result()
        finally:
            origin.stop()


@contextlib.contextmanager
def one_process(data_dir: Path, env: dict[str, str]) -> Iterator[Deployment]:
    """`banatie serve` (edge and origin in one process), as a Deployment of one edge."""
    app = Banatie("serve", data_dir, env)
    try:
        app.start()
        yield Deployment(app, [app], project_key(app))
    finally:
        app.stop()


def project_key(app: Banatie) -> str:
    """A new project key for acme/web, written straight into the database `app` migrated
    (as `banatie keys create` would, without the start-up time of another process)."""

    async def create() -> str:
        engine = make_engine(Settings.from_env(app.env).resolved_database_url)
        try:
            async with sessions(engine)() as session:
                created = await create_key(session, "project", "acme", "web", "tests")
                await session.commit()
        finally:
            await engine.dispose()
        return created.secret

    with ThreadPoolExecutor(max_workers=1) as pool:  # callable from inside an event loop too
        return pool.submit(asyncio.run, create()).result()


async def new_bucket(endpoint: str) -> dict[str, str]:
    """A new empty bucket on `endpoint`; the S3_* environment that names it."""
    env = s3_env(endpoint, new_bucket_name())
    store = s3_store_for(endpoint, env["S3_BUCKET"])
    try:
        await store.create_bucket()
    finally:
        await store.close()
    return env


# -- small tools ----------------------------------------------------------------------------------


def live_path(prompt: str) -> str:
    """The keyed live URL for `prompt` (no prompt enhancement: one Gemini call per image)."""
    return f"/api/v1/live?prompt={quote(prompt)}&autoEnhance=false"


@contextlib.asynccontextmanager
async def client(timeout_s: float = CLIENT_TIMEOUT_S) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as http:
        yield http


def metric(app: Banatie, name: str) -> float:
    """One sample of `app`'s /metrics, 0 when absent (`name` may carry labels)."""
    text = httpx.get(app.url + "/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[1]) if found else 0.0


def has_metric(app: Banatie, name: str) -> bool:
    text = httpx.get(app.url + "/metrics", timeout=10).text
    return re.search(rf"^{re.escape(name)} ", text, re.M) is not None


def redis_get(url: str, key: str) -> bytes | None:
    with redis.Redis.from_url(url) as r:
        return r.get(key)  # type: ignore[return-value]


def redis_has(url: str, key: str) -> bool:
    with redis.Redis.from_url(url) as r:
        return bool(r.exists(key))


async def cache_key_of(http: httpx.AsyncClient, d: Deployment, prompt: str) -> str:
    """The live cache-key digest of the generation for `prompt` (from its meta.live)."""
    response = await http.get(f"{d.origin.url}/api/v1/generations?limit=100", headers=d.headers)
    assert response.status_code == 200, response.text
    for generation in response.json()["data"]:
        if generation["originalPrompt"] == prompt:
            return generation["meta"]["live"]["cacheKey"]
    raise AssertionError(f"no generation for {prompt!r}")


def assert_image(response: httpx.Response, status: str | None = None) -> str:
    """A 200 with image bytes (and the given X-Cache-Status); its X-Image-Id."""
    assert response.status_code == 200, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("image/"), response.headers
    if status is not None:
        assert response.headers["x-cache-status"] == status
    return response.headers["x-image-id"]


def assert_envelope(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """An error envelope with one of `statuses`, never cached; its `error` object."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = json.loads(response.content)
    assert body["success"] is False and body["error"]["code"], body
    return body["error"]


# -- the tests ------------------------------------------------------------------------------------


async def test_two_edge_processes_pay_once_for_200_concurrent_requests(
    tmp_path: Path,
    gemini: FakeGemini,
    postgres_database: str,
    redis_url: str,
    s3_endpoint: str,
) -> None:
    gemini.delay_s = 1.0  # long enough for all 200 requests to overlap
    storage = await new_bucket(s3_endpoint)
    env = deployment_env(gemini, DATABASE_URL=postgres_database, REDIS_URL=redis_url, **storage)
    with deployed(tmp_path, env, edges=2) as d:
        path = live_path(f"two edges, one lighthouse {time.time_ns()}")
        async with client() as http:
            responses = await asyncio.gather(
                *(http.get(d.edges[n % 2].url + path, headers=d.headers) for n in range(200))
            )
    image_ids = {assert_image(r) for r in responses}
    assert len(image_ids) == 1
    assert len({r.content for r in responses}) == 1
    assert gemini.generations == 1
    assert len(gemini.image_requests) == 1


async def test_waiters_on_another_edge_take_over_when_the_leader_edge_is_killed(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str, redis_url: str
) -> None:
    gemini.delay_s = 5.0  # well past the 1 s lease: the take-over happens mid-generation
    env = deployment_env(gemini, DATABASE_URL=postgres_database, REDIS_URL=redis_url)
    with deployed(tmp_path, env, edges=2) as d:
        leader, other = d.edges
        prompt = f"a leader that dies {time.time_ns()}"
        path = live_path(prompt)
        async with client() as http:
            first = asyncio.create_task(http.get(leader.url + path, headers=d.headers))
            # The origin is calling Gemini for the leader edge, which holds the key's lock.
            await until(lambda: len(gemini.image_requests) == 1, "the leader's generation")
            lock = f"lock:{{{await cache_key_of(http, d, prompt)}}}"
            leader_token = redis_get(redis_url, lock)
            assert leader_token is not None
            waiters = [
                asyncio.create_task(http.get(other.url + path, headers=d.headers))
                for _ in range(20)
            ]
            await until(
                lambda: asyncio.to_thread(metric, other, "banatie_generations_in_flight"),
                "the other edge to wait on the leader's lock",
            )
            leader.signal(signal.SIGKILL)
            assert leader.process is not None
            await asyncio.to_thread(leader.process.wait, 10)
            await until(
                lambda: redis_get(redis_url, lock) not in (None, leader_token),
                "a waiter on the other edge to take the lapsed lock over",
            )
            done, pending = await asyncio.wait(waiters, timeout=CLIENT_TIMEOUT_S)
            for task in pending:
                task.cancel()
            assert not pending, f"{len(pending)} clients of the surviving edge hung"
            with pytest.raises(httpx.TransportError):
                await first  # its edge died under it
            responses = [task.result() for task in done]
            for response in responses:
                if response.status_code != 200:
                    assert_envelope(response, 502, 503, 504)
            served = [r for r in responses if r.status_code == 200]
            assert served, [r.text for r in responses]
            assert len({assert_image(r) for r in served}) == 1
            assert_image(await http.get(other.url + path, headers=d.headers), "HIT")
            await until(lambda: redis_get(redis_url, lock) is None, "the lock to be released")
    # The origin outlives the killed edge and finishes its generation; the take-over's call
    # finds the key claimed at the origin (its claim kept fresh) and waits for that image.
    assert gemini.generations <= 2


async def test_losing_redis_costs_a_storage_read_never_a_generation(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str, redis_server: RedisServer
) -> None:
    url = redis_server.url
    env = deployment_env(gemini, DATABASE_URL=postgres_database, REDIS_URL=url)
    # The second edge keeps nothing in its L1 (nor on disk), so each of its hits goes to
    # Redis or storage.
    no_l1 = {"L1_MAX_ENTRY_BYTES": "1", "DISK_CACHE_BYTES": "0"}
    with deployed(tmp_path, env, edges=2, edge_env=[{}, no_l1]) as d:
        a, b = d.edges
        run = time.time_ns()
        cached, stored, during, after = (
            f"{name} {run}" for name in "cached stored during after".split()
        )
        async with client() as http:
            image_id = assert_image(
                await http.get(a.url + live_path(cached), headers=d.headers), "MISS"
            )
            assert_image(await http.get(a.url + live_path(stored), headers=d.headers), "MISS")
            assert gemini.generations == 2

            # FLUSHALL: the manifest in storage serves, and is written back to the index.
            with redis.Redis.from_url(url) as r:
                r.flushall()
            hit = await http.get(b.url + live_path(cached), headers=d.headers)
            assert assert_image(hit, "HIT") == image_id
            digest = await cache_key_of(http, d, cached)
            assert redis_has(url, f"live:{{{digest}}}")
            assert gemini.generations == 2

            with redis_server.stopped():
                assert_image(await http.get(a.url + live_path(cached), headers=d.headers), "HIT")
                assert_image(await http.get(b.url + live_path(stored), headers=d.headers), "HIT")
                assert gemini.generations == 2
                gemini.delay_s = 1.0
                responses = await asyncio.gather(
                    *(http.get(a.url + live_path(during), headers=d.headers) for _ in range(20))
                )
                assert len({assert_image(r) for r in responses}) == 1
                assert gemini.generations == 3  # coalesced in the process
                gemini.delay_s = 0.0

            # Redis is back, empty: the edge uses it again without a restart.
            digest = await cache_key_of(http, d, during)
            assert not redis_has(url, f"live:{{{digest}}}")

            async def written_back() -> bool:
                assert_image(await http.get(b.url + live_path(during), headers=d.headers), "HIT")
                return redis_has(url, f"live:{{{digest}}}")

            await until(written_back, "the edge to write its index entry", poll_s=0.2)
            assert_image(await http.get(a.url + live_path(after), headers=d.headers), "MISS")
            assert_image(await http.get(b.url + live_path(after), headers=d.headers), "HIT")
            assert redis_has(url, f"live:{{{await cache_key_of(http, d, after)}}}")
    assert gemini.generations == 4


async def test_a_deleted_image_stops_being_served_by_every_edge_process(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str, redis_url: str
) -> None:
    env = deployment_env(gemini, DATABASE_URL=postgres_database, REDIS_URL=redis_url)
    with deployed(tmp_path, env, edges=2) as d:
        path = live_path(f"soon deleted {time.time_ns()}")
        async with client() as http:
            image_id = assert_image(await http.get(d.edges[0].url + path, headers=d.headers))
            image_path = f"/cdn/acme/web/img/{image_id}"
            for edge in d.edges:  # both L1s hold the live key and the image by id
                assert (
                    assert_image(await http.get(edge.url + path, headers=d.headers), "HIT")
                    == image_id
                )
                assert assert_image(await http.get(edge.url + image_path)) == image_id
            await d.delete_image(http, image_id)
            for edge in d.edges:

                async def gone(edge: Banatie = edge) -> bool:
                    response = await http.get(edge.url + image_path)
                    return response.status_code == 404

                await until(gone, f"{edge.url} to drop the image", timeout_s=INVALIDATION_S)
                assert_envelope(await http.get(edge.url + image_path), 404)
            # The live URL is a new image now, generated once for both edges.
            replaced = await asyncio.gather(
                *(http.get(edge.url + path, headers=d.headers) for edge in d.edges)
            )
            new_ids = {assert_image(r) for r in replaced}
            assert len(new_ids) == 1 and image_id not in new_ids
    assert gemini.generations == 2


async def test_a_client_giving_up_does_not_cancel_the_generation(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str
) -> None:
    gemini.delay_s = 2.0
    # One process: there, cancelling the request's task would cancel the origin's work too.
    env = deployment_env(gemini, DATABASE_URL=postgres_database)
    with one_process(tmp_path, env) as d:
        edge = d.edges[0]
        path = live_path(f"an impatient visitor {time.time_ns()}")
        async with client(timeout_s=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.get(edge.url + path, headers=d.headers)
        await until(lambda: gemini.generations == 1, "the abandoned generation to finish")
        async with client() as http:
            first = assert_image(await http.get(edge.url + path, headers=d.headers))
            assert assert_image(await http.get(edge.url + path, headers=d.headers), "HIT") == first
    assert gemini.generations == 1
    assert len(gemini.image_requests) == 1
