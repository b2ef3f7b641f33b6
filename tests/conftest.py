"""Shared fixtures: the real model, a real HTTP server, and a real store of image families.

``http_server``: a fresh ``LocalServer`` on 127.0.0.1 per test (see tests/server.py).
``model``: the bundled ONNX model, loaded once per session.
``family_db``: a store of ``images.FAMILIES`` families x ``images.FAMILY_MEMBERS`` photos,
built once per session; tests may add runs to it but never remove images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from imgdb.acquire.ingest import ingest
from imgdb.imaging.model import Model
from imgdb.store import Store
from tests import images
from tests.server import LocalServer


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A fresh, empty ``LocalServer`` per test: register routes, then use ``.url(path)``."""
    with LocalServer() as server:
        yield server


@pytest.fixture(scope="session")
def model() -> Model:
    return Model.load()


@pytest.fixture(scope="session")
def family_db(tmp_path_factory: pytest.TempPathFactory, model: Model) -> Path:
    """A real store (real model) of the image families; tests open it themselves."""
    root = tmp_path_factory.mktemp("families")
    images.write_families(root / "pics")
    with Store.open(root / "db", write=True) as store:
        summary = ingest(store, [str(root / "pics")], model)
        assert summary.new == images.FAMILIES * images.FAMILY_MEMBERS
    return root / "db"
