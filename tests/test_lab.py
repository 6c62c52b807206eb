"""The Lab (/lab) in a real browser against a real `banatie serve`.

Headless Chromium from Debian's `chromium` package through `playwright` (tests/chromium.py).
Every test checks that the page sent no request outside the server's origin and logged no error.
Screenshots go to a temporary folder, or to $LAB_SCREENSHOTS (e.g. docs/) when it is set.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.running import Banatie

DEADLINE_MS = 60_000  # a deadline for a condition, not a wait


class Lab:
    """A server with one project, its key and an HTTP client on its API."""

    def __init__(self, app: Banatie, key: str) -> None:
        self.app = app
        self.key = key
        self.http = httpx.Client(base_url=app.url + "/api/v1", headers={"X-API-Key": key})

    def upload(self, color: str, alias: str | None = None) -> dict[str, Any]:
        data = {"alias": alias} if alias else {}
        answer = self.http.post("/images/upload", files={"file": png(color)}, data=data)
        assert answer.status_code == 201, answer.text
        return answer.json()["data"]

    def image(self, image_id: str) -> dict[str, Any]:
        return self.http.get(f"/images/{image_id}").json()["data"]

    def total(self, path: str) -> int:
        return self.http.get(path, params={"limit": 1}).json()["pagination"]["total"]


def png(color: str, size: tuple[int, int] = (320, 200)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    app = Banatie("serve", tmp_path_factory.mktemp("lab")).start()
    try:
        key = app.cli("keys", "create", "--org", "web", "--project", "lab").split()[0]
        yield Lab(app, key)
    finally:
        app.stop()


class Watched:
    """A page, the URLs it requested and the errors it logged."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("response", lambda r: self.errors.append(r.url) if r.status >= 400 else None)


@pytest.fixture
def watched(browser: Browser, lab: Lab) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        seen = Watched(context.new_page())
        yield seen
        assert [u for u in seen.requests if not u.startswith(lab.app.url + "/")] == []
        assert seen.errors == []
    finally:
        context.close()


def enter_key(page: Page, lab: Lab, path: str = "/lab") -> None:
    page.goto(lab.app.url + path)
    page.get_by_label("API key").fill(lab.key)
    page.get_by_role("button", name="Use key").click()


