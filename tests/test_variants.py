"""Image variants at the edge: resize, focal-point crop and format negotiation (issue #7)."""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from cache.index import LiveRecord
from cache.index.memory import MemoryIndex
from cache.index.redis import RedisIndex
from edge import variant_cache
from edge.transform import avif_supported
from edge.variants import Want, parse_variant_query, want
from tests.test_edge import Site, assert_error, http_origin_site, open_site, second_edge
from tests.waiting import until

PROMPT = "a lighthouse at dawn"
RED, BLUE = (220, 20, 20), (20, 20, 220)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def two_tone(width: int = 300, height: int = 100, red_width: int = 100) -> bytes:
    """Blue, with a red band `red_width` wide down the left edge."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, red_width, height))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def upload(site: Site, data: bytes | None = None, **fields: str) -> dict[str, Any]:
    response = await site.api(
        "POST",
        "/api/v1/images/upload",
        files={"file": ("a.png", data or two_tone(), "image/png")},
        data=fields,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def img(site: Site, ref: str, query: dict[str, str], **kw: Any) -> httpx.Response:
    method = kw.pop("method", "GET")
    return await site.http.request(method, f"/cdn/acme/web/img/{ref}", params=query, **kw)


def decoded(response: httpx.Response) -> Image.Image:
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def mean_colour(image: Image.Image) -> tuple[int, int, int]:
    r, g, b = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return r, g, b


# -- sizes and fits -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "size"),
    [
        ({"w": "150", "h": "150", "fit": "cover"}, (150, 150)),
        ({"w": "150", "h": "150", "fit": "contain"}, (150, 150)),
        ({"w": "150", "h": "150", "fit": "fill"}, (150, 150)),
        ({"w": "150", "h": "150", "fit": "inside"}, (150, 50)),
        ({"w": "150", "h": "150"}, (150, 150)),  # cover is the default
        ({"w": "150"}, (150, 50)),
        ({"h": "20"}, (60, 20)),
        ({"w": "600", "fit": "inside"}, (300, 100)),  # inside never enlarges
        ({"w": "600", "h": "600", "fit": "inside"}, (300, 100)),
        ({"w": "75", "dpr": "2"}, (150, 50)),  # device pixels
        ({"format": "webp"}, (300, 100)),  # a format alone keeps the size
    ],
)
async def test_each_fit_gives_its_size(
    site: Site, query: dict[str, str], size: tuple[int, int]
) -> None:
    image = await upload(site)
    response = await img(site, image["id"], query)
    assert response.status_code == 200, response.text
    assert decoded(response).size == size
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.headers["x-image-id"] == image["id"]
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_contain_letterboxes_with_transparency_or_white(site: Site) -> None:
    image = await upload(site)
    box = {"w": "150", "h": "150", "fit": "contain"}
    png = decoded(await img(site, image["id"], {**box, "format": "png"}))
    assert png.mode == "RGBA" and png.getpixel((75, 0))[3] == 0  # transparent band on top
    assert png.getpixel((75, 75))[3] == 255
    jpeg = decoded(await img(site, image["id"], {**box, "format": "jpeg"}))
    assert all(c > 240 for c in jpeg.getpixel((75, 2)))  # white band: JPEG has no alpha


@pytest.mark.parametrize(
    ("fmt", "content_type", "pillow"),
    [
        ("webp", "image/webp", "WEBP"),
        ("jpeg", "image/jpeg", "JPEG"),
        ("png", "image/png", "PNG"),
        ("avif", "image/avif", "AVIF"),
    ],
)
async def test_each_format_is_what_it_says(
    site: Site, fmt: str, content_type: str, pillow: str
) -> None:
    if fmt == "avif" and not avif_supported():
        pytest.skip("this Pillow cannot encode AVIF")
    image = await upload(site)
    response = await img(site, image["id"], {"w": "120", "format": fmt, "q": "70"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    out = decoded(response)
    assert out.format == pillow and out.size == (120, 40)
    assert "vary" not in response.headers  # an explicit format does not depend on Accept


# -- focal point --------------------------------------------------------------------------------


async def test_cover_crops_around_the_focal_point(site: Site) -> None:
    image = await upload(site)
    square = {"w": "100", "h": "100", "format": "png"}
    centred = await img(site, image["id"], square)
    r, _, b = mean_colour(decoded(centred))
    assert b > 180 and r < 60, "without a focal point the crop is the (blue) centre"

    moved = await site.api(
        "PUT", f"/api/v1/images/{image['id']}", json={"focalPoint": {"x": 0.1, "y": 0.5}}
    )
    assert moved.status_code == 200, moved.text
    on_focus = await img(site, image["id"], square)
    r, _, b = mean_colour(decoded(on_focus))
    assert r > 180 and b < 60, "with the focal point on the red band, the crop is red"
    assert on_focus.headers["etag"] != centred.headers["etag"]
    assert on_focus.headers["x-cache-status"] == "MISS"  # a new variant key

    # Variants that do not crop do not depend on the focal point.
    wide = await img(site, image["id"], {"w": "150"})
    await site.api("PUT", f"/api/v1/images/{image['id']}", json={"focalPoint": None})
    again = await img(site, image["id"], {"w": "150"})
    assert again.content == wide.content


async def test_focal_point_reaches_live_variants_without_a_new_generation(site: Site) -> None:
    square = {"prompt": PROMPT, "aspectRatio": "16:9", "w": "64", "h": "64", "format": "png"}
    first = await site.live(square)
    assert first.status_code == 200
    image_id = first.headers["x-image-id"]
    await site.api("PUT", f"/api/v1/images/{image_id}", json={"focalPoint": {"x": 0, "y": 0}})
    cornered = await site.live(square)
    assert cornered.status_code == 200
    assert cornered.headers["x-image-id"] == image_id
    assert cornered.content != first.content
    assert site.origin.generations == 1


async def test_image_records_carry_the_focal_point_over_http(tmp_path: Path) -> None:
    async with http_origin_site(tmp_path) as (site, origin, _):
        image = await upload(site, two_tone())
        await site.api(
            "PUT", f"/api/v1/images/{image['id']}", json={"focalPoint": {"x": 0.25, "y": 1}}
        )
        ref = await origin.project("acme", "web")
        assert ref is not None
        record = await origin.image(ref.project_id, image["id"])
        assert record.focal_point == (0.25, 1.0)


# -- negotiation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        ("image/avif,image/webp,image/apng,*/*;q=0.8", "image/avif"),
        ("image/webp,*/*", "image/webp"),
        ("image/avif;q=0, image/webp", "image/webp"),
        ("*/*", "image/png"),
        (None, "image/png"),
    ],
)
async def test_format_auto_follows_accept_and_varies_on_it(
    site: Site, accept: str | None, content_type: str
) -> None:
    if content_type == "image/avif" and not avif_supported():
        content_type = "image/webp"
    image = await upload(site)
    headers = {} if accept is None else {"Accept": accept}
    query = {"w": "90", "format": "auto"}
    response = await img(site, image["id"], query, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["vary"] == "Accept"
    etag = response.headers["etag"]
    cached = await img(site, image["id"], query, headers={**headers, "If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["vary"] == "Accept"


async def test_negotiated_formats_are_cached_apart(site: Site) -> None:
    image = await upload(site)
    query = {"w": "90", "format": "auto"}
    webp = await img(site, image["id"], query, headers={"Accept": "image/webp"})
    png = await img(site, image["id"], query, headers={"Accept": "text/html"})
    webp_again = await img(site, image["id"], query, headers={"Accept": "image/webp,*/*"})
    assert webp.headers["content-type"] == "image/webp"
    assert png.headers["content-type"] == "image/png"
    assert webp_again.headers["x-cache-status"] == "HIT"
    assert webp_again.content == webp.content


def test_the_key_holds_the_negotiated_format_never_the_header() -> None:
    spec = parse_variant_query(b"w=100&format=auto", 4096)
    assert spec is not None
    chrome = want(spec, b"image/avif,image/webp,image/apng,*/*;q=0.8")
    other_browser = want(spec, b"image/webp,image/avif")
    assert chrome == other_browser == Want(spec, "avif")
    assert "image/" not in chrome.l1_key("src")
    assert want(spec, b"image/avif,image/webp", avif=False).format == "webp"


# -- caching ------------------------------------------------------------------------------------


async def test_repeated_variants_hit_and_survive_a_restart(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = count_renders(monkeypatch)
    image = await upload(site)
    query = {"w": "120", "h": "80", "format": "webp"}
    first = await img(site, image["id"], query)
    assert first.headers["x-cache-status"] == "MISS"
    again = await img(site, image["id"], query)
    assert again.headers["x-cache-status"] == "HIT"
    assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
    assert renders() == 1

    # Another edge (a restart, a replica) finds it in the index, then in storage alone.
    for index in (None, MemoryIndex()):
        _, http = second_edge(site, index=index)
        async with http:
            response = await http.get(f"/cdn/acme/web/img/{image['id']}", params=query)
        assert response.headers["x-cache-status"] == "HIT"
        assert response.content == first.content
    assert renders() == 1
    stored = [k async for k in site.services.store.keys("acme/web/var/")]
    assert len(stored) == 2  # the bytes and their manifest


async def test_dpr_and_width_that_mean_the_same_pixels_share_a_variant(site: Site) -> None:
    image = await upload(site)
    doubled = await img(site, image["id"], {"w": "60", "dpr": "2"})
    plain = await img(site, image["id"], {"w": "120"})
    assert plain.headers["x-cache-status"] == "HIT" and plain.content == doubled.content


async def test_concurrent_requests_for_a_new_variant_encode_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = count_renders(monkeypatch)
    image = await upload(site)
    query = {"w": "100", "format": "jpeg"}
    responses = await asyncio.gather(*(img(site, image["id"], query) for _ in range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    assert renders() == 1


async def test_too_many_transforms_at_once_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real = variant_cache.render

    def blocked(*args: Any) -> bytes:
        release.wait(10)
        return real(*args)

    monkeypatch.setattr(variant_cache, "render", blocked)
    async with open_site(tmp_path, variant_workers=1, variant_queue=0) as site:
        image = await upload(site)
        first = asyncio.create_task(img(site, image["id"], {"w": "100"}))
        await until(lambda: site.edge.variants.pool.pending, "the first transform to start")
        refused = await img(site, image["id"], {"w": "101"})
        release.set()
        assert_error(refused, 503, "UPSTREAM_UNAVAILABLE")
        assert "variants" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        assert (await first).status_code == 200


async def test_variants_are_shared_through_redis(tmp_path: Path, redis_url: str) -> None:
    async with open_site(tmp_path, index=RedisIndex.from_url(redis_url)) as site:
        image = await upload(site)
        query = {"w": "77", "format": "webp"}
        first = await img(site, image["id"], query)
        other_index = RedisIndex.from_url(redis_url)
        _, http = second_edge(site, index=other_index)
        try:
            async with http:
                response = await http.get(f"/cdn/acme/web/img/{image['id']}", params=query)
        finally:
            await other_index.close()
        assert response.headers["x-cache-status"] == "HIT"
        assert response.content == first.content


# -- conditional and HEAD -----------------------------------------------------------------------


async def test_head_and_if_none_match_work_on_variants(site: Site) -> None:
    image = await upload(site)
    query = {"w": "120", "format": "webp"}
    full = await img(site, image["id"], query)
    etag = full.headers["etag"]
    original = await img(site, image["id"], {})
    assert etag != original.headers["etag"]  # the hash of the variant's own bytes
    head = await img(site, image["id"], query, method="HEAD")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["etag"] == etag
    assert head.headers["content-length"] == str(len(full.content))
    not_modified = await img(site, image["id"], query, headers={"If-None-Match": etag})
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["etag"] == etag


async def test_alias_variants_cache_for_a_minute(site: Site) -> None:
    await upload(site, alias="@hero")
    response = await img(site, "@hero", {"w": "50"})
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=60"


# -- validation and deletes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("w=0", "w"),
        ("w=abc", "w"),
        ("w=", "w"),
        ("w=4097", "w"),
        ("w=-5", "w"),
        ("h=1.5", "h"),
        ("w=10&w=20", "w"),
        ("fit=stretch", "fit"),
        ("format=gif", "format"),
        ("format=orig", "format"),
        ("q=0", "q"),
        ("q=101", "q"),
        ("q=high", "q"),
        ("dpr=0.5", "dpr"),
        ("dpr=4", "dpr"),
        ("dpr=nan", "dpr"),
    ],
)
async def test_bad_variant_parameters_are_400_naming_the_field(
    site: Site, query: str, field: str
) -> None:
    image = await upload(site)
    response = await site.http.get(f"/cdn/acme/web/img/{image['id']}?{query}")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert response.json()["error"]["details"]["field"] == field
    live = await site.live(f"prompt=x&{query}")
    assert_error(live, 400, "VALIDATION_ERROR")
    assert site.origin.calls == 0


def test_dpr_beyond_the_cap_is_scaled_down_keeping_the_ratio() -> None:
    spec = parse_variant_query(b"w=3000&h=1500&dpr=2", 4096)
    assert spec is not None and (spec.width, spec.height) == (4096, 2048)


async def test_a_variant_of_a_deleted_image_is_gone(site: Site) -> None:
    image = await upload(site)
    query = {"w": "100", "format": "webp"}
    assert (await img(site, image["id"], query)).status_code == 200
    assert (await site.api("DELETE", f"/api/v1/images/{image['id']}")).status_code == 200
    gone = await img(site, image["id"], query)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "IMAGE_NOT_FOUND"


# -- live URLs ----------------------------------------------------------------------------------


async def test_live_variants_generate_the_original_once(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    renders = count_renders(monkeypatch)
    small = await site.live({"prompt": PROMPT, "w": "200", "format": "webp"})
    assert small.status_code == 200, small.text
    assert small.headers["x-cache-status"] == "MISS" and small.headers["x-generation-id"]
    assert small.headers["content-type"] == "image/webp"
    assert decoded(small).size == (200, 200)
    assert site.origin.generations == 1

    again = await site.live({"prompt": PROMPT, "w": "200", "format": "webp"})
    assert again.headers["x-cache-status"] == "HIT" and again.content == small.content
    other = await site.live({"prompt": PROMPT, "w": "64", "h": "32", "format": "jpeg"})
    assert other.status_code == 200 and other.headers["x-cache-status"] == "MISS"
    assert "x-generation-id" not in other.headers
    original = await site.live({"prompt": PROMPT})
    assert original.headers["x-cache-status"] == "HIT"  # the same live key as the variants
    assert original.headers["x-image-id"] == small.headers["x-image-id"]
    assert site.origin.generations == 1 and site.origin.calls == 1
    assert renders() == 2


async def test_cdn_live_variants_carry_the_scope(site: Site) -> None:
    response = await site.cdn("hero", {"prompt": PROMPT, "w": "100", "format": "auto"})
    assert response.status_code == 200
    assert response.headers["x-scope"] == "hero" and response.headers["vary"] == "Accept"
    assert response.headers["content-type"] == "image/png"


async def test_head_of_an_uncached_live_variant_never_generates(site: Site) -> None:
    head = await site.live({"prompt": PROMPT, "w": "100"}, method="HEAD")
    assert head.status_code == 404
    assert site.origin.calls == 0
    await site.live({"prompt": PROMPT})
    head = await site.live({"prompt": PROMPT, "w": "100"}, method="HEAD")
    assert head.status_code == 200 and head.content == b""  # derived, not generated
    assert site.origin.generations == 1


# -- records --------------------------------------------------------------------------------------


def test_records_without_a_focal_point_keep_their_old_shape() -> None:
    old = (
        b'{"image_id":"i","generation_id":null,"object_key":"a/b/img/i",'
        b'"content_type":"image/png","size":3,"etag":"\\"e\\"","canonical":"c"}'
    )
    record = LiveRecord.from_json(old)
    assert record.focal_point is None
    assert record.to_json() == old
    moved = LiveRecord("i", None, "k", "image/png", 3, '"e"', "c", (0.25, 0.75))
    assert LiveRecord.from_json(moved.to_json()) == moved
    newer = moved.to_json()[:-1] + b',"from_the_future":1}'
    assert LiveRecord.from_json(newer) == moved


def count_renders(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Count the transforms the edge runs; returns a function reading the count."""
    calls: list[int] = []
    real = variant_cache.render

    def counted(*args: Any) -> bytes:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(variant_cache, "render", counted)
    return lambda: len(calls)
