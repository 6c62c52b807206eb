"""Google Gemini through the google-genai async client, with our own bounded retries."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google import genai
from google.genai import errors, types

from cache.settings import Settings
from origin.generators.base import (
    ASPECT_RATIOS,
    GeneratedImage,
    GeneratorError,
    GeneratorUnavailable,
    ImageRequest,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# What the text model is told to do with a prompt, per enhancement template.
ENHANCE_INSTRUCTIONS: dict[str, str] = {
    "general": (
        "Rewrite the user's image prompt so an image model renders it well: name the subject, "
        "setting, composition, lighting and mood in concrete words. Keep every detail the user "
        "asked for and add nothing that contradicts it."
    ),
    "photorealistic": (
        "Rewrite the user's image prompt as a photograph brief: subject, setting, camera angle, "
        "lens and focal length, lighting and time of day, textures and depth of field. It must "
        "read like a real photo, not an illustration."
    ),
    "illustration": (
        "Rewrite the user's image prompt as an illustration brief: art style, line quality, "
        "colour palette, shading technique and composition. Keep the user's subject and mood."
    ),
    "minimalist": (
        "Rewrite the user's image prompt for a minimalist image: one clear subject, few simple "
        "shapes, a restrained palette of two or three colours and generous negative space. "
        "Remove clutter; keep the user's subject."
    ),
    "sticker": (
        "Rewrite the user's image prompt as a die-cut sticker design: a single centred subject, "
        "bold clean outline, flat vivid colours, a thin white border and a plain background. "
        "No scenery and no text unless the user asked for text."
    ),
    "product": (
        "Rewrite the user's image prompt as a commercial product shot: the product as hero, "
        "studio lighting with soft shadows, a clean seamless backdrop, sharp focus on materials "
        "and details, catalogue-ready framing."
    ),
    "comic": (
        "Rewrite the user's image prompt as a single comic-book panel: dynamic angle, bold ink "
        "outlines, flat colours with halftone shading, expressive poses. Include speech "
        "bubbles only if the user asked for dialogue."
    ),
}

_ENHANCE_RULES = (
    " Answer with the rewritten prompt only: one paragraph, at most 80 words, in the user's "
    "language, no preamble, no quotes, no markdown."
)

_RETRYABLE_CODES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 8.0


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network failure types of whichever HTTP library the SDK picked (httpx or httpx2)."""
    found: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    for module_name in ("httpx", "httpx2"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()


class GeminiGenerator:
    """Images from `settings.gemini_image_model`, prompt rewrites from the text model."""

    name = "gemini"

    def __init__(
        self,
        settings: Settings,
        *,
        backoff_s: float = 0.5,
        api_version: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,  # waits between retries
    ) -> None:
        if not settings.gemini_api_key:
            raise ValueError("GEMINI_API_KEY is required for the gemini generator")
        self.model = settings.gemini_image_model
        self._text_model = settings.gemini_text_model
        self._api_key = settings.gemini_api_key
        self._timeout_s = settings.generation_timeout_s
        self._retries = max(0, settings.generation_retries)
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._client = genai.Client(
            vertexai=False,
            api_key=settings.gemini_api_key,
            http_options=types.HttpOptions(
                base_url=settings.gemini_base_url or None,
                api_version=api_version,
                timeout=max(1, int(settings.generation_timeout_s * 1000)),
                # One attempt per SDK call: retries are ours, counted and bounded below.
                retry_options=types.HttpRetryOptions(attempts=1),
            ),
        )

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise GeneratorError(f"unsupported aspect ratio {request.aspect_ratio!r}")
        parts = [types.Part.from_text(text=request.prompt)]
        parts += [
            types.Part.from_bytes(data=ref.data, mime_type=ref.mime_type)
            for ref in request.references
        ]
        config = types.GenerateContentConfig(
            response_modalities=["TEXT", "IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=request.aspect_ratio),
        )

        def call() -> Awaitable[types.GenerateContentResponse]:
            return self._client.aio.models.generate_content(
                model=self.model,
                contents=[types.Content(role="user", parts=parts)],
                config=config,
            )

        response = await self._call(call)
        for candidate in response.candidates or []:
            for part in (candidate.content.parts if candidate.content else None) or []:
                if part.inline_data and part.inline_data.data:
                    return GeneratedImage(
                        data=part.inline_data.data,
                        mime_type=part.inline_data.mime_type or "image/png",
                        model=self.model,
                    )
        raise GeneratorError(self._scrub(f"the model returned no image: {_why(response)}"))

    async def enhance(self, prompt: str, template: str) -> str:
        instruction = ENHANCE_INSTRUCTIONS.get(template, ENHANCE_INSTRUCTIONS["general"])

        def call() -> Awaitable[types.GenerateContentResponse]:
            return self._client.aio.models.generate_content(
                model=self._text_model,
                contents=prompt,
                config=types.GenerateContentConfig(
                    system_instruction=instruction + _ENHANCE_RULES,
                ),
            )

        response = await self._call(call)
        try:
            text = (response.text or "").strip()
        except ValueError:
            text = ""
        return text or prompt

    async def close(self) -> None:
        aclose = getattr(self._client.aio, "aclose", None)
        if aclose is not None:
            await aclose()

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run `call` with retries on rate limits and outages, all within the timeout."""
        try:
            return await asyncio.wait_for(self._with_retries(call), self._timeout_s)
        except TimeoutError:
            raise GeneratorUnavailable(
                f"the model did not answer within {self._timeout_s:g} s"
            ) from None

    async def _with_retries(self, call: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            try:
                return await call()
            except errors.APIError as e:
                retryable = e.code in _RETRYABLE_CODES
                failure: Exception = (GeneratorUnavailable if retryable else GeneratorError)(
                    self._scrub(f"model answered {e.code}: {e.message or e.status or ''}".strip())
                )
                server_delay = _server_delay(e)
            except _TRANSPORT_ERRORS as e:
                retryable = True
                failure = GeneratorUnavailable(
                    self._scrub(f"model unreachable: {type(e).__name__}: {e}")
                )
                server_delay = 0.0
            except ValueError as e:  # the answer did not parse as a response
                raise GeneratorError(self._scrub(f"malformed model answer: {e}")) from None
            if not retryable or attempt >= self._retries:
                raise failure
            delay = min(self._backoff_s * 2**attempt, _MAX_BACKOFF_S)
            delay = min(max(delay * random.uniform(0.5, 1.0), server_delay), _MAX_BACKOFF_S)
            attempt += 1
            log.info("gemini: %s; retry %d/%d in %.2f s", failure, attempt, self._retries, delay)
            await self._sleep(delay)

    def _scrub(self, message: str) -> str:
        return message.replace(self._api_key, "***") if self._api_key else message


def _server_delay(error: errors.APIError) -> float:
    """The wait the server asked for (Retry-After or RetryInfo), 0 when it named none."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    raw = headers.get("retry-after") if hasattr(headers, "get") else None
    if raw is None:
        details = error.details if isinstance(error.details, dict) else {}
        for item in (details.get("error") or {}).get("details") or []:
            if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
                raw = str(item.get("retryDelay", "")).removesuffix("s")
    try:
        return max(0.0, float(raw)) if raw is not None else 0.0
    except ValueError:
        return 0.0


def _why(response: types.GenerateContentResponse) -> str:
    """The model's own explanation for answering without an image."""
    reasons: list[str] = []
    if response.prompt_feedback and response.prompt_feedback.block_reason:
        reasons.append(f"blocked: {response.prompt_feedback.block_reason}")
    for candidate in response.candidates or []:
        if candidate.finish_reason:
            reasons.append(f"finish reason {candidate.finish_reason}")
        if candidate.finish_message:
            reasons.append(candidate.finish_message)
        for part in (candidate.content.parts if candidate.content else None) or []:
            if part.text:
                reasons.append(part.text.strip()[:300])
    return "; ".join(reasons) or "empty answer"
