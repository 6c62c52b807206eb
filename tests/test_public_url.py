"""Without PUBLIC_URL, every URL the service gives follows the address it listens on.

`banatie serve --port N` (or `--host`, `PORT`, `HOST`): the start-up log, the printed live
URL, `storageUrl`, `POST /api/v1/live/sign` and the OpenAPI `servers` entry all name it.
Real processes: the port reaches the app through the CLI, as it does for users.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.harness import png_bytes
from tests.running import Banatie

UNSET = {"PUBLIC_URL": ""}  # an empty value is the default


def test_a_port_flag_without_public_url_is_in_every_url(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path, env={**UNSET, "BOOTSTRAP_DEFAULT_PROJECT": "true"}).start()
    expected = f"http://localhost:{app.port}"
    try:
        log = app.log.read_text()
        key = {"X-API-Key": re.search(r"bnt_[0-9a-f]{64}", log)[0]}  # printed on first start
        upload = httpx.post(
            app.url + "/api/v1/images/upload",
            headers=key,
            files={"file": ("a.png", png_bytes(), "image/png")},
        )
        storage_url = upload.json()["data"]["storageUrl"]
        served = httpx.get(storage_url)  # "image is accessible at storageUrl"
        assert httpx.post(app.url + "/api/v1/live/signing/rotate", headers=key).is_success
        signed = httpx.post(
            app.url + "/api/v1/live/sign", headers=key, json={"scope": "demo", "prompt": "a cat"}
        )
        servers = httpx.get(app.url + "/openapi.json").json()["servers"]
    finally:
        app.stop()
    assert f"serving on {expected} " in log
    assert f"{expected}/cdn/default/default/live/demo?prompt=" in log
    assert storage_url.startswith(f"{expected}/cdn/default/default/img/"), storage_url
    assert served.status_code == 200 and served.content == png_bytes()
    assert signed.json()["data"]["url"].startswith(f"{expected}/cdn/default/default/live/demo?")
    assert servers == [{"url": expected}]


def test_a_host_flag_without_public_url_is_in_every_url(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path, env=UNSET, args=("--host", "127.0.0.2"))
    app.url = f"http://127.0.0.2:{app.port}"
    app.start()
    try:
        servers = httpx.get(app.url + "/openapi.json").json()["servers"]
    finally:
        app.stop()
    assert servers == [{"url": app.url}]
    assert f"serving on {app.url} " in app.log.read_text()


def test_public_url_when_set_wins_over_the_port(tmp_path: Path) -> None:
    public = "https://images.example.com"
    app = Banatie("serve", tmp_path, env={"PUBLIC_URL": public + "/"}).start()
    try:
        servers = httpx.get(app.url + "/openapi.json").json()["servers"]
    finally:
        app.stop()
    assert servers == [{"url": public}]
