"""The edge through HTTP: live URLs cost one generation, then are served from cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from cache.contract import LiveParams, LiveResult
from cache.errors import ApiError, UpstreamUnavailable
from cache.index.memory import MemoryIndex
from cache.index.redis import RedisIndex
from cache.invalidation import LocalBus, RedisBus
from cache.objects import StorageUnavailable
from cache.objects.local import LocalStore
from edge.app import Edge, create_edge
from edge.origin_client import HttpOrigin
from origin.app import create_origin
from origin.edge_api import InProcessOrigin
from origin.keys import create_key
from origin.services import Services, open_services
from tests.harness import make_settings, png_bytes
from tests.servers import RedisServer, free_port
from tests.waiting import until

PROMPT = "a lighthouse at dawn"


class CountingOrigin(InProcessOrigin):
    """The in-process origin, counting live calls and the generations they paid for.
    `hold()` keeps every call waiting at the door until the test calls `release()`: a
    generation in progress for exactly as long as the test needs one."""

    def __init__(self, services: Services) -> None:
        super().__init__(services)
        self.calls = 0
        self.generations = 0
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def live(self, params: LiveParams) -> LiveResult:
        self.calls += 1
        await self._open.wait()
        result = await super().live(params)
        self.generations += result.created
        return result


@dataclass
class Site:
    """One edge in front of the origin (one process), with a project key."""

    http: httpx.AsyncClient
    edge: Edge
    origin: CountingOrigin
    services: Services
    key: str
    org: str = "acme"
    project: str = "web"

    async def live(self, query: dict[str, str] | str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key, **kw.pop("headers", {})}
        method = kw.pop("method", "GET")
        if isinstance(query, str):
            return await self.http.request(method, f"/api/v1/live?{query}", headers=headers, **kw)
        return await self.http.request(method, "/api/v1/live", params=query, headers=headers, **kw)

    async def cdn(self, scope: str, query: dict[str, str], **kw: Any) -> httpx.Response:
        url = f"/cdn/{self.org}/{self.project}/live/{scope}"
        return await self.http.get(url, params=query, **kw)

    async def api(self, method: str, url: str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key, **kw.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kw)


@contextlib.asynccontextmanager
async def open_site(
    tmp_path: Path,
    *,
    index: Any = None,
    bus: Any = None,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    **overrides: Any,
) -> AsyncIterator[Site]:
    settings = make_settings(tmp_path, **overrides)
    services = await open_services(settings, index=index, bus=bus)
    origin = CountingOrigin(services)
    edge = create_edge(
        settings,
        origin,
        services.store,
        services.index,
        services.bus,
        create_origin(settings, services),
    )
    async with services.sessions() as session:
        created = await create_key(session, "project", "acme", "web")
        await session.commit()
    transport = httpx.ASGITransport(app=edge, client=client)
    http = httpx.AsyncClient(transport=transport, base_url="http://edge")
    try:
        yield Site(http, edge, origin, services, created.secret)
    finally:
        await http.aclose()
        await services.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def second_edge(site: Site, index: Any = None) -> tuple[Edge, httpx.AsyncClient]:
    """Another edge (a restart, or another replica) in front of the same origin."""
    edge = create_edge(
        site.edge.settings,
        site.origin,
        site.services.store,
        index if index is not None else site.services.index,
        site.services.bus,
        None,
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
    return edge, http


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


# -- the contract: miss once, then hits ---------------------------------------------------------


async def test_first_request_generates_then_every_later_one_hits(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    assert first.status_code == 200
    assert first.headers["x-cache-status"] == "MISS"
    assert first.headers["x-generation-id"]
    assert first.headers["content-type"] == "image/png"
    assert first.content.startswith(b"\x89PNG")
    assert int(first.headers["content-length"]) == len(first.content)
    assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert first.headers["etag"].startswith('"') and first.headers["x-image-id"]
    assert first.headers["x-content-type-options"] == "nosniff"
    timing = dict(part.strip().split(";dur=") for part in first.headers["server-timing"].split(","))
    assert set(timing) == {"model", "miss"} and 0 < float(timing["model"]) <= float(timing["miss"])

    for _ in range(3):
        again = await site.live({"prompt": PROMPT})
        assert again.status_code == 200
        assert again.headers["x-cache-status"] == "HIT"
        assert "x-generation-id" not in again.headers and "server-timing" not in again.headers
        assert again.content == first.content
        assert again.headers["etag"] == first.headers["etag"]
        assert again.headers["x-image-id"] == first.headers["x-image-id"]
    assert site.origin.generations == 1 and site.origin.calls == 1


async def test_live_miss_is_a_generation_like_any_other(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    generations = (await site.api("GET", "/api/v1/generations")).json()["data"]
    assert [g["id"] for g in generations] == [first.headers["x-generation-id"]]
    assert generations[0]["flowId"] is None
    assert generations[0]["meta"]["live"]["scope"] == ""
    images = (await site.api("GET", "/api/v1/images")).json()["data"]
    assert [i["id"] for i in images] == [first.headers["x-image-id"]]


async def test_miss_carries_the_keys_rate_headers(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    assert first.headers["x-ratelimit-limit"] == "100"
    assert first.headers["x-ratelimit-remaining"] == "99"
    hit = await site.live({"prompt": PROMPT})
    assert "x-ratelimit-limit" not in hit.headers  # hits are free


async def test_normalised_prompts_share_one_image(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    for variant in ("  a lighthouse   at\tdawn ", "a lighthouse\n at dawn"):
        again = await site.live({"prompt": variant})
        assert again.headers["x-cache-status"] == "HIT"
        assert again.content == first.content
    same = await site.live("prompt=a+lighthouse+at+dawn&aspectRatio=1:1&autoEnhance=true")
    assert same.headers["x-cache-status"] == "HIT"
    assert site.origin.generations == 1


async def test_nfc_and_nfd_prompts_share_one_image(site: Site) -> None:
    await site.live({"prompt": "caf\u00e9 at night"})
    again = await site.live({"prompt": "cafe\u0301 at night"})
    assert again.headers["x-cache-status"] == "HIT"


@pytest.mark.parametrize(
    "change",
    [
        {"aspectRatio": "16:9"},
        {"autoEnhance": "false"},
        {"template": "sticker"},
        {"prompt": "other"},
    ],
)
async def test_anything_else_is_another_image(site: Site, change: dict[str, str]) -> None:
    await site.live({"prompt": PROMPT})
    other = await site.live({"prompt": PROMPT, **change})
    assert other.status_code == 200 and other.headers["x-cache-status"] == "MISS"
    assert site.origin.generations == 2


async def test_concurrent_requests_for_a_new_key_generate_once(site: Site) -> None:
    site.origin.hold()
    requests = [asyncio.create_task(site.live({"prompt": PROMPT})) for _ in range(100)]
    await until(lambda: site.edge.metrics.misses == 100, "all 100 requests to miss")
    site.origin.release()
    responses = await asyncio.gather(*requests)
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert site.origin.calls == 1 and site.origin.generations == 1


async def test_client_disconnect_does_not_cancel_the_generation(site: Site) -> None:
    site.origin.hold()
    first = asyncio.create_task(site.live({"prompt": PROMPT}))
    await until(lambda: site.origin.calls == 1, "the miss to reach the origin")
    first.cancel()  # the browser went away mid-generation
    with pytest.raises(asyncio.CancelledError):
        await first
    site.origin.release()
    # The generation carries on without its client.
    await until(lambda: site.origin.generations == 1, "the generation to finish")
    again = await site.live({"prompt": PROMPT})
    assert again.status_code == 200 and again.headers["x-cache-status"] == "HIT"
    assert site.origin.calls == 1


# -- conditional, range, HEAD ------------------------------------------------------------------


async def test_if_none_match_gives_304_with_the_caching_headers(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    etag = first.headers["etag"]
    for header in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        response = await site.live({"prompt": PROMPT}, headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-image-id"] == first.headers["x-image-id"]
    stale = await site.live({"prompt": PROMPT}, headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200 and stale.content == first.content


async def test_single_ranges_are_206_and_others_are_whole_or_416(site: Site) -> None:
    body = (await site.live({"prompt": PROMPT})).content
    size = len(body)
    cases = {
        "bytes=0-9": (0, 9),
        "bytes=10-": (10, size - 1),
        "bytes=-5": (size - 5, size - 1),
        f"bytes=5-{size + 100}": (5, size - 1),
    }
    for header, (start, end) in cases.items():
        response = await site.live({"prompt": PROMPT}, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
        assert response.content == body[start : end + 1]
        assert int(response.headers["content-length"]) == end - start + 1
    whole = await site.live({"prompt": PROMPT}, headers={"Range": "bytes=0-1,5-6"})
    assert whole.status_code == 200 and whole.content == body
    beyond = await site.live({"prompt": PROMPT}, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"


async def test_head_never_generates_and_answers_headers_only(site: Site) -> None:
    missing = await site.live({"prompt": PROMPT}, method="HEAD")
    assert missing.status_code == 404 and missing.content == b""
    assert site.origin.calls == 0
    first = await site.live({"prompt": PROMPT})
    head = await site.live({"prompt": PROMPT}, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    assert head.headers["etag"] == first.headers["etag"]


async def test_other_methods_are_405(site: Site) -> None:
    response = await site.live({"prompt": PROMPT}, method="POST")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")


# -- validation and auth ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "",
        "prompt=",
        "prompt=%20%20",
        "prompt=" + "x" * 5001,
        "prompt=a&aspectRatio=7:3",
        "prompt=a&template=baroque",
        "prompt=a&autoEnhance=maybe",
        "prompt=a&prompt=b",
        "prompt=a&aspectRatio=1:1&aspectRatio=1:1",
        "prompt=a%zzb",
        "prompt=a%",
        "prompt=%ff%fe",
        "prompt=a%00b",
    ],
)
async def test_bad_parameters_are_400(site: Site, query: str) -> None:
    response = await site.live(query)
    assert_error(response, 400, "VALIDATION_ERROR")
    assert site.origin.calls == 0


async def test_prompt_of_5000_characters_is_fine(site: Site) -> None:
    response = await site.live({"prompt": "x" * 5000}, method="HEAD")
    assert response.status_code == 404  # valid, just not cached


async def test_errors_echo_the_request_id(site: Site) -> None:
    response = await site.live("", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("key", [None, "", "bnt_" + "0" * 64, "not-a-key"])
async def test_missing_or_unknown_key_is_401(site: Site, key: str | None) -> None:
    headers = {} if key is None else {"X-API-Key": key}
    response = await site.http.get("/api/v1/live", params={"prompt": PROMPT}, headers=headers)
    assert_error(response, 401, "UNAUTHORIZED")


async def test_master_key_cannot_use_live(site: Site) -> None:
    async with site.services.sessions() as session:
        master = await create_key(session, "master")
        await session.commit()
    response = await site.live({"prompt": PROMPT}, headers={"X-API-Key": master.secret})
    assert_error(response, 401, "UNAUTHORIZED")


# -- the public CDN form -------------------------------------------------------------------------


async def test_cdn_live_needs_no_key_and_names_its_scope(site: Site) -> None:
    first = await site.cdn("hero", {"prompt": PROMPT, "aspectRatio": "16:9"})
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    assert first.headers["x-scope"] == "hero"
    again = await site.cdn("hero", {"prompt": PROMPT, "aspectRatio": "16:9"})
    assert again.headers["x-cache-status"] == "HIT" and again.headers["x-scope"] == "hero"
    other_scope = await site.cdn("footer", {"prompt": PROMPT, "aspectRatio": "16:9"})
    assert other_scope.headers["x-cache-status"] == "MISS"
    api_form = await site.live({"prompt": PROMPT, "aspectRatio": "16:9"})
    assert api_form.headers["x-cache-status"] == "MISS"  # scope "" is its own key
    scope = (await site.api("GET", "/api/v1/live/scopes/hero")).json()["data"]
    assert scope["currentGenerations"] == 1


async def test_cdn_rejects_bad_scopes_and_unknown_projects(site: Site) -> None:
    for scope in ("x" * 65, "has.dot", "%20"):
        response = await site.http.get(f"/cdn/acme/web/live/{scope}", params={"prompt": PROMPT})
        assert_error(response, 400, "VALIDATION_ERROR")
    for path in ("/cdn/acme/nope/live/hero", "/cdn/nobody/web/live/hero", "/cdn/ACME/web/live/x"):
        response = await site.http.get(path, params={"prompt": PROMPT})
        assert_error(response, 404, "PROJECT_NOT_FOUND")
    assert site.origin.calls == 0


async def test_scope_limits_stop_new_generations_but_never_hits(site: Site) -> None:
    created = await site.api(
        "POST", "/api/v1/live/scopes", json={"slug": "tight", "newGenerationsLimit": 1}
    )
    assert created.status_code == 201
    assert (await site.cdn("tight", {"prompt": "one"})).status_code == 200
    assert_error(await site.cdn("tight", {"prompt": "two"}), 403, "SCOPE_LIMIT_REACHED")
    assert (await site.cdn("tight", {"prompt": "one"})).headers["x-cache-status"] == "HIT"
    await site.api("PUT", "/api/v1/live/scopes/tight", json={"allowNewGenerations": False})
    assert_error(await site.cdn("tight", {"prompt": "three"}), 403, "SCOPE_GENERATIONS_DISABLED")
    assert (await site.cdn("tight", {"prompt": "one"})).status_code == 200
    # Refusals leave nothing behind: one generation, counted once.
    rows = (await site.api("GET", "/api/v1/generations")).json()["data"]
    assert [g["status"] for g in rows] == ["success"]
    scope = (await site.api("GET", "/api/v1/live/scopes/tight")).json()["data"]
    assert scope["currentGenerations"] == 1


async def test_per_ip_budget_answers_429_with_retry_after(tmp_path: Path) -> None:
    async with open_site(tmp_path, ip_budget_per_hour=2, ip_budget_burst=2) as site:
        for n in range(2):
            assert (await site.cdn("demo", {"prompt": f"image {n}"})).status_code == 200
        refused = await site.cdn("demo", {"prompt": "image 2"})
        assert_error(refused, 429, "RATE_LIMIT_EXCEEDED")
        assert int(refused.headers["retry-after"]) >= 1
        # Forwarded-For from an untrusted peer changes nothing.
        spoofed = await site.cdn(
            "demo", {"prompt": "image 3"}, headers={"X-Forwarded-For": "9.9.9.9"}
        )
        assert spoofed.status_code == 429
        assert (await site.cdn("demo", {"prompt": "image 0"})).status_code == 200  # hits are free


async def test_trusted_proxy_forwards_the_client_address(tmp_path: Path) -> None:
    async with open_site(
        tmp_path, ip_budget_per_hour=1, ip_budget_burst=1, trusted_proxies=("127.0.0.0/8",)
    ) as site:
        headers = {"X-Forwarded-For": "203.0.113.7, 127.0.0.2"}
        assert (await site.cdn("demo", {"prompt": "a"}, headers=headers)).status_code == 200
        assert (await site.cdn("demo", {"prompt": "b"}, headers=headers)).status_code == 429
        other = {"X-Forwarded-For": "203.0.113.8"}
        # One address's refusal is its own: the next address gets the image at once.
        assert (await site.cdn("demo", {"prompt": "b"}, headers=other)).status_code == 200


# -- images by id and alias ------------------------------------------------------------------


async def test_image_by_id_is_immutable_and_conditional(site: Site) -> None:
    live = await site.live({"prompt": PROMPT})
    image_id = live.headers["x-image-id"]
    url = f"/cdn/acme/web/img/{image_id}"
    response = await site.http.get(url)
    assert response.status_code == 200 and response.content == live.content
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["etag"] == live.headers["etag"]
    again = await site.http.get(url, headers={"If-None-Match": live.headers["etag"]})
    assert again.status_code == 304
    part = await site.http.get(url, headers={"Range": "bytes=0-3"})
    assert part.status_code == 206 and part.content == b"\x89PNG"


async def test_image_by_alias_may_move_so_caches_for_a_minute(site: Site) -> None:
    uploaded = (
        await site.api(
            "POST",
            "/api/v1/images/upload",
            files={"file": ("a.png", png_bytes(), "image/png")},
            data={"alias": "@logo"},
        )
    ).json()["data"]
    response = await site.http.get("/cdn/acme/web/img/@logo")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=60"
    assert response.headers["x-image-id"] == uploaded["id"]
    assert response.content == png_bytes()


async def test_unknown_images_are_404(site: Site) -> None:
    for ref in ("00000000-0000-4000-8000-000000000000", "not-an-id", "@nobody"):
        response = await site.http.get(f"/cdn/acme/web/img/{ref}")
        assert response.status_code == 404, ref
        assert response.json()["error"]["code"] in ("IMAGE_NOT_FOUND", "ALIAS_NOT_FOUND")


async def test_deleting_an_image_drops_it_from_the_edge(site: Site) -> None:
    live = await site.live({"prompt": PROMPT})
    image_id = live.headers["x-image-id"]
    assert (await site.http.get(f"/cdn/acme/web/img/{image_id}")).status_code == 200
    deleted = await site.api("DELETE", f"/api/v1/images/{image_id}")
    assert deleted.status_code == 200, deleted.text
    assert (await site.http.get(f"/cdn/acme/web/img/{image_id}")).status_code == 404
    head = await site.live({"prompt": PROMPT}, method="HEAD")
    assert head.status_code == 404  # not served from L1, index or manifest any more
    regenerated = await site.live({"prompt": PROMPT})
    assert regenerated.headers["x-cache-status"] == "MISS"
    assert regenerated.headers["x-image-id"] != image_id


# -- losing caches costs a read, never a generation ----------------------------------------------


async def test_a_restarted_edge_serves_from_the_index(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    _, http = second_edge(site)
    async with http:
        again = await http.get(
            "/api/v1/live", params={"prompt": PROMPT}, headers={"X-API-Key": site.key}
        )
    assert again.headers["x-cache-status"] == "HIT" and again.content == first.content
    assert site.origin.calls == 1


async def test_without_the_index_the_manifest_serves_and_is_written_back(site: Site) -> None:
    first = await site.live({"prompt": PROMPT})
    empty = MemoryIndex()
    _, http = second_edge(site, index=empty)
    async with http:
        again = await http.get(
            "/api/v1/live", params={"prompt": PROMPT}, headers={"X-API-Key": site.key}
        )
    assert again.headers["x-cache-status"] == "HIT" and again.content == first.content
    assert site.origin.calls == 1
    assert len(empty._records) == 1  # written back


async def test_images_over_the_l1_limit_stream_from_storage(tmp_path: Path) -> None:
    async with open_site(tmp_path, l1_max_entry_bytes=100) as site:
        first = await site.live({"prompt": PROMPT})
        assert first.status_code == 200 and len(first.content) > 100
        again = await site.live({"prompt": PROMPT})
        assert again.headers["x-cache-status"] == "HIT" and again.content == first.content
        assert len(site.edge.l1) == 0
        part = await site.live({"prompt": PROMPT}, headers={"Range": "bytes=-10"})
        assert part.status_code == 206 and part.content == first.content[-10:]
        not_modified = await site.live(
            {"prompt": PROMPT}, headers={"If-None-Match": first.headers["etag"]}
        )
        assert not_modified.status_code == 304
        image_id = first.headers["x-image-id"]
        by_id = await site.http.get(f"/cdn/acme/web/img/{image_id}")
        assert by_id.status_code == 200 and by_id.content == first.content
        await site.api("PUT", f"/api/v1/images/{image_id}", json={"alias": "@big"})
        by_alias = await site.http.get("/cdn/acme/web/img/@big")
        assert by_alias.status_code == 200 and by_alias.content == first.content
        assert by_alias.headers["cache-control"] == "public, max-age=60"


# -- failures are envelopes -------------------------------------------------------------------


async def test_storage_down_is_503_with_retry_after(site: Site) -> None:
    await site.live({"prompt": PROMPT})

    async def broken(key: str) -> bytes:
        raise StorageUnavailable("disk on fire")

    _, http = second_edge(site, index=MemoryIndex())
    site.services.store.read = broken  # type: ignore[method-assign]
    async with http:
        response = await http.get(
            "/api/v1/live", params={"prompt": PROMPT}, headers={"X-API-Key": site.key}
        )
    assert_error(response, 503, "UPSTREAM_UNAVAILABLE")
    assert int(response.headers["retry-after"]) >= 1


async def test_unexpected_errors_are_500_without_a_trace(site: Site) -> None:
    async def broken(params: LiveParams) -> LiveResult:
        raise RuntimeError("secret internals")

    site.origin.live = broken  # type: ignore[method-assign]
    response = await site.live({"prompt": PROMPT})
    assert_error(response, 500, "INTERNAL_ERROR")
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_too_many_generations_at_once_is_503(tmp_path: Path) -> None:
    async with open_site(tmp_path, max_concurrent_generations=2) as site:
        site.origin.hold()
        requests = [asyncio.create_task(site.live({"prompt": f"p{n}"})) for n in range(4)]
        await until(lambda: site.origin.calls == 2, "two generations to start")
        await until(lambda: sum(r.done() for r in requests) == 2, "the other two to be refused")
        site.origin.release()
        responses = await asyncio.gather(*requests)
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 200, 503, 503]
        refused = next(r for r in responses if r.status_code == 503)
        assert_error(refused, 503, "UPSTREAM_UNAVAILABLE")
        assert refused.headers["retry-after"]
        # A refusal claims nothing: no generation row is left behind and the key is free.
        rows = (await site.api("GET", "/api/v1/generations")).json()["data"]
        assert sorted(g["status"] for g in rows) == ["success", "success"]
        again = [await site.live({"prompt": f"p{n}"}) for n in range(4)]
        assert [r.status_code for r in again] == [200] * 4
        assert sorted(r.headers["x-cache-status"] for r in again) == ["HIT", "HIT", "MISS", "MISS"]


async def test_other_paths_reach_the_origin(site: Site) -> None:
    response = await site.api("GET", "/api/v1/generations")
    assert response.status_code == 200 and response.json()["success"] is True
    for path in ("/cdn/acme/web/other/x", "/cdn/acme/web/live/a/b", "/nope"):
        response = await site.http.get(path)
        assert response.status_code == 404, path


async def test_alone_the_edge_answers_404_envelopes(site: Site) -> None:
    _, http = second_edge(site)
    async with http:
        response = await http.get("/api/v1/generations")
        health = await http.get("/health")
    assert_error(response, 404, "NOT_FOUND")
    assert health.status_code == 200 and health.json()["data"]["role"] == "edge"


# -- with Redis: several edges, Redis down -----------------------------------------------------


async def test_two_edges_on_one_redis_generate_once(tmp_path: Path, redis_url: str) -> None:
    async with open_site(tmp_path, index=RedisIndex.from_url(redis_url)) as site:
        site.origin.hold()
        other_index = RedisIndex.from_url(redis_url)
        other_edge, other = second_edge(site, index=other_index)
        prompt = f"{PROMPT} {time.time()}"  # the Redis server is shared by the session
        try:
            calls = [
                (site.http if n % 2 else other).get(
                    "/api/v1/live", params={"prompt": prompt}, headers={"X-API-Key": site.key}
                )
                for n in range(40)
            ]
            requests = [asyncio.create_task(call) for call in calls]
            await until(
                lambda: site.edge.metrics.misses + other_edge.metrics.misses == 40,
                "all 40 requests to miss on their edge",
            )
            site.origin.release()
            responses = await asyncio.gather(*requests)
        finally:
            await other.aclose()
            await other_index.close()
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert site.origin.calls == 1  # the Redis lock kept the second edge from asking


async def test_redis_down_serves_from_the_manifest(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with open_site(tmp_path, index=RedisIndex.from_url(redis_server.url)) as site:
        first = await site.live({"prompt": PROMPT})
        _, http = second_edge(site)  # a fresh L1
        async with http:
            with redis_server.stopped():
                again = await http.get(
                    "/api/v1/live", params={"prompt": PROMPT}, headers={"X-API-Key": site.key}
                )
                assert again.status_code == 200 and again.content == first.content
                assert again.headers["x-cache-status"] == "HIT"
                # A new key still generates (the origin's unique row guards it).
                new = await http.get(
                    "/api/v1/live", params={"prompt": "new"}, headers={"X-API-Key": site.key}
                )
                assert new.status_code == 200 and new.headers["x-cache-status"] == "MISS"
        assert site.origin.generations == 2


async def test_deletes_reach_other_edges_over_redis(tmp_path: Path, redis_url: str) -> None:
    bus = RedisBus.from_url(redis_url)
    async with open_site(tmp_path, index=RedisIndex.from_url(redis_url), bus=bus) as site:
        other_bus = RedisBus.from_url(redis_url)
        other_index = RedisIndex.from_url(redis_url)
        edge = create_edge(
            site.edge.settings, site.origin, site.services.store, other_index, other_bus, None
        )
        await edge.startup()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
        try:
            await asyncio.wait_for(other_bus.subscribed.wait(), 3.0)
            first = await site.live({"prompt": f"{PROMPT} {time.time()}"})
            image_id = first.headers["x-image-id"]
            url = f"/cdn/acme/web/img/{image_id}"
            assert (await http.get(url)).status_code == 200
            assert len(edge.l1) == 1
            await site.api("DELETE", f"/api/v1/images/{image_id}")
            await until(lambda: not len(edge.l1), "the other edge to drop the deleted image")
            assert (await http.get(url)).status_code == 404
        finally:
            await http.aclose()
            await edge.shutdown()
            await other_index.close()


# -- the edge in its own process: the origin over HTTP -----------------------------------------


@contextlib.asynccontextmanager
async def http_origin_site(tmp_path: Path) -> AsyncIterator[tuple[Site, HttpOrigin, Edge]]:
    """An origin app (with its internal routes) and a separate edge reaching it over HTTP."""
    async with open_site(tmp_path, service_token="s3cret") as site:
        origin_app = create_origin(site.services.settings, site.services)
        origin = HttpOrigin(site.services.settings, transport=httpx.ASGITransport(app=origin_app))
        await origin.start()
        edge = create_edge(
            site.services.settings, origin, site.services.store, MemoryIndex(), LocalBus(), None
        )
        try:
            yield site, origin, edge
        finally:
            await origin.close()


async def test_http_origin_answers_like_the_in_process_one(tmp_path: Path) -> None:
    async with http_origin_site(tmp_path) as (site, origin, _):
        assert origin.model == site.origin.model
        key_hash = hashlib.sha256(site.key.encode()).hexdigest()
        assert await origin.key(key_hash) == await site.origin.key(key_hash)
        assert await origin.key("0" * 64) is None
        assert await origin.project("acme", "web") == await site.origin.project("acme", "web")
        assert await origin.project("acme", "nope") is None
        ref = await origin.project("acme", "web")
        assert ref is not None
        params = LiveParams(ref.project_id, "acme", "web", "hero", PROMPT)
        result = await origin.live(params)
        assert result.created and result.record.canonical
        again = await origin.live(params)
        assert not again.created and again.record == result.record
        assert await origin.image(
            ref.project_id, result.record.image_id
        ) == await site.origin.image(ref.project_id, result.record.image_id)
        with pytest.raises(ApiError) as missing:
            await origin.image(ref.project_id, "@nobody")
        assert missing.value.status == 404 and missing.value.code == "ALIAS_NOT_FOUND"
        with pytest.raises(ApiError) as refused:
            await origin.live(LiveParams(ref.project_id, "acme", "web", "bad scope!", PROMPT))
        assert refused.value.status == 400 and refused.value.code == "VALIDATION_ERROR"


async def test_edge_over_http_origin_misses_once_then_hits(tmp_path: Path) -> None:
    async with http_origin_site(tmp_path) as (site, _, edge):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
        async with http:
            first = await http.get("/cdn/acme/web/live/hero", params={"prompt": PROMPT})
            assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
            again = await http.get("/cdn/acme/web/live/hero", params={"prompt": PROMPT})
            assert again.headers["x-cache-status"] == "HIT" and again.content == first.content
            keyed = await http.get(
                "/api/v1/live", params={"prompt": PROMPT}, headers={"X-API-Key": site.key}
            )
            assert keyed.status_code == 200


async def test_http_origin_needs_the_service_token(tmp_path: Path) -> None:
    async with open_site(tmp_path, service_token="s3cret") as site:
        app = create_origin(site.services.settings, site.services)
        wrong = replace(site.services.settings, service_token="guess")
        origin = HttpOrigin(wrong, transport=httpx.ASGITransport(app=app))
        try:
            with pytest.raises(ApiError) as refused:
                await origin.project("acme", "web")
            assert refused.value.status == 401
        finally:
            await origin.close()


async def test_unreachable_origin_is_503_with_retry_after(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, origin_url=f"http://127.0.0.1:{free_port()}")
    origin = HttpOrigin(settings)
    try:
        await origin.start()  # logs, does not raise
        with pytest.raises(UpstreamUnavailable) as down:
            origin.model  # noqa: B018
        with pytest.raises(UpstreamUnavailable) as down:
            await origin.project("acme", "web")
        assert down.value.status == 503 and down.value.headers["Retry-After"]
        edge = create_edge(settings, origin, LocalStore(tmp_path / "o"), MemoryIndex(), LocalBus())
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
        async with http:
            response = await http.get("/cdn/acme/web/live/hero", params={"prompt": PROMPT})
        assert_error(response, 503, "UPSTREAM_UNAVAILABLE")
    finally:
        await origin.close()


async def test_lifespan_runs_the_fallbacks_then_starts_the_bus(tmp_path: Path) -> None:
    events: list[str] = []

    class Bus(LocalBus):
        async def start(self) -> None:
            events.append("bus started")

        async def close(self) -> None:
            events.append("bus closed")

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                events.append("origin started")
                await send({"type": "lifespan.startup.complete"})
            else:
                events.append("origin stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    settings = make_settings(tmp_path)
    store = LocalStore(tmp_path / "o")
    edge = create_edge(settings, site_origin_stub(), store, MemoryIndex(), Bus(), fallback)
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return inbox.pop(0)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    await edge({"type": "lifespan"}, receive, send)
    assert events == ["origin started", "bus started", "bus closed", "origin stopped"]
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def site_origin_stub() -> Any:
    class Stub:
        model = "stub"

    return Stub()
