"""Signed live URLs: a project may serve its live CDN URLs only when signed."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from cache import signing
from cache.errors import SignatureExpired, SignatureInvalid, SignatureRequired
from cache.index.memory import MemoryIndex
from cache.invalidation import LocalBus
from edge.app import create_edge
from edge.origin_client import HttpOrigin
from origin.app import create_origin
from origin.keys import create_key
from origin.services import open_services
from tests.harness import make_settings
from tests.running import Banatie
from tests.test_edge import Site, assert_error, open_site

PROMPT = "a lighthouse at dawn"
HERO = "/cdn/acme/web/live/hero"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with open_site(tmp_path) as s:
        yield s


async def rotate(site: Site) -> str:
    response = await site.api("POST", "/api/v1/live/signing/rotate")
    assert response.status_code == 200, response.text
    return response.json()["data"]["secret"]


async def require(site: Site, required: bool = True) -> None:
    response = await site.api("PUT", "/api/v1/live/signing", json={"requireSignedUrls": required})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["requireSignedUrls"] is required


async def signed_path(site: Site, **body: object) -> str:
    body = {"scope": "hero", "prompt": PROMPT, **body}
    response = await site.api("POST", "/api/v1/live/sign", json=body)
    assert response.status_code == 200, response.text
    return response.json()["data"]["path"]


# -- the signature itself ----------------------------------------------------------------------


def test_canonical_query_sorts_decodes_and_drops_sig() -> None:
    pairs = signing.query_pairs(b"prompt=a+red%20fox&aspectRatio=16:9&sig=abc&b=&a=%E2%9C%93")
    assert (
        signing.canonical_query(pairs) == "a=%E2%9C%93&aspectRatio=16%3A9&b=&prompt=a%20red%20fox"
    )


def test_signature_is_hmac_sha256_of_path_and_canonical_query() -> None:
    import hmac

    path = signing.sign("s3cret", HERO, [("prompt", "a b")], expires_at=2_000_000_000)
    assert path.startswith(f"{HERO}?expires=2000000000&prompt=a%20b&sig=")
    expected = hmac.new(
        b"s3cret", f"{HERO}?expires=2000000000&prompt=a%20b".encode(), hashlib.sha256
    ).hexdigest()
    assert path.endswith(expected)
    query = urlsplit(path).query
    assert signing.verify(["s3cret"], HERO, query, now=1_999_999_999) == 2_000_000_000
    # Any spelling of the same query verifies; order and escaping do not matter.
    respelled = f"sig={expected}&prompt=a+b&expires=2000000000"
    assert signing.verify(["other", "s3cret"], HERO, respelled, now=0) == 2_000_000_000
    with pytest.raises(SignatureExpired):
        signing.verify(["s3cret"], HERO, query, now=2_000_000_000)
    with pytest.raises(SignatureInvalid):
        signing.verify(["s3cret"], HERO, query.replace("a%20b", "a%20c"), now=0)
    with pytest.raises(SignatureInvalid):
        signing.verify(["s3cret"], "/cdn/acme/web/live/other", query, now=0)
    with pytest.raises(SignatureInvalid):
        signing.verify(["s3cret"], HERO, query + "&utm=1", now=0)
    with pytest.raises(SignatureRequired):
        signing.verify(["s3cret"], HERO, "prompt=a+b", now=0)


# -- through HTTP ------------------------------------------------------------------------------


async def test_unsigned_request_is_403_when_signatures_are_required(site: Site) -> None:
    await rotate(site)
    await require(site)
    assert_error(await site.cdn("hero", {"prompt": PROMPT}), 403, "SIGNATURE_REQUIRED")
    assert site.origin.calls == 0


async def test_signed_url_is_served_miss_then_hit(site: Site) -> None:
    await rotate(site)
    await require(site)
    path = await signed_path(site)
    first = await site.http.get(path)
    assert first.status_code == 200 and first.headers["x-cache-status"] == "MISS"
    again = await site.http.get(path)
    assert again.status_code == 200 and again.headers["x-cache-status"] == "HIT"
    assert site.origin.generations == 1


async def test_sign_answers_the_full_cdn_url(site: Site) -> None:
    await rotate(site)
    response = await site.api(
        "POST",
        "/api/v1/live/sign",
        json={"scope": "hero", "prompt": PROMPT, "aspectRatio": "16:9", "expiresInSeconds": 60},
    )
    data = response.json()["data"]
    assert data["url"] == site.services.settings.public_url + data["path"]
    assert data["path"].startswith(f"{HERO}?aspectRatio=16%3A9&expires=")
    assert time.time() < data["expiresAt"] <= time.time() + 61


async def test_tampered_prompt_is_403(site: Site) -> None:
    await rotate(site)
    await require(site)
    path = await signed_path(site)
    tampered = path.replace("lighthouse", "lightship")
    assert_error(await site.http.get(tampered), 403, "SIGNATURE_INVALID")
    assert_error(await site.http.get(path + "&aspectRatio=16:9"), 403, "SIGNATURE_INVALID")
    assert site.origin.calls == 0


async def test_expired_url_is_403(site: Site) -> None:
    secret = await rotate(site)
    await require(site)
    path = signing.sign(secret, HERO, [("prompt", PROMPT)], expires_at=int(time.time()) - 1)
    assert_error(await site.http.get(path), 403, "SIGNATURE_EXPIRED")
    # Pushing `expires` forward breaks the signature instead.
    later = path.replace(f"expires={int(time.time()) - 1}", f"expires={int(time.time()) + 999}")
    assert_error(await site.http.get(later), 403, "SIGNATURE_INVALID")


async def test_an_expiring_url_is_not_cached_past_its_end(site: Site) -> None:
    await rotate(site)
    await require(site)
    path = await signed_path(site, expiresInSeconds=600)
    for _ in range(2):  # the miss and the hit
        response = await site.http.get(path)
        assert response.status_code == 200
        max_age = response.headers["cache-control"].removeprefix("public, max-age=")
        assert 0 < int(max_age) <= 600
    forever = await site.http.get(await signed_path(site))
    assert forever.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_a_hit_still_needs_the_signature(site: Site) -> None:
    await rotate(site)
    await require(site)
    path = await signed_path(site)
    assert (await site.http.get(path)).status_code == 200
    assert len(site.edge.l1) == 1
    assert_error(await site.cdn("hero", {"prompt": PROMPT}), 403, "SIGNATURE_REQUIRED")
    head = await site.http.head(f"{HERO}?prompt={PROMPT}")
    assert head.status_code == 403


async def test_rotation_keeps_the_previous_secret_then_drops_it(site: Site) -> None:
    await rotate(site)
    await require(site)
    oldest = await signed_path(site)
    await rotate(site)
    newer = await signed_path(site)
    assert newer != oldest
    for path in (oldest, newer):
        assert (await site.http.get(path)).status_code == 200
    await rotate(site)
    newest = await signed_path(site)
    assert_error(await site.http.get(oldest), 403, "SIGNATURE_INVALID")
    for path in (newer, newest):
        assert (await site.http.get(path)).status_code == 200
    assert site.origin.generations == 1


async def test_signed_and_unsigned_requests_share_one_cache_entry(site: Site) -> None:
    await rotate(site)  # not required: signatures are simply not looked at
    unsigned = await site.cdn("hero", {"prompt": PROMPT})
    assert unsigned.headers["x-cache-status"] == "MISS"
    signed = await site.http.get(await signed_path(site))
    assert signed.status_code == 200 and signed.headers["x-cache-status"] == "HIT"
    assert signed.content == unsigned.content
    assert len(site.edge.l1) == 1 and site.origin.calls == 1
    # Required now: the same entry serves the signed URL without another generation.
    await require(site)
    again = await site.http.get(await signed_path(site))
    assert again.headers["x-cache-status"] == "HIT" and site.origin.calls == 1


async def test_changes_reach_the_edge_at_once(site: Site) -> None:
    await rotate(site)
    assert (await site.cdn("hero", {"prompt": PROMPT})).status_code == 200  # project cached
    await require(site)
    assert_error(await site.cdn("hero", {"prompt": PROMPT}), 403, "SIGNATURE_REQUIRED")
    await require(site, False)
    assert (await site.cdn("hero", {"prompt": PROMPT})).status_code == 200


async def test_signing_state_never_shows_secrets(site: Site) -> None:
    state = (await site.api("GET", "/api/v1/live/signing")).json()["data"]
    assert state == {"requireSignedUrls": False, "secrets": []}
    first, second = await rotate(site), await rotate(site)
    response = await site.api("GET", "/api/v1/live/signing")
    assert first not in response.text and second not in response.text
    roles = [s["role"] for s in response.json()["data"]["secrets"]]
    assert roles == ["current", "previous"]


async def test_signing_refusals(site: Site) -> None:
    no_secret = await site.api("POST", "/api/v1/live/sign", json={"scope": "a", "prompt": "x"})
    assert_error(no_secret, 409, "SIGNING_SECRET_MISSING")
    enable = await site.api("PUT", "/api/v1/live/signing", json={"requireSignedUrls": True})
    assert_error(enable, 409, "SIGNING_SECRET_MISSING")
    await rotate(site)
    for body in (
        {"prompt": "x"},
        {"scope": "bad scope", "prompt": "x"},
        {"scope": "a"},
        {"scope": "a", "prompt": "x", "aspectRatio": "7:5"},
        {"scope": "a", "prompt": "x", "expiresInSeconds": 0},
        {"path": "/cdn/acme/web/img/x"},
        {"path": f"{HERO}?prompt=x", "prompt": "y"},
    ):
        response = await site.api("POST", "/api/v1/live/sign", json=body)
        assert_error(response, 400, "VALIDATION_ERROR")
    other = await site.api("POST", "/api/v1/live/sign", json={"path": "/cdn/x/y/live/a?prompt=x"})
    assert_error(other, 404, "PROJECT_NOT_FOUND")
    bad = await site.api("PUT", "/api/v1/live/signing", json={"requireSignedUrls": "yes"})
    assert_error(bad, 400, "VALIDATION_ERROR")


async def test_sign_accepts_a_url_and_keeps_its_other_parameters(site: Site) -> None:
    await rotate(site)
    await require(site)
    url = f"https://cdn.example{HERO}?prompt=a+lighthouse+at+dawn&template=sticker&sig=old"
    path = (await site.api("POST", "/api/v1/live/sign", json={"path": url})).json()["data"]["path"]
    assert path.startswith(f"{HERO}?prompt=a%20lighthouse%20at%20dawn&template=sticker&sig=")
    assert "old" not in path
    response = await site.http.get(path)
    assert response.status_code == 200


async def test_the_other_live_routes_are_not_signed(site: Site) -> None:
    await rotate(site)
    await require(site)
    keyed = await site.live({"prompt": PROMPT})
    assert keyed.status_code == 200
    image = await site.http.get(f"/cdn/acme/web/img/{keyed.headers['x-image-id']}")
    assert image.status_code == 200


async def test_an_edge_over_http_learns_the_signing_state(tmp_path: Path) -> None:
    async with open_site(tmp_path, service_token="s3cret") as site:
        secret = await rotate(site)
        await require(site)
        origin = HttpOrigin(
            site.services.settings,
            transport=httpx.ASGITransport(app=create_origin(site.services.settings, site.services)),
        )
        await origin.start()
        try:
            ref = await origin.project("acme", "web")
            assert ref == await site.origin.project("acme", "web")
            assert ref is not None and ref.require_signed and ref.signing_secrets == (secret,)
            edge = create_edge(
                site.services.settings, origin, site.services.store, MemoryIndex(), LocalBus()
            )
            transport = httpx.ASGITransport(app=edge)
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as http:
                refused = await http.get(HERO, params={"prompt": PROMPT})
                assert_error(refused, 403, "SIGNATURE_REQUIRED")
                served = await http.get(await signed_path(site))
                assert served.status_code == 200
        finally:
            await origin.close()


def test_cli_signs_a_url_with_the_projects_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)

    async def prepare() -> str:
        from origin.models import Project
        from origin.signing import rotate as rotate_secret

        services = await open_services(settings)
        try:
            async with services.sessions() as session:
                created = await create_key(session, "project", "acme", "web")
                project = await session.get(Project, created.row.project_id)
                assert project is not None
                secret = rotate_secret(project)
                await session.commit()
            return secret
        finally:
            await services.close()

    secret = asyncio.run(prepare())
    cli = Banatie("serve", settings.data_dir)
    url = cli.cli(
        "sign-url", "--org", "acme", "--project", "web", "--expires-in", "300",
        f"{HERO}?prompt=a+lighthouse",
    ).strip()  # fmt: skip
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == cli.url
    assert signing.verify([secret], parts.path, parts.query) is not None
    full = cli.cli(
        "sign-url", "--org", "acme", "--project", "web", f"https://cdn.example{HERO}?prompt=x"
    )
    assert full.startswith(f"https://cdn.example{HERO}?prompt=x&sig=")
