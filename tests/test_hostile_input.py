"""Input meant to break things: trailing newlines past `$`, NUL characters, JSON nested a
thousand deep, and fields given as null. Each is a 4xx in the envelope, never a 500 and never
a generation paid for, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from edge.app import create_edge
from origin.app import create_origin
from origin.edge_api import InProcessOrigin
from origin.keys import create_key
from origin.services import open_services
from tests.harness import Api, backend_settings, png_bytes

SERVICE_TOKEN = "service-token-for-tests"
UUID = "0b7e9a52-3c1d-4f6e-9a8b-2d4c6e8f0a1b"
LONG_SCOPE = "s" * 64  # the longest scope: one more character overflows the column
LONG_ALIAS = "@" + "a" * 49  # likewise for an alias


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """`banatie serve`'s layout (the edge in front of the origin) with a project key."""
    settings = backend_settings(request, tmp_path, request.param, service_token=SERVICE_TOKEN)
    services = await open_services(settings)
    if settings.storage_backend == "s3":
        await services.store.create_bucket()  # type: ignore[attr-defined]
    origin = create_origin(settings, services)
    edge = create_edge(
        settings, InProcessOrigin(services), services.store, services.index, services.bus, origin
    )
    async with services.sessions() as session:
        created = await create_key(session, "project", "acme", "web")
        await session.commit()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
    try:
        yield Api(http, services, created.secret, "acme", "web")
    finally:
        await http.aclose()
        await services.close()


async def master_headers(site: Api) -> dict[str, str]:
    async with site.services.sessions() as session:
        created = await create_key(session, "master", name="admin")
        await session.commit()
    return {"X-API-Key": created.secret}


def invalid(
    response: httpx.Response, field: str | None = None, code: str = "VALIDATION_ERROR"
) -> bool:
    """A 400 envelope with `code` (naming `field`, when given)."""
    if response.status_code != 400:
        return False
    error = response.json()["error"]
    return error["code"] == code and (
        field is None or error.get("details", {}).get("field") == field
    )


def not_found(response: httpx.Response) -> bool:
    return response.status_code == 404 and response.json()["success"] is False


# -- `^...$` let a trailing newline through -----------------------------------------------------


async def test_live_scope_with_a_trailing_newline_is_refused_before_generating(site: Api) -> None:
    for scope in ("inj", LONG_SCOPE):
        response = await site.http.get(f"/cdn/acme/web/live/{scope}%0A?prompt=x")
        assert invalid(response, "scope"), (scope, response.status_code, response.text)
    scopes = await site.get("/api/v1/live/scopes")
    assert scopes.status_code == 200 and scopes.json()["data"] == []  # nothing stored, or paid


async def test_origin_live_call_refuses_a_scope_with_a_trailing_newline(site: Api) -> None:
    project = (await site.upload())["projectId"]
    params = {
        "project_id": project,
        "organization_slug": "acme",
        "project_slug": "web",
        "scope": "inj\n",
        "prompt": "x",
    }
    response = await site.http.post(
        "/internal/live", json=params, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}
    )
    assert invalid(response, "scope"), response.text


async def test_cdn_paths_with_a_trailing_newline_are_not_found(site: Api) -> None:
    image = await site.upload(alias="@hero")
    for path in (
        "/cdn/acme%0A/web/live/x?prompt=y",
        "/cdn/acme/web%0A/live/x?prompt=y",
        f"/cdn/acme/web/img/{image['id']}%0A",
        "/cdn/acme/web/img/@hero%0A",
        f"/api/v1/images/{image['id']}%0A",
        "/api/v1/images/@hero%0A",
        f"/api/v1/generations/{UUID}%0A",
        f"/api/v1/flows/{UUID}%0A",
    ):
        response = await site.get(path)
        assert not_found(response), (path, response.status_code, response.text)


async def test_aliases_with_a_trailing_newline_are_refused(site: Api) -> None:
    image = await site.upload()
    for alias in ("@nl\n", LONG_ALIAS + "\n"):
        generation = {"prompt": "a fox", "alias": alias}
        assert invalid(await site.post("/api/v1/generations", json=generation), "alias")
        generation = {"prompt": "a fox", "flowAlias": alias}
        assert invalid(await site.post("/api/v1/generations", json=generation), "flowAlias")
        for field in ("alias", "flowAlias"):
            response = await site.post(
                "/api/v1/images/upload",
                files={"file": ("a.png", png_bytes(), "image/png")},
                data={field: alias},
            )
            assert invalid(response, field), (field, response.text)
        put = await site.put(f"/api/v1/images/{image['id']}/alias", json={"alias": alias})
        assert invalid(put, "alias")
        update = await site.put(f"/api/v1/images/{image['id']}", json={"alias": alias})
        assert invalid(update, "alias")
        resolve = await site.get(f"/api/v1/images/resolve/{quote(alias)}")
        assert invalid(resolve, "alias")
    images = (await site.get("/api/v1/images")).json()["data"]
    assert [i["alias"] for i in images] == [None]


async def test_slugs_with_a_trailing_newline_are_refused(site: Api) -> None:
    master = await master_headers(site)
    for slug in ("neworg\n", "o" * 64 + "\n"):
        for field in ("organizationSlug", "projectSlug"):
            body = {"organizationSlug": "neworg", "projectSlug": "site", field: slug}
            response = await site.http.post("/api/admin/keys", headers=master, json=body)
            assert invalid(response, field), (field, response.text)


async def test_live_scope_slug_with_a_trailing_newline_is_refused(site: Api) -> None:
    for slug in ("inj\n", LONG_SCOPE + "\n"):
        response = await site.post("/api/v1/live/scopes", json={"slug": slug})
        assert invalid(response, "slug", "SCOPE_INVALID_FORMAT"), response.text


async def test_signing_a_scope_with_a_trailing_newline_is_refused(site: Api) -> None:
    assert (await site.post("/api/v1/live/signing/rotate")).status_code == 200
    by_fields = {"scope": "inj\n", "prompt": "x"}
    assert invalid(await site.post("/api/v1/live/sign", json=by_fields), "scope")
    by_path = {"path": "/cdn/acme/web/live/inj%0A?prompt=x"}
    assert invalid(await site.post("/api/v1/live/sign", json=by_path), "scope")


async def test_flow_ids_with_a_trailing_newline_are_refused(site: Api) -> None:
    for route in ("/api/v1/images", "/api/v1/generations"):
        response = await site.get(route, params={"flowId": UUID + "\n"})
        assert invalid(response, "flowId"), (route, response.text)


async def test_variant_numbers_are_trimmed_so_a_newline_names_the_same_variant(
    site: Api,
) -> None:
    image = await site.upload()
    url = f"/cdn/acme/web/img/{image['id']}"
    for plain, padded in (
        ("w=10", "w=10%0A"),
        ("q=80&w=9", "q=80%0A&w=9"),
        ("w=9&dpr=2", "w=9&dpr=2%0A"),
    ):
        want = await site.http.get(f"{url}?{plain}")
        got = await site.http.get(f"{url}?{padded}")
        assert want.status_code == got.status_code == 200, (padded, got.text[:200])
        assert got.headers["etag"] == want.headers["etag"]
    assert invalid(await site.http.get(f"{url}?w=10%0A5"), "w")


# -- NUL: PostgreSQL cannot store or compare it -------------------------------------------------


async def test_nul_in_a_path_or_query_is_refused(site: Api) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await site.http.request(
            method, "/api/v1/live/scopes/a%00b", headers=site.headers, json={}
        )
        assert invalid(response), (method, response.status_code, response.text)
    for path in (
        "/api/v1/images?alias=@a%00b",
        "/api/v1/images/resolve/@a%00b",
        "/api/v1/generations?status=a%00",
        "/api/v1/flows/a%00b",
    ):
        response = await site.get(path)
        assert invalid(response), (path, response.status_code, response.text)


