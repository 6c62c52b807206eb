"""Keys, auth and the service endpoints."""

from __future__ import annotations

import shutil

from origin.keys import create_key, hash_key
from origin.models import ApiKey
from tests.harness import Api


async def test_keys_are_stored_only_as_sha256(api: Api) -> None:
    async with api.services.sessions() as session:
        from sqlalchemy import select

        hashes = set((await session.execute(select(ApiKey.key_hash))).scalars())
    assert hash_key(api.key) in hashes and api.key not in hashes


async def _master(api: Api) -> dict[str, str]:
    # The way an operator gets one (`banatie keys create --master`); bootstrap is closed here.
    async with api.services.sessions() as session:
        created = await create_key(session, "master", name="admin")
        await session.commit()
    return {"X-API-Key": created.secret}


async def test_admin_creates_lists_and_revokes_keys(api: Api) -> None:
    master = await _master(api)
    response = await api.http.post(
        "/api/admin/keys",
        headers=master,
        json={"type": "project", "organizationSlug": "neworg", "projectSlug": "site", "name": "ci"},
    )
    assert response.status_code == 201
    created = response.json()["data"]
    assert created["organizationSlug"] == "neworg" and created["projectSlug"] == "site"
    project_key = {"X-API-Key": created["key"]}
    assert (await api.http.get("/api/v1/images", headers=project_key)).status_code == 200
    listed = (await api.http.get("/api/admin/keys", headers=master)).json()["data"]
    assert created["id"] in [k["id"] for k in listed]
    assert all("key" not in k for k in listed)
    assert (
        await api.http.delete(f"/api/admin/keys/{created['id']}", headers=master)
    ).status_code == 200
    revoked = await api.http.get("/api/v1/images", headers=project_key)
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "UNAUTHORIZED"


async def test_expiring_key(api: Api) -> None:
    master = await _master(api)
    response = await api.http.post(
        "/api/admin/keys",
        headers=master,
        json={"organizationSlug": "o", "projectSlug": "p", "expiresInDays": 1},
    )
    assert response.json()["data"]["expiresAt"].endswith("Z")
    bad = await api.http.post(
        "/api/admin/keys",
        headers=master,
        json={"organizationSlug": "o", "projectSlug": "p", "expiresInDays": 0},
    )
    assert bad.status_code == 400


async def test_missing_bad_and_unknown_keys_are_401(api: Api) -> None:
    for headers in ({}, {"X-API-Key": "nope"}, {"X-API-Key": "bnt_" + "0" * 64}):
        response = await api.http.get("/api/v1/generations", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "UNAUTHORIZED"


async def test_master_key_on_project_route_is_403_and_project_key_on_admin_is_403(api: Api) -> None:
    master = await _master(api)
    assert (await api.http.get("/api/v1/images", headers=master)).status_code == 403
    assert (await api.get("/api/admin/keys")).status_code == 403


async def test_other_projects_data_is_not_found(api: Api) -> None:
    gen = await api.generate(alias="@mine")
    other = {"X-API-Key": await api.new_key("acme", "other")}
    for url in (
        f"/api/v1/generations/{gen['id']}",
        f"/api/v1/images/{gen['outputImageId']}",
        "/api/v1/images/@mine",
        f"/api/v1/flows/{gen['flowId']}",
    ):
        response = await api.http.get(url, headers=other)
        assert response.status_code == 404, url
    response = await api.http.delete(f"/api/v1/images/{gen['outputImageId']}", headers=other)
    assert response.status_code == 404
    assert (await api.get(f"/api/v1/images/{gen['outputImageId']}")).status_code == 200


async def test_health_ready_openapi_docs_and_request_id(api: Api) -> None:
    health = await api.http.get("/health", headers={"X-Request-Id": "abc-123"})
    assert health.status_code == 200 and health.headers["X-Request-Id"] == "abc-123"
    ready = await api.http.get("/ready")
    assert ready.status_code == 200, ready.text
    doc = (await api.http.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/api/v1/generations", "/api/v1/images/upload", "/api/v1/live/scopes/{slug}"):
        assert path in doc["paths"]
    assert "openapi.json" in (await api.http.get("/docs")).text
    assert (await api.http.get("/health")).headers["X-Request-Id"]


async def test_unknown_route_and_method_in_envelope(api: Api) -> None:
    missing = await api.http.get("/api/v1/nothing")
    assert missing.status_code == 404 and missing.json()["success"] is False
    wrong = await api.http.patch("/api/v1/generations")
    assert wrong.status_code == 405 and wrong.json()["success"] is False


async def test_oversized_body_is_413(api: Api) -> None:
    response = await api.post("/api/v1/flows", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert response.status_code == 413


async def test_ready_names_the_failing_part(sqlite_api: Api) -> None:
    root = sqlite_api.services.settings.objects_dir
    shutil.rmtree(root, ignore_errors=True)
    root.write_bytes(b"a file where the object directory should be")
    response = await sqlite_api.http.get("/ready")
    assert response.status_code == 503
    assert list(response.json()["error"]["details"]) == ["storage"]
