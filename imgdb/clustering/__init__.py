"""Clustering runs: fit, choose k, save, summarise and plot.

A *clustering run* groups every image of one model's vectors into k clusters, numbered by
size (0 = largest). A saved run lives in the store (``cluster_runs``, ``cluster_members``,
``cluster_info``), so SQL can join on it and later commands can name it by id.

Pipeline of ``fit``::

    vectors (N x D, sorted by id) -> PCA to ``pca`` components, fitted on <= ``sample`` rows
    -> k sweep on <= ``sample`` rows: for each k, the method's partition, its distortion
       (within-cluster sum of squares) and its silhouette on <= ``silhouette_sample`` rows
    -> k chosen by a rule (``select``)
    -> final partition of all N images (k-means starts from the sweep's centroids;
       agglomerative above ``agglomerative_max`` rows assigns the rest to the nearest mean)

Rules (``RULES``, in ``select_k``):

* "peak" (the default): the largest k among the local maxima of the smoothed silhouette
  curve that lie within ``peak_tol`` of its maximum; with none, the best silhouette;
* "silhouette": the best silhouette;
* "elbow": Kneedle on the distortion curve.

``compare`` scores every (method, k) on the same PCA space and rows and names the best
silhouette; it saves nothing. Everything is deterministic for a given ``seed``.

Modules: ``select_k`` (the rules, pure functions), ``engine`` (the maths on arrays),
``runs`` (fit, compare and saved runs in the store), ``results`` (the returned types),
``plots`` (PNG plots and the score table).
"""

from imgdb.clustering.engine import (
    AGGLOMERATIVE_MAX,
    DEFAULT_SAMPLE,
    DEFAULT_SILHOUETTE_SAMPLE,
    MAP_POINTS,
    METHODS,
)
from imgdb.clustering.plots import plot, scores_table
from imgdb.clustering.results import ClusterRun, ClusterSummary, CompareResult, CompareRow
from imgdb.clustering.runs import (
    DEFAULT_K_RANGE,
    compare,
    default_model,
    fit,
    list_runs,
    load_run,
    resolve_run,
    show,
)
from imgdb.clustering.select_k import (
    PEAK_TOL,
    RULES,
    KScore,
    all_choices,
    choose_k,
    choose_k_elbow,
    choose_k_peak,
    choose_k_silhouette,
    peak_window,
    silhouette_peaks,
    smooth_curve,
)

__all__ = [
    "AGGLOMERATIVE_MAX",
    "DEFAULT_K_RANGE",
    "DEFAULT_SAMPLE",
    "DEFAULT_SILHOUETTE_SAMPLE",
    "MAP_POINTS",
    "METHODS",
    "PEAK_TOL",
    "RULES",
    "ClusterRun",
    "ClusterSummary",
    "CompareResult",
    "CompareRow",
    "KScore",
    "all_choices",
    "choose_k",
    "choose_k_elbow",
    "choose_k_peak",
    "choose_k_silhouette",
    "compare",
    "default_model",
    "fit",
    "list_runs",
    "load_run",
    "peak_window",
    "plot",
    "resolve_run",
    "scores_table",
    "show",
    "silhouette_peaks",
    "smooth_curve",
]
