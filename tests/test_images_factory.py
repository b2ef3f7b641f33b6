"""The generated test images are what the rest of the suite assumes they are."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from tests import images as ti


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def _diff(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute RGB difference (0..255) at a common small size."""
    size = (128, 96)
    x = np.asarray(a.convert("RGB").resize(size), dtype=np.float32)
    y = np.asarray(b.convert("RGB").resize(size), dtype=np.float32)
    return float(np.abs(x - y).mean())


@pytest.fixture(scope="module")
def img() -> Image.Image:
    return ti.photo(1)


def test_photo_is_deterministic_and_sized():
    a, b = ti.photo(7), ti.photo(7)
    assert a.mode == "RGB" and a.size == (640, 480)
    assert a.tobytes() == b.tobytes()
    assert ti.photo(7, size=(200, 100)).size == (200, 100)


def test_different_seeds_differ_clearly():
    pics = [ti.photo(s) for s in range(10)]
    diffs = [_diff(pics[i], pics[j]) for i in range(10) for j in range(i + 1, 10)]
    assert min(diffs) > 15


def test_photo_survives_reencode_and_half_size():
    pic = ti.photo(3)
    v = ti.variants(pic)
    assert set(v) == {"original", "reencode_q60", "half_size", "crop_5pct", "grayscale"}
    for key in ("reencode_q60", "half_size"):
        assert _diff(_open(v[key]), pic) < 5
    assert _open(v["half_size"]).size == (320, 240)
    assert _open(v["grayscale"]).mode == "L"
    cropped = _open(v["crop_5pct"])
    assert 0.9 * 640 < cropped.width < 640 and 0.9 * 480 < cropped.height < 480
    # A variant is far closer to its own original than to any other picture.
    assert _diff(_open(v["reencode_q60"]), pic) < 0.2 * _diff(ti.photo(4), pic)


def test_families_are_separated():
    fams = [[ti.family(f, m) for m in range(3)] for f in range(ti.FAMILIES)]
    within = max(_diff(fams[f][0], fams[f][m]) for f in range(ti.FAMILIES) for m in (1, 2))
    across = min(_diff(fams[f][0], fams[g][0]) for f in range(ti.FAMILIES) for g in range(ti.FAMILIES) if f != g)
    assert ti.family(2, 1).tobytes() == ti.family(2, 1).tobytes()
    assert ti.family(2, 1).tobytes() != ti.family(2, 2).tobytes()
    # Colour statistics alone separate families; members share them.
    means = [[np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in fam] for fam in fams]
    spread = max(np.abs(m - fam[0]).max() for fam in means for m in fam)
    gap = min(np.abs(means[f][0] - means[g][0]).max() for f in range(ti.FAMILIES) for g in range(f + 1, ti.FAMILIES))
    assert spread < gap
    assert within > 0 and across > 20
    with pytest.raises(ValueError):
        ti.family(ti.FAMILIES, 0)


@pytest.mark.parametrize(
    ("encode", "fmt", "mode"),
    [
        (ti.jpeg_bytes, "JPEG", "RGB"),
        (ti.png_bytes, "PNG", "RGB"),
        (ti.webp_bytes, "WEBP", "RGB"),
        (ti.gif_bytes, "GIF", None),
        (ti.bmp_bytes, "BMP", "RGB"),
        (ti.tiff_bytes, "TIFF", "RGB"),
        (ti.png_rgba_bytes, "PNG", "RGBA"),
        (ti.palette_png_bytes, "PNG", "P"),
        (ti.grayscale_jpeg_bytes, "JPEG", "L"),
        (ti.cmyk_jpeg_bytes, "JPEG", "CMYK"),
        (ti.exif_rotated_jpeg_bytes, "JPEG", "RGB"),
    ],
)
def test_encoders_produce_the_right_format(img, encode, fmt, mode):
    data = encode(img)
    out = _open(data)
    assert out.format == fmt
    if mode:
        assert out.mode == mode
    # Every encoding still shows the same picture (after orientation/colour handling).
    shown = ImageOps.exif_transpose(out)
    if fmt == "GIF":
        shown = shown.convert("RGB")
    reference = img.convert("L") if mode == "L" else img
    assert _diff(shown, reference) < (25 if mode in ("P", None) else 8)


def test_png_rgba_has_transparent_region(img):
    alpha = _open(ti.png_rgba_bytes(img)).getchannel("A")
    lo, hi = alpha.getextrema()
    assert lo == 0 and hi == 255


def test_cmyk_jpeg_keeps_colours(img):
    out = _open(ti.cmyk_jpeg_bytes(img))
    assert out.mode == "CMYK"
    assert _diff(out.convert("RGB"), img) < 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_round_trip(img, orientation):
    raw = _open(ti.exif_rotated_jpeg_bytes(img, orientation))
    assert raw.getexif().get(0x0112) == orientation
    if orientation in (5, 6, 7, 8):
        assert raw.size == (img.height, img.width)  # stored sideways
    upright = ImageOps.exif_transpose(raw)
    assert upright.size == img.size
    assert _diff(upright, img) < 5
    if orientation != 1:
        assert _diff(raw.resize(img.size), img) > 15  # the stored pixels really are turned


def test_gif_is_animated_and_first_frame_is_the_image(img):
    gif = Image.open(io.BytesIO(ti.gif_bytes(img)))
    assert getattr(gif, "n_frames", 1) > 1 and getattr(gif, "is_animated", False)
    first = gif.convert("RGB")
    assert _diff(first, img) < 25
    gif.seek(1)
    assert _diff(gif.convert("RGB"), img) > 60


def test_truncated_jpeg_fails_to_load(img, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)  # Pillow's default
    data = ti.truncated_jpeg_bytes(img)
    opened = Image.open(io.BytesIO(data))  # the header is intact
    assert opened.format == "JPEG"
    with pytest.raises(OSError):
        opened.load()


def test_pixel_bomb_is_small_and_trips_pillow(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024 * 1024 // 4 // 3)  # Pillow's default
    data = ti.pixel_bomb_png_bytes()
    assert len(data) < 100_000
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data)).load()


def test_not_images():
    for data in (ti.html_as_image_bytes(), ti.svg_bytes(), b""):
        with pytest.raises(Image.UnidentifiedImageError):
            Image.open(io.BytesIO(data))
    assert ti.svg_bytes().lstrip().startswith(b"<?xml")
