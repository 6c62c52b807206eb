"""The service under test: real settings, real database and storage, driven over HTTP."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image as PILImage

from cache.settings import Settings
from origin.app import create_origin
from origin.keys import create_key
from origin.services import Services, open_services
from tests.servers import new_bucket_name, s3_env


@dataclass
class Api:
    """An HTTP client on the app with a project key, plus the parts behind it."""

    http: httpx.AsyncClient
    services: Services
    key: str
    org: str
    project: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    async def get(self, url: str, **kw: Any) -> httpx.Response:
        return await self.http.get(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def post(self, url: str, **kw: Any) -> httpx.Response:
        return await self.http.post(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def put(self, url: str, **kw: Any) -> httpx.Response:
        return await self.http.put(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def delete(self, url: str, **kw: Any) -> httpx.Response:
        return await self.http.delete(url, headers={**self.headers, **kw.pop("headers", {})}, **kw)

    async def new_key(self, org: str, project: str) -> str:
        async with self.services.sessions() as session:
            created = await create_key(session, "project", org, project)
            await session.commit()
        return created.secret

    async def generate(self, **body: Any) -> dict[str, Any]:
        body.setdefault("prompt", "a red fox in the snow")
        response = await self.post("/api/v1/generations", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]

    async def upload(self, data: bytes | None = None, **fields: str) -> dict[str, Any]:
        response = await self.post(
            "/api/v1/images/upload",
            files={"file": ("a.png", data or png_bytes(), "image/png")},
            data=fields,
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]


def png_bytes(width: int = 32, height: int = 24, colour: str = "teal", fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), colour).save(buffer, fmt)
    return buffer.getvalue()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path / "data")}, **overrides)


async def open_api(settings: Settings, services: Services | None = None) -> Api:
    services = services or await open_services(settings)
    app = create_origin(settings, services)
    async with services.sessions() as session:
        created = await create_key(session, "project", "acme", "web")
        await session.commit()
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return Api(http, services, created.secret, "acme", "web")


def backend_settings(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str, **overrides: Any
) -> Settings:
    """`sqlite-local` (the defaults) or `postgres-s3` (every production part)."""
    if backend == "postgres-s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        env = s3_env(endpoint, new_bucket_name())
        overrides = {
            "database_url": request.getfixturevalue("postgres_database"),
            "s3_endpoint": env["S3_ENDPOINT"],
            "s3_bucket": env["S3_BUCKET"],
            "s3_region": env["S3_REGION"],
            "s3_access_key_id": env["S3_ACCESS_KEY_ID"],
            "s3_secret_access_key": env["S3_SECRET_ACCESS_KEY"],
            **overrides,
        }
    return make_settings(tmp_path, **overrides)


async def api_for(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    backend: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Api]:
    """The app on `backend` (default: the fixture's param) with settings `overrides`."""
    backend = backend or request.param
    settings = backend_settings(request, tmp_path, backend, **overrides)
    services = await open_services(settings)
    if settings.storage_backend == "s3":
        await services.store.create_bucket()  # type: ignore[attr-defined]
    api = await open_api(settings, services)
    try:
        yield api
    finally:
        await api.http.aclose()
        await services.close()
