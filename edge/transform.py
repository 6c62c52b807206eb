"""Making a variant's bytes: Pillow on a bounded thread pool, never on the event loop.

Pillow releases the GIL while it decodes, resamples and encodes, so N threads use N cores.
The pool takes at most `workers + queue` jobs; one more is refused at once with 503 and
`Retry-After` (a burst of new variants must not pile up behind each other unboundedly).

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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from PIL import Image, ImageOps, features

from cache.errors import UnsupportedMediaType, UpstreamUnavailable
from cache.variants import VariantSpec

T = TypeVar("T")

AVIF_SPEED = 8  # 0 slowest/smallest .. 10 fastest; 8 keeps a first AVIF near WebP's latency
WEBP_METHOD = 4
# Box-reduce by an integer factor first while the rest of the scale stays >= 1.5: half the
# resampling time at 1344 → 400 px, mean difference from a full LANCZOS below 0.5/255.
REDUCING_GAP = 1.5
WHITE = (255, 255, 255)


@functools.cache
def avif_supported() -> bool:
    """Whether the installed Pillow can encode AVIF (wheels since Pillow 11.2 can)."""
    return bool(features.check("avif"))


def render(source: bytes, spec: VariantSpec, fmt: str, focal: tuple[float, float] | None) -> bytes:
    """The variant's bytes: `source` resized per `spec`, encoded as `fmt` (webp, avif, jpeg,
    png). `cover` crops around `focal` ((x, y) in [0, 1]), or the centre without one."""
    try:
        with Image.open(io.BytesIO(source)) as opened:
            image = ImageOps.exif_transpose(opened)  # variants carry no EXIF: apply it
            icc = opened.info.get("icc_profile")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UnsupportedMediaType("The source image cannot be decoded.") from e
    image = _normalise_mode(image)
    image = _resize(image, spec, fmt, focal)
    return _encode(image, fmt, spec.quality, icc)


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
                    "Too many image variants are being made right now; try again shortly.",
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


def _normalise_mode(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    wanted = "RGBA" if has_alpha else "RGB"
    return image if image.mode == wanted else image.convert(wanted)


def _resize(
    image: Image.Image, spec: VariantSpec, fmt: str, focal: tuple[float, float] | None
) -> Image.Image:
    src_w, src_h = image.size
    w, h = spec.width, spec.height
    if w is None and h is None:
        return image
    lanczos = Image.Resampling.LANCZOS
    if w is None or h is None:
        scale = w / src_w if w is not None else h / src_h  # type: ignore[operator]
        if spec.fit == "inside":
            scale = min(scale, 1.0)
        return _scaled(image, scale)
    if spec.fit == "fill":
        return image.resize((w, h), lanczos, reducing_gap=REDUCING_GAP)
    if spec.fit == "cover":
        scale = max(w / src_w, h / src_h)
        crop_w, crop_h = w / scale, h / scale
        fx, fy = focal if focal is not None else (0.5, 0.5)
        left = min(max(fx * src_w - crop_w / 2, 0.0), src_w - crop_w)
        top = min(max(fy * src_h - crop_h / 2, 0.0), src_h - crop_h)
        box = (left, top, left + crop_w, top + crop_h)
        return image.resize((w, h), lanczos, box=box, reducing_gap=REDUCING_GAP)
    scale = min(w / src_w, h / src_h)
    if spec.fit == "inside":
        return _scaled(image, min(scale, 1.0))
    # contain: the whole image inside the box, letterboxed (transparent where the format can)
    fitted = _scaled(image, scale)
    if fmt == "jpeg":
        canvas = Image.new("RGB", (w, h), WHITE)
    else:
        canvas = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        fitted = fitted.convert("RGBA")
    offset = ((w - fitted.width) // 2, (h - fitted.height) // 2)
    canvas.paste(fitted, offset, fitted if fitted.mode == "RGBA" else None)
    return canvas


def _scaled(image: Image.Image, scale: float) -> Image.Image:
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _encode(image: Image.Image, fmt: str, quality: int, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    extra = {"icc_profile": icc} if icc else {}
    if fmt == "jpeg":
        if image.mode == "RGBA":
            flat = Image.new("RGB", image.size, WHITE)
            flat.paste(image, mask=image.getchannel("A"))
            image = flat
        image.save(out, "JPEG", quality=quality, **extra)
    elif fmt == "webp":
        image.save(out, "WEBP", quality=quality, method=WEBP_METHOD, **extra)
    elif fmt == "avif":
        # One thread per job: the pool already runs one job per core.
        image.save(out, "AVIF", quality=quality, speed=AVIF_SPEED, max_threads=1, **extra)
    elif fmt == "png":
        image.save(out, "PNG", compress_level=6, **extra)
    else:
        raise ValueError(f"unknown variant format {fmt!r}")
    return out.getvalue()
