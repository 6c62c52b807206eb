"""An `<img>` load that fails gets an SVG image naming the error; API clients keep JSON.

Browsers block JSON answers to image loads (Chromium: ERR_BLOCKED_BY_ORB), so a JSON error
shows a broken icon and no reason. A request that is an image load (`Sec-Fetch-Dest: image`,
or an Accept that prefers images to JSON) gets the same error as a small SVG instead, with
the same status, `Cache-Control: no-store` and the request id. `ERROR_IMAGES=false`: JSON.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.test_edge import Site, open_site

SVG = "{http://www.w3.org/2000/svg}"
CHROMIUM_IMG_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
FIREFOX_IMG_ACCEPT = "image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5"
IMAGE_LOAD = {"Sec-Fetch-Dest": "image", "Accept": CHROMIUM_IMG_ACCEPT}
BAD_RATIO = {"prompt": "a lighthouse", "aspectRatio": "7:3"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def svg_text(response: httpx.Response) -> str:
    """The text an error image shows (it must be well-formed XML to show at all)."""
    assert response.headers["content-type"] == "image/svg+xml", response.text
    root = ET.fromstring(response.content)
    assert root.tag == f"{SVG}svg"
    assert int(root.attrib["width"]) > 0 and int(root.attrib["height"]) > 0
    return " ".join(t.text or "" for t in root.iter(f"{SVG}text"))


def assert_error_headers(response: httpx.Response, status: int) -> None:
    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-request-id"]


async def test_an_image_load_of_a_bad_url_gets_an_image_naming_the_error(site: Site) -> None:
    response = await site.cdn("hero", BAD_RATIO, headers=IMAGE_LOAD)
    assert_error_headers(response, 400)
    text = svg_text(response)
    assert text.startswith("400 · aspectRatio must be one of 1:1")
    assert "VALIDATION_ERROR" in text and response.headers["x-request-id"] in text


@pytest.mark.parametrize("accept", [CHROMIUM_IMG_ACCEPT, FIREFOX_IMG_ACCEPT, "image/webp,*/*"])
async def test_an_accept_that_prefers_images_is_an_image_load(site: Site, accept: str) -> None:
    response = await site.cdn("hero", BAD_RATIO, headers={"Accept": accept})
    assert_error_headers(response, 400)
    assert "aspectRatio" in svg_text(response)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Accept": "*/*"},
        {"Accept": "application/json"},
        {"Accept": "application/json, image/*"},
        {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"},
        {"Sec-Fetch-Dest": "document"},
        {"Sec-Fetch-Dest": "empty", "Accept": "*/*"},  # fetch() from a page
    ],
)
async def test_api_clients_keep_the_json_envelope(site: Site, headers: dict[str, str]) -> None:
    response = await site.cdn("hero", BAD_RATIO, headers=headers)
    assert_error_headers(response, 400)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_the_request_id_sent_is_the_one_shown(site: Site) -> None:
    headers = {**IMAGE_LOAD, "X-Request-Id": "page-load-42"}
    response = await site.cdn("hero", BAD_RATIO, headers=headers)
    assert response.headers["x-request-id"] == "page-load-42"
    assert "request page-load-42" in svg_text(response)


async def test_an_over_budget_image_says_when_to_try_again(tmp_path: Path) -> None:
    async with open_site(tmp_path, ip_budget_per_hour=1, ip_budget_burst=1) as site:
        assert (await site.cdn("hero", {"prompt": "one"}, headers=IMAGE_LOAD)).status_code == 200
        response = await site.cdn("hero", {"prompt": "two"}, headers=IMAGE_LOAD)
    assert_error_headers(response, 429)
    retry_after = int(response.headers["retry-after"])
    text = svg_text(response)
    assert text.startswith("429 · ") and "more an hour" in text
    assert f"try again in {-(-retry_after // 60)} min" in text


async def test_a_signed_only_project_says_it_needs_signed_urls(site: Site) -> None:
    assert (await site.api("POST", "/api/v1/live/signing/rotate")).status_code == 200
    required = await site.api("PUT", "/api/v1/live/signing", json={"requireSignedUrls": True})
    assert required.status_code == 200, required.text
    response = await site.cdn("hero", {"prompt": "a lighthouse"}, headers=IMAGE_LOAD)
    assert_error_headers(response, 403)
    assert "this project needs signed URLs" in svg_text(response)


async def test_the_text_is_escaped_for_xml(site: Site) -> None:
    # The 401 hint names "<img>": raw, it would make the SVG unreadable (no image at all).
    response = await site.live({"prompt": "a cat"}, headers={**IMAGE_LOAD, "X-API-Key": ""})
    assert_error_headers(response, 401)
    assert "an <img> cannot send X-API-Key" in svg_text(response)
    assert b"&lt;img&gt;" in response.content


async def test_unknown_image_and_project_are_images_too(site: Site) -> None:
    unknown_image = await site.http.get(
        "/cdn/acme/web/img/00000000-0000-0000-0000-000000000000", headers=IMAGE_LOAD
    )
    assert_error_headers(unknown_image, 404)
    assert "check the image id" in svg_text(unknown_image)
    unknown_project = await site.http.get("/cdn/acme/nope/live/hero?prompt=x", headers=IMAGE_LOAD)
    assert_error_headers(unknown_project, 404)
    assert "PROJECT_NOT_FOUND" in svg_text(unknown_project)


async def test_head_of_an_image_load_has_the_image_headers_and_no_body(site: Site) -> None:
    response = await site.http.head(
        "/cdn/acme/web/live/hero?prompt=x&aspectRatio=7:3", headers=IMAGE_LOAD
    )
    assert_error_headers(response, 400)
    assert response.headers["content-type"] == "image/svg+xml"
    assert int(response.headers["content-length"]) > 0 and response.content == b""


async def test_error_images_false_keeps_json_for_image_loads(tmp_path: Path) -> None:
    async with open_site(tmp_path, error_images=False) as site:
        response = await site.cdn("hero", BAD_RATIO, headers=IMAGE_LOAD)
    assert_error_headers(response, 400)
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == "VALIDATION_ERROR"
