"""A live scope counts the generations it really has, even after a process is killed
mid-generation: real `banatie serve` processes, Gemini played by the fake (held, so the kill
lands while the model is being asked)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx
import pytest

from tests.fake_gemini import FakeGemini
from tests.running import Banatie
from tests.waiting import wait_until

SCOPE = "hero"


def cdn(prompt: str) -> str:
    return f"/cdn/acme/web/live/{SCOPE}?prompt={prompt.replace(' ', '%20')}&autoEnhance=false"


def get_in_background(url: str) -> threading.Thread:
    def run() -> None:
        try:
            httpx.get(url, timeout=60)
        except httpx.HTTPError:
            pass  # the server is killed under it on purpose

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_killed_generations_give_their_scope_counts_back(
    engine: str, tmp_path: Path, gemini: FakeGemini, request: pytest.FixtureRequest
) -> None:
    env = {
        "GEMINI_API_KEY": "test-key",
        "GEMINI_BASE_URL": gemini.url,
        "LOCK_LEASE_MS": "1000",  # a dead claimant's claim is stale after 2 s
        "GENERATION_TIMEOUT_S": "30",
    }
    if engine == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("postgres_database")
    app = Banatie("serve", tmp_path, env)
    key = app.cli("keys", "create", "--org", "acme", "--project", "web").strip()
    headers = {"X-API-Key": key}

    def scope_count(server: Banatie) -> int:
        scope = httpx.get(f"{server.url}/api/v1/live/scopes/{SCOPE}", headers=headers)
        return scope.json()["data"]["currentGenerations"]

    prompts = [f"a killed picture {n}" for n in range(3)]
    gemini.hold()
    app.start()
    try:
        for prompt in prompts:
            get_in_background(app.url + cdn(prompt))
        wait_until(lambda: len(gemini.image_requests) == 3, "three generations under way", 60)
        assert scope_count(app) == 3
        app.signal(signal.SIGKILL)
        assert app.process is not None
        app.process.wait(timeout=10)
    finally:
        app.stop()
    gemini.let_go()

    again = Banatie("serve", tmp_path, app.env).start()
    try:
        # Two keys are asked for again (their dead claims are taken over); the third never is.
        for prompt in prompts[:2]:
            response = httpx.get(again.url + cdn(prompt), timeout=60)
            assert response.status_code == 200, response.text
            assert response.headers["X-Cache-Status"] == "MISS"
        assert len(gemini.image_requests) == 3 + 2  # one new model call for each

        def settled() -> list[tuple[str, str]] | None:
            rows = httpx.get(f"{again.url}/api/v1/generations", headers=headers).json()["data"]
            states = sorted((g["status"], g["errorMessage"] or "") for g in rows)
            return states if [s for s, _ in states].count("failed") == 3 else None

        # The abandoned claim nobody asked for again is swept too: two images, two counted.
        wait_until(lambda: scope_count(again) == 2, "the scope to count its two images", 60)
        states = wait_until(settled, "the three killed generations to be marked failed", 60)
        assert [s for s, _ in states] == ["failed"] * 3 + ["success"] * 2
        assert all(message.startswith("interrupted") for _, message in states[:3])
        images = httpx.get(f"{again.url}/api/v1/images", headers=headers).json()["data"]
        assert len(images) == 2
        third = httpx.get(again.url + cdn(prompts[2]), timeout=60)
        assert third.status_code == 200 and third.headers["X-Cache-Status"] == "MISS"
        assert scope_count(again) == 3
    finally:
        again.stop()
