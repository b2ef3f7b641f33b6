"""What clustering returns: a run, a row of ``show`` and the grid of ``compare``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imgdb.clustering.select_k import KScore


@dataclass
class ClusterRun:
    """A fitted (and usually saved) clustering: everything ``plot`` and ``show`` need."""

    run_id: int | None
    model: str
    method: str
    pca: int
    k: int
    select_rule: str  # "fixed" when k was given
    seed: int
    ids: list[str]
    labels: np.ndarray  # cluster per id, 0 = largest
    distances: np.ndarray  # to the cluster mean in the clustering space
    scores: list[KScore]
    choices: dict[str, int]  # the k each rule picks from ``scores`` (empty for a fixed k)
    params: dict[str, Any]
    silhouette: float | None = None
    distortion: float | None = None
    medoids: list[str] = field(default_factory=list)  # per cluster
    map_ids: list[str] = field(default_factory=list)  # the images drawn on the 2-D map
    map_xy: np.ndarray | None = None  # (m, 2) their points
    map_labels: np.ndarray | None = None  # (m,) cluster of each map point
    warnings: list[str] = field(default_factory=list)

    @property
    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.k).tolist()

    def scores_json(self) -> list[dict[str, Any]]:
        return [{"k": s.k, "distortion": s.distortion, "silhouette": s.silhouette} for s in self.scores]


@dataclass
class ClusterSummary:
    """One row of ``show``."""

    cluster: int
    size: int
    medoid: str
    medoid_source: str | None  # the medoid's representative source (``Store.describe``)
    mean_distance: float
    top_sites: list[tuple[str, int]]  # (site or "(files)", images)


@dataclass
class CompareRow:
    """One (method, k) cell of ``compare``."""

    method: str
    k: int
    silhouette: float | None
    distortion: float


@dataclass
class CompareResult:
    """The best-silhouette grid: silhouette per (method, k), the best pair, and the peak rule's k per method."""

    rows: list[CompareRow]
    winner: CompareRow
    peak: dict[str, int]  # the "peak" rule's k per method
    params: dict[str, Any]
