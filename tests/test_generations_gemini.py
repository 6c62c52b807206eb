"""Generations through the API with the Gemini generator, reached via the real google-genai
client on the fake Gemini server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fake_gemini import FakeGemini
from tests.harness import Api, api_for


@pytest.fixture
async def gapi(
    request: pytest.FixtureRequest, tmp_path: Path, gemini: FakeGemini
) -> AsyncIterator[Api]:
    async for api in api_for(
        request,
        tmp_path,
        "sqlite-local",
        gemini_api_key="test-key",
        gemini_base_url=gemini.url,
        generation_timeout_s=2.0,
        generation_retries=2,
    ):
        api.services.generator._backoff_s = 0.01  # type: ignore[attr-defined]
        yield api


async def test_ratio_references_and_enhancement_reach_gemini(gapi: Api, gemini: FakeGemini) -> None:
    ref = await gapi.upload(alias="@ref")
    gen = await gapi.generate(
        prompt="a cat like @ref", aspectRatio="9:16", enhancementOptions={"template": "sticker"}
    )
    assert gen["status"] == "success"
    assert gen["prompt"].startswith("Enhanced:")  # the text model's answer was used
    assert [r["imageId"] for r in gen["referencedImages"]] == [ref["id"]]
    [image_request] = gemini.image_requests
    assert image_request.aspect_ratio == "9:16"
    assert [i.mime_type for i in image_request.images] == ["image/png"]
    assert gemini.text_requests and "image" not in gemini.text_requests[0].model


async def test_model_failure_is_502_and_stored_as_failed(gapi: Api, gemini: FakeGemini) -> None:
    gemini.fail_next(1, status=400)
    response = await gapi.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "GENERATION_FAILED"
    stored = (await gapi.get(f"/api/v1/generations/{error['details']['generationId']}")).json()
    assert stored["data"]["status"] == "failed" and stored["data"]["errorMessage"]
    assert "test-key" not in response.text


async def test_persistent_429_is_503_with_bounded_retries(gapi: Api, gemini: FakeGemini) -> None:
    gemini.fail_next(10, status=429)
    response = await gapi.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "UPSTREAM_UNAVAILABLE"
    assert response.headers["Retry-After"]
    assert len(gemini.image_requests) == 3  # 1 + GENERATION_RETRIES


async def test_timeout_becomes_upstream_unavailable(gapi: Api, gemini: FakeGemini) -> None:
    gemini.delay_s = 5
    response = await gapi.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
    assert response.status_code == 503


async def test_retry_failed_generation_with_override(gapi: Api, gemini: FakeGemini) -> None:
    gemini.fail_next(1, status=400)
    failed = await gapi.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
    gen_id = failed.json()["error"]["details"]["generationId"]
    response = await gapi.post(f"/api/v1/generations/{gen_id}/retry", json={"aspectRatio": "16:9"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["id"] == gen_id and data["status"] == "success" and data["retryCount"] == 1
    assert gemini.image_requests[-1].aspect_ratio == "16:9"


async def test_retry_limit(gapi: Api, gemini: FakeGemini) -> None:
    gemini.fail_next(100, status=400)
    failed = await gapi.post("/api/v1/generations", json={"prompt": "x", "autoEnhance": False})
    gen_id = failed.json()["error"]["details"]["generationId"]
    for _ in range(3):
        assert (await gapi.post(f"/api/v1/generations/{gen_id}/retry")).status_code == 502
    over = await gapi.post(f"/api/v1/generations/{gen_id}/retry")
    assert over.status_code == 409 and over.json()["error"]["code"] == "RETRY_LIMIT_EXCEEDED"


async def test_respond_async_returns_pending_then_completes(gapi: Api, gemini: FakeGemini) -> None:
    gemini.delay_s = 0.3
    response = await gapi.post(
        "/api/v1/generations",
        json={"prompt": "later", "autoEnhance": False},
        headers={"Prefer": "respond-async"},
    )
    assert response.status_code == 202
    gen = response.json()["data"]
    assert gen["status"] == "pending"
    await next(iter(gapi.services.background))
    done = (await gapi.get(f"/api/v1/generations/{gen['id']}")).json()["data"]
    assert done["status"] == "success" and done["outputImage"]
