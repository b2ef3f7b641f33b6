"""One decode path for every format, and the real bundled model on real image bytes."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from imgdb.errors import DecodeError, ModelError
from imgdb.imaging.decode import decode
from imgdb.imaging.model import Model, ModelSpec
from tests import images


def embed_bytes(model: Model, data: bytes) -> np.ndarray:
    decoded = decode(data, target=model.spec.decode_target)
    return model.embed_images([decoded.image])[0]


@pytest.mark.parametrize(
    ("encoder", "fmt"),
    [
        (images.jpeg_bytes, "JPEG"),
        (images.png_bytes, "PNG"),
        (images.webp_bytes, "WEBP"),
        (images.gif_bytes, "GIF"),
        (images.bmp_bytes, "BMP"),
        (images.tiff_bytes, "TIFF"),
        (images.png_rgba_bytes, "PNG"),
        (images.palette_png_bytes, "PNG"),
        (images.grayscale_jpeg_bytes, "JPEG"),
        (images.cmyk_jpeg_bytes, "JPEG"),
    ],
)
def test_every_format_decodes_to_rgb(encoder, fmt):
    photo = images.photo(1, (320, 240))
    decoded = decode(encoder(photo))
    assert decoded.format == fmt
    assert decoded.image.mode == "RGB"
    assert (decoded.width, decoded.height) == (320, 240)
    assert decoded.image.size == (320, 240)


def test_colours_survive_decoding():
    photo = images.photo(2, (160, 120))
    for encoder in (images.png_bytes, images.cmyk_jpeg_bytes, images.gif_bytes, images.webp_bytes):
        got = np.asarray(decode(encoder(photo)).image, dtype=float)
        assert np.abs(got - np.asarray(photo, dtype=float)).mean() < 25, encoder.__name__


def test_gif_gives_its_first_frame():
    photo = images.photo(3, (160, 120))
    got = np.asarray(decode(images.gif_bytes(photo)).image, dtype=float)
    assert np.abs(got - np.asarray(photo, dtype=float)).mean() < 20


def test_alpha_is_flattened_onto_white():
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert decode(buf.getvalue()).image.getpixel((5, 5)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    photo = images.photo(4, (320, 240))
    decoded = decode(images.exif_rotated_jpeg_bytes(photo, orientation=6))
    assert (decoded.width, decoded.height) == (320, 240)
    assert decoded.image.size == (320, 240)
    diff = np.abs(np.asarray(decoded.image, dtype=float) - np.asarray(photo, dtype=float)).mean()
    assert diff < 15


def test_jpeg_draft_decodes_near_the_target_size_but_reports_the_original():
    photo = images.photo(5, (1600, 1200))
    decoded = decode(images.jpeg_bytes(photo), target=(256, 256))
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert min(decoded.image.size) >= 256 and decoded.image.size[0] <= 800


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (images.html_as_image_bytes(), "not-image"),
        (images.svg_bytes(), "svg"),
        (images.truncated_jpeg_bytes(images.photo(6, (320, 240))), "truncated"),
        (images.pixel_bomb_png_bytes(), "bomb"),
        (b"\x00\x01 not an image at all" * 10, "not-image"),
    ],
)
def test_unusable_bytes_fail_with_a_reason(data, reason):
    with pytest.raises(DecodeError) as info:
        decode(data)
    assert info.value.reason == reason


def test_byte_cap():
    with pytest.raises(DecodeError) as info:
        decode(images.png_bytes(images.photo(7, (64, 64))), max_bytes=100)
    assert info.value.reason == "too-large"


def test_vectors_are_unit_length_and_deterministic(model):
    data = images.jpeg_bytes(images.photo(8))
    a, b = embed_bytes(model, data), embed_bytes(model, data)
    assert a.dtype == np.float32 and a.shape == (1280,)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5)
    assert np.array_equal(a, b)


def test_batch_and_single_give_the_same_vector(model):
    photos = [images.photo(s, (320, 240)) for s in (10, 11, 12)]
    batch = model.embed_images(photos)
    single = model.embed_images([photos[1]])[0]
    assert float(batch[1] @ single) > 0.9999


def test_reencoded_half_size_copy_stays_closest_to_its_original(model):
    originals = {seed: images.photo(seed) for seed in range(20, 32)}
    vecs = {s: embed_bytes(model, images.jpeg_bytes(p, quality=95)) for s, p in originals.items()}
    for seed, photo in originals.items():
        small = photo.resize((photo.width // 2, photo.height // 2), Image.Resampling.LANCZOS)
        query = embed_bytes(model, images.jpeg_bytes(small, quality=60))
        sims = {s: float(query @ v) for s, v in vecs.items()}
        assert max(sims, key=lambda s: sims[s]) == seed, sims


def test_a_user_model_with_its_own_spec_loads(tmp_path):
    spec = ModelSpec.load()
    shutil.copy(spec.path, tmp_path / "mine.onnx")
    raw = json.loads(spec.path.with_suffix(".json").read_text())
    raw.update(name="mine", file="mine.onnx")
    (tmp_path / "mine.json").write_text(json.dumps(raw))
    mine = ModelSpec.load(tmp_path / "mine.onnx")
    assert mine.name == "mine" and mine.key.startswith("mine-") and mine.dim == 1280


def test_model_spec_errors_are_clear(tmp_path):
    with pytest.raises(ModelError, match="spec not found"):
        ModelSpec.load(tmp_path / "missing.onnx")
    spec = ModelSpec.load()
    shutil.copy(spec.path, tmp_path / "m.onnx")
    raw = json.loads(spec.path.with_suffix(".json").read_text())
    raw.update(file="m.onnx", sha256="0" * 64)
    (tmp_path / "m.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="sha256"):
        ModelSpec.load(tmp_path / "m.json")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(ModelError, match="bad model spec"):
        ModelSpec.load(tmp_path / "m.json")


def test_the_bundled_model_is_found_from_a_source_checkout_without_installing(tmp_path):
    """``python -S`` with the checkout on sys.path: no site-packages, no editable install."""
    import subprocess
    import sys
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    code = (
        f"import sys; sys.path.insert(0, {str(checkout)!r}); from imgdb.config import models_dir; print(models_dir())"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    found = Path(out.stdout.strip())
    assert found == checkout / "models" and (found / "efficientnet-lite0.onnx").is_file()