async def test_nul_anywhere_in_a_json_body_is_refused(site: Api) -> None:
    master = await master_headers(site)
    key = await site.http.post(
        "/api/admin/keys",
        headers=master,
        json={"organizationSlug": "o", "projectSlug": "p", "name": "a\u0000b"},
    )
    assert invalid(key, "body"), key.text
    for route, body in (
        ("/api/v1/generations", {"prompt": "a fox", "meta": {"note": "a\u0000b"}}),
        ("/api/v1/generations", {"prompt": "a fox", "meta": {"a\u0000b": 1}}),
        ("/api/v1/flows", {"meta": {"list": ["ok", "\u0000"]}}),
        ("/api/v1/live/scopes", {"slug": "fine", "meta": {"x": "\u0000"}}),
    ):
        response = await site.post(route, json=body)
        assert invalid(response, "body"), (route, response.text)
    upload = await site.post(
        "/api/v1/images/upload",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"meta": json.dumps({"note": "a\u0000b"})},
    )
    assert invalid(upload, "meta"), upload.text
    assert (await site.get("/api/v1/live/scopes")).json()["data"] == []


# -- JSON nested a thousand deep ------------------------------------------------------------------


DEEP_ARRAY = "[" * 1000 + "]" * 1000  # 2 KB: the decoder recursed once per level
DEEP_META = '{"prompt": "a fox", "meta": ' + '{"a": ' * 100 + "1" + "}" * 100 + "}"


async def test_deeply_nested_json_is_refused_on_every_json_route(site: Api) -> None:
    master = await master_headers(site)
    image = await site.upload()
    json_headers = {**site.headers, "Content-Type": "application/json"}
    routes = [
        ("POST", "/api/v1/generations", json_headers),
        ("POST", "/api/v1/flows", json_headers),
        ("POST", "/api/v1/live/scopes", json_headers),
        ("POST", "/api/v1/live/sign", json_headers),
        ("PUT", f"/api/v1/images/{image['id']}", json_headers),
        ("POST", "/api/admin/keys", {**master, "Content-Type": "application/json"}),
        ("POST", "/api/bootstrap/initial-key", {"Content-Type": "application/json"}),
    ]
    for method, route, headers in routes:
        for body in (DEEP_ARRAY, DEEP_META):
            response = await site.http.request(method, route, headers=headers, content=body)
            assert invalid(response, "body"), (route, response.status_code, response.text[:200])
            assert "nested deeper than 32 levels" in response.json()["error"]["message"]
    upload = await site.post(
        "/api/v1/images/upload",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"meta": DEEP_ARRAY},
    )
    assert invalid(upload, "meta"), upload.text


async def test_moderately_nested_meta_is_kept(site: Api) -> None:
    meta: dict[str, object] = {"leaf": True}
    for _ in range(20):
        meta = {"a": meta}
    response = await site.post("/api/v1/flows", json={"meta": meta})
    assert response.status_code == 201, response.text
    assert response.json()["data"]["meta"] == meta


# -- fields given as null -----------------------------------------------------------------------


async def test_upload_with_a_null_flow_and_a_flow_alias_is_refused(site: Api) -> None:
    for flow_id in ("null", ""):
        response = await site.post(
            "/api/v1/images/upload",
            files={"file": ("a.png", png_bytes(), "image/png")},
            data={"flowId": flow_id, "flowAlias": "@step"},
        )
        assert invalid(response, "flowAlias"), (flow_id, response.text)
    assert (await site.get("/api/v1/images")).json()["data"] == []


async def test_signing_a_null_path_is_refused(site: Api) -> None:
    assert (await site.post("/api/v1/live/signing/rotate")).status_code == 200
    for body in ({"path": None}, {"path": None, "scope": "hero", "prompt": "x"}):
        assert invalid(await site.post("/api/v1/live/sign", json=body), "path"), body
