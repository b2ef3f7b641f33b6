"""The clustering maths on arrays: PCA space, k sweep, final partition, medoids, 2-D map.

No store access here: everything takes (ids, vectors) and returns arrays. Row sets are
seeded samples of rows sorted by id, so results are deterministic for a given seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgdb.clustering.select_k import KScore
from imgdb.config import cluster_threads
from imgdb.errors import UsageError

METHODS: tuple[str, ...] = ("kmeans", "agglomerative", "minibatch")
DEFAULT_SAMPLE = 20_000  # rows for the PCA fit and the k sweep
DEFAULT_SILHOUETTE_SAMPLE = 3_000  # rows of each silhouette
AGGLOMERATIVE_MAX = 10_000  # rows agglomerative is fitted on (ward's distance matrix holds N^2/2 doubles)
MAP_POINTS = 5_000  # points drawn on the 2-D map
_BLOCK = 65_536  # rows projected at a time
# What the clustering maths imports, and with it scikit-learn's OpenMP and SciPy's OpenBLAS.
_POOLED_MODULES = ("scipy.cluster.hierarchy", "scipy.linalg", "scipy.sparse", "sklearn.cluster", "sklearn.decomposition", "sklearn.metrics")  # fmt: skip


def check_method(method: str) -> None:
    if method not in METHODS:
        raise UsageError(f"unknown clustering method {method!r} (use one of: {', '.join(METHODS)})")


def load_thread_pools() -> None:
    """Import what loads the thread pools the clustering maths runs on.

    threadpoolctl only caps libraries already loaded: scikit-learn's OpenMP runtime and
    SciPy's own OpenBLAS (numpy has another) load with their modules, so a cap set before
    these imports left KMeans, PCA and the silhouette on every core.
    """
    import importlib

    for module in _POOLED_MODULES:
        importlib.import_module(module)


@contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Cap every BLAS and OpenMP pool for the clustering maths.

    ``threads``, else ``imgdb.config.cluster_threads()`` (``$IMGDB_CLUSTER_THREADS``, default
    1): the matrices are small, and OpenMP threads that spin-wait for each other slow down
    badly when another process holds a core (docs/evaluation.md, "Clusters: speed").
    """
    from threadpoolctl import threadpool_limits

    load_thread_pools()
    n = threads or cluster_threads()
    with threadpool_limits(limits=max(1, n)):
        yield


@dataclass
class Space:
    """Vectors prepared for clustering: PCA-reduced, with the rows each step works on.

    Row sets are nested so every method is scored on the same rows: ``sil_rows`` is inside
    ``agg_rows``, which is inside ``fit_rows`` (all are sorted row numbers into ``z``).
    """

    ids: list[str]
    vectors: np.ndarray  # original space, N x D
    z: np.ndarray  # clustering space, N x d
    fit_rows: np.ndarray  # the k sweep's rows (all rows when N <= sample)
    agg_rows: np.ndarray  # agglomerative's rows (fit_rows capped at agglomerative_max)
    sil_rows: np.ndarray  # the silhouette's rows
    pca: int  # components actually used, 0 = off
    explained: float | None
    seconds: float


def _subset(rng: np.random.Generator, rows: np.ndarray, size: int) -> np.ndarray:
    return rows if len(rows) <= size else np.sort(rng.choice(rows, size, replace=False))


