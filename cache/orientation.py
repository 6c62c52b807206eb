"""Which way up an image is: its EXIF orientation, read one way for the size the API reports
and for the edge's variants, so both agree with what a browser shows of the original."""

from __future__ import annotations

from PIL import Image

ORIENTATION_TAG = 0x0112
# EXIF orientation → the transpose that makes the image upright (as ImageOps.exif_transpose).
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SWAPS_SIDES = frozenset((5, 6, 7, 8))


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) an opened image declares, 1 without one.

    Read from the EXIF block its header carries, so nothing is decoded: a PNG whose eXIf
    chunk comes after its pixels counts as upright (browsers disagree on those anyway)."""
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except Exception:  # a damaged EXIF block: the pixels are still an image
        return 1
    value = exif.get(ORIENTATION_TAG, 1)
    return value if value in UPRIGHT else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: the stored size, sides swapped for a quarter turn."""
    width, height = image.size
    return (height, width) if orientation(image) in SWAPS_SIDES else (width, height)