def wait_loaded(page: Page, selector: str) -> None:
    """Every image the selector names has loaded with a non-zero natural size."""
    page.wait_for_function(
        """(s) => { const all = [...document.querySelectorAll(s)];
           return all.length > 0 && all.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=selector,
        timeout=DEADLINE_MS,
    )


def screenshots() -> Path | None:
    folder = os.environ.get("LAB_SCREENSHOTS")
    return Path(folder) if folder else None


def test_lab_is_html_with_a_strict_content_security_policy(lab: Lab) -> None:
    answer = httpx.get(lab.app.url + "/lab")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-content-type-options"] == "nosniff"
    csp = answer.headers["content-security-policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert rule in csp
    assert "unsafe-inline" not in csp
    assert (
        httpx.get(lab.app.url + "/lab/lab.js").headers["content-type"].startswith("text/javascript")
    )
    home = httpx.get(lab.app.url + "/")
    assert home.status_code == 302 and home.headers["location"] == "/lab"
    missing = httpx.get(lab.app.url + "/lab/no-such-page")
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_typing_the_key_shows_the_gallery(lab: Lab, watched: Watched) -> None:
    image = lab.upload("teal", alias="@gallery")
    enter_key(watched.page, lab)
    thumb = f'a[data-image-id="{image["id"]}"] img'
    wait_loaded(watched.page, thumb)
    for part in ("format=auto", "2x"):
        expect(watched.page.locator(thumb)).to_have_attribute("srcset", re.compile(re.escape(part)))


def test_the_gallery_filters_by_source(lab: Lab, watched: Watched) -> None:
    uploaded = lab.upload("orange")
    enter_key(watched.page, lab)
    watched.page.get_by_label("Source").select_option("generated")
    watched.page.get_by_role("button", name="Filter").click()
    watched.page.wait_for_url("**/lab?source=generated")
    watched.page.wait_for_function(
        "() => /Showing|No images/.test(document.getElementById('status').textContent)"
    )
    expect(watched.page.locator(f'a[data-image-id="{uploaded["id"]}"]')).to_have_count(0)


def test_detail_moves_an_alias_and_sets_the_focal_point(lab: Lab, watched: Watched) -> None:
    holder = lab.upload("navy", alias="@cover")
    image = lab.upload("gold")
    enter_key(watched.page, lab, f"/lab/images/{image['id']}")
    page = watched.page
    wait_loaded(page, ".picker img")
    page.get_by_label("Project alias").fill("@cover")
    page.get_by_role("button", name="Save alias").click()
    page.get_by_text("Alias @cover now names this image.").wait_for()
    assert lab.image(image["id"])["alias"] == "@cover"
    assert lab.image(holder["id"])["alias"] is None  # moved, not copied

    crop = page.locator('img[data-crop="16:9"]')
    expect(crop).to_have_attribute("src", re.compile("."))  # drawn: its first URL is known
    before = crop.get_attribute("src") or ""
    box = page.locator(".picker img").bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.75)
    page.get_by_text("Focal point saved.").wait_for()
    focal = lab.image(image["id"])["focalPoint"]
    assert focal is not None and abs(focal["x"] - 0.25) < 0.02 and abs(focal["y"] - 0.75) < 0.02
    expect(crop).not_to_have_attribute("src", before)
    wait_loaded(page, "img[data-crop]")
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-detail-1280.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(folder / "lab-detail-390.png"), full_page=True)


def test_generate_creates_one_generation_and_shows_it(lab: Lab, watched: Watched) -> None:
    reference = lab.upload("plum", alias="@reference")
    flow = lab.http.post("/flows", json={}).json()["data"]
    before = lab.total("/generations")
    enter_key(watched.page, lab, "/lab/generate")
    page = watched.page
    page.get_by_label("Prompt", exact=True).fill("a paper lantern over a river")
    page.get_by_label("Aspect ratio").select_option("16:9")
    page.get_by_label("Template").select_option("illustration")
    page.get_by_label("Auto-enhance the prompt").uncheck()
    page.get_by_label("Alias", exact=True).fill("@lantern")
    page.get_by_label("Flow", exact=True).select_option(flow["id"])
    page.get_by_label("Reference @reference").check()  # picked from the gallery
    page.get_by_role("button", name="Generate", exact=True).click()
    wait_loaded(page, "#result-image")
    assert lab.total("/generations") == before + 1
    made = lab.http.get("/images/@lantern").json()["data"]
    assert (made["source"], made["width"] > made["height"]) == ("generated", True)
    generation = lab.http.get(f"/generations/{made['generationId']}").json()["data"]
    assert generation["flowId"] == flow["id"]
    assert generation["enhancementOptions"]["template"] == "illustration"
    assert generation["autoEnhance"] is False
    assert reference["id"] in str(generation["referencedImages"])
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-generate-1280.png"), full_page=True)


def test_the_live_builder_makes_a_url_that_loads(lab: Lab, watched: Watched) -> None:
    lab.upload("white")  # the CDN base is read from the project's images
    enter_key(watched.page, lab, "/lab/live")
    page = watched.page
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dawn")
    page.get_by_role("button", name="Build URL").click()
    wait_loaded(page, "#live-image")
    live_url = page.get_by_label("Live URL", exact=True)
    prefix = f"{lab.app.url}/cdn/web/lab/live/demo?prompt=a"
    expect(live_url).to_have_value(re.compile("^" + re.escape(prefix)))
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-live-1280.png"), full_page=True)


def test_the_scopes_page_edits_a_scope(lab: Lab, watched: Watched) -> None:
    lab.http.post("/live/scopes", json={"slug": "banners"})
    enter_key(watched.page, lab, "/lab/scopes")
    page = watched.page
    page.get_by_label("Limit of banners").fill("5")
    page.get_by_role("form", name="Scope banners").get_by_label("Allow new generations").uncheck()
    page.get_by_role("button", name="Save banners").click()
    page.get_by_text("Scope banners saved.").wait_for()
    scope = lab.http.get("/live/scopes/banners").json()["data"]
    assert (scope["newGenerationsLimit"], scope["allowNewGenerations"]) == (5, False)
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-scopes-1280.png"), full_page=True)


def test_with_signing_required_the_live_builder_signs(lab: Lab, watched: Watched) -> None:
    enter_key(watched.page, lab, "/lab/scopes")
    page = watched.page
    page.get_by_role("button", name="Rotate secret").click()
    secret = page.get_by_label("New signing secret (shown once)", exact=True)
    expect(secret).to_have_value(re.compile(".{17,}"))
    page.get_by_label("Require signed live URLs").check()
    page.get_by_text("Signed live URLs are now required.").wait_for()
    try:
        page.goto(lab.app.url + "/lab/live")
        page.get_by_label("Prompt", exact=True).fill("a signed kite")
        page.get_by_role("button", name="Build URL").click()
        wait_loaded(page, "#live-image")
        for part in ("sig=", "expires="):
            expect(page.get_by_label("Live URL", exact=True)).to_have_value(re.compile(part))
    finally:
        lab.http.put("/live/signing", json={"requireSignedUrls": False})


def test_the_upload_page_stores_the_image(lab: Lab, watched: Watched, tmp_path: Path) -> None:
    before = lab.total("/images")
    picture = tmp_path / "red.png"
    picture.write_bytes(png("red"))
    enter_key(watched.page, lab, "/lab/upload")
    page = watched.page
    page.get_by_label("Upload", exact=True).set_input_files(str(picture))
    page.get_by_label("Alias", exact=True).fill("@uploaded")
    page.get_by_role("button", name="Upload image").click()
    page.get_by_role("link", name="@uploaded").wait_for()
    assert lab.total("/images") == before + 1
    assert lab.http.get("/images/@uploaded").json()["data"]["width"] == 320
    wait_loaded(page, ".result img")
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-upload-1280.png"), full_page=True)


def test_the_flows_page_lists_a_flow_and_regenerates_it(lab: Lab, watched: Watched) -> None:
    made = lab.http.post("/generations", json={"prompt": "a red boat"})
    assert made.status_code in (200, 201), made.text
    generation = made.json()["data"]
    flow_id = generation["flowId"]
    old_image = generation["outputImage"]["id"]
    answer = lab.http.post("/images/upload", files={"file": png("green")}, data={"flowId": flow_id})
    assert answer.status_code == 201, answer.text
    lab.http.put(f"/flows/{flow_id}/aliases", json={"aliases": {"@boat": old_image}})

    enter_key(watched.page, lab, "/lab/flows")
    page = watched.page
    row = page.locator(f'tr[data-flow-id="{flow_id}"]')
    cells = row.locator("td")  # the row is drawn after the flows arrive: wait for its text
    for column, text in ((1, "1"), (2, "2"), (3, "@boat")):
        expect(cells.nth(column)).to_have_text(text, timeout=DEADLINE_MS)
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-flows-1280.png"), full_page=True)
    row.get_by_role("link").click()
    page.wait_for_url(f"**/lab/flows/{flow_id}")
    page.get_by_text("1 generation, 2 images").wait_for()
    wait_loaded(page, ".grid img")
    expect(page.locator(f'tr[data-generation-id="{generation["id"]}"]')).to_have_count(1)
    if folder := screenshots():
        page.screenshot(path=str(folder / "lab-flow-1280.png"), full_page=True)

    page.get_by_role("button", name="Regenerate").click()
    page.get_by_text("Regenerated: a new image").wait_for(timeout=DEADLINE_MS)
    page.get_by_text("1 generation, 3 images").wait_for()
    flow = lab.http.get(f"/flows/{flow_id}").json()["data"]
    assert (flow["generationCount"], flow["imageCount"]) == (1, 3)
    assert flow["aliases"]["@boat"] != old_image  # the flow alias moved to the new image

    page.get_by_label("Flow alias", exact=True).fill("@original")
    page.get_by_label("Image", exact=True).select_option(old_image)
    page.get_by_role("button", name="Assign flow alias").click()
    page.get_by_text("Flow alias @original assigned.").wait_for()
    page.get_by_role("button", name="Remove flow alias @boat").click()
    page.get_by_text("Flow alias @boat removed.").wait_for()
    aliases = lab.http.get(f"/flows/{flow_id}").json()["data"]["aliases"]
    assert aliases == {"@original": old_image}

    page.goto(lab.app.url + f"/lab/images/{old_image}")
    page.get_by_role("list", name="Flow aliases of this image").get_by_text("@original").wait_for()


def test_the_gallery_shows_every_kind_of_image(lab: Lab, watched: Watched) -> None:
    """Last: by now the project has uploaded, generated and live images."""
    enter_key(watched.page, lab)
    wait_loaded(watched.page, ".grid img")
    tags = watched.page.locator(".grid .caption .tag")
    for kind in ("generated", "uploaded"):
        expect(tags.filter(has_text=re.compile(f"^{kind}$")).first).to_be_attached()
    if folder := screenshots():
        watched.page.screenshot(path=str(folder / "lab-gallery-1280.png"))
        watched.page.set_viewport_size({"width": 390, "height": 844})
        watched.page.screenshot(path=str(folder / "lab-gallery-390.png"), full_page=True)


def test_on_the_split_layout_images_may_come_from_public_url(tmp_path: Path) -> None:
    origin = Banatie("origin", tmp_path, env={"PUBLIC_URL": "http://cdn.example.test:8080"})
    origin.start()
    try:
        answer = httpx.get(origin.url + "/lab")
    finally:
        origin.stop()
    assert answer.status_code == 200
    csp = answer.headers["content-security-policy"]
    assert "img-src 'self' blob: data: http://cdn.example.test:8080;" in csp
    assert "connect-src 'self';" in csp  # the key still goes only to the origin


def test_a_wrong_key_is_reported_in_words(lab: Lab, browser: Browser) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(lab.app.url + "/lab")
        page.get_by_label("API key").fill("bnt_" + "0" * 64)
        page.get_by_role("button", name="Use key").click()
        expect(page.get_by_role("alert")).to_contain_text("UNAUTHORIZED")
        page.get_by_text("The API key was not accepted").wait_for()
    finally:
        context.close()
