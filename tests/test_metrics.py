"""/metrics in the Prometheus text format: counters move with misses, hits and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cache.index.memory import MemoryIndex
from cache.metrics import MetricsEndpoint
from origin.app import create_origin
from tests.running import Banatie
from tests.test_edge import Site, open_site, second_edge

PROMPT = "a lighthouse at dawn"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


async def scrape(http: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.headers["x-content-type-options"] == "nosniff"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_miss_a_hit_and_an_error_move_the_counters(site: Site) -> None:
    before = await scrape(site.http)
    miss = await site.cdn("hero", {"prompt": PROMPT})
    hit = await site.cdn("hero", {"prompt": PROMPT})
    bad = await site.cdn("hero", {"prompt": PROMPT, "aspectRatio": "7:5"})
    assert (miss.status_code, hit.status_code, bad.status_code) == (200, 200, 400)
    after = await scrape(site.http)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("banatie_requests_total", family="cdn_live", status="200") == 2
    assert moved("banatie_requests_total", family="cdn_live", status="400") == 1
    assert moved("banatie_response_body_bytes_total", family="cdn_live") == (
        len(miss.content) + len(hit.content) + len(bad.content)
    )
    assert moved("banatie_cache_hits_total", tier="l1") == 1
    assert moved("banatie_cache_misses_total") == 1
    assert moved("banatie_generation_seconds_count") == 1
    assert moved("banatie_coalesced_waiters_total") == 0
    assert value(after, "banatie_l1_entries") == 1
    assert value(after, "banatie_l1_bytes") > len(miss.content)
    assert ("banatie_generations_in_flight", frozenset()) in after


async def test_every_route_family_is_counted(site: Site) -> None:
    await site.live({"prompt": PROMPT})
    await site.live({"prompt": PROMPT}, headers={"X-API-Key": "bnt_" + "0" * 64})
    await site.api("GET", "/api/v1/generations")
    await site.http.get("/cdn/acme/web/img/00000000-0000-4000-8000-000000000000")
    await site.http.get("/health")
    samples = await scrape(site.http)
    assert value(samples, "banatie_requests_total", family="live", status="200") == 1
    assert value(samples, "banatie_requests_total", family="live", status="401") == 1
    assert value(samples, "banatie_requests_total", family="api", status="200") == 1
    assert value(samples, "banatie_requests_total", family="cdn_img", status="404") == 1
    assert value(samples, "banatie_requests_total", family="health", status="200") == 1


async def test_hits_are_counted_by_tier(site: Site) -> None:
    await site.cdn("hero", {"prompt": PROMPT})
    _, http = second_edge(site)  # a fresh L1 on the same index
    async with http:
        response = await http.get("/cdn/acme/web/live/hero", params={"prompt": PROMPT})
        assert response.status_code == 200
        assert value(await scrape(http), "banatie_cache_hits_total", tier="index") == 1
    _, http = second_edge(site, index=MemoryIndex())  # neither L1 nor index: the manifest
    async with http:
        await http.get("/cdn/acme/web/live/hero", params={"prompt": PROMPT})
        samples = await scrape(http)
    assert value(samples, "banatie_cache_hits_total", tier="manifest") == 1
    assert value(samples, "banatie_cache_misses_total") == 0


async def test_waiters_on_one_generation_are_counted_as_coalesced(site: Site) -> None:
    site.origin.delay_s = 0.2
    responses = await asyncio.gather(*(site.cdn("hero", {"prompt": PROMPT}) for _ in range(5)))
    assert {r.status_code for r in responses} == {200}
    samples = await scrape(site.http)
    assert value(samples, "banatie_cache_misses_total") == 5
    assert value(samples, "banatie_coalesced_waiters_total") == 4
    assert value(samples, "banatie_generation_seconds_count") == 1


async def test_the_origin_alone_serves_its_own_metrics(site: Site) -> None:
    app = MetricsEndpoint(
        create_origin(site.services.settings, site.services), site.services.metrics
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://origin") as http:
        await http.get("/api/v1/generations", headers={"X-API-Key": site.key})
        await http.get("/api/v1/generations")
        samples = await scrape(http)
    assert value(samples, "banatie_requests_total", family="api", status="200") == 1
    assert value(samples, "banatie_requests_total", family="api", status="401") == 1
    assert ("banatie_origin_generations_in_flight", frozenset()) in samples


def test_banatie_serve_shows_edge_and_origin_in_one_scrape(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path)
    app.start()
    try:
        assert httpx.get(f"{app.url}/cdn/nobody/here/live/a?prompt=x").status_code == 404
        text = httpx.get(f"{app.url}/metrics").text
    finally:
        app.stop()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(samples, "banatie_requests_total", family="cdn_live", status="404") == 1
    assert ("banatie_origin_generations_in_flight", frozenset()) in samples
    assert ("banatie_l1_bytes", frozenset()) in samples


def test_metrics_token_guards_the_edge_and_the_origin(tmp_path: Path) -> None:
    token = "scrape-secret-123"
    origin = Banatie("origin", tmp_path / "o", {"METRICS_TOKEN": token, "SERVICE_TOKEN": "s"})
    serve = Banatie("serve", tmp_path / "s", {"METRICS_TOKEN": token})
    for app in (origin, serve):
        app.start()
        try:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                refused = httpx.get(f"{app.url}/metrics", headers=headers)
                assert refused.status_code == 401, (app.command, headers)
                assert refused.json()["error"]["code"] == "UNAUTHORIZED"
                assert refused.headers["cache-control"] == "no-store"
            allowed = httpx.get(f"{app.url}/metrics", headers={"Authorization": f"bearer {token}"})
            assert allowed.status_code == 200 and "banatie_requests_total" in allowed.text
        finally:
            app.stop()
