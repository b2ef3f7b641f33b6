"""The ``imgdb`` command line (Typer + rich); ``main`` is the entry point."""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder
from typing import Any

from imgdb.cli.app import app

__all__ = ["app", "main"]

# Commands that may run code needing pandas: Ray Data (``ingest --engine ray``) and the
# server's dependencies. Every other command reads and writes through pyarrow, lance and
# duckdb, none of which needs pandas.
_NEEDS_PANDAS = {"ingest", "serve"}


class _NoPandas(MetaPathFinder):
    """Makes pandas look absent. imgdb never uses pandas, but where it is installed (Ray Data
    brings it) pyarrow imports it while loading ``pyarrow.dataset``: the largest part of a
    one-line query's start-up (docs/serve.md). pandas is optional to pyarrow."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


def main() -> None:
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)
    if command not in _NEEDS_PANDAS and "pandas" not in sys.modules:
        sys.meta_path.insert(0, _NoPandas())
    app(prog_name="imgdb")