def prepare(
    ids: list[str],
    vectors: np.ndarray,
    *,
    pca: int,
    sample: int,
    silhouette_sample: int,
    agglomerative_max: int,
    seed: int,
) -> Space:
    """Draw the seeded row sets and project every row on ``pca`` components fitted on ``fit_rows``.

    The components are capped at the dimension and at ``len(fit_rows) - 1``; ``pca`` = 0,
    or a cap at the full dimension, keeps the raw vectors.
    """
    from sklearn.decomposition import PCA

    n, dim = vectors.shape
    rng = np.random.default_rng(seed)
    fit_rows = _subset(rng, np.arange(n), sample)
    agg_rows = _subset(rng, fit_rows, agglomerative_max)
    sil_rows = _subset(rng, agg_rows, silhouette_sample)
    t0 = time.perf_counter()
    used, explained = 0, None
    z = vectors
    n_comp = min(pca, dim, len(fit_rows) - 1)
    if pca > 0 and n_comp < dim:
        model = PCA(n_components=n_comp, random_state=seed).fit(vectors[fit_rows])
        z = np.empty((n, n_comp), dtype=np.float32)
        # In blocks: transform() centres a copy of its input, which for every row at once
        # is another N x D array (5 GB at a million 1280-d vectors).
        for start in range(0, n, _BLOCK):
            z[start : start + _BLOCK] = model.transform(vectors[start : start + _BLOCK])
        used, explained = n_comp, float(model.explained_variance_ratio_.sum())
    return Space(
        ids,
        vectors,
        np.ascontiguousarray(z, dtype=np.float32),
        fit_rows,
        agg_rows,
        sil_rows,
        used,
        explained,
        time.perf_counter() - t0,
    )


