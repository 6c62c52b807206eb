"""Live scopes CRUD, on both engines."""

from __future__ import annotations

from tests.harness import Api


async def test_scope_crud(api: Api) -> None:
    response = await api.post("/api/v1/live/scopes", json={"slug": "hero", "meta": {"page": "/"}})
    assert response.status_code == 201
    scope = response.json()["data"]
    assert scope["allowNewGenerations"] is True and scope["newGenerationsLimit"] == 30
    assert scope["currentGenerations"] == 0 and scope["lastGeneratedAt"] is None
    dup = await api.post("/api/v1/live/scopes", json={"slug": "hero"})
    assert dup.status_code == 409
    updated = await api.put(
        "/api/v1/live/scopes/hero", json={"allowNewGenerations": False, "newGenerationsLimit": 5}
    )
    assert updated.json()["data"]["allowNewGenerations"] is False
    assert updated.json()["data"]["newGenerationsLimit"] == 5
    listed = (await api.get("/api/v1/live/scopes")).json()
    assert [s["slug"] for s in listed["data"]] == ["hero"]
    assert (await api.delete("/api/v1/live/scopes/hero")).status_code == 200
    gone = await api.get("/api/v1/live/scopes/hero")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "SCOPE_NOT_FOUND"


async def test_bad_scope_input(api: Api) -> None:
    for body in (
        {"slug": "has space"},
        {"slug": "x" * 65},
        {},
        {"slug": "ok", "newGenerationsLimit": -1},
    ):
        assert (await api.post("/api/v1/live/scopes", json=body)).status_code == 400, body
