"""What an image's bytes are: type by signature, size measured with Pillow, limits first."""

from __future__ import annotations

import asyncio
import hashlib
import io
from dataclasses import dataclass

from PIL import Image as PILImage

from cache.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError

PILImage.MAX_IMAGE_PIXELS = None  # our own limit is checked before decoding


@dataclass(frozen=True)
class ImageFacts:
    mime_type: str
    width: int
    height: int
    size: int
    content_hash: str  # sha256 hex of the bytes


def sniff(data: bytes) -> str | None:
    """The MIME type the signature declares: PNG, JPEG or WebP; anything else is None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


_PIL_FORMAT = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}


def inspect_image(data: bytes, max_bytes: int, max_pixels: int) -> ImageFacts:
    """Check and measure; raises 413 (too big), 415 (not PNG/JPEG/WebP) or 400 (undecodable)."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is larger than {max_bytes} bytes.")
    if not data:
        raise ValidationError("The file is empty.", field="file")
    mime = sniff(data)
    if mime is None:
        raise UnsupportedMediaType("Only PNG, JPEG and WebP images are accepted.")
    try:
        with PILImage.open(io.BytesIO(data), formats=[_PIL_FORMAT[mime]]) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise ValidationError(
                    f"The image has {width}x{height} pixels; at most {max_pixels} are accepted.",
                    field="file",
                )
            img.load()  # decode fully: truncated or corrupt files fail here
    except ValidationError:
        raise
    except Exception:
        raise ValidationError("The file could not be decoded as an image.", field="file") from None
    return ImageFacts(mime, width, height, len(data), hashlib.sha256(data).hexdigest())


async def inspect_image_async(data: bytes, max_bytes: int, max_pixels: int) -> ImageFacts:
    return await asyncio.to_thread(inspect_image, data, max_bytes, max_pixels)
