"""Image variants: the query parameters that ask for one, normalised, and the keys it lives under.

A variant is a source image resized (`w`, `h`, `dpr`, `fit`), re-encoded (`format`, `q`) and, for
`fit=cover`, cropped around the source's focal point. Two requests that would produce the same
bytes normalise to the same key: `dpr` is folded into the pixel size, `fit` is dropped when only
one side is given, `q` is dropped for PNG, and the focal point only counts where a crop happens.

Nothing here does I/O: the edge parses with `parse_variant_query`, negotiates with `want`, and
names the stored result with `Want.canonical` / `variant_object_key`.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

import xxhash

from cache.contract import FITS, FORMATS
from cache.errors import ValidationError

VARIANT_PARAMS = ("w", "h", "fit", "format", "q", "dpr")
ORIGINAL = "orig"  # the source's own type; also what `auto` falls back to
MAX_DPR = 3.0
VERSION = "var1"

CONTENT_TYPES = {
    "webp": "image/webp",
    "avif": "image/avif",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
FORMAT_OF = {v: k for k, v in CONTENT_TYPES.items()}

_SEP = "\x1f"
_INT = re.compile(r"[0-9]{1,6}")
_NUMBER = re.compile(r"[0-9]{1,3}(\.[0-9]{1,4})?")
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """What the query asks for, normalised; `format` may still be "auto" or ORIGINAL."""

    width: int | None  # device pixels: `w` x `dpr`, capped
    height: int | None
    fit: str
    format: str
    quality: int

    @property
    def negotiates(self) -> bool:
        """Whether the answer depends on the request's Accept header (`Vary: Accept`)."""
        return self.format == "auto"


@dataclass(frozen=True, slots=True)
class Want:
    """A spec with `auto` settled by the Accept header: avif, webp, jpeg, png or ORIGINAL."""

    spec: VariantSpec
    format: str

    @property
    def vary(self) -> bool:
        return self.spec.negotiates

    def l1_key(self, source: str) -> str:
        """The in-process cache key for this variant of `source` (a live canonical, an image)."""
        s = self.spec
        return f"var{_SEP}{source}{_SEP}{s.width}x{s.height}:{s.fit}:{self.format}:{s.quality}"

    def output_format(self, source_type: str) -> str:
        """The concrete format: ORIGINAL becomes the source's type (PNG if it is unknown)."""
        if self.format != ORIGINAL:
            return self.format
        return FORMAT_OF.get(source_type, "png")

    def canonical(
        self, project_id: str, etag: str, source_type: str, focal: tuple[float, float] | None
    ) -> str:
        """Everything that decides the variant's bytes: the source's content hash, the
        normalised parameters and, when the variant is a crop, the focal point."""
        s = self.spec
        fmt = self.output_format(source_type)
        quality = 0 if fmt == "png" else s.quality
        crops = s.fit == "cover" and s.width is not None and s.height is not None
        point = "-" if not crops or focal is None else f"{focal[0]:.4f},{focal[1]:.4f}"
        return _SEP.join(
            (
                VERSION,
                project_id,
                etag,
                str(s.width),
                str(s.height),
                s.fit,
                fmt,
                str(quality),
                point,
            )
        )


def variant_digest(canonical: str) -> str:
    """The index name of a variant: `var:` and the xxh3_128 of its canonical string."""
    return "var:" + xxhash.xxh3_128_hexdigest(canonical.encode())


def variant_object_key(org: str, project: str, digest: str) -> str:
    """Where a variant's bytes are stored; its manifest sits beside it as `.json`."""
    return f"{org}/{project}/var/{digest.removeprefix('var:')}"


def variant_manifest_key(org: str, project: str, digest: str) -> str:
    return variant_object_key(org, project, digest) + ".json"


