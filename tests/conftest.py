"""Shared fixtures. ``http_server``: a real HTTP server on 127.0.0.1 (see tests/server.py)."""

from __future__ import annotations

from typing import Iterator

import pytest
from tests.server import LocalServer


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    """A fresh, empty ``LocalServer`` per test: register routes, then use ``.url(path)``."""
    with LocalServer() as server:
        yield server
