"""Bytes to RGB pixels: the one decode path for every source (web, folder, query).

Index and query go through ``decode`` with the same ``target`` so their embeddings agree.
Every way a file can be unusable ends in ``DecodeError`` with a short ``reason``.

Size guards, checked from the header before any pixel is decoded:

* ``bomb``: more source pixels than Pillow's decompression-bomb cap;
* ``aspect``: one side over ``MAX_ASPECT`` times the other, or (with a ``target``) an
  image that scaling its short side up to the target would make larger than
  ``MAX_TARGET_PIXELS``. Preprocessing scales the short side to the model's size, so a
  270-byte 65000x1 PNG would otherwise become a 16,640,000x256 image (12 GB of RGB).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from imgdb.errors import DecodeError

#: Byte cap for one image file (web bodies have their own cap in fetch.FetchPolicy).
MAX_BYTES = 50 * 2**20
#: Longest side over shortest side beyond which an image is refused (reason "aspect").
#: Wide panoramas are about 10:1 and banners 30:1; past 100:1 it is a rule or a strip.
MAX_ASPECT = 100
#: Cap on the pixels an image would have once its short side is scaled up to ``target``.
MAX_TARGET_PIXELS = 32 * 2**20

# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


@dataclass
class Decoded:
    image: Image.Image  # RGB; for JPEG possibly already reduced by draft()
    width: int  # original size, after EXIF orientation
    height: int
    format: str  # Pillow's name: JPEG, PNG, WEBP, GIF, BMP, TIFF, ...
    alpha: Image.Image | None = None  # the alpha band ("L") when some pixel is not opaque


def sniff_markup(data: bytes) -> str | None:
    """'svg' or 'html' when the bytes are markup rather than pixels."""
    head = data[:1024].lstrip().lower()
    if b"<svg" in head:
        return "svg"
    if head.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in head:
        return "html"
    return None


def decode(data: bytes, *, target: tuple[int, int] | None = None, max_bytes: int = MAX_BYTES) -> Decoded:
    """Decode ``data`` to RGB. ``target`` lets JPEG decode at reduced scale (>= target).

    GIF and other animations give their first frame; alpha is flattened onto white.
    """
    if not data:
        raise DecodeError("empty", "empty file")
    if len(data) > max_bytes:
        raise DecodeError("too-large", f"{len(data)} bytes is over the {max_bytes}-byte cap")
    markup = sniff_markup(data)
    if markup == "svg":
        raise DecodeError("svg", "SVG vector images are not supported")
    if markup == "html":
        raise DecodeError("not-image", "an HTML page, not an image")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; we refuse at the cap.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
                raise DecodeError("bomb", f"{width}x{height} pixels is over the decompression-bomb cap")
            _check_shape(width, height, target)
            fmt = img.format or "unknown"
            orientation = img.getexif().get(0x0112, 1)
            if orientation in _TRANSPOSED:
                width, height = height, width
            if fmt == "JPEG" and target is not None:
                # Decode at 1/2, 1/4 or 1/8 scale, never smaller than target: much less work.
                img.draft("RGB", _draft_size(img.size, target))
            img.load()
            upright = ImageOps.exif_transpose(img)
            alpha = alpha_band(upright)
            rgb = to_rgb(upright)
    except DecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecodeError("bomb", str(exc)) from None
    except UnidentifiedImageError:
        raise DecodeError("not-image", "not a recognised image format") from None
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise DecodeError("truncated", "truncated image file") from None
        raise DecodeError("corrupt", f"cannot decode: {exc}") from None
    except (SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError) as exc:
        raise DecodeError("corrupt", f"cannot decode: {exc}") from None
    return Decoded(rgb, width, height, fmt, alpha)


def _check_shape(width: int, height: int, target: tuple[int, int] | None) -> None:
    """Refuse extreme aspect ratios and images that scaling up to ``target`` would blow up."""
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise DecodeError("corrupt", f"{width}x{height} has no pixels")
    if long > MAX_ASPECT * short:
        raise DecodeError("aspect", f"{width}x{height} is over the {MAX_ASPECT}:1 aspect-ratio cap")
    if target is not None:
        scale = max(1.0, max(target) / short)
        scaled = width * height * scale * scale
        if scaled > MAX_TARGET_PIXELS:
            raise DecodeError(
                "aspect",
                f"{width}x{height} scaled to {max(target)} px on its short side is over {MAX_TARGET_PIXELS} pixels",
            )


def _draft_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Scale request for draft(): the shorter side must still cover target's longer side."""
    need = max(target)
    w, h = size
    scale = need / min(w, h)
    return (max(1, round(w * scale)), max(1, round(h * scale)))


def alpha_band(img: Image.Image) -> Image.Image | None:
    """The image's alpha as an "L" band, or None when it has none or is fully opaque."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode not in ("RGBA", "LA", "PA", "RGBa", "La"):
        return None
    band = img.getchannel("A")
    lowest, _highest = band.getextrema()
    return band if isinstance(lowest, int) and lowest < 255 else None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB: alpha onto white, 16-bit scaled, CMYK/palette/grey converted."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _scale_to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    import numpy as np

    arr = np.asarray(img, dtype=np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(scaled.astype(np.uint8), "L")
