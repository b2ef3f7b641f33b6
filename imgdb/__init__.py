"""imgdb: a local, searchable, deduplicated, clustered image collection.

``imgdb.open(path, mode="r"|"w")`` returns a ``Collection``; see ``imgdb.collection``.
Importing this package is cheap: the store, the model and the analysis load on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0.dev0"

if TYPE_CHECKING:
    from imgdb.collection import Collection, Mode

__all__ = ["Collection", "__version__", "open"]


def open(path: str | Path | None = None, mode: Mode = "r", *, model: str | Path | None = None) -> Collection:  # noqa: A001
    """Open the collection at ``path`` (default: ``$IMGDB_DB`` or ``~/.local/share/imgdb``)."""
    from imgdb.collection import Collection

    return Collection(path, mode, model=model)


def __getattr__(name: str) -> Any:
    if name == "Collection":
        from imgdb.collection import Collection

        return Collection
    raise AttributeError(f"module 'imgdb' has no attribute {name!r}")
