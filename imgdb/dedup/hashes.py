"""The ``image_hashes`` cache: every image's per-image hashes (``imaging/hashes.py``),
read from the rows ingest wrote, computed for images stored without one.

A row is reused only while its ``hasher`` equals ``HASHER``; rows from another hasher are
recomputed. Images that cannot be decoded get a row with ``error`` set and no hashes; a blob
that cannot be read is not cached (it may come back).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from imgdb.imaging.hashes import HASHER, ImageHashes, hash_bytes, hash_row
from imgdb.progress import NullProgress, Progress
from imgdb.store import Store

# ---------------------------------------------------------------------------------------
# the cache


def compute_hashes(
    store: Store, ids: Sequence[str] | None = None, *, workers: int | None = None, progress: Progress | None = None
) -> dict[str, ImageHashes]:
    """Hashes for ``ids`` (default: every image), computing and caching the missing ones.

    Images ingested since ingest hashes have their rows already; for the others decoding is
    the cost, so it runs in a thread pool (Pillow releases the GIL) and is written in
    chunks: an interrupted run keeps what it computed. A read-only store computes in memory
    and caches nothing.
    """
    ids = sorted(store.image_ids()) if ids is None else list(ids)
    cached: dict[str, ImageHashes] = {}
    for image_id, ph, dh, px, err, center, thumb, width in store.query(
        "SELECT image_id, phash, dhash, pixel_sha256, error, square_phash, thumb, thumb_width FROM image_hashes "
        "WHERE hasher = ?",
        [HASHER],
    ):
        cached[image_id] = ImageHashes(ph, dh, px, err, center, thumb, width)
    missing = [i for i in ids if i not in cached]
    progress = progress or NullProgress()
    progress.found("hash", len(missing))
    workers = workers or min(4, os.cpu_count() or 1)
    chunk = 256
    with ThreadPoolExecutor(workers, thread_name_prefix="imgdb-hash") as pool:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            results = list(pool.map(lambda i: _hash_stored(store, i), part))
            cached.update(zip(part, results))
            # A missing blob may come back (restored backup): only decode outcomes are cached.
            keep = [(i, h) for i, h in zip(part, results) if h.error != "unreadable"]
            if store.write and keep:
                _save_hashes(store, [i for i, _ in keep], [h for _, h in keep])
            progress.done("hash", len(part))
    return {i: cached[i] for i in ids}


def cached_count(store: Store) -> int:
    """How many images have hashes cached by the current ``HASHER``."""
    return int(store.query("SELECT count(*) FROM image_hashes WHERE hasher = ?", [HASHER])[0][0])


def _hash_stored(store: Store, image_id: str) -> ImageHashes:
    try:
        data = store.read_blob(image_id)
    except OSError:
        return ImageHashes(None, None, None, "unreadable")
    return hash_bytes(data)


def _save_hashes(store: Store, ids: list[str], hashes: list[ImageHashes]) -> None:
    store.put_hashes([(i, hash_row(h)) for i, h in zip(ids, hashes)])
