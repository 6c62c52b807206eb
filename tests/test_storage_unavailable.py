"""Storage that cannot be used is a 503 with Retry-After on the origin, as on the edge: a
client retries an outage; it is not a bug of ours (500)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from origin.services import open_services
from tests.harness import Api, backend_settings, open_api, png_bytes


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
async def broken(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Api]:
    """The origin with a store it cannot write: an objects directory that cannot be created
    (under /proc), or an S3 bucket that does not exist."""
    settings = backend_settings(
        request, tmp_path, request.param, objects_dir=Path("/proc/banatie-nowhere")
    )
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
