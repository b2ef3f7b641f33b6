"""Clustering runs: fit, choose k, save, summarise and plot.

A *clustering run* groups every image of one model's vectors into k clusters and is saved
in DuckDB (``cluster_runs``, ``cluster_members``, ``cluster_info``), so SQL can join on it
and later commands can name it by id.

Pipeline of ``fit``::

    vectors (N x 1280, sorted by id)  -> PCA to ``pca`` components (fitted on <= ``sample`` rows)
    -> k sweep on <= ``sample`` rows: for each k, the method's partition, its distortion
       (within-cluster sum of squares) and its silhouette on <= ``silhouette_sample`` rows
    -> k chosen by a rule (``select``): "silhouette" (recipe B: the best score),
       "elbow" (recipe A: Kneedle on the distortion curve) or "peak" (imgdb's default, below)
    -> final partition of all N images; clusters renumbered by size (0 = largest)

The "peak" rule. Silhouette over k on CNN features of real photos typically has its global
maximum at the smallest k (one dominant split, e.g. packaged goods vs loose produce), so
recipe B returns k = 2, and a second, rising regime at finer k where the real categories
live. "peak" smooths the silhouette curve (moving average over about a tenth of the range),
takes its local maxima (the lower end of the range is never one) whose smoothed silhouette
is at least ``max - peak_tol`` (the floor, default 0.1), and picks the *largest* such k (as
the best raw k near it); if there is none, the plain argmax. On well-separated data the
true k towers over every other local maximum (6 families: 0.62 vs 0.40 for the next one;
UKBench: one broad hump at k = 125) so the floor keeps only it; on weakly structured data
(every silhouette < 0.25, "no substantial structure" in Kaufman & Rousseeuw's terms) all
peaks sit within the floor, and the finest of them is the most useful partition to browse.
``scripts/eval_clusters.py`` measures it against labels: on the grocery photos (2,640
images; 81 fine, 43 coarse classes; k = 2..30) it picks k = 29 where silhouette picks 2 and
the elbow 10: NMI 0.67 / 0.66 (fine / coarse labels) against 0.25 / 0.30 and 0.58 / 0.61.

Scale. KMeans' k-means++ initialisation is what costs on 1280-d vectors, so everything runs
in PCA space; the k sweep runs on a seeded sample and the final fit on all N starts from the
sample's centroids (a few Lloyd iterations). Agglomerative clustering needs the O(N^2)
distance matrix, so above ``agglomerative_max`` images (10,000, about 0.4 GB) it is fitted
on a sample of that size and the other images join the nearest cluster mean.

Everything is deterministic for a given ``seed``: vectors are sorted by id before sampling.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.config import cluster_threads
from imgdb.errors import UsageError
from imgdb.store import Store, utcnow

METHODS: tuple[str, ...] = ("kmeans", "agglomerative", "minibatch")
RULES: tuple[str, ...] = ("peak", "silhouette", "elbow")
DEFAULT_K_RANGE = (2, 30)
DEFAULT_SAMPLE = 20_000  # rows for the PCA fit and the k sweep
DEFAULT_SILHOUETTE_SAMPLE = 3_000  # measured: same score as on 10k rows in a tenth of the time
AGGLOMERATIVE_MAX = 10_000  # ward needs N^2/2 doubles: 10k = 0.4 GB, 100k would be 40+ GB
PEAK_TOL = 0.1
MAP_POINTS = 5_000  # points drawn on the 2-D map


# ---------------------------------------------------------------------------------------
# results


@dataclass
class KScore:
    """One point of the k sweep."""

    k: int
    distortion: float  # within-cluster sum of squares on the sweep sample
    silhouette: float | None  # on the silhouette sample; None when undefined


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
    map_xy: np.ndarray | None = None  # (m, 2) points for the 2-D map
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
    medoid_source: str | None
    mean_distance: float
    top_sites: list[tuple[str, int]]  # (site or "(files)", images)


@dataclass
class CompareRow:
    method: str
    k: int
    silhouette: float | None
    distortion: float


@dataclass
class CompareResult:
    """Recipe B's grid: silhouette per (method, k), the best pair, and imgdb's pick per method."""

    rows: list[CompareRow]
    winner: CompareRow
    peak: dict[str, int]  # the "peak" rule's k per method
    params: dict[str, Any]


# ---------------------------------------------------------------------------------------
# choosing k: pure functions


def _as_arrays(ks: Sequence[int], values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    if len(ks) != len(values) or not len(ks):
        raise ValueError("ks and values must be non-empty and of equal length")
    order = np.argsort(ks)
    k = np.asarray(ks, dtype=np.int64)[order]
    v = np.asarray([np.nan if x is None else float(x) for x in values], dtype=np.float64)[order]
    return k, v


def choose_k_silhouette(ks: Sequence[int], silhouettes: Sequence[float | None]) -> int:
    """Recipe B: the k with the best silhouette (the smaller k on ties)."""
    k, s = _as_arrays(ks, silhouettes)
    if np.all(np.isnan(s)):
        return int(k[0])
    return int(k[int(np.nanargmax(s))])


def choose_k_elbow(ks: Sequence[int], distortions: Sequence[float]) -> int:
    """Recipe A, by a stated rule: Kneedle (Satopaa et al. 2011), offline form.

    The curve is made monotone first (running minimum: an optimal partition's distortion
    never rises with k, so any rise is a k-means local optimum), both axes are scaled to
    [0, 1], and the elbow is the point farthest below the chord from the first to the last
    point, i.e. argmax of (1 - x) - y. A curve that never dips below its chord has no elbow:
    the smallest k is returned.
    """
    k, d = _as_arrays(ks, distortions)
    if len(k) < 3:
        return int(k[0])
    d = np.minimum.accumulate(d)
    span = d[0] - d[-1]
    if not span > 0:
        return int(k[0])
    x = (k - k[0]) / (k[-1] - k[0])
    y = (d - d[-1]) / span
    gap = (1 - x) - y
    i = int(np.argmax(gap))
    return int(k[i]) if gap[i] > 0 else int(k[0])


def peak_window(n: int) -> int:
    """Smoothing window for a curve of ``n`` ks: about a tenth of them, odd, at least 3."""
    w = max(3, round(n / 10))
    return w if w % 2 else w + 1


def smooth_curve(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that shrinks at the ends and skips NaN (-inf where all are NaN)."""
    half = window // 2
    out = np.full(len(values), -np.inf)
    for i in range(len(values)):
        seg = values[max(0, i - half) : i + half + 1]
        seg = seg[np.isfinite(seg)]
        if len(seg):
            out[i] = float(seg.mean())
    return out


