"""Bytes to RGB pixels: the one decode path for every source (web, folder, query).

Index and query go through ``decode`` with the same ``target`` so their embeddings agree.
Every way a file can be unusable ends in ``DecodeError`` with a short ``reason``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from imgdb.errors import DecodeError

#: Byte cap for one image file (web bodies have their own cap in fetch.FetchPolicy).
MAX_BYTES = 50 * 2**20

# EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}


@dataclass
class Decoded:
    image: Image.Image  # RGB; for JPEG possibly already reduced by draft()
    width: int  # original size, after EXIF orientation
    height: int
    format: str  # Pillow's name: JPEG, PNG, WEBP, GIF, BMP, TIFF, ...


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
            fmt = img.format or "unknown"
            orientation = img.getexif().get(0x0112, 1)
            if orientation in _TRANSPOSED:
                width, height = height, width
            if fmt == "JPEG" and target is not None:
                # Decode at 1/2, 1/4 or 1/8 scale, never smaller than target: 2-4x faster.
                img.draft("RGB", _draft_size(img.size, target))
            img.load()
            rgb = to_rgb(ImageOps.exif_transpose(img))
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
    return Decoded(rgb, width, height, fmt)


def _draft_size(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """Scale request for draft(): the shorter side must still cover target's longer side."""
    need = max(target)
    w, h = size
    scale = need / min(w, h)
    return (max(1, round(w * scale)), max(1, round(h * scale)))


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
