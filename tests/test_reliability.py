"""Faults with real processes: signals mid-generation, and orphaned objects."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from cache.index import LiveRecord
from origin.gc import sweep
from tests.fake_gemini import FakeGemini
from tests.harness import Api
from tests.running import Banatie
from tests.waiting import wait_until

LIVE = "/cdn/acme/web/live/home?prompt=a%20slow%20sunrise"


def _serve(data_dir: Path, gemini: FakeGemini, **env: str) -> tuple[Banatie, str]:
    app = Banatie(
        "serve",
        data_dir,
        {
            "GEMINI_API_KEY": "test-key",
            "GEMINI_BASE_URL": gemini.url,
            "LOCK_LEASE_MS": "1000",
            **env,
        },
    )
    key = app.cli("keys", "create", "--org", "acme", "--project", "web").strip()
    return app.start(), key


def _get_in_background(url: str) -> tuple[threading.Thread, dict[str, httpx.Response]]:
    result: dict[str, httpx.Response] = {}

    def run() -> None:
        try:
            result["response"] = httpx.get(url, timeout=30)
        except httpx.HTTPError:
            pass  # the server was killed on purpose

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _wait_for_generation(gemini: FakeGemini) -> None:
    """Until the image model has been asked: the generation is under way."""
    wait_until(lambda: gemini.image_requests, "a generation to start")


def test_sigterm_lets_in_flight_generations_finish_then_exits_0(
    tmp_path: Path, gemini: FakeGemini
) -> None:
    gemini.delay_s = 1.5
    app, _ = _serve(tmp_path, gemini)
    try:
        thread, result = _get_in_background(app.url + LIVE)
        _wait_for_generation(gemini)
        app.signal(signal.SIGTERM)
        thread.join(30)
        assert result["response"].status_code == 200
        assert result["response"].headers["X-Cache-Status"] == "MISS"
        assert app.process is not None and app.process.wait(timeout=30) == 0
    finally:
        app.stop()


def test_sigkill_mid_generation_leaves_no_row_without_bytes(
    tmp_path: Path, gemini: FakeGemini
) -> None:
    gemini.delay_s = 3
    # A run is stale after 3 x GENERATION_TIMEOUT_S untouched: 12 s here, swept every 6 s.
    app, key = _serve(tmp_path, gemini, GENERATION_TIMEOUT_S="4")
    try:
        _get_in_background(app.url + LIVE)
        _wait_for_generation(gemini)
        app.signal(signal.SIGKILL)
        app.process.wait(timeout=10)  # type: ignore[union-attr]
    finally:
        app.stop()
    gemini.delay_s = 0
    again = Banatie("serve", tmp_path, app.env).start()
    try:
        response = httpx.get(again.url + LIVE, timeout=30)  # the abandoned claim lapses
        assert response.status_code == 200 and response.headers["X-Cache-Status"] == "MISS"
        images = httpx.get(
            again.url + "/api/v1/images?includeDeleted=true", headers={"X-API-Key": key}
        ).json()["data"]
        assert images, "the new generation's image is listed"
        for image in images:
            assert (tmp_path / "objects" / image["storageKey"]).is_file()
        assert httpx.get(again.url + LIVE, timeout=10).headers["X-Cache-Status"] == "HIT"
        # The killed run does not stay `processing`: the restarted origin marks it failed.

        def states() -> list[tuple[str, str]]:
            rows = httpx.get(again.url + "/api/v1/generations", headers={"X-API-Key": key})
            return sorted((g["status"], g["errorMessage"] or "") for g in rows.json()["data"])

        wait_until(lambda: states()[0][0] == "failed", "the killed run to be marked failed", 40)
        found = states()
        assert [s for s, _ in found] == ["failed", "success"], found
        assert found[0][1].startswith("interrupted")
    finally:
        again.stop()


async def test_gc_lists_then_removes_only_unreferenced_objects(sqlite_api: Api) -> None:
    image = await sqlite_api.upload()
    store = sqlite_api.services.store
    await store.put("acme/web/img/00000000-0000-4000-8000-00000000dead", b"orphan", "image/png")
    await store.put("acme/web/live/" + "f" * 32 + ".json", b"{}", "application/json")
    dry = await sweep(store, sqlite_api.services.sessions)
    assert sorted(dry.orphans) == [
        "acme/web/img/00000000-0000-4000-8000-00000000dead",
        "acme/web/live/" + "f" * 32 + ".json",
    ]
    assert await store.exists("acme/web/img/00000000-0000-4000-8000-00000000dead")
    done = await sweep(store, sqlite_api.services.sessions, delete=True, grace_s=0)
    assert sorted(done.removed) == sorted(dry.orphans)
    assert not await store.exists("acme/web/img/00000000-0000-4000-8000-00000000dead")
    assert await store.exists(image["storageKey"])


async def test_gc_removes_variants_whose_source_image_is_gone(sqlite_api: Api) -> None:
    store = sqlite_api.services.store
    alive = await sqlite_api.upload()
    deleted = await sqlite_api.upload()
    assert (await sqlite_api.delete(f"/api/v1/images/{deleted['id']}")).status_code == 200

    async def variant(hex_digit: str, image_id: str | None) -> str:
        key = "acme/web/var/" + hex_digit * 32
        await store.put(key, b"variant bytes", "image/webp")
        if image_id is not None:
            record = LiveRecord(image_id, None, key, "image/webp", 13, '"v"', "canonical")
            await store.put(key + ".json", record.to_json(), "application/json")
        return key

    kept = await variant("a", alive["id"])
    of_deleted = await variant("b", deleted["id"])
    of_unknown = await variant("c", "00000000-0000-4000-8000-000000000000")
    bare = await variant("d", None)
    dry = await sweep(store, sqlite_api.services.sessions)
    expected = sorted([of_deleted, of_deleted + ".json", of_unknown, of_unknown + ".json", bare])
    assert sorted(dry.orphans) == expected
    done = await sweep(store, sqlite_api.services.sessions, delete=True, grace_s=0)
    assert sorted(done.removed) == expected
    assert await store.exists(kept) and await store.exists(kept + ".json")
    assert not await store.exists(of_deleted) and not await store.exists(bare)


def test_gc_command_is_a_dry_run_by_default(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path)
    app.cli("migrate")
    orphan = tmp_path / "objects" / "o" / "p" / "img" / "x"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"orphan")
    assert app.cli("gc").split() == ["o/p/img/x"]
    assert orphan.exists()
    app.cli("gc", "--delete", "--grace", "0")
    assert not orphan.exists()