def _wcss(z: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """Within-cluster sum of squares and the cluster means."""
    centers = means(z, labels, k)
    return float(((z - centers[labels]) ** 2).sum()), centers


def means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster means (float32, k rows; zeros for an empty cluster) as one sparse product."""
    from scipy.sparse import csr_matrix

    counts = np.bincount(labels, minlength=k).astype(np.float32)
    ones = np.ones(len(labels), dtype=x.dtype)
    onehot = csr_matrix((ones, (labels, np.arange(len(labels)))), shape=(k, len(labels)))
    sums = np.asarray(onehot @ x)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def _silhouette(z: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return None
    return float(silhouette_score(z, labels))


class Sweep:
    """Fits one method for each k on the sweep rows; keeps what the final fit reuses."""

    def __init__(self, space: Space, method: str, seed: int, linkage: str, n_init: int):
        check_method(method)
        self.space, self.method, self.seed, self.linkage, self.n_init = space, method, seed, linkage, n_init
        # Ward's distance matrix is O(N^2): above agglomerative_max it is fitted on a
        # seeded sample and the other images join the nearest cluster mean in ``final``.
        self.rows = space.agg_rows if method == "agglomerative" else space.fit_rows
        self.z = space.z[self.rows]
        self.sil = np.searchsorted(self.rows, space.sil_rows)  # positions within self.rows
        self.centers: dict[int, np.ndarray] = {}
        self.labels: dict[int, np.ndarray] = {}
        self._tree: Any = None

    def run(self, ks: Sequence[int]) -> list[KScore]:
        """Distortion and silhouette for each k, in the order of ``ks``."""
        if max(ks) >= len(self.rows):
            raise UsageError(
                f"k = {max(ks)} needs more than the {len(self.rows)} images {self.method} is fitted on "
                "(raise the sample size or lower k)"
            )
        fitted = self._fit_tree(ks) if self.method == "agglomerative" else {k: self._fit_kmeans(k) for k in ks}
        scores = []
        for k in ks:
            labels, centers, inertia = fitted[k]
            self.labels[k], self.centers[k] = labels, centers
            scores.append(KScore(k, inertia, _silhouette(self.z[self.sil], labels[self.sil])))
        return scores

    def _fit_kmeans(self, k: int) -> tuple[np.ndarray, np.ndarray, float]:
        if self.method == "kmeans":
            from sklearn.cluster import KMeans

            km = KMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed).fit(self.z)
            return km.labels_.astype(np.int64), km.cluster_centers_.astype(np.float32), float(km.inertia_)
        from sklearn.cluster import MiniBatchKMeans

        mb = MiniBatchKMeans(n_clusters=k, n_init=self.n_init, random_state=self.seed, batch_size=2048).fit(self.z)
        labels = mb.labels_.astype(np.int64)
        inertia, _ = _wcss(self.z, labels, k)
        return labels, mb.cluster_centers_.astype(np.float32), inertia

    def _fit_tree(self, ks: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray, float]]:
        from scipy.cluster.hierarchy import cut_tree, linkage

        if self._tree is None:
            # One tree serves every k: cutting it is what AgglomerativeClustering(k) does
            # (scikit-learn builds its unstructured ward tree with this same scipy call).
            self._tree = linkage(self.z.astype(np.float64), method=self.linkage)
        # cut_tree follows the merge order, so it always gives exactly k clusters, even
        # when merge heights tie (near-identical images); one call cuts at every k.
        cuts = cut_tree(self._tree, n_clusters=list(ks))
        out = {}
        for j, k in enumerate(ks):
            labels = cuts[:, j].astype(np.int64)
            inertia, centers = _wcss(self.z, labels, k)
            out[k] = (labels, centers, inertia)
        return out

    def final(self, k: int) -> np.ndarray:
        """Labels for every row of the space at ``k``."""
        z_all = self.space.z
        if k not in self.labels:
            self.run([k])
        if len(self.rows) == len(z_all):
            return self.labels[k]
        if self.method in ("kmeans", "minibatch"):
            # Start from the sample's centroids: a few full-batch Lloyd iterations instead of
            # k-means++ on N (for minibatch too).
            from sklearn.cluster import KMeans

            km = KMeans(n_clusters=k, init=self.centers[k], n_init=1, random_state=self.seed).fit(z_all)
            return km.labels_.astype(np.int64)
        labels = _nearest(z_all, self.centers[k])
        labels[self.rows] = self.labels[k]  # the fitted sample keeps its tree labels
        return labels


def _nearest(z: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> np.ndarray:
    out = np.empty(len(z), dtype=np.int64)
    c2 = (centers.astype(np.float64) ** 2).sum(1)
    for start in range(0, len(z), chunk):
        block = z[start : start + chunk].astype(np.float64)
        out[start : start + chunk] = np.argmin(c2[None, :] - 2 * block @ centers.T.astype(np.float64), axis=1)
    return out


def relabel_by_size(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the non-empty clusters 0..k-1 by size, largest first.

    Ties go to the cluster holding the smaller id (rows are sorted by id), so the numbering
    does not depend on the method's arbitrary label order.
    """
    present, inverse, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    k = len(present)
    first = np.full(k, len(labels))
    np.minimum.at(first, inverse, np.arange(len(labels)))
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    new = np.empty(k, dtype=np.int64)
    new[order] = np.arange(k)
    return new[inverse], k


def medoids(ids: list[str], labels: np.ndarray, distances: np.ndarray, k: int) -> list[str]:
    """Per cluster, the id of the member nearest its mean (the smaller id on ties)."""
    # The member nearest the mean minimises the sum of squared distances to the other
    # members (sum_j |x_i - x_j|^2 = m |x_i - mean|^2 + const), so no O(m^2) pass is needed.
    order = np.lexsort((distances, labels))
    firsts = np.searchsorted(labels[order], np.arange(k))
    return [ids[order[i]] for i in firsts]


def _map_axes(centroids: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Two orthonormal axes (D x 2) for the 2-D map.

    The principal axes of the cluster means, which spread the clusters apart (plain PCA of
    the points follows the overall variance instead); with k = 2 there is one such axis and
    the second is the top principal axis of what the first leaves.
    """
    axes: list[np.ndarray] = []
    c = centroids.astype(np.float64) - centroids.mean(0)
    if len(c) >= 2:
        _, sv, vt = np.linalg.svd(c, full_matrices=False)
        axes = [vt[i] for i in range(min(2, len(sv))) if sv[i] > 1e-9]
    x = sample.astype(np.float64) - sample.mean(0)
    while len(axes) < 2:
        for a in axes:
            x = x - np.outer(x @ a, a)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        axes.append(vt[0])
    return np.stack(axes[:2], axis=1)


def map_sample(n: int, seed: int) -> np.ndarray:
    """The rows (of ``n``, in id order) drawn on the 2-D map: at most MAP_POINTS, seeded."""
    return _subset(np.random.default_rng(seed + 2), np.arange(n), MAP_POINTS)


def map_points(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """``points`` (the ``map_sample`` rows' vectors) projected on ``_map_axes``: (m, 2)."""
    xy = (points.astype(np.float64) - centroids.mean(0)) @ _map_axes(centroids, points)
    return xy.astype(np.float32)
