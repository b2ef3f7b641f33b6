"""Model spec (the JSON beside an ONNX file) and the onnxruntime model.

A spec says how to turn RGB pixels into the model's input tensor::

    {"name": "...", "file": "x.onnx", "sha256": "...",
     "input": {"name": "input", "size": [224, 224], "layout": "NCHW", "color": "RGB",
               "dtype": "float32",                # or "uint8": pixels as they are
               "resize": "shorter-side", "crop_fraction": 0.875, "interpolation": "bicubic",
               "mean": [127, 127, 127], "std": [128, 128, 128]},      # 0..255 pixel units
     "output": {"name": "features", "dim": 1280}, "license": "...", "provenance": {...}}

A ``float32`` model gets (pixel - mean) / std; a ``uint8`` model gets the 0..255 pixels in
its layout and normalises them in its graph (mean and std are not used), which saves a
float copy of every image in numpy (the bundled model, see scripts/export_model.py).

Vectors are kept per model ``key`` (name + sha256 prefix), so two models never mix. A
spec's optional ``vectors_key`` names the key instead: a file re-exported so that its
vectors agree with an earlier file's (within 1e-5 cosine) keeps that file's key, and the
stores holding its vectors go on using them.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from imgdb.config import DEFAULT_MODEL, embed_lanes, model_threads, models_dir
from imgdb.errors import ModelError

if TYPE_CHECKING:
    import onnxruntime

_ONNX_TYPES = {"float32": "tensor(float)", "uint8": "tensor(uint8)"}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    sha256: str
    input_name: str
    size: tuple[int, int]  # (width, height)
    layout: str
    crop_fraction: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_name: str | None
    dim: int
    license: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"  # the input tensor's: "float32" (normalised here) or "uint8"
    vectors_key: str | None = None  # the key of an earlier file whose vectors these match

    @property
    def key(self) -> str:
        """Identifies the vectors' space: vectors from different keys never mix."""
        return self.vectors_key or f"{self.name}-{self.sha256[:12]}"

    @property
    def decode_target(self) -> tuple[int, int]:
        """Smallest decoded size that still feeds the resize step at full quality."""
        w, h = self.size
        return (round(w / self.crop_fraction), round(h / self.crop_fraction))

    @classmethod
    def load(cls, model: str | Path | None = None) -> ModelSpec:
        """Load a spec from a .json, or the .json beside a .onnx; None means the bundled model."""
        path = Path(model) if model else models_dir() / f"{DEFAULT_MODEL}.json"
        json_path = path if path.suffix == ".json" else path.with_suffix(".json")
        if not json_path.exists():
            raise ModelError(f"model spec not found: {json_path} (an ONNX model needs its JSON spec beside it)")
        try:
            raw = json.loads(json_path.read_text())
            inp, out = raw["input"], raw["output"]
            onnx_path = json_path.parent / raw.get("file", json_path.with_suffix(".onnx").name)
            if path.suffix == ".onnx":
                onnx_path = path
            spec = cls(
                name=str(raw["name"]),
                path=onnx_path,
                sha256=str(raw.get("sha256") or ""),
                input_name=str(inp.get("name", "input")),
                size=(int(inp["size"][0]), int(inp["size"][1])),
                layout=str(inp.get("layout", "NCHW")).upper(),
                crop_fraction=float(inp.get("crop_fraction", 1.0)),
                interpolation=str(inp.get("interpolation", "bilinear")).lower(),
                mean=tuple(float(v) for v in inp.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
                std=tuple(float(v) for v in inp.get("std", (255.0, 255.0, 255.0))),  # type: ignore[arg-type]
                output_name=out.get("name"),
                dim=int(out["dim"]),
                license=str(raw.get("license", "")),
                provenance=dict(raw.get("provenance", {})),
                dtype=str(inp.get("dtype", "float32")).lower(),
                vectors_key=str(raw["vectors_key"]) if raw.get("vectors_key") else None,
            )
        except (KeyError, TypeError, ValueError, IndexError, json.JSONDecodeError) as exc:
            raise ModelError(f"bad model spec {json_path}: {exc!r}") from None
        if spec.layout not in ("NCHW", "NHWC"):
            raise ModelError(f"bad model spec {json_path}: layout must be NCHW or NHWC")
        if spec.dtype not in _ONNX_TYPES:
            raise ModelError(f"bad model spec {json_path}: input dtype must be one of {sorted(_ONNX_TYPES)}")
        if spec.interpolation not in _RESAMPLE:
            raise ModelError(f"bad model spec {json_path}: interpolation must be one of {sorted(_RESAMPLE)}")
        if not 0 < spec.crop_fraction <= 1:
            raise ModelError(f"bad model spec {json_path}: crop_fraction must be in (0, 1]")
        if not spec.path.exists():
            raise ModelError(f"model file not found: {spec.path}")
        actual = _sha256_file(spec.path)
        if spec.sha256 and spec.sha256 != actual:
            raise ModelError(f"{spec.path} does not match the sha256 in {json_path.name}")
        # A vectors key holds only for the exact file it was checked for (the spec names its
        # sha256) and for the same model name: a spec copied for another model gets its own.
        carried = spec.vectors_key if spec.sha256 and (spec.vectors_key or "").startswith(f"{spec.name}-") else None
        return replace(spec, sha256=actual, vectors_key=carried)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB image -> the tensor for one image (CHW or HWC, float32 or uint8), per the spec."""
        tw, th = self.size
        iw, ih = image.size
        scale = max(tw / self.crop_fraction / iw, th / self.crop_fraction / ih)
        rw, rh = max(tw, round(iw * scale)), max(th, round(ih * scale))
        left, top = (rw - tw) // 2, (rh - th) // 2
        # Resample only the centre crop, straight to the model's size: the same pixels as
        # resizing to (rw, rh) and cropping (Pillow's filter still reads past the box), for
        # a quarter less work. reducing_gap=3 is visually indistinguishable from a full
        # resample and much cheaper.
        sx, sy = iw / rw, ih / rh
        box = (left * sx, top * sy, (left + tw) * sx, (top + th) * sy)
        crop = image.resize((tw, th), _RESAMPLE[self.interpolation], box=box, reducing_gap=3.0)
        if self.dtype == "uint8":
            pixels = np.asarray(crop)
            return np.ascontiguousarray(pixels.transpose(2, 0, 1)) if self.layout == "NCHW" else pixels
        x = (np.asarray(crop, dtype=np.float32) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1) if self.layout == "NCHW" else x)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Model:
    """Runs a ModelSpec's ONNX file; returns L2-normalised float32 vectors.

    ``embed_arrays`` runs one batch on ``threads`` intra-op threads (the fastest answer for
    one query). ``submit`` is for pipelines (ingest): batches run side by side on ``lanes``
    single-threaded runs of one session, so the process keeps one budget of ``threads``
    model threads, and a core that decoding takes for a moment delays one batch instead
    of stalling every operator of a parallel run (docs/evaluation.md, "Ingest at the model's speed").
    """

    def __init__(self, spec: ModelSpec, *, threads: int | None = None, lanes: int | None = None):
        self.spec = spec
        self.threads = threads or model_threads()
        self.lanes = max(1, min(self.threads, lanes or embed_lanes() or self.threads))
        self.session = self._session(self.threads)
        inputs = {i.name: i.type for i in self.session.get_inputs()}
        if spec.input_name not in inputs:
            raise ModelError(f"{spec.path}: no input named {spec.input_name!r} (has {list(inputs)})")
        if inputs[spec.input_name] != _ONNX_TYPES[spec.dtype]:
            raise ModelError(
                f"{spec.path}: input {spec.input_name!r} is {inputs[spec.input_name]}, "
                f"but the spec says dtype {spec.dtype!r}"
            )
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = spec.output_name if spec.output_name in outputs else outputs[0]
        self._lane_session: onnxruntime.InferenceSession | None = None
        self._lane_pool: ThreadPoolExecutor | None = None
        self._lane_lock = threading.Lock()

    def _session(self, threads: int) -> onnxruntime.InferenceSession:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # Idle pool threads sleep instead of spinning, so they leave the CPU to the decode
        # threads between batches (ingest) and to other work (search).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.spec.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {self.spec.path}: {exc}") from None

    @classmethod
    def load(cls, model: str | Path | None = None) -> Model:
        """The model of an ONNX file (with its JSON spec beside it); None: the bundled one."""
        return cls(ModelSpec.load(model))

    def embed_arrays(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of preprocessed tensors -> (n, dim) unit vectors."""
        return self._embed(self.session, batch)

    def submit(self, batch: np.ndarray) -> Future[np.ndarray]:
        """``embed_arrays`` in the background, on one of ``lanes`` side-by-side runs."""
        with self._lane_lock:
            if self._lane_pool is None:
                # One session serves every lane: onnxruntime runs are thread-safe.
                self._lane_session = self.session if self.lanes == 1 else self._session(self.threads // self.lanes)
                self._lane_pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="imgdb-embed")
        assert self._lane_session is not None
        return self._lane_pool.submit(self._embed, self._lane_session, batch)

    def close(self) -> None:
        """Stop the lane threads (they also stop with the process)."""
        with self._lane_lock:
            pool, self._lane_pool, self._lane_session = self._lane_pool, None, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _embed(self, session: onnxruntime.InferenceSession, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.spec.dim), dtype=np.float32)
        (out,) = session.run([self.output_name], {self.spec.input_name: batch})
        out = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
        if out.shape[1] != self.spec.dim:
            raise ModelError(f"{self.spec.path}: output dim {out.shape[1]} != spec dim {self.spec.dim}")
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.embed_arrays(np.stack([self.spec.preprocess(im) for im in images]))
