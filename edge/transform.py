"""Making a variant's bytes: Pillow on a bounded thread pool, never on the event loop.

Pillow releases the GIL while it decodes, resamples and encodes, so N threads use N cores.
The pool takes at most `workers + queue` jobs; one more is refused at once with 503 and
`Retry-After` (a burst of new variants must not pile up behind each other unboundedly).
What one job may cost (`Limits`) is checked from the source's header, before its pixels are
decoded: a 157-byte 1x40000 PNG asked for at `w=200` would otherwise be 200x8000000 (5.8 GB).

Why Pillow rather than libvips (loadtests/variants_bench.py, 1344x768 PNG → 400 px, CPU ms
per transform, Pillow / pyvips): WebP 63 / 57, JPEG 55 / 48, PNG 77 / 60, AVIF 149 / 144.
libvips saves 10-20 % of a transform that runs once per variant, and costs a system library
(43 Debian packages, ~100 MB, ImageMagick and Ghostscript among them), its own thread pool
to tame, and a 4x slower first call; Pillow is already a dependency, with AVIF in its wheels.
"""

from __future__ import annotations

import asyncio
import functools
import io
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from PIL import Image, features

from cache.errors import UnsupportedMediaType, UpstreamUnavailable, ValidationError
from cache.orientation import SWAPS_SIDES, UPRIGHT, orientation
from edge.variants import VariantSpec

T = TypeVar("T")

AVIF_SPEED = 8  # 0 slowest/smallest .. 10 fastest; 8 keeps a first AVIF near WebP's latency
WEBP_METHOD = 4
# Box-reduce by an integer factor first while the rest of the scale stays >= 1.5: half the
# resampling time at 1344 → 400 px, mean difference from a full LANCZOS below 0.5/255.
REDUCING_GAP = 1.5
# JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the time and memory (6000x6000 →
# 400 px WebP: 0.39 s and 304 MB → 0.10 s and 39 MB); that scaling is rougher than LANCZOS,
# so it stops at twice the needed size (as Pillow's thumbnail does).
DRAFT_GAP = 2.0
WHITE = (255, 255, 255)

NAMES = {"webp": "WebP", "avif": "AVIF", "jpeg": "JPEG", "png": "PNG"}
PIL_FORMATS = {"webp": "WEBP", "avif": "AVIF", "jpeg": "JPEG", "png": "PNG"}
# The largest side each encoder writes (and, for AVIF, that libavif reads back).
FORMAT_MAX_SIDE = {"webp": 16383, "avif": 32768, "jpeg": 65500, "png": 2**31 - 1}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one variant job may cost (MAX_VARIANT_DIMENSION, MAX_VARIANT_PIXELS)."""

    max_dimension: int  # each side of the variant, named in the query or derived
    max_pixels: int  # the source as decoded plus the variant: the job's memory, ~4 B each


@functools.cache
def avif_supported() -> bool:
    """Whether the installed Pillow can encode AVIF (wheels since Pillow 11.2 can)."""
    return bool(features.check("avif"))


def render(
    source: bytes,
    spec: VariantSpec,
    fmt: str,
    focal: tuple[float, float] | None,
    limits: Limits,
) -> bytes:
    """The variant's bytes: `source` turned upright (EXIF), resized per `spec` and encoded as
    `fmt` (webp, avif, jpeg, png), checked to decode. `cover` crops around `focal` ((x, y) in
    [0, 1]), or the centre without one. Over `limits`, or past what the encoder can write → 400;
    all of that is known from the source's header, before its pixels are decoded."""
    try:
        opened = Image.open(io.BytesIO(source))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnsupportedMediaType("The source image cannot be decoded.") from e
    turn = orientation(opened)
    upright = opened.size[::-1] if turn in SWAPS_SIDES else opened.size
    size = variant_size(spec, upright)
    _check_size(spec, size, upright, fmt, limits)
    _draft(opened, spec, size, upright, turn in SWAPS_SIDES)
    _check_pixels(opened.size, size, limits)
    icc = opened.info.get("icc_profile")
    try:
        opened.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnsupportedMediaType("The source image cannot be decoded.") from e
    except MemoryError:
        raise _out_of_memory() from None
    try:
        image = opened if turn not in UPRIGHT else opened.transpose(UPRIGHT[turn])
        del opened  # from here on only what the next step needs stays in memory
        image = _normalise_mode(image)
        image = _resize(image, spec, size, upright, fmt, focal)
        body = _encode(image, fmt, spec.quality, icc)
        del image
        _check_decodes(body, fmt, size)
    except MemoryError:
        raise _out_of_memory() from None
    return body


