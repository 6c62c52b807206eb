"""A generator that needs no network: draws a picture of the prompt, the same one every time."""

from __future__ import annotations

import asyncio
import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont, ImageOps

from origin.generators.base import (
    ASPECT_RATIOS,
    GeneratedImage,
    GeneratorError,
    ImageRequest,
    ReferenceImage,
)

# One rewrite per template; "general" also covers names this build does not know.
ENHANCE_PHRASES: dict[str, str] = {
    "general": "{prompt}, detailed, balanced composition, high quality",
    "photorealistic": "photorealistic: {prompt}, natural light, 50mm lens, high detail",
    "illustration": "illustration: {prompt}, clean linework, vibrant colours, digital painting",
    "minimalist": "minimalist: {prompt}, simple shapes, generous negative space, muted palette",
    "sticker": "sticker: {prompt}, bold outline, flat colours, white border, plain background",
    "product": "product shot: {prompt}, studio lighting, seamless backdrop, sharp focus",
    "comic": "comic panel: {prompt}, ink outlines, halftone shading, dynamic angle",
}

_MAX_TEXT_LINES = 6


class OfflineGenerator:
    """Deterministic stand-in for a real model: same prompt and ratio, same PNG bytes."""

    name = "offline"
    model = "offline-v1"

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        if request.aspect_ratio not in ASPECT_RATIOS:
            raise GeneratorError(f"unsupported aspect ratio {request.aspect_ratio!r}")
        data = await asyncio.to_thread(
            draw_png, request.prompt, request.aspect_ratio, request.references
        )
        return GeneratedImage(data=data, mime_type="image/png", model=self.model)

    async def enhance(self, prompt: str, template: str) -> str:
        phrase = ENHANCE_PHRASES.get(template, ENHANCE_PHRASES["general"])
        return phrase.format(prompt=prompt.strip())

    async def close(self) -> None:
        return None


def draw_png(prompt: str, aspect_ratio: str, references: tuple[ReferenceImage, ...] = ()) -> bytes:
    """PNG bytes of a gradient, a few shapes and the prompt's text, all derived from the prompt."""
    width, height = ASPECT_RATIOS[aspect_ratio]
    seed = hashlib.sha256(f"{aspect_ratio}\n{prompt}".encode()).digest()
    dark, light, accent = _palette(seed, references)

    # A small gradient scaled up is far cheaper than computing one at full size.
    gradient = Image.linear_gradient("L").rotate(seed[9] % 4 * 90).resize((width, height))
    image = ImageOps.colorize(gradient, black=dark, white=light)

    draw = ImageDraw.Draw(image)
    for i in range(4):
        b = seed[10 + i * 4 : 14 + i * 4]
        cx, cy = b[0] * width // 255, b[1] * height // 255
        r = (40 + b[2] % 160) * min(width, height) // 1024
        box = (cx - r, cy - r, cx + r, cy + r)
        colour = _mix(accent, light if i % 2 else dark, 0.35)
        if b[3] % 2:
            draw.ellipse(box, outline=colour, width=max(4, r // 8))
        else:
            draw.rectangle(box, fill=colour)

    _draw_prompt(draw, prompt, width, height)
    label_font = _font(max(14, height // 48))
    draw.text(
        (width // 40, height - height // 40),
        f"offline-v1 · {aspect_ratio}",
        font=label_font,
        anchor="ld",
        fill=(255, 255, 255),
        stroke_width=2,
        stroke_fill=(0, 0, 0),
    )

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=6)
    return out.getvalue()


def _draw_prompt(draw: ImageDraw.ImageDraw, prompt: str, width: int, height: int) -> None:
    size = max(16, min(width, height) // 14)
    font = _font(size)
    columns = max(8, int(width * 0.85 / (size * 0.55)))
    lines = textwrap.wrap(" ".join(prompt.split()), columns) or [""]
    if len(lines) > _MAX_TEXT_LINES:
        lines = [*lines[: _MAX_TEXT_LINES - 1], lines[_MAX_TEXT_LINES - 1][: columns - 1] + "…"]
    draw.multiline_text(
        (width // 2, height // 2),
        "\n".join(lines),
        font=font,
        anchor="mm",
        align="center",
        spacing=size // 4,
        fill=(255, 255, 255),
        stroke_width=max(2, size // 16),
        stroke_fill=(0, 0, 0),
    )


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no sized default font
        return ImageFont.load_default()


def _palette(
    seed: bytes, references: tuple[ReferenceImage, ...]
) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    dark = (seed[0] // 3, seed[1] // 3, seed[2] // 3)
    light = (128 + seed[3] // 2, 128 + seed[4] // 2, 128 + seed[5] // 2)
    accent = (seed[6], seed[7], seed[8])
    tint = _average_colour(references[0]) if references else None
    if tint is not None:
        # The first reference tints the picture, so its use is visible.
        dark, light, accent = _mix(dark, tint, 0.3), _mix(light, tint, 0.4), _mix(accent, tint, 0.5)
    return dark, light, accent


def _average_colour(reference: ReferenceImage) -> tuple[int, int, int] | None:
    try:
        with Image.open(io.BytesIO(reference.data)) as img:
            img.draft("RGB", (64, 64))
            r, g, b = img.convert("RGB").resize((1, 1), Image.Resampling.BOX).tobytes()
            return (r, g, b)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # unreadable references are ignored, as the interface promises


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )
