"""Defaults and where things live. Nothing here imports anything heavy."""

from __future__ import annotations

import os
from pathlib import Path

from imgdb import __version__

USER_AGENT = f"imgdb/{__version__} (+https://github.com/imgdb/imgdb; polite image crawler)"

#: The bundled model, shipped inside the package (models/ in the source tree).
DEFAULT_MODEL = "efficientnet-lite0"


def default_store_path() -> Path:
    """``$IMGDB_DB``, else ``$XDG_DATA_HOME/imgdb``, else ``~/.local/share/imgdb``."""
    if env := os.environ.get("IMGDB_DB"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "imgdb"


def models_dir() -> Path:
    """Folder holding the bundled ONNX model and its JSON spec."""
    from importlib.resources import files

    return Path(str(files("imgdb.models")))
