"""Every response says `X-Content-Type-Options: nosniff`: JSON, image bytes, errors, the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cache.metrics import MetricsEndpoint
from origin.app import create_origin
from tests.harness import png_bytes
from tests.test_edge import Site, open_site, second_edge

PROMPT = "a lighthouse at dawn"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def assert_nosniff(responses: dict[str, httpx.Response]) -> None:
    missing = [
        name
        for name, r in responses.items()
        if r.headers.get("x-content-type-options") != "nosniff"
    ]
    assert not missing, missing


async def test_image_bytes_and_their_conditional_answers(site: Site) -> None:
    miss = await site.live({"prompt": PROMPT})
    etag = miss.headers["etag"]
    image = f"/cdn/acme/web/img/{miss.headers['x-image-id']}"
    uploaded = await site.api(
        "POST",
        "/api/v1/images/upload",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"alias": "@logo"},
    )
    assert uploaded.status_code == 201
    assert_nosniff(
        {
            "live miss": miss,
            "live hit": await site.live({"prompt": PROMPT}),
            "cdn live": await site.cdn("hero", {"prompt": PROMPT}),
            "304": await site.live({"prompt": PROMPT}, headers={"If-None-Match": etag}),
            "206": await site.live({"prompt": PROMPT}, headers={"Range": "bytes=0-9"}),
            "HEAD": await site.live({"prompt": PROMPT}, method="HEAD"),
            "img": await site.http.get(image),
            "img 304": await site.http.get(image, headers={"If-None-Match": etag}),
            "img alias": await site.http.get("/cdn/acme/web/img/@logo"),
        }
    )


async def test_json_routes_and_their_errors(site: Site) -> None:
    assert_nosniff(
        {
            "list": await site.api("GET", "/api/v1/generations"),
            "create": await site.api("POST", "/api/v1/flows", json={}),
            "401": await site.http.get("/api/v1/generations"),
            "404": await site.api("GET", "/api/v1/images/00000000-0000-4000-8000-000000000000"),
            "400": await site.api("POST", "/api/v1/generations", json={"prompt": ""}),
            "405": await site.api("PATCH", "/api/v1/generations"),
            "no route": await site.http.get("/nope"),
            "health": await site.http.get("/health"),
            "ready": await site.http.get("/ready"),
            "openapi": await site.http.get("/openapi.json"),
            "docs": await site.http.get("/docs"),
            "metrics": await site.http.get("/metrics"),
            "signing": await site.api("GET", "/api/v1/live/signing"),
        }
    )


async def test_edge_errors(site: Site) -> None:
    assert_nosniff(
        {
            "401": await site.live({"prompt": PROMPT}, headers={"X-API-Key": "nope"}),
            "400": await site.live({"prompt": ""}),
            "405": await site.live({"prompt": PROMPT}, method="POST"),
            "416": await site.live({"prompt": PROMPT}, headers={"Range": "bytes=999999999-"}),
            "cdn 404": await site.http.get("/cdn/nobody/here/live/hero?prompt=x"),
            "img 404": await site.http.get("/cdn/acme/web/img/@nobody"),
        }
    )


async def test_an_edge_or_an_origin_alone(site: Site) -> None:
    _, edge = second_edge(site)
    origin_app = MetricsEndpoint(
        create_origin(site.services.settings, site.services), site.services.metrics
    )
    transport = httpx.ASGITransport(app=origin_app)
    async with edge, httpx.AsyncClient(transport=transport, base_url="http://origin") as origin:
        assert_nosniff(
            {
                "edge health": await edge.get("/health"),
                "edge 404": await edge.get("/api/v1/generations"),
                "edge metrics": await edge.get("/metrics"),
                "origin metrics": await origin.get("/metrics"),
                "origin health": await origin.get("/health"),
                "origin internal 401": await origin.get("/internal/info"),
            }
        )
