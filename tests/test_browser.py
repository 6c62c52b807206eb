"""Live images in a real browser: headless Chromium on a page of another origin.

Debian's `chromium` package, driven by the `playwright` package (never `playwright install`:
there is no download). Pages are served from a second local origin (a tiny http.server on
another port) with `<img>` URLs pointing at a real `banatie serve`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page

from tests.running import Banatie
from tests.servers import free_port
from tests.test_multiprocess import metric

LOAD_TIMEOUT_MS = 120_000  # a deadline for a condition, not a wait: 24 generations on 2 cores
ALL_LOADED = "() => [...document.images].every(i => i.complete)"
ERROR_IMAGE_WIDTH = 480  # cache/errors.py draws error images this wide


class Pages:
    """A second origin: serves the HTML a test puts at a path."""

    def __init__(self) -> None:
        self.html: dict[str, str] = {}
        pages = self.html

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path, "not found").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, path: str, body: str) -> str:
        self.html[path] = f"<!doctype html><html><body>{body}</body></html>"
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pages() -> Iterator[Pages]:
    served = Pages()
    try:
        yield served
    finally:
        served.close()


@pytest.fixture(scope="module")
def banatie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banatie]:
    """`banatie serve` on defaults (budgets included)."""
    app = Banatie("serve", tmp_path_factory.mktemp("browser")).start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


def new_project(app: Banatie, project: str) -> str:
    """A project of its own per test: each has its own budget per visitor."""
    app.cli("keys", "create", "--org", "web", "--project", project)
    return f"{app.url}/cdn/web/{project}/live"


def live_url(base: str, prompt: str, **params: str) -> str:
    query = "&".join(f"{k}={quote(v)}" for k, v in {"prompt": prompt, **params}.items())
    return f"{base}/page?{query}"


def statuses(page: Page, prefix: str) -> list[int]:
    """Statuses of the responses the page gets from URLs starting with `prefix`."""
    seen: list[int] = []
    page.on("response", lambda r: seen.append(r.status) if r.url.startswith(prefix) else None)
    return seen


def images(page: Page) -> list[dict[str, Any]]:
    return page.evaluate(
        "() => [...document.images].map(i => ({width: i.naturalWidth, "
        "failed: i.dataset.failed === 'yes'}))"
    )


def img(url: str, *attrs: str) -> str:
    return f'<img src="{url}" onerror="this.dataset.failed=\'yes\'" {" ".join(attrs)}>'


def test_a_page_of_24_new_images_loads_fully_on_defaults(
    banatie: Banatie, pages: Pages, page: Page
) -> None:
    base = new_project(banatie, "page24")
    urls = [live_url(base, f"a paper boat, number {n}") for n in range(24)]
    seen = statuses(page, banatie.url)
    page.goto(pages.put("/24.html", "".join(img(u, 'width="64"') for u in urls)))
    page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
    loaded = images(page)
    assert [i for i in loaded if i["failed"] or i["width"] in (0, ERROR_IMAGE_WIDTH)] == []
    assert sorted(seen) == [200] * 24


def test_an_invalid_url_renders_an_error_image(banatie: Banatie, pages: Pages, page: Page) -> None:
    base = new_project(banatie, "invalid")
    seen = statuses(page, banatie.url)
    page.goto(pages.put("/invalid.html", img(live_url(base, "a kite", aspectRatio="7:3"))))
    page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
    assert images(page) == [{"width": ERROR_IMAGE_WIDTH, "failed": False}]
    assert seen == [400]


def test_an_over_budget_image_renders_an_error_image(
    tmp_path: Path, pages: Pages, page: Page
) -> None:
    env = {"IP_BUDGET_BURST": "2", "IP_BUDGET_PER_HOUR": "1"}
    app = Banatie("serve", tmp_path, env=env).start()
    try:
        base = new_project(app, "budget")
        seen = statuses(page, app.url)
        body = "".join(img(live_url(base, f"a red kite, number {n}")) for n in range(3))
        page.goto(pages.put("/budget.html", body))
        page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
        loaded = images(page)
    finally:
        app.stop()
    assert sorted(seen) == [200, 200, 429]
    assert all(i["width"] > 0 and not i["failed"] for i in loaded), loaded
    assert sum(i["width"] == ERROR_IMAGE_WIDTH for i in loaded) == 1


def test_without_error_images_a_failed_load_fires_onerror(
    tmp_path: Path, pages: Pages, page: Page
) -> None:
    app = Banatie("serve", tmp_path, env={"ERROR_IMAGES": "false"}).start()
    try:
        base = new_project(app, "plain")
        page.goto(pages.put("/plain.html", img(live_url(base, "a kite", aspectRatio="7:3"))))
        page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
        loaded = images(page)
    finally:
        app.stop()
    assert loaded == [{"width": 0, "failed": True}]  # the JSON is blocked: a broken icon


CANVAS_PAGE = """
<img id="live" crossorigin="anonymous" src="{url}">
<script>
const image = document.getElementById('live');
image.onerror = () => {{ window.result = {{canvas: 'load failed'}}; }};
image.onload = async () => {{
  const result = {{}};
  try {{
    const canvas = document.createElement('canvas');
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    const context = canvas.getContext('2d');
    context.drawImage(image, 0, 0);
    result.canvas = context.getImageData(0, 0, 4, 4).data.length === 64 ? 'read' : 'empty';
  }} catch (e) {{
    result.canvas = e.name;
  }}
  const timing = performance.getEntriesByName(image.src)[0];
  result.encodedBodySize = timing ? timing.encodedBodySize : -1;
  try {{
    const response = await fetch(image.src);
    result.cacheStatus = response.headers.get('x-cache-status');
    const etag = response.headers.get('etag');
    // If-None-Match is not a simple header: this fetch is preflighted first.
    const again = await fetch(image.src, {{headers: {{'If-None-Match': etag}}, cache: 'no-store'}});
    result.conditional = again.status;
  }} catch (e) {{
    result.fetch = String(e);
  }}
  window.result = result;
}};
</script>
"""


def test_a_live_image_on_a_canvas_can_be_read_back(
    banatie: Banatie, pages: Pages, page: Page
) -> None:
    base = new_project(banatie, "canvas")
    url = live_url(base, "a striped beach umbrella")
    page.goto(pages.put("/canvas.html", CANVAS_PAGE.format(url=url)))
    page.wait_for_function("() => window.result !== undefined", timeout=LOAD_TIMEOUT_MS)
    result = page.evaluate("window.result")
    assert result["canvas"] == "read", result  # getImageData did not throw
    assert result["encodedBodySize"] > 0, result  # Resource Timing sees the size
    assert result["cacheStatus"] in ("HIT", "MISS") and result["conditional"] == 304, result


def test_a_reload_is_served_from_cache(banatie: Banatie, pages: Pages, page: Page) -> None:
    base = new_project(banatie, "reload")
    body = "".join(img(live_url(base, f"a green door, number {n}")) for n in range(4))
    page.goto(pages.put("/reload.html", body))
    page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
    misses = metric(banatie, "banatie_cache_misses_total")
    seen = statuses(page, banatie.url)
    page.reload()
    page.wait_for_function(ALL_LOADED, timeout=LOAD_TIMEOUT_MS)
    loaded = images(page)
    assert all(i["width"] > 0 and not i["failed"] for i in loaded) and len(loaded) == 4
    assert metric(banatie, "banatie_cache_misses_total") == misses  # nothing generated again
    assert set(seen) <= {200, 304}
