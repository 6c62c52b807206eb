"""Secrets never reach the log, even at LOG_LEVEL=debug, whatever a client sends where."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.running import Banatie


def test_keys_and_signing_secrets_never_appear_in_the_log(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path, env={"LOG_LEVEL": "debug"})
    key = app.cli("keys", "create", "--org", "acme", "--project", "web").strip()
    master = app.cli("keys", "create", "--master").strip()
    unknown = "bnt_" + uuid.uuid4().hex * 2  # well formed, never issued
    malformed = "bnt_not-a-key-" + uuid.uuid4().hex
    app.start()
    try:
        with httpx.Client(base_url=app.url, timeout=60) as http:
            good = {"X-API-Key": key}
            assert http.get("/api/v1/generations", headers=good).status_code == 200
            made = http.post("/api/v1/generations", headers=good, json={"prompt": "a red fox"})
            assert made.status_code == 201
            for _ in range(2):  # a miss, then a hit
                assert http.get("/api/v1/live?prompt=fox", headers=good).status_code == 200
            for wrong in (unknown, malformed, master):
                headers = {"X-API-Key": wrong}
                assert http.get("/api/v1/generations", headers=headers).status_code in (401, 403)
                assert http.get("/api/v1/live?prompt=fox", headers=headers).status_code == 401
            assert http.get("/api/admin/keys", headers=good).status_code == 403
            # Keys where they do not belong: the query string, the path.
            for secret in (key, unknown):
                assert http.get(f"/api/v1/live?prompt=fox&apiKey={secret}").status_code == 401
                assert http.get(f"/api/v1/generations?X-API-Key={secret}").status_code == 401
                assert http.get(f"/api/v1/images/{secret}", headers=good).status_code == 404
            cdn = http.get(f"/cdn/acme/web/live/demo?prompt=fox&key={key}")
            assert cdn.status_code == 200
            signing = http.post("/api/v1/live/signing/rotate", headers=good).json()["data"]
            created = http.post(
                "/api/admin/keys",
                headers={"X-API-Key": master},
                json={"type": "project", "organizationSlug": "acme", "projectSlug": "app"},
            ).json()["data"]
    finally:
        app.stop()
    log = app.log.read_text()
    assert " DEBUG " in log  # debug logging was really on
    for name, secret in (
        ("project key", key),
        ("master key", master),
        ("unknown key", unknown),
        ("malformed key", malformed),
        ("signing secret", signing["secret"]),
        ("created key", created["key"]),
    ):
        assert secret not in log, f"the {name} is in {app.log}"
