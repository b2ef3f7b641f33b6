"""Stand-ins for what a test does not need for real: a model spec without an ONNX file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from imgdb.store import NewImage, SourceRow


@dataclass(frozen=True)
class FakeSpec:
    """Just what Store.register_model reads; the real spec needs an ONNX file."""

    key: str = "fake-000000000000"
    name: str = "fake"
    sha256: str = "0" * 64
    dim: int = 8
    size: tuple[int, int] = (8, 8)
    path: str = "fake.onnx"
    license: str = "none"
    provenance: dict | None = None


def new_image(n: int) -> NewImage:
    data = f"image {n}".encode()
    image_id = hashlib.sha256(data).hexdigest()
    return NewImage(
        image_id, data, 10 + n, 20 + n, "PNG", [SourceRow(f"http://h/{n}.png", "url", page_url="http://h/")]
    )


def unit_vectors(n: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(n).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