def parse_variant_query(
    raw: bytes, max_dimension: int, default_quality: int = 80, avif: bool = True
) -> VariantSpec | None:
    """The variant a raw query string asks for; None when it names no variant parameter.

    Malformed values are a 400 naming the field. Sizes above `max_dimension` are refused;
    a `dpr` that would exceed it is scaled down to fit (the page asked for a valid size).
    """
    values = _variant_values(raw)
    if not values:
        return None
    width = _dimension(values, "w", max_dimension)
    height = _dimension(values, "h", max_dimension)

    fit = values.get("fit", "cover")
    if fit not in FITS:
        raise ValidationError(f"fit must be one of {', '.join(FITS)}.", field="fit")

    fmt = values.get("format", ORIGINAL)
    if "format" in values and fmt not in FORMATS:
        raise ValidationError(f"format must be one of {', '.join(FORMATS)}.", field="format")
    if fmt == "avif" and not avif:
        raise ValidationError(
            "format=avif is not supported by this server's image library; use webp or format=auto.",
            field="format",
        )

    quality = default_quality
    if "q" in values:
        raw_q = values["q"]
        if not _INT.fullmatch(raw_q) or not 1 <= int(raw_q) <= 100:
            raise ValidationError("q must be an integer from 1 to 100.", field="q")
        quality = int(raw_q)

    dpr = 1.0
    if "dpr" in values:
        raw_dpr = values["dpr"]
        dpr = float(raw_dpr) if _NUMBER.fullmatch(raw_dpr) else math.nan
        if not 1.0 <= dpr <= MAX_DPR:
            raise ValidationError("dpr must be a number from 1 to 3.", field="dpr")

    if width is not None or height is not None:
        width, height = _scaled(width, height, dpr, max_dimension)
    if width is None or height is None:
        fit = "inside" if fit == "inside" else "cover"  # one side: every fit but inside agrees
    return VariantSpec(width, height, fit, fmt, quality)


def want(spec: VariantSpec, accept: bytes | None, avif: bool = True) -> Want:
    """Settle `format=auto` from Accept: AVIF, then WebP, then the source's own type."""
    if not spec.negotiates:
        return Want(spec, spec.format)
    accepted = _accepted(accept or b"")
    if avif and "image/avif" in accepted:
        return Want(spec, "avif")
    if "image/webp" in accepted:
        return Want(spec, "webp")
    return Want(spec, ORIGINAL)


class VariantParser:
    """`parse_variant_query` with the settings bound and hot query strings remembered."""

    def __init__(
        self, max_dimension: int, default_quality: int, avif: bool, memo: int = 4096
    ) -> None:
        self.avif = avif
        self._max_bytes = 2048
        parse = functools.partial(
            parse_variant_query,
            max_dimension=max_dimension,
            default_quality=default_quality,
            avif=avif,
        )
        self._parse = parse
        self._memo = functools.lru_cache(maxsize=memo)(parse)

    def __call__(self, raw: bytes) -> VariantSpec | None:
        if len(raw) <= self._max_bytes:
            return self._memo(raw)
        return self._parse(raw)


# -- helpers ----------------------------------------------------------------------------------


def _variant_values(raw: bytes) -> dict[str, str]:
    if not raw:
        return {}
    if _BAD_PERCENT.search(raw):
        raise ValidationError("The query string has a malformed percent-escape.", field="query")
    values: dict[str, str] = {}
    for part in raw.split(b"&"):
        raw_name, _, raw_value = part.partition(b"=")
        if not raw_name:
            continue
        try:
            name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationError("The query string is not valid UTF-8.", field="query") from None
        if name not in VARIANT_PARAMS:
            continue
        if name in values:
            raise ValidationError(f"{name} is given more than once.", field=name)
        try:
            values[name] = (
                unquote_to_bytes(raw_value.replace(b"+", b" ")).decode("utf-8").strip().lower()
            )
        except UnicodeDecodeError:
            raise ValidationError(f"{name} is not valid UTF-8.", field=name) from None
    return values


def _dimension(values: dict[str, str], name: str, max_dimension: int) -> int | None:
    raw = values.get(name)
    if raw is None:
        return None
    if not _INT.fullmatch(raw) or not 1 <= int(raw) <= max_dimension:
        raise ValidationError(
            f"{name} must be an integer from 1 to {max_dimension} (pixels).", field=name
        )
    return int(raw)


def _scaled(
    width: int | None, height: int | None, dpr: float, max_dimension: int
) -> tuple[int | None, int | None]:
    """Device pixels: the CSS size times dpr, scaled down (keeping the ratio) to the cap."""
    sides = [s * dpr for s in (width, height) if s is not None]
    shrink = min(1.0, max_dimension / max(sides))
    return (
        None if width is None else max(1, round(width * dpr * shrink)),
        None if height is None else max(1, round(height * dpr * shrink)),
    )


def _accepted(header: bytes) -> set[str]:
    """The media types an Accept header lists with a non-zero q (wildcards count for nothing:
    browsers that decode AVIF or WebP name them)."""
    types: set[str] = set()
    for item in header.decode("latin-1").lower().split(","):
        media, *params = (p.strip() for p in item.split(";"))
        refused = any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params)
        if media and not refused:
            types.add(media)
    return types
