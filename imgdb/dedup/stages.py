"""The stages of a dupes run, their default bounds, and the candidate pairs they produce.

Stages, strongest first; ``methods`` picks which run:

``exact``      identical bytes. The store already collapses those into one image id, so an
               "exact" duplicate is one image with several distinct sources (paths / URLs).
``pixels``     identical decoded pixels (sha256 of size + pixels): PNG vs lossless WebP,
               a JPEG with its metadata stripped, ... Certain: never verified.
``phash``      64-bit DCT perceptual hash, Hamming distance <= ``PHASH_MAX_DISTANCE``.
``square``     the pHash of each image's centre square, distance <= ``SQUARE_MAX_DISTANCE``:
               finds square CMS thumbnails of portrait or landscape photos.
``dhash``      64-bit difference hash, Hamming distance <= ``DHASH_MAX_DISTANCE`` (off by default).
``embedding``  cosine of the store's L2-normalised model vectors >= ``COSINE_MIN``.

The hash and embedding stages only propose candidates, with bounds loose enough to
reach crops and renditions; ``verify`` decides each one. Every pair a stage finds gets a
similarity ``score`` in [0, 1] (1.0 for pixels, ``1 - bits/64`` for the hashes, the cosine
for embeddings) and, for hash stages, the Hamming ``distance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imgdb.dedup.results import Pair

#: Stages in order of strength; a pair found by several keeps the strongest for grouping.
STAGES = ("exact", "pixels", "phash", "square", "dhash", "embedding")
DEFAULT_METHODS = ("exact", "pixels", "phash", "square", "embedding")
#: A stage's position in ``STAGES``: lower is stronger.
RANK = {s: i for i, s in enumerate(STAGES)}
#: The stages that compare per-image hashes (``compute_hashes``).
HASH_STAGES = ("pixels", "phash", "square", "dhash")
#: Stages whose pairs are certain without verification.
CERTAIN = ("exact", "pixels")

# Candidate bounds: loose, since verification decides. Fitted on the fit half of
# scripts/make_dupes_bench.py's set (docs/evaluation.md, "Near-duplicates").
PHASH_MAX_DISTANCE = 12
SQUARE_MAX_DISTANCE = 10
DHASH_MAX_DISTANCE = 10
COSINE_MIN = 0.80
#: A pair that cannot be verified (an image that no longer decodes) is kept only this close.
STRICT_PHASH = 6
STRICT_COSINE = 0.94


@dataclass(frozen=True)
class Candidates:
    """Pairs found by the stages, as same-length arrays.

    ``a < b`` are indices into the run's sorted image ids; ``rank`` is the finding stage's
    ``RANK``, ``score`` its similarity and ``distance`` its Hamming bits (-1 for stages
    without one). A pair found by several stages appears once per stage.
    """

    a: np.ndarray  # int64
    b: np.ndarray  # int64
    rank: np.ndarray  # int8
    score: np.ndarray  # float64
    distance: np.ndarray  # int64, -1: none

    @classmethod
    def found(
        cls, stage: str, a: np.ndarray, b: np.ndarray, score: np.ndarray, distance: np.ndarray | None = None
    ) -> Candidates:
        """One stage's pairs, in either order, as candidates with ``a < b``."""
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        n = len(lo)
        return cls(
            lo,
            hi,
            np.full(n, RANK[stage], np.int8),
            np.asarray(score, np.float64),
            np.asarray(distance, np.int64) if distance is not None else np.full(n, -1, np.int64),
        )

    @classmethod
    def empty(cls) -> Candidates:
        none = np.zeros(0, np.int64)
        return cls(none, none, np.zeros(0, np.int8), np.zeros(0, np.float64), none)

    @classmethod
    def concat(cls, parts: Sequence[Candidates]) -> Candidates:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("a", "b", "rank", "score", "distance")))

    def __len__(self) -> int:
        return len(self.a)

    def take(self, which: np.ndarray) -> Candidates:
        """The candidates a boolean mask or an index array selects, in that order."""
        return Candidates(self.a[which], self.b[which], self.rank[which], self.score[which], self.distance[which])

    def drop(self, keys: np.ndarray, n: int) -> Candidates:
        """Without the pairs whose key ``a * n + b`` is in ``keys`` (``n``: the number of ids)."""
        if not len(keys):
            return self
        return self.take(~np.isin(self.a * n + self.b, keys))

    def ordered(self) -> Candidates:
        """Strongest stage first, then best score, then ids (so runs are reproducible)."""
        return self.take(np.lexsort((self.b, self.a, -self.score, self.rank)))

    def stages_by_pair(self) -> dict[tuple[int, int], list[str]]:
        """Each pair's finding stages, by name, in the order they appear (once each)."""
        found: dict[tuple[int, int], list[str]] = {}
        for a, b, r in zip(self.a.tolist(), self.b.tolist(), self.rank.tolist()):
            names = found.setdefault((a, b), [])
            if STAGES[r] not in names:
                names.append(STAGES[r])
        return found

    def edges(self) -> list[tuple[int, int]]:
        return list(zip(self.a.tolist(), self.b.tolist()))

    def pairs(self, ids: Sequence[str]) -> list[Pair]:
        """As result pairs, with image ids and stage names."""
        return [
            Pair(ids[a], ids[b], STAGES[r], float(s), int(d) if d >= 0 else None)
            for a, b, r, s, d in zip(
                self.a.tolist(), self.b.tolist(), self.rank.tolist(), self.score.tolist(), self.distance.tolist()
            )
        ]
