"""Generators: Gemini through the real google-genai client against a fake, and offline."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image

from cache.settings import Settings
from origin.generators import (
    ASPECT_RATIOS,
    TEMPLATES,
    GeneratorError,
    GeneratorUnavailable,
    ImageRequest,
    ReferenceImage,
)
from origin.generators.gemini import GeminiGenerator
from origin.generators.offline import OfflineGenerator
from tests.fake_gemini import FakeGemini

API_KEY = "test-key-do-not-leak"


def settings_for(url: str, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        gemini_api_key=API_KEY,
        gemini_base_url=url,
        generation_timeout_s=5.0,
        generation_retries=2,
    )
    values.update(overrides)
    return Settings.from_env({}, **values)


@pytest.fixture
async def generator(gemini: FakeGemini) -> AsyncIterator[GeminiGenerator]:
    g = GeminiGenerator(settings_for(gemini.url), backoff_s=0.01)
    yield g
    await g.close()


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="JPEG")
    return out.getvalue()


# --- Gemini ---------------------------------------------------------------------------------


async def test_generate_returns_the_models_image(gemini: FakeGemini, generator: GeminiGenerator):
    image = await generator.generate(ImageRequest("a red fox", "16:9"))

    assert image.mime_type == "image/png"
    assert image.model == "gemini-2.5-flash-image"
    assert Image.open(io.BytesIO(image.data)).size == (168, 96)
    assert gemini.generations == 1
    assert gemini.image_requests[0].model == "gemini-2.5-flash-image"


async def test_aspect_ratio_arrives_in_image_config(gemini: FakeGemini, generator: GeminiGenerator):
    await generator.generate(ImageRequest("a tall tower", "9:16"))

    (request,) = gemini.image_requests
    assert request.aspect_ratio == "9:16"
    assert "IMAGE" in request.generation_config["responseModalities"]


async def test_references_arrive_as_inline_parts_after_the_text(
    gemini: FakeGemini, generator: GeminiGenerator
):
    first, second = png((255, 0, 0)), jpeg((0, 0, 255))
    references = (ReferenceImage(first, "image/png"), ReferenceImage(second, "image/jpeg"))

    await generator.generate(ImageRequest("combine these", "1:1", references))

    (request,) = gemini.image_requests
    assert request.texts == ["combine these"]
    assert [(i.mime_type, i.data) for i in request.images] == [
        ("image/png", first),
        ("image/jpeg", second),
    ]
    parts = request.body["contents"][0]["parts"]
    assert "text" in parts[0] and all("text" not in p for p in parts[1:])


async def test_different_prompts_give_different_images(generator: GeminiGenerator):
    a = await generator.generate(ImageRequest("a cat"))
    b = await generator.generate(ImageRequest("a dog"))

    assert a.data != b.data


async def test_enhance_uses_the_text_model_and_returns_its_text(
    gemini: FakeGemini, generator: GeminiGenerator
):
    text = await generator.enhance("a cat on a sofa", "sticker")

    assert text == "Enhanced: a cat on a sofa"
    (request,) = gemini.text_requests
    assert request.model == "gemini-2.5-flash"
    assert "sticker" in (request.system_instruction or "")
    assert gemini.image_requests == []


async def test_enhance_falls_back_to_the_prompt_when_the_model_says_nothing(
    gemini: FakeGemini, generator: GeminiGenerator
):
    gemini.malformed_next(1, "no_parts")

    assert await generator.enhance("a cat", "general") == "a cat"


async def test_rate_limit_then_success_is_retried(gemini: FakeGemini, generator: GeminiGenerator):
    gemini.fail_next(1, status=429)

    image = await generator.generate(ImageRequest("a fox"))

    assert image.data
    assert len(gemini.requests) == 2


async def test_retry_after_is_honoured(gemini: FakeGemini):
    gemini.fail_next(1, status=429, retry_after=0.3)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the generator's wait between tries, recorded
        waits.append(seconds)

    g = GeminiGenerator(settings_for(gemini.url), backoff_s=0.01, sleep=sleep)
    try:
        await g.generate(ImageRequest("a fox"))
    finally:
        await g.close()

    assert waits == [pytest.approx(0.3)]  # the server's delay, not the 10 ms backoff
    assert len(gemini.requests) == 2


async def test_persistent_server_error_is_unavailable_after_bounded_retries(
    gemini: FakeGemini, generator: GeminiGenerator
):
    gemini.fail_next(10, status=500)

    with pytest.raises(GeneratorUnavailable):
        await generator.generate(ImageRequest("a fox"))

    assert len(gemini.requests) == 1 + 2


async def test_zero_retries_means_one_request(gemini: FakeGemini):
    gemini.fail_next(10, status=503)
    g = GeminiGenerator(settings_for(gemini.url, generation_retries=0), backoff_s=0.01)
    try:
        with pytest.raises(GeneratorUnavailable):
            await g.generate(ImageRequest("a fox"))
    finally:
        await g.close()

    assert len(gemini.requests) == 1


async def test_bad_request_is_an_error_without_retry(
    gemini: FakeGemini, generator: GeminiGenerator
):
    gemini.fail_next(1, status=400)

    with pytest.raises(GeneratorError):
        await generator.generate(ImageRequest("a fox"))

    assert len(gemini.requests) == 1


async def test_error_messages_never_contain_the_api_key(
    gemini: FakeGemini, generator: GeminiGenerator
):
    echo = {"error": {"code": 400, "message": f"API key {API_KEY} not valid", "status": "X"}}
    gemini.fail_next(1, status=400, body=echo)

    with pytest.raises(GeneratorError) as caught:
        await generator.generate(ImageRequest("a fox"))

    assert API_KEY not in str(caught.value)
    assert "400" in str(caught.value)


async def test_slow_model_is_unavailable_after_the_timeout(gemini: FakeGemini):
    gemini.delay_s = 2.0
    g = GeminiGenerator(settings_for(gemini.url, generation_timeout_s=0.5), backoff_s=0.01)
    try:
        with pytest.raises(GeneratorUnavailable) as caught:
            await g.generate(ImageRequest("a fox"))
    finally:
        await g.close()

    assert str(caught.value) == "the model did not answer within 0.5 s"  # the timeout, not a retry


async def test_unreachable_model_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    g = GeminiGenerator(settings_for(f"http://127.0.0.1:{port}"), backoff_s=0.01)
    try:
        with pytest.raises(GeneratorUnavailable) as caught:
            await g.generate(ImageRequest("a fox"))
    finally:
        await g.close()

    assert API_KEY not in str(caught.value)


@pytest.mark.parametrize("kind", ["no_parts", "no_candidates", "text_only", "invalid_json"])
async def test_answer_without_an_image_is_an_error(
    gemini: FakeGemini, generator: GeminiGenerator, kind: str
):
    gemini.malformed_next(1, kind)

    with pytest.raises(GeneratorError):
        await generator.generate(ImageRequest("a fox"))

    assert len(gemini.requests) == 1


async def test_refusal_text_is_in_the_error(gemini: FakeGemini, generator: GeminiGenerator):
    gemini.malformed_next(1, "text_only")

    with pytest.raises(GeneratorError, match="can't draw"):
        await generator.generate(ImageRequest("a fox"))


@pytest.mark.parametrize("version", ["v1", "v1beta"])
async def test_both_api_versions_work(gemini: FakeGemini, version: str):
    g = GeminiGenerator(settings_for(gemini.url), backoff_s=0.01, api_version=version)
    try:
        image = await g.generate(ImageRequest("a fox", "4:3"))
    finally:
        await g.close()

    assert image.data
    assert [r.version for r in gemini.requests] == [version]


async def test_fake_accepts_snake_case_fields(gemini: FakeGemini):
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "snake"},
                    {
                        "inline_data": {
                            "mime_type": "image/webp",
                            "data": base64.b64encode(b"x").decode(),
                        }
                    },
                ],
            }
        ],
        "generation_config": {"image_config": {"aspect_ratio": "21:9"}},
    }
    async with httpx.AsyncClient(base_url=gemini.url) as client:
        response = await client.post("/v1beta/models/some-image-model:generateContent", json=body)

    assert response.status_code == 200
    part = response.json()["candidates"][0]["content"]["parts"][0]
    assert part["inlineData"]["mimeType"] == "image/png"
    (request,) = gemini.requests
    assert request.texts == ["snake"]
    assert [(i.mime_type, i.data) for i in request.images] == [("image/webp", b"x")]
    assert request.aspect_ratio == "21:9"


# --- Offline --------------------------------------------------------------------------------


async def test_offline_is_deterministic_per_prompt_and_ratio():
    g = OfflineGenerator()

    a = await g.generate(ImageRequest("a lighthouse at dusk", "16:9"))
    b = await g.generate(ImageRequest("a lighthouse at dusk", "16:9"))

    assert a.data == b.data
    assert (a.mime_type, a.model) == ("image/png", "offline-v1")


async def test_offline_differs_for_different_prompts_and_ratios():
    g = OfflineGenerator()

    a = await g.generate(ImageRequest("a lighthouse at dusk", "16:9"))
    b = await g.generate(ImageRequest("a lighthouse at dawn", "16:9"))
    c = await g.generate(ImageRequest("a lighthouse at dusk", "1:1"))

    assert len({a.data, b.data, c.data}) == 3


@pytest.mark.parametrize("ratio", sorted(ASPECT_RATIOS))
async def test_offline_image_has_the_ratios_size(ratio: str):
    image = await OfflineGenerator().generate(ImageRequest("size check", ratio))

    decoded = Image.open(io.BytesIO(image.data))
    assert decoded.format == "PNG"
    assert decoded.size == ASPECT_RATIOS[ratio]


async def test_offline_reference_tints_the_image():
    g = OfflineGenerator()
    plain = await g.generate(ImageRequest("tinted"))
    red = await g.generate(
        ImageRequest("tinted", references=(ReferenceImage(png((255, 0, 0)), "image/png"),))
    )

    assert plain.data != red.data


async def test_offline_rejects_unknown_ratio():
    with pytest.raises(GeneratorError):
        await OfflineGenerator().generate(ImageRequest("x", "7:5"))


async def test_offline_enhance_is_deterministic_per_template():
    g = OfflineGenerator()

    rewrites = [await g.enhance("a cat", t) for t in TEMPLATES]

    assert rewrites == [await g.enhance("a cat", t) for t in TEMPLATES]
    assert len(set(rewrites)) == len(TEMPLATES)
    assert all("a cat" in r for r in rewrites)
