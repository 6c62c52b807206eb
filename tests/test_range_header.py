"""Range requests (RFC 9110 §14): an unreadable Range is ignored, an unsatisfiable one is 416.

On every image route of the edge (`/api/v1/live`, CDN live, CDN img), with and without a
variant, and on a real server whose L1 fast path declines Ranges to the ASGI path.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.harness import png_bytes
from tests.running import Banatie
from tests.test_edge import Site, open_site
from tests.test_multiprocess import project_key

PROMPT = "a lighthouse at dawn"

# Not a single byte range of the grammar: answered with the whole image.
UNREADABLE: list[str | bytes] = [
    "bytes=a-5",
    "bytes=1x-5",
    "bytes=1 2-5",
    "bytes=5-a",
    "bytes=-5x",
    "bytes=-",
    "bytes=1-2-3",
    "bytes=0x10-20",
    "bytes=\u0663-5".encode(),  # a digit, but not an ASCII one
    b"bytes=\xb2-5",  # latin-1 superscript two
    "bytes=9-3",  # last before first: invalid, so ignored
    "bytes=0-1,5-6",  # several ranges: this server sends the whole body instead
    "items=0-5",
    "bytes 0-5",
    "",
    "bytes=" + "1" * 5000 + "x-",
]


def unsatisfiable(size: int) -> list[str]:
    return [
        f"bytes={size}-",
        f"bytes={size + 10}-{size + 20}",
        "bytes=-0",
        "bytes=" + "9" * 5000 + "-",
    ]


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


async def routes(site: Site) -> dict[str, tuple[str, dict[str, str]]]:
    """Each image route with a cached image behind it: name → (url, headers)."""
    upload = await site.api(
        "POST", "/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}
    )
    image_id = upload.json()["data"]["id"]
    key = {"X-API-Key": site.key}
    urls = {
        "api live": ("/api/v1/live?prompt=" + quote(PROMPT), key),
        "cdn live": ("/cdn/acme/web/live/site?prompt=" + quote(PROMPT), {}),
        "cdn img": (f"/cdn/acme/web/img/{image_id}", {}),
        "variant": (f"/cdn/acme/web/img/{image_id}?w=16&format=png", {}),
    }
    for url, headers in urls.values():
        assert (await site.http.get(url, headers=headers)).status_code == 200
    return urls


async def test_an_unreadable_range_is_ignored_on_every_route(site: Site) -> None:
    for name, (url, headers) in (await routes(site)).items():
        whole = (await site.http.get(url, headers=headers)).content
        for header in UNREADABLE:
            response = await site.http.get(url, headers={**headers, "Range": header})
            assert response.status_code == 200, (name, header[:40], response.text[:200])
            assert response.content == whole, (name, header[:40])


async def test_an_unsatisfiable_range_is_416_on_every_route(site: Site) -> None:
    for name, (url, headers) in (await routes(site)).items():
        size = len((await site.http.get(url, headers=headers)).content)
        for header in unsatisfiable(size):
            response = await site.http.get(url, headers={**headers, "Range": header})
            assert response.status_code == 416, (name, header[:40], response.text[:200])
            assert response.json()["error"]["code"] == "RANGE_NOT_SATISFIABLE"
            assert response.headers["content-range"] == f"bytes */{size}"


async def test_readable_ranges_still_give_206(site: Site) -> None:
    for name, (url, headers) in (await routes(site)).items():
        whole = (await site.http.get(url, headers=headers)).content
        size = len(whole)
        cases = {
            "bytes=0-9": (0, 9),
            "Bytes=0-9": (0, 9),  # the unit is case-insensitive
            "bytes=10-": (10, size - 1),
            "bytes=-5": (size - 5, size - 1),
            "bytes=-" + "9" * 5000: (0, size - 1),  # a suffix longer than the body
            f"bytes=5-{'9' * 5000}": (5, size - 1),
            "bytes=0005-0009": (5, 9),
        }
        for header, (start, end) in cases.items():
            response = await site.http.get(url, headers={**headers, "Range": header})
            assert response.status_code == 206, (name, header[:40], response.text[:200])
            assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
            assert response.content == whole[start : end + 1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Banatie, str]]:
    app = Banatie("serve", tmp_path_factory.mktemp("range"))
    app.start()
    try:
        yield app, project_key(app)
    finally:
        app.stop()


def test_a_real_server_ignores_unreadable_ranges_on_l1_hits(served: tuple[Banatie, str]) -> None:
    """The fast path declines every Range; the ASGI path behind it must not fail on any."""
    app, key = served
    urls = [
        (app.url + "/cdn/acme/web/live/site?prompt=" + quote(PROMPT), {}),
        (app.url + "/api/v1/live?prompt=" + quote(PROMPT), {"X-API-Key": key}),
    ]
    for url, headers in urls:
        whole = httpx.get(url, headers=headers)
        assert whole.status_code == 200
        assert httpx.get(url, headers=headers).headers["x-cache-status"] == "HIT"  # in L1
        for header in ("bytes=a-5", "bytes=1x-5", "bytes=1 2-5"):
            response = httpx.get(url, headers={**headers, "Range": header})
            assert response.status_code == 200, (url, header, response.text[:200])
            assert response.content == whole.content
        beyond = httpx.get(url, headers={**headers, "Range": f"bytes={len(whole.content)}-"})
        assert beyond.status_code == 416
