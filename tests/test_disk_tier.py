"""The edge's disk tier (edge/disk_cache.py), with real processes: `banatie origin` and
`banatie edge` sharing Redis and an S3 server (moto, private to this module so its request
log counts the object-store reads), Gemini played by the fake on loopback.

"No object-store read" is counted at the S3 server: the GETs on the test's bucket in moto's
log. L1_BYTES=100 keeps every image out of the L1, so each hit after the first must come from
the disk tier (or storage, when the disk tier fails to answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from tests.fake_gemini import FakeGemini
from tests.running import Banatie
from tests.servers import MotoServer, s3_store_for
from tests.test_multiprocess import (
    Deployment,
    assert_envelope,
    assert_image,
    client,
    deployed,
    deployment_env,
    has_metric,
    live_path,
    metric,
    new_bucket,
    project_key,
)
from tests.waiting import until, wait_until

NO_L1 = {"L1_BYTES": "100"}  # no image fits: every hit after the first is a disk (or S3) read


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def s3_gets(moto: MotoServer, bucket: str) -> int:
    """GET requests on `bucket` the S3 server has answered so far (its request log)."""
    pattern = re.compile(rf'"(?:\x1b\[[0-9;]*m)*GET /{re.escape(bucket)}/')
    return len(pattern.findall(moto.log.read_text(errors="replace")))


async def s3_env_for(moto: MotoServer, redis_url: str, gemini: FakeGemini) -> dict[str, str]:
    return deployment_env(gemini, REDIS_URL=redis_url, **await new_bucket(moto.endpoint))


DISK_HITS = 'banatie_cache_hits_total{tier="disk"}'
DISK_ENTRIES = "banatie_disk_cache_entries"


@contextlib.contextmanager
def one_edge(
    tmp_path: Path, env: dict[str, str], **edge_env: str
) -> Iterator[tuple[Deployment, Banatie, Path]]:
    """An origin and one edge whose disk tier is `tmp_path / "disk"`: (deployment, edge, disk)."""
    disk = tmp_path / "disk"
    edge_env = {**edge_env, "DISK_CACHE_DIR": str(disk)}
    with deployed(tmp_path, env, edges=1, edge_env=[edge_env]) as d:
        yield d, d.edges[0], disk


@contextlib.contextmanager
def stopped(edge: Banatie) -> Iterator[None]:
    """The edge is down inside the block and started again after it (same port, same disk)."""
    edge.stop()
    yield
    edge.start()


def entry_files(directory: Path) -> list[Path]:
    return sorted(p for p in (directory / "entries").glob("*/*") if p.is_file())


def held_bytes(directory: Path) -> int:
    """The size of every entry file (files evicted while we look count as none)."""
    total = 0
    for path in entry_files(directory):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


async def on_disk(edge: Banatie, directory: Path, count: int) -> None:
    """Wait until `count` entries are written under `directory` (the writes are queued)."""
    await until(
        lambda: len(entry_files(directory)) == count and metric(edge, DISK_ENTRIES) == count,
        f"{count} disk cache entries in {directory}",
    )


# -- served from disk ------------------------------------------------------------------------


async def test_an_l1_miss_is_served_from_disk_without_reading_object_storage(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    with one_edge(tmp_path, env, **NO_L1) as (d, edge, disk):
        path = live_path(f"from disk {time.time_ns()}")
        async with client() as http:
            miss = await http.get(edge.url + path, headers=d.headers)
            assert_image(miss, "MISS")
            await on_disk(edge, disk, 1)
            reads = s3_gets(moto, env["S3_BUCKET"])
            hit = await http.get(edge.url + path, headers=d.headers)
            assert_image(hit, "HIT")
            assert hit.content == miss.content
            for name in ("etag", "content-type", "content-length", "cache-control", "x-image-id"):
                assert hit.headers[name] == miss.headers[name], name
            not_modified = await http.get(
                edge.url + path, headers={**d.headers, "If-None-Match": hit.headers["etag"]}
            )
            assert not_modified.status_code == 304 and not_modified.content == b""
            head = await http.head(edge.url + path, headers=d.headers)
            assert head.status_code == 200 and head.headers["content-length"] == str(
                len(hit.content)
            )
            assert s3_gets(moto, env["S3_BUCKET"]) == reads  # nothing read from storage
        assert metric(edge, DISK_HITS) == 3


async def test_a_restarted_edge_serves_from_disk(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    with one_edge(tmp_path, env) as (d, edge, disk):
        path = live_path(f"kept across a restart {time.time_ns()}")
        image_path = ""
        async with client() as http:
            first = await http.get(edge.url + path, headers=d.headers)
            image_id = assert_image(first, "MISS")
            image_path = f"/cdn/acme/web/img/{image_id}"
            assert_image(await http.get(edge.url + image_path))
            await on_disk(edge, disk, 2)  # the live key and the image by id
        edge.stop()
        edge.start()
        reads = s3_gets(moto, env["S3_BUCKET"])
        async with client() as http:
            again = await http.get(edge.url + path, headers=d.headers)
            assert_image(again, "HIT")
            by_id = await http.get(edge.url + image_path)
            assert_image(by_id)
        assert again.content == first.content == by_id.content
        assert s3_gets(moto, env["S3_BUCKET"]) == reads
        assert metric(edge, DISK_HITS) == 2
    assert gemini.generations == 1


async def test_a_delete_made_while_the_edge_was_down_is_applied_when_it_starts(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    with one_edge(tmp_path, env) as (d, edge, disk):
        path = live_path(f"deleted while the edge was down {time.time_ns()}")
        async with client() as http:
            image_id = assert_image(await http.get(edge.url + path, headers=d.headers), "MISS")
            await on_disk(edge, disk, 1)
            with stopped(edge):
                await d.delete_image(http, image_id)
            await on_disk(edge, disk, 0)
            replaced = await http.get(edge.url + path, headers=d.headers)
            assert assert_image(replaced, "MISS") != image_id
    assert gemini.generations == 2


# -- crash safety ----------------------------------------------------------------------------


async def test_a_torn_entry_is_never_served_and_is_written_again(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    bucket = env["S3_BUCKET"]
    with one_edge(tmp_path, env, **NO_L1) as (d, edge, disk):
        path = live_path(f"torn on disk {time.time_ns()}")
        async with client() as http:
            original = await http.get(edge.url + path, headers=d.headers)
            assert_image(original, "MISS")
        await on_disk(edge, disk, 1)
        [entry] = entry_files(disk)
        whole = entry.read_bytes()
        flipped = bytearray(whole)
        flipped[-5] ^= 0xFF  # same size, one body byte wrong: only the checksum tells
        # What a crash can leave: a file cut short, one with a bad byte, a temp file.
        for damaged in (whole[: len(whole) // 2], bytes(flipped)):
            with stopped(edge):
                entry.write_bytes(damaged)
                stale_tmp = disk / "tmp" / f"{entry.name}.99999.0"
                stale_tmp.write_bytes(whole[:100])
                os.utime(stale_tmp, (time.time() - 3600, time.time() - 3600))
            repairs = metric(edge, "banatie_disk_cache_repairs_total")
            reads = s3_gets(moto, bucket)
            async with client() as http:
                served = await http.get(edge.url + path, headers=d.headers)
                assert_image(served, "HIT")
                assert served.content == original.content
                assert served.headers["etag"] == original.headers["etag"]
                assert s3_gets(moto, bucket) == reads + 1  # read again from storage …
                assert metric(edge, "banatie_disk_cache_repairs_total") == repairs + 1
                await until(lambda: whole_again(entry, whole), "the entry written again")
                again = await http.get(edge.url + path, headers=d.headers)  # … then from disk
                assert again.content == original.content
                assert s3_gets(moto, bucket) == reads + 1
            await until(lambda tmp=stale_tmp: not tmp.exists(), "the sweep to remove the temp file")


def whole_again(entry: Path, whole: bytes) -> bool:
    """The entry file is back, as long as before and ending in the same body."""
    try:
        again = entry.read_bytes()
    except FileNotFoundError:
        return False
    return len(again) == len(whole) and again[-1000:] == whole[-1000:]


def noise_png(seed: int, side: int = 600) -> bytes:
    """A PNG of about 1 MB that does not compress (each one different)."""
    out = io.BytesIO()
    pixels = hashlib.shake_256(str(seed).encode()).digest(side * side * 3)
    Image.frombytes("RGB", (side, side), pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


async def test_an_edge_killed_while_writing_never_serves_a_partial_body(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    store = s3_store_for(moto.endpoint, env["S3_BUCKET"])
    with one_edge(tmp_path, env, **NO_L1) as (d, edge, disk):
        expected: dict[str, bytes] = {}
        async with client() as http:
            for n in range(16):
                uploaded = await http.post(
                    f"{d.origin.url}/api/v1/images/upload",
                    headers=d.headers,
                    files={"file": (f"{n}.png", noise_png(n), "image/png")},
                )
                assert uploaded.status_code == 201, uploaded.text
                image = uploaded.json()["data"]
                path = f"/cdn/acme/web/img/{image['id']}"
                expected[path] = await store.read(image["storageKey"])
            await store.close()
            # 16 misses of about 1 MB each: their disk writes queue up behind the responses.
            # Kill the edge as soon as a few are answered, with writes still in progress.
            pending = {asyncio.ensure_future(http.get(edge.url + p)) for p in expected}
            answered: list[httpx.Response] = []
            while len(answered) < 3:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                answered += [task.result() for task in done]
            edge.signal(signal.SIGKILL)
            assert edge.process is not None
            await asyncio.to_thread(edge.process.wait, 10)
            await asyncio.gather(*pending, return_exceptions=True)
        for response in answered:
            assert response.content == expected[response.url.path]
        left = len(list((disk / "tmp").iterdir())), len(entry_files(disk))
        edge.start()
        async with client() as http:
            for _ in range(2):  # from disk where the write finished, else storage, then disk
                paths = list(expected)
                again = await asyncio.gather(*(http.get(edge.url + p) for p in paths))
                for path, response in zip(paths, again, strict=True):
                    assert_image(response)
                    assert response.content == expected[path]
        print(
            f"SIGKILL left {left[0]} temp files and {left[1]} entries; after the restart "
            f"{metric(edge, DISK_HITS):.0f} of 32 answers came from disk"
        )


# -- invalidation and the bound --------------------------------------------------------------


async def test_a_delete_removes_the_disk_entries_on_every_edge(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    disks = [tmp_path / "disk-a", tmp_path / "disk-b"]
    edge_env = [{**NO_L1, "DISK_CACHE_DIR": str(disk)} for disk in disks]
    with deployed(tmp_path, env, edges=2, edge_env=edge_env) as d:
        path = live_path(f"deleted from every disk {time.time_ns()}")
        async with client() as http:
            image_id = assert_image(await http.get(d.edges[0].url + path, headers=d.headers))
            image_path = f"/cdn/acme/web/img/{image_id}"
            for edge, disk in zip(d.edges, disks, strict=True):
                assert assert_image(await http.get(edge.url + path, headers=d.headers)) == image_id
                assert assert_image(await http.get(edge.url + image_path)) == image_id
                await on_disk(edge, disk, 2)
                for _ in range(2):  # read whole from disk, then sent from the file
                    hit = await http.get(edge.url + path, headers=d.headers)
                    assert assert_image(hit, "HIT") == image_id
            await d.delete_image(http, image_id)
            for edge, disk in zip(d.edges, disks, strict=True):
                await on_disk(edge, disk, 0)
                assert_envelope(await http.get(edge.url + image_path), 404)
            # The live URL is a new image now, on both edges.
            for edge in d.edges:
                again = await http.get(edge.url + path, headers=d.headers)
                assert assert_image(again) != image_id


async def test_the_byte_bound_holds_under_a_flood_of_distinct_keys(
    tmp_path: Path, gemini: FakeGemini, redis_url: str, moto: MotoServer
) -> None:
    env = await s3_env_for(moto, redis_url, gemini)
    disk = tmp_path / "disk"
    bound = 40_000  # about 40 entries
    edge = {**NO_L1, "DISK_CACHE_DIR": str(disk), "DISK_CACHE_BYTES": str(bound)}
    with deployed(tmp_path, env, edges=1, edge_env=[edge]) as d:
        [one] = d.edges
        # The same host, the same directory: a second edge process stands in for a worker.
        second = Banatie("edge", tmp_path, {**env, **edge, "ORIGIN_URL": d.origin.url})
        second.start()
        try:
            run = time.time_ns()
            paths = [live_path(f"flood {run} {n}") for n in range(240)]
            sizes: list[int] = []
            async with client() as http:
                gate = asyncio.Semaphore(16)

                async def fetch(n: int) -> None:
                    async with gate:
                        target = (one, second)[n % 2]
                        assert_image(await http.get(target.url + paths[n], headers=d.headers))
                        sizes.append(held_bytes(disk))

                await asyncio.gather(*(fetch(n) for n in range(len(paths))))
            await until(
                lambda: metric(one, "banatie_disk_cache_bytes") > bound * 0.7, "the last writes"
            )
            held = held_bytes(disk)
            assert max(sizes) <= bound and held <= bound, (max(sizes), held)
            assert metric(one, "banatie_disk_cache_bytes") <= bound
            evicted = metric(one, "banatie_disk_cache_evictions_total") + metric(
                second, "banatie_disk_cache_evictions_total"
            )
            assert evicted >= len(paths) - len(entry_files(disk))
        finally:
            second.stop()


# -- one hit, whichever path answers ---------------------------------------------------------

PROMPT = "a heron in the reeds"
LIVE = "/cdn/acme/web/live/site?prompt=" + quote(PROMPT)


def raw_get(app: Banatie, target: str) -> tuple[bytes, list[bytes], bytes]:
    """GET `target` as is on a new connection: (status line, header lines but Date, body)."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", app.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, [line for line in lines if not line.lower().startswith(b"date:")], body


