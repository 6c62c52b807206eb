"""/openapi.json describes the routes the product exists for, as the edge answers them:
`/api/v1/live`, `/cdn/{org}/{project}/live/{scope}`, `/cdn/{org}/{project}/img/{ref}` (with
their variant parameters), and `/metrics`. tests/test_schema_fuzz.py checks a running server
against the document, these routes included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import png_bytes
from tests.test_edge import Site, open_site

LIVE_PARAMS = {"prompt", "aspectRatio", "autoEnhance", "template"}
VARIANT_PARAMS = {"w", "h", "fit", "format", "q", "dpr"}
IMAGE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/avif"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path, max_variant_dimension=2000) as s:
        yield s


async def document(site: Site) -> dict[str, Any]:
    response = await site.http.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def params(path_item: dict[str, Any], method: str = "get") -> dict[tuple[str, str], Any]:
    """(in, name) → parameter, of the path item and the operation."""
    found = path_item.get("parameters", []) + path_item[method].get("parameters", [])
    return {(p["in"], p["name"]): p for p in found}


def assert_image_responses(operation: dict[str, Any], errors: set[str]) -> None:
    responses = operation["responses"]
    assert set(responses["200"]["content"]) == IMAGE_TYPES
    assert set(responses["206"]["content"]) == IMAGE_TYPES
    assert "Content-Range" in responses["206"]["headers"]
    assert "content" not in responses["304"] and "ETag" in responses["304"]["headers"]
    assert errors <= set(responses)
    for code in errors:
        assert set(responses[code]["content"]) == {"application/json", "image/svg+xml"}, code


async def test_the_keyed_live_route_is_described(site: Site) -> None:
    live = (await document(site))["paths"]["/api/v1/live"]
    found = params(live)
    assert {name for where, name in found if where == "query"} == LIVE_PARAMS | VARIANT_PARAMS
    assert found[("query", "prompt")]["required"] is True
    assert {("header", "Range"), ("header", "If-None-Match")} <= set(found)
    assert live["get"]["security"] == [{"apiKey": []}]
    assert_image_responses(live["get"], {"400", "401", "403", "429", "503"})
    assert "X-RateLimit-Remaining" in live["get"]["responses"]["200"]["headers"]


async def test_the_public_live_route_is_described(site: Site) -> None:
    cdn = (await document(site))["paths"]["/cdn/{org}/{project}/live/{scope}"]
    found = params(cdn)
    assert {name for where, name in found if where == "path"} == {"org", "project", "scope"}
    assert LIVE_PARAMS | VARIANT_PARAMS <= {name for where, name in found if where == "query"}
    assert "security" not in cdn["get"]
    assert_image_responses(cdn["get"], {"400", "403", "404", "429", "503"})
    assert "Access-Control-Allow-Origin" in cdn["get"]["responses"]["200"]["headers"]
    assert "204" in cdn["options"]["responses"]


async def test_the_image_route_is_described_with_its_variants(site: Site) -> None:
    img = (await document(site))["paths"]["/cdn/{org}/{project}/img/{ref}"]
    found = params(img)
    assert {name for where, name in found if where == "path"} == {"org", "project", "ref"}
    assert {name for where, name in found if where == "query"} == VARIANT_PARAMS
    assert found[("query", "w")]["schema"]["maximum"] == 2000  # MAX_VARIANT_DIMENSION
    assert_image_responses(img["get"], {"400", "404"})
    assert "204" in img["options"]["responses"]


async def test_the_documented_variant_values_are_the_ones_served(site: Site) -> None:
    img = (await document(site))["paths"]["/cdn/{org}/{project}/img/{ref}"]
    found = params(img)
    upload = await site.api(
        "POST", "/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}
    )
    url = f"/cdn/acme/web/img/{upload.json()['data']['id']}"
    for fit in found[("query", "fit")]["schema"]["enum"]:
        response = await site.http.get(url, params={"w": 8, "h": 8, "fit": fit})
        assert response.status_code == 200, (fit, response.text)
    for fmt in found[("query", "format")]["schema"]["enum"]:
        response = await site.http.get(url, params={"w": 8, "format": fmt})
        assert response.status_code == 200 or "not supported" in response.text, fmt
        if response.status_code == 200:
            assert response.headers["content-type"] in IMAGE_TYPES


async def test_metrics_is_described(site: Site) -> None:
    metrics = (await document(site))["paths"]["/metrics"]
    assert "text/plain" in metrics["get"]["responses"]["200"]["content"]
    assert "401" in metrics["get"]["responses"]
