"""One decode path for every format, and the real bundled model on real image bytes."""

from __future__ import annotations

import hashlib
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


# ---------------------------------------------------------------------------------------
# float and uint8 specs, on tiny ONNX files written here (no onnx package needed)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: an int as a varint, bytes or text length-delimited."""
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _node(op: str, inputs: list[str], outputs: list[str], **attrs: int | list[int]) -> bytes:
    body = b"".join(_field(1, i) for i in inputs) + b"".join(_field(2, o) for o in outputs) + _field(4, op)
    for name, value in attrs.items():
        if isinstance(value, list):  # AttributeProto: name 1, ints 8, type 20 (INTS = 7)
            body += _field(5, _field(1, name) + b"".join(_field(8, v) for v in value) + _field(20, 7))
        else:  # i 3, type 20 (INT = 2)
            body += _field(5, _field(1, name) + _field(3, value) + _field(20, 2))
    return body


def _value_info(name: str, elem_type: int, dims: list[int | str]) -> bytes:
    shape = b"".join(_field(1, _field(2, d) if isinstance(d, str) else _field(1, d)) for d in dims)
    return _field(1, name) + _field(2, _field(1, _field(1, elem_type) + _field(2, shape)))


def _constant(name: str, values: list[float]) -> bytes:
    """A float32 [1, 3, 1, 1] initializer (TensorProto: dims 1, data_type 2, name 8, raw_data 9)."""
    dims = b"".join(_field(1, d) for d in (1, 3, 1, 1))
    return dims + _field(2, 1) + _field(8, name) + _field(9, np.asarray(values, "<f4").tobytes())


FLOAT, UINT8 = 1, 2  # ONNX element types


def tiny_model(path, *, uint8: bool, mean: list[float], std: list[float]) -> None:
    """Global average pool of a 4x4 picture; the uint8 file normalises in its graph first."""
    nodes = [_node("GlobalAveragePool", ["x"], ["pooled"]), _node("Flatten", ["pooled"], ["features"], axis=1)]
    inits: list[bytes] = []
    if uint8:
        inputs = _value_info("input", UINT8, ["batch", 4, 4, 3])
        nodes = [
            _node("Transpose", ["input"], ["nchw"], perm=[0, 3, 1, 2]),
            _node("Cast", ["nchw"], ["wide"], to=FLOAT),
            _node("Sub", ["wide", "mean"], ["centred"]),
            _node("Div", ["centred", "std"], ["x"]),
            *nodes,
        ]
        inits = [_constant("mean", mean), _constant("std", std)]
    else:
        inputs = _value_info("x", FLOAT, ["batch", 3, 4, 4])
    graph = b"".join(_field(1, n) for n in nodes) + _field(2, "tiny") + b"".join(_field(5, i) for i in inits)
    graph += _field(11, inputs) + _field(12, _value_info("features", FLOAT, ["batch", 3]))
    model = _field(1, 8) + _field(7, graph) + _field(8, _field(1, "") + _field(2, 13))
    path.write_bytes(model)


def tiny_spec(path, *, uint8: bool, mean: list[float], std: list[float], **extra: object) -> None:
    """The JSON beside a tiny model (a float spec normalises in numpy, a uint8 one does not)."""
    tiny_model(path.with_suffix(".onnx"), uint8=uint8, mean=mean, std=std)
    spec: dict[str, object] = {"name": path.stem, "file": path.with_suffix(".onnx").name}
    inp: dict[str, object] = {"name": "input" if uint8 else "x", "size": [4, 4], "interpolation": "bicubic"}
    inp |= {"dtype": "uint8", "layout": "NHWC"} if uint8 else {"layout": "NCHW", "mean": mean, "std": std}
    spec |= {"input": inp, "output": {"name": "features", "dim": 3}, **extra}
    path.write_text(json.dumps(spec))


def test_float_and_uint8_specs_give_the_same_vectors(tmp_path):
    mean, std = [10.0, 20.0, 30.0], [2.0, 4.0, 8.0]
    tiny_spec(tmp_path / "float.json", uint8=False, mean=mean, std=std)
    tiny_spec(tmp_path / "bytes.json", uint8=True, mean=mean, std=std)
    as_float, as_bytes = Model.load(tmp_path / "float.json"), Model.load(tmp_path / "bytes.json")
    assert (as_float.spec.dtype, as_bytes.spec.dtype) == ("float32", "uint8")
    flat = Image.new("RGB", (8, 8), (100, 50, 200))
    tensor = as_bytes.spec.preprocess(flat)
    assert tensor.dtype == np.uint8 and tensor.shape == (4, 4, 3) and (tensor == (100, 50, 200)).all()
    assert as_float.spec.preprocess(flat).dtype == np.float32
    expected = np.asarray([(100 - 10) / 2, (50 - 20) / 4, (200 - 30) / 8])
    expected /= np.linalg.norm(expected)
    photo = images.photo(40, (64, 48)).resize((8, 6))
    for model in (as_float, as_bytes):
        assert np.allclose(model.embed_images([flat])[0], expected, atol=1e-6)
    a, b = as_float.embed_images([photo])[0], as_bytes.embed_images([photo])[0]
    assert float(a @ b) > 1 - 1e-6


