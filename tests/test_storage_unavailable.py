"""Storage that cannot be used is a 503 with Retry-After on the origin, as on the edge: a
client retries an outage; it is not a bug of ours (500)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from cache.errors import STORAGE_RETRY_AFTER_S
from cache.index import LiveRecord
from cache.settings import Settings
from edge.app import create_edge
from origin.edge_api import InProcessOrigin
from origin.services import open_services
from tests.harness import Api, backend_settings, open_api, png_bytes


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def broken(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The origin with a store it cannot write: an objects directory that cannot be created
    (under /proc), or an S3 bucket that does not exist."""
    settings = backend_settings(
        request, tmp_path, request.param, objects_dir=Path("/proc/banatie-nowhere")
    )
    async with origin_on(settings) as api:
        yield api


@contextlib.asynccontextmanager
async def origin_on(settings: Settings) -> AsyncIterator[Api]:
    services = await open_services(settings)  # the S3 bucket is never created
    api = await open_api(settings, services)
    try:
        yield api
    finally:
        await api.http.aclose()
        await services.close()


def _assert_storage_outage(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"


async def test_upload_to_unusable_storage_is_503(broken: Api) -> None:
    response = await broken.post(
        "/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}
    )
    _assert_storage_outage(response)


async def test_generation_into_unusable_storage_is_503_and_failed(broken: Api) -> None:
    response = await broken.post("/api/v1/generations", json={"prompt": "a red fox"})
    _assert_storage_outage(response)
    listed = (await broken.get("/api/v1/generations")).json()["data"]
    assert [g["status"] for g in listed] == ["failed"]


@pytest.fixture
async def no_bucket(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The origin on an S3 bucket that does not exist: every read fails, not as "not found"."""
    async with origin_on(backend_settings(request, tmp_path, "postgres-s3")) as api:
        yield api


async def test_the_edge_answers_a_storage_outage_as_the_origin_does(no_bucket: Api) -> None:
    # A /cdn/ image the origin knows of, whose bytes the edge cannot read.
    record = LiveRecord(str(uuid.uuid4()), None, "acme/web/img/x", "image/png", 100, '"x"', "c")
    services = no_bucket.services

    class KnownImage(InProcessOrigin):
        async def image(self, project_id: str, ref: str) -> LiveRecord:
            return record

    edge = create_edge(
        services.settings, KnownImage(services), services.store, services.index, services.bus
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=edge), base_url="http://edge")
    async with http:
        at_edge = await http.get(f"/cdn/acme/web/img/{record.image_id}")
    _assert_storage_outage(at_edge)
    assert at_edge.headers["retry-after"] == str(STORAGE_RETRY_AFTER_S)
    at_origin = await no_bucket.post(
        "/api/v1/images/upload", files={"file": ("a.png", png_bytes(), "image/png")}
    )
    _assert_storage_outage(at_origin)
    assert at_edge.json() == at_origin.json()
