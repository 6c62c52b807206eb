"""Project isolation: with project B's key, nothing of project A can be read, changed or used.

Every project route of the OpenAPI document is sent at A's generations, flows, images,
aliases and scopes with B's key: single resources answer 404, lists never show A's rows, and
A's data is unchanged afterwards. The CDN never serves one project's image under another's path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from origin.openapi import ROUTES
from tests.harness import Api, png_bytes
from tests.test_edge import Site, open_site

NOT_FOUND_CODES = {
    "GENERATION_NOT_FOUND",
    "FLOW_NOT_FOUND",
    "IMAGE_NOT_FOUND",
    "ALIAS_NOT_FOUND",
    "SCOPE_NOT_FOUND",
    "PROJECT_NOT_FOUND",
}


@dataclass
class ProjectA:
    generation: dict[str, Any]
    lazy_generation: dict[str, Any]  # its flowId has no flow row yet
    flow: str
    image: dict[str, Any]
    scope: str


async def populate(api: Api) -> ProjectA:
    flow = (await api.post("/api/v1/flows", json={"meta": {"owner": "a"}})).json()["data"]["id"]
    generation = await api.generate(
        prompt="project a's fox", flowId=flow, alias="@hero", flowAlias="@fa"
    )
    lazy = await api.generate(prompt="project a's lazy flow")
    image = await api.upload(alias="@logo", flowId=flow, flowAlias="@up")
    scope = (await api.post("/api/v1/live/scopes", json={"slug": "scope-a"})).json()["data"]
    await api.post("/api/v1/live/signing/rotate")
    return ProjectA(generation, lazy, flow, image, scope["slug"])


class Intruder:
    """B's key, recording which routes (method, template) it has tried."""

    def __init__(self, api: Api, key: str) -> None:
        self.api = api
        self.headers = {"X-API-Key": key}
        self.tried: set[tuple[str, str]] = set()

    async def send(self, method: str, template: str, path: str, **kw: Any) -> httpx.Response:
        self.tried.add((method, template))
        headers = {**self.headers, **kw.pop("headers", {})}
        return await self.api.http.request(method.upper(), path, headers=headers, **kw)

    async def not_found(self, method: str, template: str, path: str, **kw: Any) -> None:
        response = await self.send(method, template, path, **kw)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] in NOT_FOUND_CODES, (method, path, response.text)

    async def listed(self, template: str, path: str, **kw: Any) -> list[dict[str, Any]]:
        response = await self.send("get", template, path, **kw)
        assert response.status_code == 200, (path, response.text)
        return response.json()["data"]


