"""`/docs`: Swagger UI served whole by the origin, working with no internet.

An HTTP check that the page and every file it loads come from the server itself, and a real
Chromium session against `banatie serve` that renders the operations, authorizes with a key and
runs a request, while no request leaves the server's origin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.harness import Api
from tests.running import Banatie

RENDER_TIMEOUT_MS = 60_000  # a deadline for a condition: a 1.7 MB bundle on a busy machine
# Collects what the page's CSP blocked, so a blocked style or script fails the test.
CSP_WATCH = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation",
  e => window.cspViolations.push(e.violatedDirective + " " + e.blockedURI));
"""
ASSET_TYPES = {
    ".json": "application/json",
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
}


def page_urls(html: str) -> list[str]:
    """Every src/href in the page; the test fails on any that names another origin."""
    return re.findall(r'(?:src|href)="([^"]*)"', html)


async def test_docs_page_and_each_asset_come_from_the_server(sqlite_api: Api) -> None:
    page = await sqlite_api.http.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["x-content-type-options"] == "nosniff"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "http" not in csp and "unsafe" not in csp  # no other host, no inline code
    urls = page_urls(page.text)
    assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await sqlite_api.http.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(ASSET_TYPES[Path(url).suffix]), url
        assert asset.headers["x-content-type-options"] == "nosniff", url
    init = (await sqlite_api.http.get("/docs/assets/init.js")).text
    assert '"/openapi.json"' in init


async def test_unknown_docs_assets_are_404_in_the_envelope(sqlite_api: Api) -> None:
    for name in ("nope.js", "LICENSE", "..%2Fflask_swagger_ui.py", "swagger-ui.js.map"):
        answer = await sqlite_api.http.get(f"/docs/assets/{name}")
        assert answer.status_code == 404, name
        assert answer.json()["error"]["code"] == "NOT_FOUND", name


@pytest.fixture(scope="module")
def banatie(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Banatie]:
    app = Banatie("serve", tmp_path_factory.mktemp("docs")).start()
    try:
        yield app
    finally:
        app.stop()


def test_swagger_ui_renders_authorizes_and_runs_a_request(
    banatie: Banatie, browser: Browser
) -> None:
    key = banatie.cli("keys", "create", "--org", "docs", "--project", "ui").strip().splitlines()[-1]
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security" in m.text else 0)
    page.add_init_script(CSP_WATCH)
    try:
        page.goto(banatie.url + "/docs")
        generations = page.locator("#operations-tag-default, .opblock").filter(
            has_text="/api/v1/generations"
        )
        generations.first.wait_for(timeout=RENDER_TIMEOUT_MS)
        images = page.locator(".opblock-get").filter(
            has=page.locator('[data-path="/api/v1/images"]')
        )
        expect(images).to_have_count(1)
        create = page.locator(".opblock-post").filter(
            has=page.locator('[data-path="/api/v1/generations"]')
        )
        create.locator(".opblock-summary").first.click()  # renders its body schema and example
        create.locator(".opblock-body").first.wait_for()

        page.locator("button.authorize").first.click()
        page.locator(".auth-container input").first.fill(key)
        page.locator(".auth-btn-wrapper button.authorize").first.click()
        page.locator(".auth-btn-wrapper button.btn-done").first.click()

        images.locator(".opblock-summary").first.click()
        images.locator("button.try-out__btn").click()
        with page.expect_response(
            lambda r: r.url.startswith(banatie.url + "/api/v1/images"), timeout=RENDER_TIMEOUT_MS
        ) as answer:
            images.locator("button.execute").click()
        assert answer.value.status == 200
        assert answer.value.request.headers.get("x-api-key") == key
        status = images.locator(".live-responses-table tr.response .response-col_status").first
        expect(status).to_contain_text("200")
        violations += page.evaluate("window.cspViolations")
    finally:
        context.close()
    outside = [u for u in requested if not u.startswith(banatie.url + "/")]
    assert outside == []
    assert violations == []