def test_a_spec_whose_dtype_is_not_the_graphs_is_refused(tmp_path):
    tiny_spec(tmp_path / "bytes.json", uint8=True, mean=[0.0] * 3, std=[1.0] * 3)
    raw = json.loads((tmp_path / "bytes.json").read_text())
    raw["input"]["dtype"] = "float32"
    (tmp_path / "bytes.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match=r"tensor\(uint8\).*float32"):
        Model.load(tmp_path / "bytes.json")
    raw["input"]["dtype"] = "float16"
    (tmp_path / "bytes.json").write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="dtype must be one of"):
        ModelSpec.load(tmp_path / "bytes.json")


def test_a_vectors_key_holds_only_for_its_exact_file_and_name(tmp_path):
    tiny_spec(tmp_path / "tiny.json", uint8=True, mean=[0.0] * 3, std=[1.0] * 3, vectors_key="tiny-0123456789ab")
    assert ModelSpec.load(tmp_path / "tiny.json").key.startswith("tiny-") and (
        ModelSpec.load(tmp_path / "tiny.json").key != "tiny-0123456789ab"  # no sha256 in the spec: not trusted
    )
    raw = json.loads((tmp_path / "tiny.json").read_text())
    raw["sha256"] = hashlib.sha256((tmp_path / "tiny.onnx").read_bytes()).hexdigest()
    (tmp_path / "tiny.json").write_text(json.dumps(raw))
    assert ModelSpec.load(tmp_path / "tiny.json").key == "tiny-0123456789ab"
    raw["name"] = "other"  # a spec copied for another model gets a key of its own
    (tmp_path / "tiny.json").write_text(json.dumps(raw))
    assert ModelSpec.load(tmp_path / "tiny.json").key == f"other-{raw['sha256'][:12]}"


def test_the_bundled_model_keeps_the_vectors_key_of_the_float_export():
    """Stores made before the normalisation moved into the graph go on using their vectors."""
    spec = ModelSpec.load()
    assert spec.dtype == "uint8" and spec.layout == "NHWC"
    assert spec.key == "efficientnet-lite0-b944109fab0c" == spec.vectors_key
    assert spec.provenance["float_graph_sha256"].startswith("b944109fab0c")


def test_resampling_the_crop_box_matches_resizing_then_cropping(model):
    """preprocess resamples only the centre crop; vectors agree with resize-then-crop."""
    spec = model.spec
    for seed, size in ((41, (348, 348)), (42, (348, 464)), (43, (640, 480)), (44, (300, 200))):
        photo = images.photo(seed, size)
        iw, ih = photo.size
        scale = max(224 / 0.875 / iw, 224 / 0.875 / ih)
        rw, rh = max(224, round(iw * scale)), max(224, round(ih * scale))
        left, top = (rw - 224) // 2, (rh - 224) // 2
        resized = photo.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=3.0)
        old = np.asarray(resized.crop((left, top, left + 224, top + 224)))
        new = spec.preprocess(photo)
        assert np.abs(new.astype(int) - old.astype(int)).mean() < 1.0
        a, b = model.embed_arrays(np.stack([old, new]))
        assert float(a @ b) > 1 - 1e-5


def test_lanes_embed_side_by_side_and_agree_with_one_run():
    """``submit`` runs batches on single-threaded lanes; vectors match ``embed_arrays``."""
    model = Model(ModelSpec.load(), threads=2, lanes=2)
    try:
        batches = [np.stack([model.spec.preprocess(images.photo(s, (320, 240))) for s in (b, b + 1)]) for b in (50, 60)]
        futures = [model.submit(batch) for batch in batches]
        for batch, future in zip(batches, futures):
            got, want = future.result(), model.embed_arrays(batch)
            assert got.shape == (2, 1280) and float((got * want).sum(axis=1).min()) > 1 - 1e-5
        assert model.lanes == 2 and Model(ModelSpec.load(), threads=2, lanes=1).lanes == 1
    finally:
        model.close()