def variant_size(spec: VariantSpec, source: tuple[int, int]) -> tuple[int, int]:
    """The variant's (width, height) for a source of `source` (upright) pixels."""
    src_w, src_h = source
    w, h = spec.width, spec.height
    if w is None and h is None:
        return source
    if w is None or h is None:
        if w is not None:
            scale = w / src_w
        else:
            assert h is not None  # both None returned above
            scale = h / src_h
        if spec.fit == "inside":
            scale = min(scale, 1.0)
        return _times(source, scale)
    if spec.fit == "inside":
        return _times(source, min(w / src_w, h / src_h, 1.0))
    return w, h  # cover, contain, fill: the box itself


class TransformPool:
    """A ThreadPoolExecutor with a bound on the jobs it holds (running + waiting)."""

    def __init__(self, workers: int, queue: int, retry_after_s: int = 1) -> None:
        self.workers = workers
        self.capacity = workers + max(0, queue)
        self.retry_after_s = retry_after_s
        self.pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="banatie-transform")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on a worker thread; over capacity → UpstreamUnavailable (503)."""
        with self._lock:
            if self.pending >= self.capacity:
                raise UpstreamUnavailable(
                    "Too many image variants are being encoded right now; try again shortly.",
                    retry_after=self.retry_after_s,
                )
            self.pending += 1
        try:
            future = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down: the process is stopping
            self._release(None)
            raise UpstreamUnavailable("The server is shutting down.", retry_after=1) from None
        # Counted until the thread is done, even if the awaiting task goes away first.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def _release(self, _: object) -> None:
        with self._lock:
            self.pending -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# -- the steps --------------------------------------------------------------------------------


def _check_size(
    spec: VariantSpec, size: tuple[int, int], source: tuple[int, int], fmt: str, limits: Limits
) -> None:
    """Every side within MAX_VARIANT_DIMENSION (a derived side too: `w=200` of a 1x40000
    image is 200x8000000) and within what the format can hold."""
    w, h = size
    if max(w, h) > limits.max_dimension:
        field = "h" if h > limits.max_dimension and spec.height is None else "w"
        raise ValidationError(
            f"This variant would be {w}x{h} pixels (the source is {source[0]}x{source[1]}); "
            f"a variant is at most {limits.max_dimension} pixels a side.",
            field=field,
        )
    if max(w, h) > FORMAT_MAX_SIDE[fmt]:
        raise ValidationError(
            f"{NAMES[fmt]} images are at most {FORMAT_MAX_SIDE[fmt]} pixels a side; "
            f"this variant would be {w}x{h}.",
            field="format",
        )


def _draft(
    opened: Image.Image,
    spec: VariantSpec,
    size: tuple[int, int],
    source: tuple[int, int],
    swapped: bool,
) -> None:
    """Let a JPEG decode at the smallest 1/2^n scale that still covers the variant."""
    if opened.format != "JPEG" or size == source:
        return
    (w, h), (src_w, src_h) = size, source
    if spec.fit == "cover" and spec.width is not None and spec.height is not None:
        scale = max(w / src_w, h / src_h)  # the crop is cut from the source at this scale
        needed = (src_w * scale, src_h * scale)
    elif spec.fit == "contain" and spec.width is not None and spec.height is not None:
        needed = _times(source, min(w / src_w, h / src_h))
    else:
        needed = (w, h)
    wanted = (max(1, math.ceil(needed[0] * DRAFT_GAP)), max(1, math.ceil(needed[1] * DRAFT_GAP)))
    opened.draft(None, wanted[::-1] if swapped else wanted)


def _check_pixels(decoded: tuple[int, int], size: tuple[int, int], limits: Limits) -> None:
    """The job's memory: the source as it will be decoded plus the variant."""
    needed = decoded[0] * decoded[1] + size[0] * size[1]
    if needed > limits.max_pixels:
        raise ValidationError(
            f"This variant needs {needed} pixels in memory (the source decoded at "
            f"{decoded[0]}x{decoded[1]} and the {size[0]}x{size[1]} result); a variant may "
            f"use at most {limits.max_pixels}. Ask for a smaller size.",
            field="w",
        )