async def test_another_projects_key_sees_and_touches_nothing(api: Api) -> None:
    a = await populate(api)
    b = Intruder(api, await api.new_key("other", "site"))
    gen, lazy, flow, image = a.generation["id"], a.lazy_generation, a.flow, a.image["id"]
    a_ids = {gen, lazy["id"], a.generation["outputImageId"], image, flow}

    # Generations
    for path in ("/api/v1/generations", f"/api/v1/generations?flowId={flow}"):
        assert not a_ids & {g["id"] for g in await b.listed("/api/v1/generations", path)}
    assert not await b.listed("/api/v1/generations", f"/api/v1/generations?flowId={flow}")
    await b.not_found("get", "/api/v1/generations/{id}", f"/api/v1/generations/{gen}")
    await b.not_found(
        "put", "/api/v1/generations/{id}", f"/api/v1/generations/{gen}", json={"meta": {"b": 1}}
    )
    await b.not_found("delete", "/api/v1/generations/{id}", f"/api/v1/generations/{gen}")
    await b.not_found(
        "post", "/api/v1/generations/{id}/retry", f"/api/v1/generations/{gen}/retry", json={}
    )
    await b.not_found(
        "post", "/api/v1/generations/{id}/regenerate", f"/api/v1/generations/{gen}/regenerate"
    )
    create = "/api/v1/generations"
    for body in ({"referenceImages": [image]}, {"referenceImages": ["@logo"]}):
        response = await b.send("post", create, create, json={"prompt": "b's", **body})
        assert response.status_code == 400, response.text  # a reference that does not resolve
    for flow_id in (flow, lazy["flowId"]):  # A's flow, and A's flow that has no row yet
        await b.not_found("post", create, create, json={"prompt": "b's", "flowId": flow_id})
    # A's alias in B's prompt resolves to nothing; B's own @hero does not move A's.
    own = await b.send("post", create, create, json={"prompt": "b's @logo", "alias": "@hero"})
    assert own.status_code == 201, own.text
    assert own.json()["data"]["referencedImages"] == []

    # Flows
    assert flow not in {f["id"] for f in await b.listed("/api/v1/flows", "/api/v1/flows")}
    await b.not_found("get", "/api/v1/flows/{id}", f"/api/v1/flows/{flow}")
    await b.not_found("get", "/api/v1/flows/{id}/generations", f"/api/v1/flows/{flow}/generations")
    await b.not_found("get", "/api/v1/flows/{id}/images", f"/api/v1/flows/{flow}/images")
    await b.not_found(
        "put",
        "/api/v1/flows/{id}/aliases",
        f"/api/v1/flows/{flow}/aliases",
        json={"aliases": {"@b": own.json()["data"]["outputImageId"]}},
    )
    await b.not_found(
        "delete", "/api/v1/flows/{id}/aliases/{alias}", f"/api/v1/flows/{flow}/aliases/@fa"
    )
    await b.not_found("post", "/api/v1/flows/{id}/regenerate", f"/api/v1/flows/{flow}/regenerate")
    await b.not_found("delete", "/api/v1/flows/{id}", f"/api/v1/flows/{flow}")
    b_flow = (await b.send("post", "/api/v1/flows", "/api/v1/flows", json={})).json()["data"]["id"]
    into_b = await b.send(
        "put",
        "/api/v1/flows/{id}/aliases",
        f"/api/v1/flows/{b_flow}/aliases",
        json={"aliases": {"@stolen": image}},
    )
    assert into_b.status_code == 400, into_b.text  # A's image is not a live image of B

    # Images
    for query in ("", f"?flowId={flow}", "?alias=@logo", "?includeDeleted=true"):
        rows = await b.listed("/api/v1/images", f"/api/v1/images{query}")
        assert not a_ids & {i["id"] for i in rows}, query
    for ref in (image, "@logo", f"@up?flowId={flow}"):
        await b.not_found("get", "/api/v1/images/{id}", f"/api/v1/images/{ref}")
    for ref in ("@logo", "@hero", f"@fa?flowId={flow}", f"@last?flowId={flow}"):
        resolve = f"/api/v1/images/resolve/{ref}"
        response = await b.send("get", "/api/v1/images/resolve/{alias}", resolve)
        if ref == "@hero":  # B's own @hero
            assert response.json()["data"]["imageId"] not in a_ids
        else:
            assert response.status_code == 404, (ref, response.text)
    await b.not_found("put", "/api/v1/images/{id}", f"/api/v1/images/{image}", json={"meta": {}})
    await b.not_found(
        "put", "/api/v1/images/{id}/alias", f"/api/v1/images/{image}/alias", json={"alias": "@x"}
    )
    await b.not_found("delete", "/api/v1/images/{id}", f"/api/v1/images/{image}")
    upload = "/api/v1/images/upload"
    for flow_id in (flow, lazy["flowId"]):
        await b.not_found(
            "post",
            upload,
            upload,
            files={"file": ("b.png", png_bytes(), "image/png")},
            data={"flowId": flow_id, "flowAlias": "@up"},
        )

    # Live scopes and signing
    scopes = await b.listed("/api/v1/live/scopes", "/api/v1/live/scopes")
    assert a.scope not in {s["slug"] for s in scopes}
    one = f"/api/v1/live/scopes/{a.scope}"
    await b.not_found("get", "/api/v1/live/scopes/{slug}", one)
    await b.not_found("put", "/api/v1/live/scopes/{slug}", one, json={"newGenerationsLimit": 0})
    await b.not_found("post", "/api/v1/live/scopes/{slug}/regenerate", f"{one}/regenerate")
    await b.not_found("delete", "/api/v1/live/scopes/{slug}", one)
    own_scope = await b.send(
        "post", "/api/v1/live/scopes", "/api/v1/live/scopes", json={"slug": a.scope}
    )
    assert own_scope.status_code == 201  # B's own namespace
    await b.not_found(
        "post",
        "/api/v1/live/sign",
        "/api/v1/live/sign",
        json={"path": f"/cdn/{api.org}/{api.project}/live/{a.scope}?prompt=x"},
    )
    state = await b.send("get", "/api/v1/live/signing", "/api/v1/live/signing")
    assert state.json()["data"] == {"requireSignedUrls": False, "secrets": []}
    rotated = await b.send("post", "/api/v1/live/signing/rotate", "/api/v1/live/signing/rotate")
    assert rotated.status_code == 200
    required = await b.send(
        "put", "/api/v1/live/signing", "/api/v1/live/signing", json={"requireSignedUrls": True}
    )
    assert required.status_code == 200
    signed = await b.send(
        "post", "/api/v1/live/sign", "/api/v1/live/sign", json={"scope": "s", "prompt": "x"}
    )
    assert signed.json()["data"]["path"].startswith("/cdn/other/site/")

    # Every project route was tried.
    project_routes = {(m, p) for m, p, *_, auth in ROUTES if auth == "project"}
    assert project_routes - b.tried == set()

    # And A's data is as it was.
    assert (await api.get(f"/api/v1/generations/{gen}")).json()["data"]["meta"] == {}
    a_flow = (await api.get(f"/api/v1/flows/{flow}")).json()["data"]
    assert a_flow["aliases"] == {"@fa": a.generation["outputImageId"], "@up": image}
    assert a_flow["generationCount"] == 1 and a_flow["imageCount"] == 2
    resolved = (await api.get("/api/v1/images/resolve/@hero")).json()["data"]
    assert resolved["imageId"] == a.generation["outputImageId"]
    assert (await api.get(f"/api/v1/images/{image}")).json()["data"]["alias"] == "@logo"
    assert (await api.get(f"/api/v1/live/scopes/{a.scope}")).json()["data"]["slug"] == a.scope
    assert len((await api.get("/api/v1/live/signing")).json()["data"]["secrets"]) == 1
    assert (await api.get("/api/v1/live/signing")).json()["data"]["requireSignedUrls"] is False
    lazy_flow = await api.get(f"/api/v1/generations?flowId={lazy['flowId']}")
    assert [g["id"] for g in lazy_flow.json()["data"]] == [lazy["id"]]
    # A can still give its lazy flow a row (B could not take the id).
    adopted = await api.generate(prompt="again", flowId=lazy["flowId"], flowAlias="@again")
    assert adopted["flowId"] == lazy["flowId"]


# -- the CDN ------------------------------------------------------------------------------------


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


async def test_cdn_paths_never_serve_another_projects_image(site: Site) -> None:
    live = await site.live({"prompt": "a's lighthouse"})
    image_id = live.headers["x-image-id"]
    await site.api("PUT", f"/api/v1/images/{image_id}/alias", json={"alias": "@hero"})
    async with site.services.sessions() as session:
        from origin.keys import create_key

        await create_key(session, "project", "other", "site")
        await session.commit()
    assert (await site.http.get(f"/cdn/acme/web/img/{image_id}")).status_code == 200
    assert (await site.http.get("/cdn/acme/web/img/@hero")).status_code == 200
    for path in (f"/cdn/other/site/img/{image_id}", "/cdn/other/site/img/@hero"):
        response = await site.http.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in NOT_FOUND_CODES
    # The same live URL under B is B's own key: never A's cached image.
    a_cdn = await site.cdn("hero", {"prompt": "a's scope"})
    b_cdn = await site.http.get("/cdn/other/site/live/hero", params={"prompt": "a's scope"})
    assert b_cdn.status_code == 200 and b_cdn.headers["x-cache-status"] == "MISS"
    assert b_cdn.headers["x-image-id"] != a_cdn.headers["x-image-id"]
