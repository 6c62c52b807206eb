"""The public image routes may be used from any origin: canvas, fetch(), Resource Timing.

`/cdn/{org}/{project}/live/{scope}` and `/cdn/{org}/{project}/img/{ref}` (variants too) send
`Access-Control-Allow-Origin: *` and `Timing-Allow-Origin: *` on every answer (hits, also
those of the server's fast path, misses, 304, 206, errors) and answer CORS preflights.
`/api/v1/live` needs its X-API-Key, which belongs on a server: it stays same-origin.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.harness import png_bytes
from tests.running import Banatie
from tests.test_edge import Site, open_site
from tests.test_multiprocess import project_key

PROMPT = "a lighthouse at dawn"
LIVE = "/cdn/acme/web/live/hero?prompt=" + quote(PROMPT)
ORIGIN = {"Origin": "http://page.example"}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def cross_origin(response: httpx.Response) -> bool:
    return (
        response.headers.get("access-control-allow-origin") == "*"
        and response.headers.get("timing-allow-origin") == "*"
    )


async def get(site: Site, url: str, **headers: str) -> httpx.Response:
    return await site.http.get(url, headers={**ORIGIN, **headers})


async def test_every_answer_of_the_public_image_routes_allows_any_origin(site: Site) -> None:
    uploaded = await site.api(
        "POST",
        "/api/v1/images/upload",
        files={"file": ("a.png", png_bytes(), "image/png")},
        data={"alias": "@logo"},
    )
    image = f"/cdn/acme/web/img/{uploaded.json()['data']['id']}"
    miss = await get(site, LIVE)
    assert miss.headers["x-cache-status"] == "MISS"
    etag = miss.headers["etag"]
    answers = {
        "live miss": miss,
        "live hit": await get(site, LIVE),
        "live 304": await get(site, LIVE, **{"If-None-Match": etag}),
        "live 206": await get(site, LIVE, Range="bytes=0-9"),
        "live variant": await get(site, LIVE + "&w=16&format=png"),
        "live 400": await get(site, LIVE + "&aspectRatio=7:3"),
        "live 416": await get(site, LIVE, Range=f"bytes={len(miss.content)}-"),
        "img first": await get(site, image),
        "img hit": await get(site, image),
        "img alias": await get(site, "/cdn/acme/web/img/@logo"),
        "img variant": await get(site, image + "?w=8&format=webp"),
        "img 206": await get(site, image, Range="bytes=-4"),
        "img 404": await get(site, "/cdn/acme/web/img/@nothing"),
        "unknown project": await get(site, "/cdn/acme/nope/live/hero?prompt=x"),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        **dict.fromkeys(answers, 200),
        "live 304": 304,
        "live 206": 206,
        "live 400": 400,
        "live 416": 416,
        "img 206": 206,
        "img 404": 404,
        "unknown project": 404,
    }
    assert [name for name, r in answers.items() if not cross_origin(r)] == []
    # fetch() from another page may read the cache status and the tag.
    exposed = miss.headers["access-control-expose-headers"].lower()
    assert "x-cache-status" in exposed and "etag" in exposed and "x-request-id" in exposed


async def test_a_budget_429_is_readable_cross_origin(tmp_path: Path) -> None:
    async with open_site(tmp_path, ip_budget_per_hour=1, ip_budget_burst=1) as site:
        assert (await get(site, LIVE)).status_code == 200
        refused = await get(site, "/cdn/acme/web/live/hero?prompt=another")
    assert refused.status_code == 429 and cross_origin(refused)
    assert "retry-after" in refused.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize("path", [LIVE, "/cdn/acme/web/img/@logo?w=10"])
async def test_a_preflight_is_answered(site: Site, path: str) -> None:
    response = await site.http.options(
        path,
        headers={
            **ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "range,if-none-match",
        },
    )
    assert response.status_code == 204 and response.content == b""
    assert response.headers["access-control-allow-origin"] == "*"
    assert {"GET", "HEAD"} <= set(
        re.split(r",\s*", response.headers["access-control-allow-methods"])
    )
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "range" in allowed and "if-none-match" in allowed
    assert int(response.headers["access-control-max-age"]) > 0


async def test_other_methods_are_405_naming_options_too(site: Site) -> None:
    response = await site.http.post(LIVE, headers=ORIGIN)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, OPTIONS" and cross_origin(response)


async def test_the_keyed_live_route_stays_same_origin(site: Site) -> None:
    hit = await site.live({"prompt": PROMPT}, headers=ORIGIN)
    assert hit.status_code == 200 and "access-control-allow-origin" not in hit.headers
    preflight = await site.http.options(
        "/api/v1/live?prompt=x",
        headers={**ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 405 and "access-control-allow-origin" not in preflight.headers


def test_a_hit_of_the_servers_fast_path_allows_any_origin(tmp_path: Path) -> None:
    app = Banatie("serve", tmp_path).start()
    try:
        project_key(app)  # makes the project acme/web
        url = app.url + LIVE
        miss = httpx.get(url, headers=ORIGIN)
        assert miss.status_code == 200 and cross_origin(miss)
        before = fast_answers(app)
        hit = httpx.get(url, headers=ORIGIN)
        not_modified = httpx.get(url, headers={**ORIGIN, "If-None-Match": hit.headers["etag"]})
        assert fast_answers(app) == before + 2  # both answered by the server's fast path
    finally:
        app.stop()
    assert hit.status_code == 200 and hit.headers["x-cache-status"] == "HIT" and cross_origin(hit)
    assert not_modified.status_code == 304 and cross_origin(not_modified)


def fast_answers(app: Banatie) -> int:
    text = httpx.get(app.url + "/metrics").text
    return int(float(re.search(r"^banatie_fast_path_responses_total (\S+)$", text, re.M)[1]))
