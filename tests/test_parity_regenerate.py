"""Parity with the original service's API: regenerating a flow's newest generation, a live
scope's keys (which every edge then serves from their new image), and the scope error codes.
On SQLite + local files and on PostgreSQL + S3, with Redis for index, log and budgets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cache.index.redis import RedisIndex
from cache.invalidation import RedisBus
from edge.app import Edge, create_edge
from origin.app import create_origin
from origin.edge_api import InProcessOrigin
from origin.keys import create_key
from origin.services import Services, open_services
from tests.harness import backend_settings, png_bytes
from tests.waiting import until


@dataclass
class Site:
    """An edge (with the origin in its process) on one backend, a project key, Redis."""

    http: httpx.AsyncClient
    edge: Edge
    services: Services
    key: str
    redis_url: str

    async def api(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key, **kw.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kw)

    async def cdn(self, scope: str, prompt: str, http: httpx.AsyncClient | None = None):  # type: ignore[no-untyped-def]
        return await (http or self.http).get(
            f"/cdn/acme/web/live/{scope}", params={"prompt": prompt}
        )

    async def regenerate(self, scope: str, body: dict[str, Any] | None = None) -> httpx.Response:
        url = f"/api/v1/live/scopes/{scope}/regenerate"
        return await self.api("POST", url, **({} if body is None else {"json": body}))


@contextlib.asynccontextmanager
async def open_backend_site(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, **overrides: Any
) -> AsyncIterator[Site]:
    redis_url = request.getfixturevalue("redis_url")
    settings = backend_settings(request, tmp_path, backend, redis_url=redis_url, **overrides)
    services = await open_services(settings)
    if settings.storage_backend == "s3":
        await services.store.create_bucket()  # type: ignore[attr-defined]
    edge = create_edge(
        settings,
        InProcessOrigin(services),
        services.store,
        services.index,
        services.bus,
        create_origin(settings, services),
    )
    async with services.sessions() as session:
        created = await create_key(session, "project", "acme", "web")
        await session.commit()
    transport = httpx.ASGITransport(app=edge, client=("127.0.0.1", 40000))
    http = httpx.AsyncClient(transport=transport, base_url="http://edge")
    try:
        yield Site(http, edge, services, created.secret, redis_url)
    finally:
        await http.aclose()
        await services.close()


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def site(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Site]:
    async with open_backend_site(request, tmp_path, request.param) as opened:
        yield opened


@contextlib.asynccontextmanager
async def other_edge(site: Site) -> AsyncIterator[tuple[Edge, httpx.AsyncClient]]:
    """A second edge, with its own L1, index client and invalidation reader."""
    bus = RedisBus.from_url(site.redis_url)
    index = RedisIndex.from_url(site.redis_url)
    edge = create_edge(site.edge.settings, InProcessOrigin(site.services), site.services.store,
                       index, bus)  # fmt: skip
    await edge.startup()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://other")
    try:
        await asyncio.wait_for(bus.subscribed.wait(), 5.0)
        yield edge, http
    finally:
        await http.aclose()
        await edge.shutdown()
        await index.close()


def error_code(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# -- POST /api/v1/flows/:id/regenerate ------------------------------------------------------


async def test_flow_regenerate_makes_a_new_image_for_its_newest_generation(site: Site) -> None:
    flow = (await site.api("POST", "/api/v1/flows", json={})).json()["data"]["id"]
    older = await site.api("POST", "/api/v1/generations", json={"prompt": "one", "flowId": flow})
    newest = await site.api(
        "POST", "/api/v1/generations", json={"prompt": "two", "flowId": flow, "alias": "@two"}
    )
    assert older.status_code == newest.status_code == 201
    before = newest.json()["data"]
    response = await site.api("POST", f"/api/v1/flows/{flow}/regenerate")
    assert response.status_code == 200, response.text
    after = response.json()["data"]
    assert after["id"] == before["id"] and after["status"] == "success"
    assert after["outputImageId"] != before["outputImageId"]
    assert response.headers["X-RateLimit-Remaining"] == "97"  # three generations of 100
    resolved = (await site.api("GET", "/api/v1/images/resolve/@two")).json()["data"]
    assert resolved["imageId"] == after["outputImageId"]  # the alias moved with it
    old = await site.api("GET", f"/api/v1/images/{before['outputImageId']}")
    assert old.status_code == 200  # the old image stays
    untouched = (await site.api("GET", f"/api/v1/generations/{older.json()['data']['id']}")).json()
    assert untouched["data"]["outputImageId"] == older.json()["data"]["outputImageId"]


async def test_flow_regenerate_without_generations_is_400(site: Site) -> None:
    flow = (await site.api("POST", "/api/v1/flows", json={})).json()["data"]["id"]
    response = await site.api("POST", f"/api/v1/flows/{flow}/regenerate")
    assert error_code(response) == (400, "FLOW_HAS_NO_GENERATIONS")
    missing = await site.api(
        "POST", "/api/v1/flows/00000000-0000-4000-8000-000000000000/regenerate"
    )
    assert error_code(missing) == (404, "FLOW_NOT_FOUND")


# -- POST /api/v1/live/scopes/:slug/regenerate ---------------------------------------------


async def test_regenerating_a_live_key_switches_every_edge_to_the_new_image(site: Site) -> None:
    prompt = f"a lighthouse {time.time()}"
    first = await site.cdn("hero", prompt)
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    old_id = first.headers["x-image-id"]
    async with other_edge(site) as (edge, other):
        assert (await site.cdn("hero", prompt, other)).headers["x-image-id"] == old_id
        assert len(edge.l1) == 1  # the other edge holds the old bytes
        response = await site.regenerate("hero", {"imageId": old_id})
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert data["slug"] == "hero"
        [done] = data["regenerated"]
        new_id = done["imageId"]
        assert done["previousImageId"] == old_id and new_id != old_id
        assert done["generation"]["outputImageId"] == new_id
        assert response.headers["X-RateLimit-Remaining"] == "99"  # the key paid one unit
        # This edge at once, the other once the invalidation log reaches it.
        assert (await site.cdn("hero", prompt)).headers["x-image-id"] == new_id

        async def other_serves_new() -> bool:
            return (await site.cdn("hero", prompt, other)).headers["x-image-id"] == new_id

        await until(other_serves_new, "the other edge to serve the new image")
    # The old image is still an image of the project, by id.
    assert (await site.http.get(f"/cdn/acme/web/img/{old_id}")).status_code == 200
    # And the scope counted one key, not two.
    scope = (await site.api("GET", "/api/v1/live/scopes/hero")).json()["data"]
    assert scope["currentGenerations"] == 1


async def test_regenerating_a_scope_gives_each_key_a_new_image(site: Site) -> None:
    served = {p: await site.cdn("page", p) for p in ("left tile", "right tile")}
    await site.cdn("elsewhere", "left tile")  # another scope's key is left alone
    before = {p: r.headers["x-image-id"] for p, r in served.items()}
    response = await site.regenerate("page")
    assert response.status_code == 200, response.text
    regenerated = response.json()["data"]["regenerated"]
    assert sorted(r["previousImageId"] for r in regenerated) == sorted(before.values())
    assert response.headers["X-RateLimit-Remaining"] == "98"
    for prompt, old_id in before.items():
        now = (await site.cdn("page", prompt)).headers["x-image-id"]
        assert now != old_id and now in {r["imageId"] for r in regenerated}
    other = await site.cdn("elsewhere", "left tile")
    assert other.headers["x-cache-status"] == "HIT"


async def test_an_image_of_another_scope_is_not_in_scope(site: Site) -> None:
    await site.cdn("hero", "mine")
    theirs = (await site.cdn("other", "theirs")).headers["x-image-id"]
    uploaded = await site.api(
        "POST", "/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}
    )
    for image_id in (theirs, uploaded.json()["data"]["id"]):
        refused = await site.regenerate("hero", {"imageId": image_id})
        assert error_code(refused) == (404, "IMAGE_NOT_IN_SCOPE")
    unknown = await site.regenerate("hero", {"imageId": "00000000-0000-4000-8000-000000000000"})
    # An image the project does not have: 400, as for a reference that resolves to nothing.
    assert error_code(unknown) == (400, "VALIDATION_ERROR")
    assert error_code(await site.regenerate("nope")) == (404, "SCOPE_NOT_FOUND")
    assert error_code(await site.regenerate("hero", {"imageId": 7})) == (400, "VALIDATION_ERROR")
    # Nothing was spent or made: the next generation is the key's first.
    spent = await site.api("POST", "/api/v1/generations", json={"prompt": "x"})
    assert spent.headers["X-RateLimit-Remaining"] == "99"


async def test_regenerating_more_keys_than_the_budget_holds_is_429_and_changes_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    async with open_backend_site(request, tmp_path, "sqlite-local", key_budget_per_hour=3) as site:
        before = [(await site.cdn("page", p)).headers["x-image-id"] for p in ("a", "b")]
        assert (await site.regenerate("page")).status_code == 200  # two of three units
        refused = await site.regenerate("page")  # needs two, one is left
        assert error_code(refused) == (429, "RATE_LIMIT_EXCEEDED")
        assert refused.headers["X-RateLimit-Remaining"] == "1"
        assert int(refused.headers["Retry-After"]) >= 1
        after = [(await site.cdn("page", p)).headers["x-image-id"] for p in ("a", "b")]
        assert not set(after) & set(before)
        again = [(await site.cdn("page", p)).headers["x-image-id"] for p in ("a", "b")]
        assert again == after  # the refused call changed nothing


# -- scope error codes ----------------------------------------------------------------------


async def test_scope_error_codes_are_the_originals(site: Site) -> None:
    assert (await site.api("POST", "/api/v1/live/scopes", json={"slug": "hero"})).status_code == 201
    duplicate = await site.api("POST", "/api/v1/live/scopes", json={"slug": "hero"})
    assert error_code(duplicate) == (409, "SCOPE_ALREADY_EXISTS")
    for slug in ("has space", "x" * 65, "", "inj\n", 5):
        bad = await site.api("POST", "/api/v1/live/scopes", json={"slug": slug})
        assert error_code(bad) == (400, "SCOPE_INVALID_FORMAT"), slug
        assert bad.json()["error"]["details"]["field"] == "slug"