def _normalise_mode(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    wanted = "RGBA" if has_alpha else "RGB"
    return image if image.mode == wanted else image.convert(wanted)


def _resize(
    image: Image.Image,
    spec: VariantSpec,
    size: tuple[int, int],
    source: tuple[int, int],
    fmt: str,
    focal: tuple[float, float] | None,
) -> Image.Image:
    """`image` (the source, perhaps decoded smaller: see `_draft`) made `size`."""
    lanczos = Image.Resampling.LANCZOS
    (w, h), (src_w, src_h) = size, image.size
    both = spec.width is not None and spec.height is not None
    if both and spec.fit == "cover":
        scale = max(w / src_w, h / src_h)
        crop_w, crop_h = w / scale, h / scale
        fx, fy = focal if focal is not None else (0.5, 0.5)
        left = min(max(fx * src_w - crop_w / 2, 0.0), src_w - crop_w)
        top = min(max(fy * src_h - crop_h / 2, 0.0), src_h - crop_h)
        box = (left, top, left + crop_w, top + crop_h)
        return image.resize(size, lanczos, box=box, reducing_gap=REDUCING_GAP)
    if both and spec.fit == "contain":
        # The whole image inside the box, letterboxed (transparent where the format can be).
        fitted = _resized(image, _times(source, min(w / source[0], h / source[1])))
        if fmt == "jpeg":
            canvas = Image.new("RGB", size, WHITE)
        else:
            canvas = Image.new("RGBA", size, (0, 0, 0, 0))
            fitted = fitted.convert("RGBA")
        offset = ((w - fitted.width) // 2, (h - fitted.height) // 2)
        canvas.paste(fitted, offset, fitted if fitted.mode == "RGBA" else None)
        return canvas
    return _resized(image, size)  # fill, inside, one side given, or none


def _times(size: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _encode(image: Image.Image, fmt: str, quality: int, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    if fmt == "jpeg" and image.mode == "RGBA":
        flat = Image.new("RGB", image.size, WHITE)
        flat.paste(image, mask=image.getchannel("A"))
        image = flat
    options: dict[str, int] = {
        "jpeg": {"quality": quality},
        "webp": {"quality": quality, "method": WEBP_METHOD},
        # One thread per job: the pool already runs one job per core.
        "avif": {"quality": quality, "speed": AVIF_SPEED, "max_threads": 1},
        "png": {"compress_level": 6},
    }[fmt]
    try:
        image.save(out, PIL_FORMATS[fmt], **options, **extra)
    except (OSError, ValueError, RuntimeError) as e:
        # Limits the checks above do not know of (libwebp's, libavif's, a library update's).
        raise ValidationError(
            f"The {NAMES[fmt]} encoder cannot write this {image.width}x{image.height} "
            f"variant ({e}); ask for another size or format.",
            field="format",
        ) from None
    return out.getvalue()


def _check_decodes(body: bytes, fmt: str, size: tuple[int, int]) -> None:
    """Read the variant back before it is cached forever: an encoder may write what no decoder
    takes (libavif wrote 1x40000 AVIFs it then refused to read)."""
    try:
        with Image.open(io.BytesIO(body), formats=[PIL_FORMATS[fmt]]) as check:
            check.load()
            readable = check.size == size
    except MemoryError:
        raise
    except Exception:
        readable = False
    if not readable:
        raise ValidationError(
            f"The {NAMES[fmt]} encoder wrote a {size[0]}x{size[1]} image that cannot be read "
            "back; ask for another size or format.",
            field="format",
        )


def _out_of_memory() -> UpstreamUnavailable:
    return UpstreamUnavailable(
        "Not enough memory to encode this image variant right now; try again shortly.",
        retry_after=5,
    )
