"""What one image's variants may cost: sides, memory, encoders' limits and how many there are.

Through the edge's CDN routes. Every limit is a 4xx in the error envelope, found from the
source's header before its pixels are decoded, and nothing refused is ever stored.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from cache.index.redis import RedisIndex
from edge.transform import avif_supported
from edge.variants import Want, parse_variant_query, variant_digest
from tests.test_edge import Site, assert_error, open_site, second_edge
from tests.test_variants import decoded, img, two_tone, upload
from tests.waiting import until

AVIF = avif_supported()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


def encoded(width: int, height: int, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, fmt, **options)  # type: ignore[arg-type]
    return out.getvalue()


async def stored_variants(site: Site) -> list[str]:
    return [key async for key in site.services.store.keys(f"{site.org}/{site.project}/var/")]


# -- sides: named or derived, each within MAX_VARIANT_DIMENSION --------------------------------

THIN_REFUSED = [
    ({"w": "200"}, "h"),  # 200x8000000
    ({"w": "20"}, "h"),
    ({"w": "4096"}, "h"),
    ({"format": "webp"}, "h"),  # the source's own 1x40000
    ({"format": "png"}, "h"),
    ({"format": "jpeg", "w": "30"}, "h"),
    *([({"w": "2", "format": "avif"}, "h"), ({"format": "avif"}, "h")] if AVIF else []),
    ({"w": "3", "h": "4097", "fit": "fill"}, "h"),  # a named side: refused while parsing
]


async def test_a_derived_side_past_the_cap_is_a_400_naming_it(site: Site) -> None:
    thin = await upload(site, encoded(1, 40000))
    assert len(encoded(1, 40000)) < 1000  # tiny in bytes, huge in any variant
    for query, field in THIN_REFUSED:
        response = await img(site, thin["id"], query)
        assert_error(response, 400, "VALIDATION_ERROR")
        assert response.json()["error"]["details"]["field"] == field, query
    wide = await upload(site, encoded(40000, 1))
    refused = await img(site, wide["id"], {"h": "200"})
    assert_error(refused, 400, "VALIDATION_ERROR")
    assert refused.json()["error"]["details"]["field"] == "w"
    assert "8000000x200" in refused.json()["error"]["message"]
    assert await stored_variants(site) == []


async def test_a_derived_side_within_the_cap_is_served(site: Site) -> None:
    thin = await upload(site, encoded(1, 40000))
    for query, size in [
        ({"h": "300"}, (1, 300)),
        ({"w": "1", "h": "4096", "fit": "fill"}, (1, 4096)),
        ({"w": "100", "h": "100", "fit": "cover"}, (100, 100)),
        ({"w": "100", "h": "100", "fit": "inside"}, (1, 100)),
    ]:
        response = await img(site, thin["id"], query)
        assert response.status_code == 200, (query, response.text)
        assert decoded(response).size == size, query


@pytest.mark.parametrize(("fmt", "name"), [("webp", "WebP"), *([("avif", "AVIF")] if AVIF else [])])
async def test_an_encoders_own_limit_is_a_400_naming_it(
    tmp_path: Path, fmt: str, name: str
) -> None:
    async with open_site(tmp_path, max_variant_dimension=40000) as site:
        thin = await upload(site, encoded(1, 40000))
        for _ in range(2):  # refused again: nothing was cached
            response = await img(site, thin["id"], {"format": fmt})
            assert_error(response, 400, "VALIDATION_ERROR")
            assert response.json()["error"]["details"]["field"] == "format"
            assert name in response.json()["error"]["message"]
        assert await stored_variants(site) == []
        # Formats that hold 40000 pixels a side still make it, and it reads back.
        png = await img(site, thin["id"], {"format": "png"})
        assert png.status_code == 200 and decoded(png).size == (1, 40000)


# -- memory: MAX_VARIANT_PIXELS, with JPEG decoded only as large as needed ---------------------


async def test_a_job_over_the_pixel_budget_is_a_400(tmp_path: Path) -> None:
    async with open_site(tmp_path, max_variant_pixels=1_000_000) as site:
        png = await upload(site, encoded(2000, 2000))
        refused = await img(site, png["id"], {"w": "100"})  # PNG decodes whole: 4M pixels
        assert_error(refused, 400, "VALIDATION_ERROR")
        assert "1000000" in refused.json()["error"]["message"]
        # A JPEG decodes at 1/8 scale for a 100 px variant: 250x250, within the budget.
        jpeg = await upload(site, encoded(2000, 2000, "JPEG", quality=80))
        small = await img(site, jpeg["id"], {"w": "100", "format": "png"})
        assert small.status_code == 200, small.text
        assert decoded(small).size == (100, 100)
        r, g, b = decoded(small).convert("RGB").getpixel((50, 50))
        assert abs(r - 30) + abs(g - 120) + abs(b - 200) < 12
        # ... but a 1000 px one needs it at full size.
        assert_error(await img(site, jpeg["id"], {"w": "1000"}), 400, "VALIDATION_ERROR")
        assert len(await stored_variants(site)) == 2  # the one variant made, and its manifest


# -- how many: MAX_VARIANTS_PER_IMAGE ---------------------------------------------------------


async def test_an_image_gets_at_most_max_variants_per_image(tmp_path: Path) -> None:
    async with open_site(tmp_path, max_variants_per_image=2) as site:
        image = await upload(site)
        # A refused variant is not one of them.
        assert_error(await img(site, image["id"], {"h": "4000"}), 400, "VALIDATION_ERROR")
        first = await img(site, image["id"], {"w": "10"})
        second = await img(site, image["id"], {"w": "11", "format": "webp"})
        assert first.status_code == second.status_code == 200
        refused = await img(site, image["id"], {"w": "12"})
        assert_error(refused, 403, "VARIANT_LIMIT_REACHED")
        assert "2 variants" in refused.json()["error"]["message"]
        # What exists is still served, the original too, and other images have their own.
        again = await img(site, image["id"], {"w": "10"})
        assert again.status_code == 200 and again.content == first.content
        assert (await img(site, image["id"], {})).status_code == 200
        other = await upload(site, two_tone(200, 100))
        assert (await img(site, other["id"], {"w": "12"})).status_code == 200
        assert len(await stored_variants(site)) == 2 * 3


async def test_the_bound_on_variants_holds_across_edges_through_redis(
    tmp_path: Path, redis_url: str
) -> None:
    async with open_site(
        tmp_path, index=RedisIndex.from_url(redis_url), max_variants_per_image=2
    ) as site:
        image = await upload(site)
        for width in ("10", "11"):
            assert (await img(site, image["id"], {"w": width})).status_code == 200
        other_index = RedisIndex.from_url(redis_url)
        _, http = second_edge(site, index=other_index)  # another replica, or a restart
        try:
            async with http:
                url = f"/cdn/acme/web/img/{image['id']}"
                assert_error(await http.get(url, params={"w": "12"}), 403, "VARIANT_LIMIT_REACHED")
                made = await http.get(url, params={"w": "11"})
                assert made.status_code == 200 and made.headers["x-cache-status"] == "HIT"
        finally:
            await other_index.close()


# -- orientation: one rule for the reported size and the variants ------------------------------


def exif_jpeg(width: int, height: int, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(width, height, "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    ("orientation", "upright"), [(1, (64, 48)), (3, (64, 48)), (6, (48, 64)), (8, (48, 64))]
)
async def test_an_exif_rotated_jpeg_reports_the_size_its_variants_have(
    site: Site, orientation: int, upright: tuple[int, int]
) -> None:
    image = await upload(site, exif_jpeg(64, 48, orientation))
    assert (image["width"], image["height"]) == upright
    listed = await site.api("GET", f"/api/v1/images/{image['id']}")
    assert (listed.json()["data"]["width"], listed.json()["data"]["height"]) == upright
    same = await img(site, image["id"], {"format": "png"})
    assert decoded(same).size == upright
    half = await img(site, image["id"], {"w": str(upright[0] // 2)})
    assert decoded(half).size == (upright[0] // 2, upright[1] // 2)
    original = await img(site, image["id"], {})
    assert Image.open(io.BytesIO(original.content)).size == (64, 48)  # stored as sent


# -- the queue's refusal names what it is busy with --------------------------------------------


async def test_a_full_variant_queue_says_variants_are_being_encoded(
    tmp_path: Path, redis_url: str
) -> None:
    """Variants in flight count against the queue while they wait on another edge's lock too:
    two held elsewhere fill a queue of two, and the third is refused naming variants."""
    async with open_site(
        tmp_path, index=RedisIndex.from_url(redis_url), variant_workers=1, variant_queue=0
    ) as site:
        image = await upload(site)
        original = await img(site, image["id"], {})
        ref = await site.origin.project("acme", "web")
        assert ref is not None
        elsewhere = RedisIndex.from_url(redis_url)
        digests = []
        for width in (10, 11):
            spec = parse_variant_query(f"w={width}".encode(), 4096)
            assert spec is not None
            canonical = Want(spec, "orig").canonical(
                ref.project_id, original.headers["etag"], "image/png", None
            )
            digests.append(variant_digest(canonical))
            assert await elsewhere.acquire(digests[-1], "another edge", 30_000)
        try:
            waiting = [asyncio.create_task(img(site, image["id"], {"w": w})) for w in ("10", "11")]
            await until(
                lambda: site.edge.variants.coalescer.in_flight == 2,
                "the two variants to wait on the other edge's locks",
            )
            refused = await img(site, image["id"], {"w": "12"})
            assert_error(refused, 503, "UPSTREAM_UNAVAILABLE")
            assert "variants are being encoded" in refused.json()["error"]["message"]
            assert "generated" not in refused.json()["error"]["message"]
        finally:
            for digest in digests:
                await elsewhere.release(digest, "another edge")
            await elsewhere.close()
        # Released, both encode here now: on one worker without a queue, one may be refused.
        answers = await asyncio.gather(*waiting)
        assert 200 in [r.status_code for r in answers]
        for answer in answers:
            if answer.status_code != 200:
                assert_error(answer, 503, "UPSTREAM_UNAVAILABLE")
                assert "variants are being encoded" in answer.json()["error"]["message"]
