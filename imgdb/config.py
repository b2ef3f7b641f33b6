"""Every setting imgdb reads, its default, and the environment variable that overrides it.

Nothing here imports anything heavy. The README's "Settings" table lists the same.

=====================  ==================================  =================================
setting                environment                         default
=====================  ==================================  =================================
store directory        ``IMGDB_DB`` (or ``--db``)          ``$XDG_DATA_HOME/imgdb``
model threads          ``IMGDB_THREADS``                   every core
embedding lanes        ``IMGDB_EMBED_LANES``               model threads (1 thread each)
clustering threads     ``IMGDB_CLUSTER_THREADS``           1
exact-search limit     (``EXACT_MAX_ROWS``)                5,000 vectors per model
reader's wait          (``READ_WAIT``)                     1 s for a writer to pause
writer's wait          (``WRITE_WAIT``)                    60 s for readers to finish
=====================  ==================================  =================================
"""

from __future__ import annotations

import os
from pathlib import Path

from imgdb import __version__

USER_AGENT = f"imgdb/{__version__} (+https://github.com/imgdb/imgdb; polite image crawler)"

#: The bundled model, shipped inside the package (models/ in the source tree).
DEFAULT_MODEL = "efficientnet-lite0"

#: Below this many vectors search is an exact flat scan; above it an IVF_RQ index is kept.
EXACT_MAX_ROWS = 5_000

#: Seconds a reader waits for the writer to let go of the DuckDB file (it does between
#: two writes as soon as a reader is waiting) before saying the store is busy.
READ_WAIT = 1.0

#: Seconds a writer waits for the readers holding the DuckDB file to finish.
WRITE_WAIT = 60.0


def default_store_path() -> Path:
    """``$IMGDB_DB``, else ``$XDG_DATA_HOME/imgdb``, else ``~/.local/share/imgdb``."""
    if env := os.environ.get("IMGDB_DB"):
        return Path(env).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "imgdb"


def model_threads() -> int:
    """onnxruntime's intra-op threads: ``$IMGDB_THREADS``, else every core."""
    return _int_env("IMGDB_THREADS") or os.cpu_count() or 1


def embed_lanes() -> int:
    """Batches an ingest embeds side by side: ``$IMGDB_EMBED_LANES``, else 0 (one per model thread).

    Each lane runs ``model threads / lanes`` intra-op threads; 1 lane is one batch at a
    time on every model thread.
    """
    return _int_env("IMGDB_EMBED_LANES")


def cluster_threads() -> int:
    """BLAS/OpenMP threads while clustering: ``$IMGDB_CLUSTER_THREADS``, else 1."""
    return _int_env("IMGDB_CLUSTER_THREADS") or 1


def models_dir() -> Path:
    """Folder holding the bundled ONNX model and its JSON spec.

    In a source checkout that is the top-level ``models/`` beside the package; an
    installed wheel carries the same files as the ``imgdb.models`` package.
    """
    checkout = Path(__file__).resolve().parent.parent / "models"
    if (checkout / f"{DEFAULT_MODEL}.json").is_file():
        return checkout
    from importlib.resources import files

    return Path(str(files("imgdb.models")))


def _int_env(name: str) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else 0