@pytest.mark.parametrize("tier", ["l1", "disk"])
def test_the_fast_path_and_the_asgi_path_give_the_same_hit(tmp_path: Path, tier: str) -> None:
    env = {"DISK_CACHE_BYTES": str(1 << 26), **(NO_L1 if tier == "disk" else {})}
    app = Banatie("serve", tmp_path, env)
    app.start()
    try:
        project_key(app)  # the project acme/web
        miss = httpx.get(app.url + LIVE)
        assert miss.headers["x-cache-status"] == "MISS"
        if tier == "disk":
            assert_eventually_on_disk(app, tmp_path / "disk-cache")
        httpx.get(app.url + LIVE)  # the project is known now: the fast path may answer
        answers = []
        sends = "banatie_disk_cache_file_sends_total"
        for target in (LIVE, LIVE + "#x"):  # a fragment: the fast path declines it
            fast_before = metric(app, "banatie_fast_path_responses_total")
            disk_before, sends_before = metric(app, DISK_HITS), metric(app, sends)
            answers.append(raw_get(app, target))
            took_fast = metric(app, "banatie_fast_path_responses_total") - fast_before
            assert took_fast == (1 if target == LIVE else 0), target
            from_disk = metric(app, DISK_HITS) - disk_before
            assert from_disk == (1 if tier == "disk" else 0), target
            # The fast path sends a file it has read whole before with os.sendfile.
            from_file = metric(app, sends) - sends_before
            assert from_file == (1 if tier == "disk" and target == LIVE else 0), target
        fast, asgi = answers
        assert fast[0].startswith(b"HTTP/1.1 200") and b"x-cache-status: HIT" in fast[1]
        assert fast == asgi
        assert fast[2] == miss.content
    finally:
        app.stop()


def assert_eventually_on_disk(app: Banatie, directory: Path) -> None:
    wait_until(lambda: entry_files(directory), f"a disk cache entry in {directory}")


def test_banatie_serve_on_a_local_store_keeps_a_disk_tier_too(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path)
    app.start()
    try:
        project_key(app)
        assert httpx.get(app.url + LIVE).headers["x-cache-status"] == "MISS"
        assert_eventually_on_disk(app, tmp_path / "disk-cache")
        assert has_metric(app, DISK_ENTRIES)
    finally:
        app.stop()
