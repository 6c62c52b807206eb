"""Live misses and their 429s report the bucket they spent from (X-RateLimit-Limit, -Remaining,
-Reset): the client IP's on CDN live URLs, the key's on /api/v1/live. The miss is produced by
the origin and answered by the edge, so both layouts are checked: the origin in the edge's
process, and the origin over HTTP (edge/origin_client.py ↔ origin/edge_api.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cache.index.memory import MemoryIndex
from cache.invalidation import LocalBus
from edge.app import create_edge
from edge.origin_client import HttpOrigin
from origin.app import create_origin
from tests.test_edge import open_site

BURST = 2


@dataclass
class Layout:
    http: httpx.AsyncClient  # a browser at 127.0.0.1 talking to the edge
    key: str

    async def cdn(self, scope: str, prompt: str, **query: str) -> httpx.Response:
        params = {"prompt": prompt, **query}
        return await self.http.get(f"/cdn/acme/web/live/{scope}", params=params)

    async def live(self, prompt: str) -> httpx.Response:
        return await self.http.get(
            "/api/v1/live", params={"prompt": prompt}, headers={"X-API-Key": self.key}
        )


@pytest.fixture(params=["in-process", "over-http"])
async def layout(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Layout]:
    budgets = {"ip_budget_burst": BURST, "key_budget_per_hour": BURST}
    async with open_site(tmp_path, service_token="s3cret", **budgets) as site:
        if request.param == "in-process":
            yield Layout(site.http, site.key)
            return
        settings = site.services.settings
        app = create_origin(settings, site.services)
        origin = HttpOrigin(settings, transport=httpx.ASGITransport(app=app))
        await origin.start()
        edge = create_edge(settings, origin, site.services.store, MemoryIndex(), LocalBus(), None)
        transport = httpx.ASGITransport(app=edge, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
            yield Layout(http, site.key)
        await origin.close()


def rate_headers(response: httpx.Response) -> tuple[str, str, int]:
    return (
        response.headers["x-ratelimit-limit"],
        response.headers["x-ratelimit-remaining"],
        int(response.headers["x-ratelimit-reset"]),
    )


async def test_a_cdn_live_miss_reports_the_client_ips_bucket(layout: Layout) -> None:
    first = await layout.cdn("hero", "a lighthouse")
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    limit, remaining, reset = rate_headers(first)
    assert (limit, remaining) == (str(BURST), str(BURST - 1))
    assert reset > time.time()  # when the bucket is full again
    hit = await layout.cdn("hero", "a lighthouse")
    assert hit.headers["x-cache-status"] == "HIT"
    assert "x-ratelimit-limit" not in hit.headers  # hits are free and report nothing
    # A variant of a new image is a miss of its original: the same bucket.
    variant = await layout.cdn("hero", "a harbour", w="64")
    assert variant.status_code == 200, variant.text
    assert rate_headers(variant)[:2] == (str(BURST), "0")


async def test_a_cdn_live_429_reports_the_spent_bucket(layout: Layout) -> None:
    for n in range(BURST):
        assert (await layout.cdn("hero", f"image {n}")).status_code == 200
    refused = await layout.cdn("other", "one too many")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(refused.headers["retry-after"]) >= 1
    limit, remaining, reset = rate_headers(refused)
    assert (limit, remaining) == (str(BURST), "0")
    assert reset > time.time()


async def test_a_key_live_429_reports_the_keys_bucket(layout: Layout) -> None:
    for n in range(BURST):
        served = await layout.live(f"keyed {n}")
        assert served.status_code == 200
        assert rate_headers(served)[:2] == (str(BURST), str(BURST - 1 - n))
    refused = await layout.live("keyed, one too many")
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    assert rate_headers(refused)[:2] == (str(BURST), "0")
