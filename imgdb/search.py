"""Nearest images to a query image, a stored id, a file or a URL.

Search is exact below ``config.EXACT_MAX_ROWS`` vectors and approximate above it:

* exact: LanceDB's flat scan (cosine): no index to build or keep up to date, and it
  cannot miss;
* approximate: an IVF_RQ index on the model's table, built once when the table passes
  ``EXACT_MAX_ROWS`` and extended by ``optimize()`` after each ingest
  (``Store.maintain_vectors``; rows added since are scanned flat until then), queried with
  ``NPROBES`` partitions and candidates re-ranked by exact distance (``REFINE_FACTOR``).
  Why these numbers: docs/evaluation.md, "Similar".

A query image that is not in the store goes through the same decode and model as the
store and is not stored unless ``add`` is set; a query that is in the store excludes
itself from its results.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgdb import config
from imgdb.errors import UsageError
from imgdb.store import Store
from imgdb.store.sql import check_single_statement

if TYPE_CHECKING:
    from imgdb.imaging.model import Model, ModelSpec

NPROBES = 50
REFINE_FACTOR = 10


@dataclass
class Match:
    rank: int
    similarity: float
    id: str
    source: str | None
    width: int
    height: int
    format: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Query:
    """A resolved query: its vector, and its id when the image is in the store."""

    vector: np.ndarray
    id: str | None
    label: str


def load_query(
    store: Store, query: str, spec: ModelSpec, model: Callable[[], Model], read: Callable[[str], bytes]
) -> Query:
    """Turn a stored id (or prefix), or whatever ``read(query)`` returns the bytes of, into a
    vector in the store's space for ``spec``."""
    image_id = store.image_by_prefix(query)
    if image_id is None:
        data = read(query)
        digest = hashlib.sha256(data).hexdigest()
        if digest in store.get_vectors(spec.key, [digest]):
            image_id = digest
        else:
            from imgdb.imaging.decode import decode

            decoded = decode(data, target=spec.decode_target)
            vector = model().embed_images([decoded.image])[0]
            return Query(vector, None, query)
    vectors = store.get_vectors(spec.key, [image_id])
    if image_id not in vectors:
        raise UsageError(f"image {image_id[:12]} has no vector for model {spec.key}; ingest it with that model")
    return Query(vectors[image_id], image_id, query)


def search(
    store: Store,
    model_key: str,
    vector: np.ndarray,
    *,
    k: int = 10,
    exclude: str | None = None,
    where: str | None = None,
) -> list[tuple[str, float]]:
    """(id, cosine similarity) of the k nearest vectors, best first."""
    allowed = _filter_ids(store, where) if where else None
    if allowed is not None and not allowed:
        return []
    want = k + (1 if exclude else 0)
    if allowed is not None:
        return _search_within(store, model_key, vector, allowed, k, exclude)
    hits = [(i, 1.0 - d) for i, d in _nearest(store, model_key, vector, want)]
    return [h for h in hits if h[0] != exclude][:k]


def _nearest(store: Store, model_key: str, vector: np.ndarray, limit: int) -> list[tuple[str, float]]:
    return store.nearest(model_key, vector, limit, nprobes=NPROBES, refine_factor=REFINE_FACTOR)


def _search_within(
    store: Store, model_key: str, vector: np.ndarray, allowed: set[str], k: int, exclude: str | None
) -> list[tuple[str, float]]:
    """Filtered search: over-fetch from the index, else exact over the allowed ids."""
    total = store.count_vectors(model_key)
    limit = max(100, k * 20)
    while limit < total and len(allowed) > config.EXACT_MAX_ROWS:
        hits = [(i, 1.0 - d) for i, d in _nearest(store, model_key, vector, limit) if i in allowed and i != exclude]
        if len(hits) >= k:
            return hits[:k]
        limit *= 4
    candidates = sorted(allowed - {exclude} if exclude else allowed)
    scores: list[tuple[str, float]] = []
    for start in range(0, len(candidates), 4096):
        chunk = store.get_vectors(model_key, candidates[start : start + 4096])
        ids = list(chunk)
        if ids:
            sims = np.stack([chunk[i] for i in ids]) @ vector.astype(np.float32)
            scores += zip(ids, sims.tolist())
    scores.sort(key=lambda h: -h[1])
    return scores[:k]


def _filter_ids(store: Store, where: str) -> set[str]:
    import duckdb

    try:
        check_single_statement(f"SELECT 1 WHERE {where}")
        # --where sees the columns of the image_sources view that `imgdb sql` offers.
        rows = store.query(f"SELECT DISTINCT id FROM image_sources WHERE {where}")
    except duckdb.Error as exc:
        raise UsageError(f"bad --where: {str(exc).splitlines()[0]}") from None
    return {r[0] for r in rows}


def similar(
    store: Store,
    query: str,
    spec: ModelSpec,
    model: Callable[[], Model],
    read: Callable[[str], bytes],
    *,
    k: int = 10,
    where: str | None = None,
) -> tuple[Query, list[Match]]:
    """The query resolved and its k nearest stored images. ``read(query)`` gives the bytes
    of a query that is not a stored id, and ``model()`` embeds it (it is not stored)."""
    if not store.query("SELECT 1 FROM models WHERE key = ?", [spec.key]):
        raise UsageError(f"the store has no vectors for model {spec.key}; ingest with --model first")
    q = load_query(store, query, spec, model, read)
    with store.errors():  # a vectors file gone missing is a one-line error, not a Lance traceback
        hits = search(store, spec.key, q.vector, k=k, exclude=q.id, where=where)
    return q, _matches(store, hits)


def _matches(store: Store, hits: list[tuple[str, float]]) -> list[Match]:
    info = store.describe([h[0] for h in hits])
    matches: list[Match] = []
    # A vector without an images row (a killed ingest a writer has not repaired yet) is skipped.
    for image_id, sim in hits:
        if image_id in info:
            im = info[image_id]
            matches.append(
                Match(len(matches) + 1, round(sim, 4), image_id, im.source, im.width, im.height, im.format, im.bytes)
            )
    return matches
