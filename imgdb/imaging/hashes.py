"""Per-image hashes for dupes: pHash (of the whole image and of its centre square), dHash,
the sha256 of the decoded pixels, and a tiny grey thumbnail for the dupes screen.

Every hash is of one decode, ``decode(data, target=HASH_TARGET)``, whoever computes it:
ingest (``Processor._prepare`` reuses the model's decode when its target is the same) or
``dedup.hashes.compute_hashes`` for images stored without a row. A JPEG decodes at reduced
scale (``draft``) there, so two files with the same JPEG data (a copy with its metadata
stripped) still have identical pixels; a PNG made from a large JPEG is found by its pHash
instead.

The centre square's pHash is what survives a CMS thumbnail: a square centre crop of a
portrait photo shares it with the photo while the whole-image hashes differ. Transparent
images are hashed as drawn on mid-grey (and their pixel hash includes the alpha band), so
two logos that are blank on white are not "identical".

The thumbnail (``THUMB_SIDE`` px on its long side, the same luminance the hashes start
from) lets ``dedup.screen`` test whether one image could be a crop or rendition of another
without decoding either again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgdb.errors import DecodeError

if TYPE_CHECKING:
    from imgdb.imaging.decode import Decoded

#: The decode every hash is computed from: ``decode(data, target=HASH_TARGET)``, the bundled
#: model's decode target, so ingest hashes the pixels it decoded anyway. Changing it, or
#: what ``decode`` returns for it, changes the hashes: bump ``HASHER`` with it.
HASH_TARGET = (256, 256)
#: The short side the luminance is box-reduced to (at least) before imagehash resamples it:
#: three times pHash's 32 px input, where a further LANCZOS pass adds nothing visible.
REDUCED_SIDE = 96

#: The long side of the grey thumbnail kept for the dupes screen (``dedup.screen``).
THUMB_SIDE = 32

#: Identifies how image_hashes rows were computed; rows from another hasher are recomputed.
HASHER = "imagehash4-phash8-dhash8-center8+rgba-sha256-decode256-reduce96-thumb32-v4"


@dataclass
class ImageHashes:
    phash: int | None  # 64-bit DCT perceptual hash (imagehash.phash)
    dhash: int | None  # 64-bit difference hash
    pixel_sha256: str | None  # sha256 of size + decoded RGB(A) pixels
    error: str | None = None  # why there are no hashes ("unreadable" or a decode reason)
    square_phash: int | None = None  # pHash of the centre square
    thumb: bytes | None = None  # grey thumbnail, uint8 rows, THUMB_SIDE px on its long side
    thumb_width: int | None = None


def hash_image(image: Any, alpha: Any = None) -> ImageHashes:
    """The hashes of a decoded RGB ``PIL.Image`` and, for a transparent one, its alpha band."""
    import imagehash
    from PIL import Image

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    digest = hashlib.sha256(f"{w}x{h}:{'RGBA' if alpha is not None else 'RGB'}:".encode())
    digest.update(rgb.tobytes())
    if alpha is not None:
        digest.update(alpha.tobytes())
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, (128, 128, 128)), alpha)
    gray = rgb.convert("L")  # every hash starts from luminance; convert once
    # imagehash's LANCZOS resize costs in proportion to its input: a box reduction first
    # (one pass, shared by the three hashes) makes it several times cheaper.
    factor = min(w, h) // REDUCED_SIDE
    if factor > 1:
        gray = gray.reduce(factor)
    w, h = gray.size
    side = min(w, h)
    center = gray.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    scale = THUMB_SIDE / max(w, h)
    thumb = gray.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)
    return ImageHashes(
        bits_to_int(imagehash.phash(gray).hash),
        bits_to_int(imagehash.dhash(gray).hash),
        digest.hexdigest(),
        square_phash=bits_to_int(imagehash.phash(center).hash),
        thumb=thumb.tobytes(),
        thumb_width=thumb.width,
    )


def hash_bytes(data: bytes) -> ImageHashes:
    """Hashes of an encoded image: of ``decode(data, target=HASH_TARGET)`` (EXIF-rotated)."""
    from imgdb.imaging.decode import decode

    try:
        decoded = decode(data, target=HASH_TARGET)
    except DecodeError as exc:
        return ImageHashes(None, None, None, exc.reason)
    return hash_image(decoded.image, decoded.alpha)


def hash_decoded(data: bytes, decoded: Decoded, target: tuple[int, int] | None) -> ImageHashes:
    """Hashes of ``data``, given ``decoded = decode(data, target=target)`` (ingest's decode).

    The decode is reused when ``target`` is ``HASH_TARGET``; otherwise its pixels may be
    another size than the hashes' (JPEG draft scale), so the hashes decode again.
    """
    if target != HASH_TARGET:
        return hash_bytes(data)
    return hash_image(decoded.image, decoded.alpha)


def hash_row(hashes: ImageHashes) -> dict[str, Any]:
    """The ``image_hashes`` columns of ``hashes`` (but the id and the time), for the store."""
    return {
        "phash": hashes.phash,
        "dhash": hashes.dhash,
        "pixel_sha256": hashes.pixel_sha256,
        "square_phash": hashes.square_phash,
        "thumb": hashes.thumb,
        "thumb_width": hashes.thumb_width,
        "error": hashes.error,
        "hasher": HASHER,
    }


def row_json(row: dict[str, Any]) -> str:
    """``hash_row``'s dict as JSON (the thumbnail as base64), to pass between processes."""
    import base64

    thumb = row.get("thumb")
    return json.dumps({**row, "thumb": base64.b64encode(thumb).decode() if thumb is not None else None})


def row_from_json(text: str) -> dict[str, Any]:
    """The inverse of ``row_json``."""
    import base64

    row = json.loads(text)
    if row.get("thumb") is not None:
        row["thumb"] = base64.b64decode(row["thumb"])
    return row


# ---------------------------------------------------------------------------------------
# bit helpers


def bits_to_int(bits: np.ndarray) -> int:
    """A boolean bit array as an int: row-major, first bit most significant.

    The same value as ``int(str(imagehash_obj), 16)``.
    """
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), "big")


def hamming(a: int, b: int) -> int:
    """Bits that differ between two hashes."""
    return bin(a ^ b).count("1")