def silhouette_peaks(
    ks: Sequence[int],
    silhouettes: Sequence[float | None],
    tol: float = PEAK_TOL,
    window: int | None = None,
) -> list[int]:
    """The peaks of the silhouette curve at or above the floor, each as its best raw k.

    The curve is smoothed first (``smooth_curve`` over ``peak_window`` ks): k-means local
    optima and the silhouette sample make it jitter by about 0.01 from one k to the next,
    and on a slow slope every such wiggle would otherwise be a local maximum (UKBench: the
    true k = 125 tops a broad hump, and unsmoothed the rule found "peaks" up to k = 183).
    A peak is a local maximum of the smoothed curve (greater than its left neighbour, not
    less than its right one) at or above ``max(smoothed) - tol``; the first k of the range
    is never one (nothing to its left says it is a peak rather than the end of a slope),
    the last one can be (the curve still rises there). Each peak is reported as the k with
    the best raw silhouette within half a window of it.
    """
    k, raw = _as_arrays(ks, silhouettes)
    if not np.isfinite(raw).any():
        return []
    w = window or peak_window(len(k))
    sm = smooth_curve(raw, w)
    floor = float(np.max(sm)) - tol
    scored = np.where(np.isfinite(raw), raw, -np.inf)
    peaks = set()
    for i in range(1, len(k)):
        right = sm[i + 1] if i + 1 < len(k) else -np.inf
        if sm[i] > sm[i - 1] and sm[i] >= right and sm[i] >= floor:
            lo, hi = max(1, i - w // 2), min(len(k), i + w // 2 + 1)  # never snap onto the first k
            peaks.add(int(k[lo + int(np.argmax(scored[lo:hi]))]))
    return sorted(peaks)


def choose_k_peak(
    ks: Sequence[int],
    silhouettes: Sequence[float | None],
    tol: float = PEAK_TOL,
    window: int | None = None,
) -> int:
    """imgdb's rule: the largest k among ``silhouette_peaks``; with none, the plain argmax."""
    peaks = silhouette_peaks(ks, silhouettes, tol, window)
    return max(peaks) if peaks else choose_k_silhouette(ks, silhouettes)


def choose_k(
    ks: Sequence[int],
    distortions: Sequence[float],
    silhouettes: Sequence[float | None],
    rule: str = "peak",
    *,
    tol: float = PEAK_TOL,
) -> int:
    """Dispatch to the rule named ``rule`` (one of ``RULES``)."""
    if rule == "peak":
        return choose_k_peak(ks, silhouettes, tol)
    if rule == "silhouette":
        return choose_k_silhouette(ks, silhouettes)
    if rule == "elbow":
        return choose_k_elbow(ks, distortions)
    raise UsageError(f"unknown k selection rule {rule!r} (use one of: {', '.join(RULES)})")


def all_choices(scores: Sequence[KScore], tol: float = PEAK_TOL) -> dict[str, int]:
    """The k every rule picks from one sweep (for the plots and the run's params)."""
    ks = [s.k for s in scores]
    dist = [s.distortion for s in scores]
    sil = [s.silhouette for s in scores]
    return {rule: choose_k(ks, dist, sil, rule, tol=tol) for rule in RULES}


# ---------------------------------------------------------------------------------------
# schema and loading


def default_model(store: Store) -> str:
    """The model most images were ingested with."""
    key = store.main_model()
    if key is None:
        raise UsageError(f"the store at {store.path} has no images: run `imgdb ingest` first")
    return key


def load_vectors(store: Store, model_key: str) -> tuple[list[str], np.ndarray]:
    """Every stored image's vector for ``model_key``, sorted by id (so sampling is reproducible)."""
    return store.all_vectors(model_key)


# ---------------------------------------------------------------------------------------
# the math on arrays


@dataclass
class _Space:
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


def _prepare(
    ids: list[str],
    vectors: np.ndarray,
    *,
    pca: int,
    sample: int,
    silhouette_sample: int,
    agglomerative_max: int,
    seed: int,
) -> _Space:
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
        z = model.transform(vectors).astype(np.float32)
        used, explained = n_comp, float(model.explained_variance_ratio_.sum())
    return _Space(
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
    centers = _means(z, labels, k)
    return float(((z - centers[labels]) ** 2).sum()), centers


def _means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster means as one sparse product (no k passes over x, no float64 copy of x)."""
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


class _Sweep:
    """Fits one method for each k on the sweep rows; keeps what the final fit reuses."""

    def __init__(self, space: _Space, method: str, seed: int, linkage: str, n_init: int):
        if method not in METHODS:
            raise UsageError(f"unknown clustering method {method!r} (use one of: {', '.join(METHODS)})")
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
            # k-means++ on N (for minibatch too: from a good start they cost about as much).
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


def _relabel_by_size(labels: np.ndarray) -> tuple[np.ndarray, int]:
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


def _map_axes(centroids: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Two orthonormal axes (D x 2) for the 2-D map.

    The principal axes of the cluster means spread the clusters apart (plain PCA of the
    points follows the overall variance, in which 30 clusters overlap); with k = 2 there is
    one such axis and the second is the top principal axis of what the first leaves.
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


def _map_points(
    vectors: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """At most MAP_POINTS seeded points, projected on ``_map_axes``, with their clusters."""
    rng = np.random.default_rng(seed + 2)
    idx = _subset(rng, np.arange(len(labels)), MAP_POINTS)
    pts = vectors[idx]
    xy = (pts.astype(np.float64) - centroids.mean(0)) @ _map_axes(centroids, pts)
    return xy.astype(np.float32), labels[idx]


def _check_range(k_range: tuple[int, int], n: int) -> list[int]:
    lo, hi = int(k_range[0]), int(k_range[1])
    if lo < 2 or hi < lo:
        raise UsageError(f"bad k range {lo}..{hi}: need 2 <= low <= high")
    hi = min(hi, n - 1)  # silhouette needs at least one cluster with two members
    if hi < lo:
        raise UsageError(f"{n} images are too few for k >= {lo}")
    return list(range(lo, hi + 1))


# ---------------------------------------------------------------------------------------
# fit, compare


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """Cap BLAS/OpenMP threads for the clustering maths.

    Default 1 (or ``$IMGDB_CLUSTER_THREADS``): the matrices here are small (<= 20k x 100 in
    the sweep), where extra threads gain little, while spinning OpenMP/OpenBLAS threads
    collapse when another process holds a core: a KMeans sweep that took 1.4 s on one
    thread took 1.5-20 s on two on a busy 2-core machine.
    """
    from threadpoolctl import threadpool_limits

    n = threads or cluster_threads()
    with threadpool_limits(limits=max(1, n)):
        yield


def fit(
    store: Store,
    *,
    model_key: str | None = None,
    method: str = "kmeans",
    pca: int = 100,
    k: int | str = "auto",
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    select: str = "peak",
    seed: int = 0,
    sample: int = DEFAULT_SAMPLE,
    silhouette_sample: int = DEFAULT_SILHOUETTE_SAMPLE,
    linkage: str = "ward",
    n_init: int = 3,
    peak_tol: float = PEAK_TOL,
    agglomerative_max: int = AGGLOMERATIVE_MAX,
    save: bool = True,
    threads: int | None = None,
    data: tuple[list[str], np.ndarray] | None = None,
) -> ClusterRun:
    """Cluster every image of ``model_key`` (default: the store's main model) and save the run.

    ``k`` is an int, or "auto" to sweep ``k_range`` (inclusive) and pick by ``select``
    ("peak", "silhouette" or "elbow", see the module docstring). ``pca`` = 0 clusters the raw
    vectors. ``sample`` caps the rows of the PCA fit and the sweep, ``silhouette_sample`` the
    rows of each silhouette. ``save=False`` computes without writing (read-only stores are
    fine then). ``threads`` caps BLAS/OpenMP threads (see ``_threads``). ``data`` =
    (ids, vectors) skips loading (benchmarks, the evaluation script).
    """
    if method not in METHODS:
        raise UsageError(f"unknown clustering method {method!r} (use one of: {', '.join(METHODS)})")
    if select not in RULES:
        raise UsageError(f"unknown k selection rule {select!r} (use one of: {', '.join(RULES)})")
    if linkage not in ("ward", "average", "complete", "single"):
        raise UsageError(f"unknown linkage {linkage!r} (use ward, average, complete or single)")
    if save and not store.write:
        raise UsageError("saving a clustering run needs the store opened for writing")
    if pca < 0 or sample < 2 or silhouette_sample < 2:
        raise UsageError("pca must be >= 0 and the samples >= 2")
    started = time.perf_counter()
    model_key = model_key or default_model(store)
    ids, vectors = data if data is not None else load_vectors(store, model_key)
    loaded = time.perf_counter() - started
    n = len(ids)
    if n < 3:
        raise UsageError(f"{n} images with {model_key} vectors: at least 3 are needed to cluster")
    if k == "auto":
        ks = _check_range(k_range, n)
    else:
        try:
            k_fixed = int(k)
        except (TypeError, ValueError):
            raise UsageError(f"k must be a number or 'auto', not {k!r}") from None
        if not 2 <= k_fixed <= n - 1:
            raise UsageError(f"k must be between 2 and {n - 1} for {n} images")
        ks = [k_fixed]

    with _threads(threads):
        space = _prepare(
            ids,
            vectors,
            pca=pca,
            sample=sample,
            silhouette_sample=silhouette_sample,
            agglomerative_max=agglomerative_max,
            seed=seed,
        )
        sweep = _Sweep(space, method, seed, linkage, n_init)
        t0 = time.perf_counter()
        scores = sweep.run(ks)
        t_sweep = time.perf_counter() - t0
        choices = all_choices(scores, peak_tol) if len(ks) > 1 else {}
        chosen = choices[select] if choices else ks[0]

        t0 = time.perf_counter()
        labels, k_final = _relabel_by_size(sweep.final(chosen))
        centers = _means(space.z, labels, k_final)
        distances = np.linalg.norm(space.z - centers[labels], axis=1).astype(np.float64)
        medoids = _medoids(ids, labels, distances, k_final)
        centroids = _means(vectors, labels, k_final)
        map_xy, map_labels = _map_points(vectors, labels, centroids, seed)
        t_final = time.perf_counter() - t0

    at = {s.k: s for s in scores}[chosen]
    warnings = []
    if k_final < chosen:
        warnings.append(f"{chosen - k_final} of the {chosen} clusters came out empty: the run has k = {k_final}")
    if len(ks) > 1 and chosen == ks[-1] and chosen < n - 1:
        warnings.append(
            f"k = {chosen} is the top of the range {ks[0]}..{ks[-1]}: "
            "the scores may keep improving beyond it (try a larger k range)"
        )
    params = {
        "k_range": [ks[0], ks[-1]] if k == "auto" else None,
        "sample": len(space.fit_rows),
        "fit_rows": len(sweep.rows),
        "silhouette_sample": len(space.sil_rows),
        "n_init": n_init if method != "agglomerative" else None,
        "linkage": linkage if method == "agglomerative" else None,
        "peak_tol": peak_tol,
        "choices": choices,
        "pca_requested": pca,
        "pca_explained_variance": space.explained,
        "seconds": {
            "load": round(loaded, 3),
            "pca": round(space.seconds, 3),
            "sweep": round(t_sweep, 3),
            "final": round(t_final, 3),
        },
    }
    run = ClusterRun(
        run_id=None,
        model=model_key,
        method=method,
        pca=space.pca,
        k=k_final,
        select_rule=select if k == "auto" else "fixed",
        seed=seed,
        ids=ids,
        labels=labels,
        distances=distances,
        scores=scores,
        choices=choices,
        params=params,
        silhouette=at.silhouette,
        distortion=at.distortion,
        medoids=medoids,
        map_xy=map_xy,
        map_labels=map_labels,
        warnings=warnings,
    )
    if save:
        t0 = time.perf_counter()
        run.run_id = _save(store, run, centroids)
        params["seconds"]["save"] = round(time.perf_counter() - t0, 3)
    params["seconds"]["total"] = round(time.perf_counter() - started, 3)
    return run


def _medoids(ids: list[str], labels: np.ndarray, distances: np.ndarray, k: int) -> list[str]:
    # The member nearest the mean minimises the sum of squared distances to the other
    # members (sum_j |x_i - x_j|^2 = m |x_i - mean|^2 + const), so no O(m^2) pass is needed.
    order = np.lexsort((distances, labels))
    firsts = np.searchsorted(labels[order], np.arange(k))
    return [ids[order[i]] for i in firsts]


def compare(
    store: Store,
    *,
    model_key: str | None = None,
    methods: Sequence[str] = ("kmeans", "agglomerative"),
    pca: int = 100,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    seed: int = 0,
    sample: int = DEFAULT_SAMPLE,
    silhouette_sample: int = DEFAULT_SILHOUETTE_SAMPLE,
    linkage: str = "ward",
    n_init: int = 3,
    peak_tol: float = PEAK_TOL,
    agglomerative_max: int = AGGLOMERATIVE_MAX,
    threads: int | None = None,
    data: tuple[list[str], np.ndarray] | None = None,
) -> CompareResult:
    """Recipe B: silhouette for every (method, k); the winner is the best score. Saves nothing.

    Every method sees the same PCA space and the same silhouette rows, so the scores are
    comparable. Fit the winner with ``fit(method=..., k=...)`` to save and export it.
    """
    for m in methods:
        if m not in METHODS:
            raise UsageError(f"unknown clustering method {m!r} (use one of: {', '.join(METHODS)})")
    started = time.perf_counter()
    model_key = model_key or default_model(store)
    ids, vectors = data if data is not None else load_vectors(store, model_key)
    if len(ids) < 3:
        raise UsageError(f"{len(ids)} images with {model_key} vectors: at least 3 are needed to cluster")
    ks = _check_range(k_range, len(ids))
    rows: list[CompareRow] = []
    peak: dict[str, int] = {}
    with _threads(threads):
        space = _prepare(
            ids,
            vectors,
            pca=pca,
            sample=sample,
            silhouette_sample=silhouette_sample,
            agglomerative_max=agglomerative_max,
            seed=seed,
        )
        for m in methods:
            scores = _Sweep(space, m, seed, linkage, n_init).run(ks)
            rows += [CompareRow(m, s.k, s.silhouette, s.distortion) for s in scores]
            peak[m] = choose_k_peak([s.k for s in scores], [s.silhouette for s in scores], peak_tol)
    scored = [r for r in rows if r.silhouette is not None]
    # Best score; ties go to the earlier method and the smaller k (rows are in that order).
    winner = max(scored, key=lambda r: r.silhouette) if scored else rows[0]  # type: ignore[arg-type, return-value]
    params = {
        "model": model_key,
        "pca": space.pca,
        "k_range": [ks[0], ks[-1]],
        "seed": seed,
        "sample": len(space.fit_rows),
        "silhouette_sample": len(space.sil_rows),
        "seconds": round(time.perf_counter() - started, 3),
    }
    return CompareResult(rows, winner, peak, params)


# ---------------------------------------------------------------------------------------
# saving and reading runs


def _save(store: Store, run: ClusterRun, centroids: np.ndarray) -> int:
    with store.transaction():
        (run_id,) = store.query(
            """INSERT INTO cluster_runs (created_at, model, method, pca, k, select_rule, seed, n_images,
                                         params, scores, silhouette, distortion)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id""",
            [
                utcnow(),
                run.model,
                run.method,
                run.pca,
                run.k,
                run.select_rule,
                run.seed,
                len(run.ids),
                json.dumps(run.params),
                json.dumps(run.scores_json()),
                run.silhouette,
                run.distortion,
            ],
        )[0]
        # One statement with list parameters: 100k rows in well under a second.
        store.query(
            "INSERT INTO cluster_members (run_id, image_id, cluster, distance) "
            "SELECT ?::INTEGER, unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::DOUBLE[])",
            [run_id, run.ids, run.labels.tolist(), run.distances.tolist()],
        )
        store.query(
            "INSERT INTO cluster_info (run_id, cluster, size, medoid, centroid) "
            "SELECT ?::INTEGER, unnest(?::INTEGER[]), unnest(?::INTEGER[]), unnest(?::VARCHAR[]), unnest(?::FLOAT[][])",
            [run_id, list(range(run.k)), run.sizes, run.medoids, centroids.tolist()],
        )
    return int(run_id)


def resolve_run(store: Store, run_id: int | None = None) -> int:
    """``run_id`` checked to exist, or the latest run; UsageError when there is none."""
    if run_id is None:
        latest = store.latest_run("clusters")
        if latest is None:
            raise UsageError("no clustering runs in this store: run `imgdb clusters fit` first")
        return latest
    if not store.query("SELECT 1 FROM cluster_runs WHERE id = ?", [int(run_id)]):
        raise UsageError(f"no clustering run {run_id} in this store")
    return int(run_id)


def list_runs(store: Store) -> list[dict[str, Any]]:
    """Every saved run, newest first, as plain values."""
    rows = store.query(
        "SELECT id, created_at, model, method, pca, k, select_rule, seed, n_images, silhouette "
        "FROM cluster_runs ORDER BY id DESC"
    )
    keys = ("id", "created_at", "model", "method", "pca", "k", "select_rule", "seed", "n_images", "silhouette")
    return [dict(zip(keys, r)) for r in rows]


def load_run(store: Store, run_id: int | None = None, *, with_map: bool = True) -> ClusterRun:
    """A saved run back as a ``ClusterRun`` (for ``plot``); ``with_map`` rebuilds the 2-D map."""
    run_id = resolve_run(store, run_id)
    (model, method, pca, k, rule, seed, params, scores, sil, dist) = store.query(
        "SELECT model, method, pca, k, select_rule, seed, params, scores, silhouette, distortion "
        "FROM cluster_runs WHERE id = ?",
        [run_id],
    )[0]
    params = json.loads(params) if isinstance(params, str) else dict(params or {})
    raw_scores = json.loads(scores) if isinstance(scores, str) else list(scores or [])
    members = store.query(
        "SELECT image_id, cluster, distance FROM cluster_members WHERE run_id = ? ORDER BY image_id", [run_id]
    )
    ids = [m[0] for m in members]
    labels = np.asarray([m[1] for m in members], dtype=np.int64)
    distances = np.asarray([m[2] for m in members], dtype=np.float64)
    info = store.query("SELECT cluster, medoid, centroid FROM cluster_info WHERE run_id = ? ORDER BY cluster", [run_id])
    run = ClusterRun(
        run_id=run_id,
        model=model,
        method=method,
        pca=int(pca),
        k=int(k),
        select_rule=rule,
        seed=int(seed),
        ids=ids,
        labels=labels,
        distances=distances,
        scores=[KScore(int(s["k"]), float(s["distortion"]), s.get("silhouette")) for s in raw_scores],
        choices={str(a): int(b) for a, b in (params.get("choices") or {}).items()},
        params=params,
        silhouette=sil,
        distortion=dist,
        medoids=[r[1] for r in info],
    )
    if with_map and ids:
        all_ids, all_vecs = load_vectors(store, model)
        pos = {image_id: n for n, image_id in enumerate(all_ids)}
        keep = [n for n, image_id in enumerate(ids) if image_id in pos]
        if keep:
            centroids = np.asarray([r[2] for r in info], dtype=np.float32)
            rows = all_vecs[[pos[ids[n]] for n in keep]]
            run.map_xy, run.map_labels = _map_points(rows, labels[keep], centroids, run.seed)
    return run


def show(store: Store, run_id: int | None = None, *, top_sites: int = 3) -> list[ClusterSummary]:
    """A table of the run's clusters: size, medoid (with a source), mean distance, top sites."""
    run_id = resolve_run(store, run_id)
    rows = store.query(
        """SELECT i.cluster, i.size, i.medoid,
                  (SELECT min(s.source) FROM sources s WHERE s.image_id = i.medoid) AS medoid_source,
                  (SELECT avg(m.distance) FROM cluster_members m WHERE m.run_id = i.run_id AND m.cluster = i.cluster)
           FROM cluster_info i WHERE i.run_id = ? ORDER BY i.cluster""",
        [run_id],
    )
    sites: dict[int, list[tuple[str, int]]] = {}
    for cluster, site, n in store.query(
        """SELECT cluster, site, n FROM (
               SELECT m.cluster, coalesce(s.site, '(files)') AS site, count(DISTINCT m.image_id) AS n,
                      row_number() OVER (PARTITION BY m.cluster ORDER BY count(DISTINCT m.image_id) DESC,
                                         coalesce(s.site, '(files)')) AS rank
               FROM cluster_members m JOIN sources s ON s.image_id = m.image_id
               WHERE m.run_id = ? GROUP BY 1, 2)
           WHERE rank <= ? ORDER BY cluster, rank""",
        [run_id, top_sites],
    ):
        sites.setdefault(int(cluster), []).append((str(site), int(n)))
    return [
        ClusterSummary(int(c), int(size), str(medoid), src, float(mean or 0.0), sites.get(int(c), []))
        for c, size, medoid, src, mean in rows
    ]


# ---------------------------------------------------------------------------------------
# plots


def plot(run: ClusterRun, out_dir: Path | str) -> list[Path]:
    """PNG files: distortion over k (elbow marked), silhouette over k, and the 2-D map.

    The curves need a k sweep (k = "auto"); the map needs ``map_xy`` (``fit`` and
    ``load_run`` fill it). Uses matplotlib's Agg canvas directly: no display, no pyplot state.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"run-{run.run_id}" if run.run_id is not None else "run"
    written: list[Path] = []
    if len(run.scores) > 1:
        written.append(_plot_distortion(run, out / f"{stem}-distortion.png"))
        written.append(_plot_silhouette(run, out / f"{stem}-silhouette.png"))
    if run.map_xy is not None and run.map_labels is not None and len(run.map_xy):
        written.append(_plot_map(run, out / f"{stem}-map.png"))
    return written


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, 1, 1)


def _title(run: ClusterRun) -> str:
    pca = f"PCA {run.pca}" if run.pca else "no PCA"
    name = f"run {run.run_id}" if run.run_id is not None else "unsaved run"
    return f"{name}: {run.method}, {pca}, {len(run.ids)} images"


def _plot_distortion(run: ClusterRun, path: Path) -> Path:
    fig, ax = _figure()
    ks = [s.k for s in run.scores]
    ax.plot(ks, [s.distortion for s in run.scores], "o-", ms=3, color="#1f77b4", label="distortion (within-cluster SS)")
    by_k = {s.k: s for s in run.scores}
    elbow = run.choices.get("elbow")
    if elbow in by_k:
        ax.plot(
            [elbow],
            [by_k[elbow].distortion],
            "s",
            ms=10,
            mfc="none",
            mec="#d62728",
            mew=2,
            label=f"elbow (Kneedle): k = {elbow}",
        )
    return _finish_k_plot(fig, ax, run, "distortion", path)


def _plot_silhouette(run: ClusterRun, path: Path) -> Path:
    fig, ax = _figure()
    pts = [(s.k, s.silhouette) for s in run.scores if s.silhouette is not None]
    if pts:
        ks, sil = zip(*pts)
        ax.plot(ks, sil, "o-", ms=3, color="#ff7f0e", label="silhouette (sample)")
        tol = float(run.params.get("peak_tol", PEAK_TOL))
        window = peak_window(len(run.scores))
        sm = smooth_curve(np.asarray(sil, dtype=np.float64), window)
        ax.plot(ks, sm, "-", lw=1, color="#8c564b", alpha=0.7, label=f"smoothed ({window} k)")
        ax.axhline(float(np.max(sm)) - tol, color="#7f7f7f", ls=":", lw=1, label=f"peak floor (max - {tol:g})")
        for rule, marker in (("silhouette", "^"), ("peak", "o")):
            k = run.choices.get(rule)
            if k in ks:
                ax.plot([k], [sil[ks.index(k)]], marker, ms=11, mfc="none", mew=2, label=f"{rule}: k = {k}")
    return _finish_k_plot(fig, ax, run, "mean silhouette", path)


def _finish_k_plot(fig: Any, ax: Any, run: ClusterRun, ylabel: str, path: Path) -> Path:
    """The chosen k, labels, legend; then save."""
    if run.k in {s.k for s in run.scores}:
        ax.axvline(run.k, color="#2ca02c", ls="--", lw=1, label=f"chosen ({run.select_rule}): k = {run.k}")
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_title(_title(run), fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _colours(k: int) -> list[Any]:
    from matplotlib import colormaps
    from matplotlib.colors import hsv_to_rgb

    if k <= 20:
        base = colormaps["tab20"].colors
        return [base[(2 * i) % 20 + (2 * i) // 20] for i in range(k)]  # dark shades first
    # Golden-ratio hue steps: clusters with neighbouring numbers get distant hues.
    return [tuple(hsv_to_rgb(((i * 0.618034) % 1.0, 0.85, 0.55 + 0.4 * (i % 2)))) for i in range(k)]


def _plot_map(run: ClusterRun, path: Path) -> Path:
    assert run.map_xy is not None and run.map_labels is not None
    fig, ax = _figure(7.5, 6.5)
    colours = _colours(run.k)
    xy, lab = run.map_xy, run.map_labels
    ax.scatter(
        xy[:, 0], xy[:, 1], c=[colours[int(c)] for c in lab], s=6 if len(xy) < 2000 else 3, alpha=0.7, linewidths=0
    )
    for c in range(run.k):
        pts = xy[lab == c]
        if len(pts):
            cx, cy = np.median(pts, axis=0)
            ax.text(
                cx,
                cy,
                str(c),
                fontsize=8,
                weight="bold",
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": colours[c], "alpha": 0.8},
            )
    shown = f"{len(xy)} of {len(run.ids)} images" if len(xy) < len(run.ids) else f"{len(xy)} images"
    ax.set_title(f"{_title(run)}\nk = {run.k}; {shown}, on the two main axes of the cluster means", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return path


def scores_table(run: ClusterRun) -> list[dict[str, Any]]:
    """Per-k scores with the rules that pick each k (for the CLI's table or --json)."""
    picked: dict[int, list[str]] = {}
    for rule, k in run.choices.items():
        picked.setdefault(k, []).append(rule)
    return [
        {"k": s.k, "distortion": s.distortion, "silhouette": s.silhouette, "picked_by": sorted(picked.get(s.k, []))}
        for s in run.scores
    ]
