"""Reliability with real processes: Redis, object storage, the origin and Gemini failing,
and hostile live URLs over a real socket."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cache.objects.s3 import S3Store
from tests.fake_gemini import FakeGemini, FakeGeminiServer
from tests.servers import MotoServer, RedisServer, s3_store_for
from tests.test_multiprocess import (
    Deployment,
    assert_envelope,
    assert_image,
    cache_key_of,
    client,
    deployed,
    deployment_env,
    live_path,
    new_bucket,
    one_process,
    redis_has,
)
from tests.waiting import until

# -- Redis, storage and the origin going away --------------------------------------------------


async def test_hits_are_answered_throughout_a_redis_restart(
    tmp_path: Path, gemini: FakeGemini, redis_server: RedisServer
) -> None:
    url = redis_server.url
    # No L1: every hit reads the index (or, without Redis, the manifest) and then storage.
    env = deployment_env(gemini, REDIS_URL=url, L1_MAX_ENTRY_BYTES="1")
    with one_process(tmp_path, env) as d:
        edge = d.edges[0]
        prompts = [f"under load {n} {time.time_ns()}" for n in range(5)]
        answers: list[httpx.Response | Exception] = []
        stopping = asyncio.Event()
        async with client() as http:
            for prompt in prompts:
                assert_image(await http.get(edge.url + live_path(prompt), headers=d.headers))
            digests = [await cache_key_of(http, d, prompt) for prompt in prompts]

            async def load(offset: int) -> None:
                n = offset
                while not stopping.is_set():
                    path = live_path(prompts[n % len(prompts)])
                    try:
                        answers.append(await http.get(edge.url + path, headers=d.headers))
                    except httpx.HTTPError as e:
                        answers.append(e)
                    n += 1

            loaders = [asyncio.create_task(load(n)) for n in range(4)]
            try:
                await until(lambda: len(answers) >= 40, "hits before the outage")
                with redis_server.stopped():
                    seen = len(answers)
                    await until(lambda: len(answers) >= seen + 100, "hits without Redis")
                seen = len(answers)

                def reconnected() -> bool:
                    # Redis came back empty: the edge writes entries back as it reads manifests.
                    return len(answers) >= seen + 100 and all(
                        redis_has(url, f"live:{{{digest}}}") for digest in digests
                    )

                await until(reconnected, "the edge to use Redis again", poll_s=0.2)
            finally:
                stopping.set()
                await asyncio.gather(*loaders)
    failures = [
        a
        for a in answers
        if not isinstance(a, httpx.Response)
        or a.status_code != 200
        or a.headers["x-cache-status"] != "HIT"
    ]
    assert not failures, f"{len(failures)} of {len(answers)} hits failed, first: {failures[0]!r}"
    assert gemini.generations == len(prompts)


async def _snapshot(store: S3Store) -> dict[str, tuple[bytes, str]]:
    return {
        key: (await store.read(key), (await store.head(key)).content_type)
        async for key in store.keys()
    }


async def _restore(store: S3Store, objects: dict[str, tuple[bytes, str]]) -> None:
    await store.create_bucket()
    for key, (data, content_type) in objects.items():
        await store.put(key, data, content_type)


async def test_storage_outage_serves_l1_hits_and_answers_503_for_the_rest(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str, redis_url: str
) -> None:
    moto = MotoServer()  # our own: stopping it must not break other tests' buckets
    store: S3Store | None = None
    try:
        moto.start()
        storage = await new_bucket(moto.endpoint)
        store = s3_store_for(moto.endpoint, storage["S3_BUCKET"])
        env = deployment_env(gemini, DATABASE_URL=postgres_database, REDIS_URL=redis_url, **storage)
        hosts = [{"DISK_CACHE_DIR": str(tmp_path / f"disk-{n}")} for n in range(2)]  # 2 hosts
        with deployed(tmp_path, env, edges=2, edge_env=hosts) as d:
            warm, cold = d.edges
            path = live_path(f"kept through a storage outage {time.time_ns()}")
            async with client() as http:
                image_id = assert_image(await http.get(warm.url + path, headers=d.headers))
                image_path = f"/cdn/acme/web/img/{image_id}"
                # moto keeps its state in memory only: keep a copy to put back after the
                # restart, as a real store would have kept the objects through an outage.
                objects = await _snapshot(store)
                moto.stop()
                try:
                    assert_image(await http.get(warm.url + path, headers=d.headers), "HIT")
                    # In the index but in no L1 (another edge), or an image by id not in L1.
                    for response in (
                        await http.get(cold.url + path, headers=d.headers),
                        await http.get(warm.url + image_path),
                    ):
                        error = assert_envelope(response, 503)
                        assert error["code"] == "UPSTREAM_UNAVAILABLE"
                        assert int(response.headers["retry-after"]) >= 1
                finally:
                    moto.start()
                    await _restore(store, objects)
                hit = await http.get(cold.url + path, headers=d.headers)
                assert assert_image(hit, "HIT") == image_id
                assert assert_image(await http.get(warm.url + image_path)) == image_id
                new = live_path(f"after the storage outage {time.time_ns()}")
                assert_image(await http.get(cold.url + new, headers=d.headers), "MISS")
                assert_image(await http.get(warm.url + new, headers=d.headers), "HIT")
    finally:
        if store is not None:
            await store.close()
        moto.close()
    assert gemini.generations == 2


async def test_with_the_origin_down_hits_are_served_and_misses_are_503(
    tmp_path: Path, gemini: FakeGemini, postgres_database: str, redis_url: str
) -> None:
    env = deployment_env(
        gemini, DATABASE_URL=postgres_database, REDIS_URL=redis_url, FAILURE_TTL_S="1"
    )
    with deployed(tmp_path, env, edges=1) as d:
        edge = d.edges[0]
        run = time.time_ns()
        keyed = live_path(f"cached before the origin died {run}")
        public = f"/cdn/acme/web/live/home?prompt=public%20{run}&autoEnhance=false"
        new = live_path(f"asked for while the origin is down {run}")
        async with client() as http:
            image_id = assert_image(await http.get(edge.url + keyed, headers=d.headers), "MISS")
            assert_image(await http.get(edge.url + public), "MISS")
            d.origin.signal(signal.SIGKILL)
            assert d.origin.process is not None
            await asyncio.to_thread(d.origin.process.wait, 10)

            assert (
                assert_image(await http.get(edge.url + keyed, headers=d.headers), "HIT") == image_id
            )
            assert_image(await http.get(edge.url + public), "HIT")
            for response in (
                await http.get(edge.url + new, headers=d.headers),
                await http.get(f"{edge.url}/cdn/acme/web/img/{image_id}"),
            ):
                error = assert_envelope(response, 503)
                assert error["code"] == "UPSTREAM_UNAVAILABLE"
                assert int(response.headers["retry-after"]) >= 1

            d.origin.start()  # same port: the edge finds it again by itself

            async def generates() -> bool:
                response = await http.get(edge.url + new, headers=d.headers)
                if response.status_code != 200:
                    assert_envelope(response, 503)
                    return False
                return True

            await until(generates, "misses to work again", poll_s=0.25)
    assert gemini.generations == 3


# -- one `banatie serve` for the Gemini failures and the hostile URLs ----------------------------


@pytest.fixture(scope="module")
def serving(
    fake_gemini: FakeGeminiServer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """`banatie serve` on Redis, failing fast: no Gemini retries, a 2 s generation timeout,
    failures remembered for 1 s; with a scope `frozen` that refuses new generations."""
    env = deployment_env(
        fake_gemini.fake,
        REDIS_URL=redis_url,
        GENERATION_RETRIES="0",
        GENERATION_TIMEOUT_S="2",
        FAILURE_TTL_S="1",
    )
    with one_process(tmp_path_factory.mktemp("serving"), env) as d:
        response = httpx.post(
            f"{d.origin.url}/api/v1/live/scopes",
            json={"slug": "frozen", "allowNewGenerations": False},
            headers=d.headers,
        )
        assert response.status_code == 201, response.text
        yield d


# -- Gemini failing -------------------------------------------------------------------------------


def _silent(fake: FakeGemini) -> None:
    fake.delay_s = 3.0  # over GENERATION_TIMEOUT_S


GEMINI_FAULTS: dict[str, Callable[[FakeGemini], None]] = {
    "rate limited": lambda fake: fake.fail_next(1, 429),
    "server error": lambda fake: fake.fail_next(1, 500),
    "no image in the answer": lambda fake: fake.malformed_next(1, "no_parts"),
    "invalid JSON": lambda fake: fake.malformed_next(1, "invalid_json"),
    "no answer in time": _silent,
}


@pytest.mark.parametrize("fault", list(GEMINI_FAULTS))
async def test_a_failed_generation_answers_an_error_and_leaves_nothing_behind(
    serving: Deployment, gemini: FakeGemini, redis_url: str, fault: str
) -> None:
    d = serving
    prompt = f"{fault} {time.time_ns()}"
    path = d.origin.url + live_path(prompt)

    GEMINI_FAULTS[fault](gemini)
    async with client() as http:

        async def listed(status: str) -> list[dict[str, object]]:
            response = await http.get(
                f"{d.origin.url}/api/v1/generations?status={status}&limit=100", headers=d.headers
            )
            return [g for g in response.json()["data"] if g["originalPrompt"] == prompt]

        assert_envelope(await http.get(path, headers=d.headers), 502, 503, 504)
        gemini.delay_s = 0.0
        assert len(await listed("failed")) == 1
        digest = await cache_key_of(http, d, prompt)
        assert not redis_has(redis_url, f"lock:{{{digest}}}")
        assert not redis_has(redis_url, f"live:{{{digest}}}")

        async def generates() -> bool:
            response = await http.get(path, headers=d.headers)
            if response.status_code != 200:
                assert_envelope(response, 502, 503, 504)  # the failure, remembered briefly
                return False
            assert response.headers["x-cache-status"] == "MISS"
            return True

        await until(generates, "the key to generate after FAILURE_TTL_S", poll_s=0.2)
        assert_image(await http.get(path, headers=d.headers), "HIT")
        assert len(await listed("success")) == 1
        assert not redis_has(redis_url, f"lock:{{{digest}}}")
    assert len(gemini.image_requests) == 2  # the failed attempt and the one that worked
    # A model that answered too late still answers in the end; wait, so the next test's
    # counts start from nothing.
    answered = 2 if fault == "no answer in time" else 1
    await until(lambda: gemini.generations == answered, "the fake's last answer")


# -- hostile URLs over a real socket --------------------------------------------------------------

LONG = 10_000
BAD_URLS = {
    "invalid percent-escape": "/api/v1/live?prompt=%zz",
    "lone percent sign": "/api/v1/live?prompt=%",
    "percent sign at the end": "/api/v1/live?prompt=abc%",
    "invalid UTF-8": "/api/v1/live?prompt=%ff%fe",
    "truncated UTF-8": "/api/v1/live?prompt=%C3%28",
    "NUL in the prompt": "/api/v1/live?prompt=a%00b",
    "100 KB prompt": "/api/v1/live?prompt=" + "a" * 100_000,
    "10 KB prompt": "/api/v1/live?prompt=" + "a" * LONG,
    "repeated prompt": "/api/v1/live?prompt=a&prompt=b",
    "repeated aspectRatio": "/api/v1/live?prompt=a&aspectRatio=1:1&aspectRatio=16:9",
    "unknown aspectRatio": "/api/v1/live?prompt=a&aspectRatio=99:1",
    "blank prompt": "/api/v1/live?prompt=%20+%09",
    "no prompt": "/api/v1/live?aspectRatio=1:1",
    "CDN invalid percent-escape": "/cdn/acme/web/live/home?prompt=%zz",
    "CDN invalid UTF-8": "/cdn/acme/web/live/home?prompt=%ff",
    "CDN 100 KB prompt": "/cdn/acme/web/live/home?prompt=" + "a" * 100_000,
    "scope of 10,000 characters": "/cdn/acme/web/live/" + "s" * LONG + "?prompt=a",
    "org of 10,000 characters": "/cdn/" + "o" * LONG + "/web/live/home?prompt=a",
    "project of 10,000 characters": "/cdn/acme/" + "p" * LONG + "/live/home?prompt=a",
    "NUL in the scope": "/cdn/acme/web/live/ho%00me?prompt=a",
    "invalid UTF-8 in the scope": "/cdn/acme/web/live/%ff%fe?prompt=a",
    "image id of 10,000 characters": "/cdn/acme/web/img/" + "i" * LONG,
    "alias of 10,000 characters": "/cdn/acme/web/img/@" + "a" * LONG,
    # Unknown parameters are ignored: this reaches the scope's refusal, after parsing.
    "unknown parameters": "/cdn/acme/web/live/frozen?prompt=a&utm_source=news&cb=12345&x=",
}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw_get(base_url: str, target: str, headers: dict[str, str]) -> Answer:
    """GET `target` exactly as given (no client-side encoding), over a fresh connection."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return Answer(int(status_line.split()[1]), {k.lower(): v for k, v in fields.items()}, body)


@pytest.mark.parametrize("target", list(BAD_URLS.values()), ids=list(BAD_URLS))
async def test_a_hostile_live_url_is_a_4xx_envelope_and_never_generates(
    serving: Deployment, gemini: FakeGemini, target: str
) -> None:
    answer = await raw_get(serving.origin.url, target, serving.headers)
    assert 400 <= answer.status < 500, (answer.status, answer.body[:300])
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    body = json.loads(answer.body)
    assert body["success"] is False and body["error"]["code"], body
    assert gemini.requests == []


async def test_after_hostile_urls_a_sane_one_still_generates(
    serving: Deployment, gemini: FakeGemini
) -> None:
    async with client() as http:
        path = live_path(f"sane {time.time_ns()}")
        response = await http.get(serving.origin.url + path, headers=serving.headers)
    assert_image(response, "MISS")
    assert gemini.generations == 1
