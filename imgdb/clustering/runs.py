"""Clustering runs against a store: fit, compare, save, and read saved runs back.

A saved run is one row of ``cluster_runs`` with one ``cluster_members`` row per image and
one ``cluster_info`` row per cluster; the store owns those tables, this module only
inserts into them (in one transaction) and reads them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from imgdb.clustering.engine import (
    AGGLOMERATIVE_MAX,
    DEFAULT_SAMPLE,
    DEFAULT_SILHOUETTE_SAMPLE,
    Sweep,
    check_method,
    limit_threads,
    map_points,
    map_sample,
    means,
    medoids,
    prepare,
    relabel_by_size,
)
from imgdb.clustering.results import ClusterRun, ClusterSummary, CompareResult, CompareRow
from imgdb.clustering.select_k import PEAK_TOL, RULES, KScore, all_choices, choose_k_peak
from imgdb.errors import UsageError
from imgdb.store import Store, utcnow

DEFAULT_K_RANGE = (2, 30)


def default_model(store: Store) -> str:
    """The model most images were ingested with; UsageError for a store without images."""
    key = store.main_model()
    if key is None:
        raise UsageError(f"the store at {store.path} has no images: run `imgdb ingest` first")
    return key


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
    ("peak", "silhouette" or "elbow", see ``select_k``). ``pca`` = 0 clusters the raw
    vectors. ``sample`` caps the rows of the PCA fit and the sweep, ``silhouette_sample`` the
    rows of each silhouette. ``save=False`` computes without writing (read-only stores are
    fine then). ``threads`` caps BLAS/OpenMP threads (see ``engine.limit_threads``).
    ``data`` = (ids sorted, vectors) skips loading them from the store.
    """
    check_method(method)
    if select not in RULES:
        raise UsageError(f"unknown k selection rule {select!r} (use one of: {', '.join(RULES)})")
    if linkage not in ("ward", "average", "complete", "single"):
        raise UsageError(f"unknown linkage {linkage!r} (use ward, average, complete or single)")
    if save:
        store.require_write()
    if pca < 0 or sample < 2 or silhouette_sample < 2:
        raise UsageError("pca must be >= 0 and the samples >= 2")
    started = time.perf_counter()
    model_key = model_key or default_model(store)
    ids, vectors = data if data is not None else store.all_vectors(model_key)
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

    with limit_threads(threads):
        space = prepare(
            ids,
            vectors,
            pca=pca,
            sample=sample,
            silhouette_sample=silhouette_sample,
            agglomerative_max=agglomerative_max,
            seed=seed,
        )
        sweep = Sweep(space, method, seed, linkage, n_init)
        t0 = time.perf_counter()
        scores = sweep.run(ks)
        t_sweep = time.perf_counter() - t0
        choices = all_choices(scores, peak_tol) if len(ks) > 1 else {}
        chosen = choices[select] if choices else ks[0]

        t0 = time.perf_counter()
        labels, k_final = relabel_by_size(sweep.final(chosen))
        centers = means(space.z, labels, k_final)
        distances = np.linalg.norm(space.z - centers[labels], axis=1).astype(np.float64)
        medoid_ids = medoids(ids, labels, distances, k_final)
        centroids = means(vectors, labels, k_final)
        shown = map_sample(len(ids), seed)
        map_xy = map_points(vectors[shown], centroids)
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
    seconds: dict[str, float] = {
        "load": round(loaded, 3),
        "pca": round(space.seconds, 3),
        "sweep": round(t_sweep, 3),
        "final": round(t_final, 3),
    }
    params: dict[str, Any] = {
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
        "seconds": seconds,
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
        medoids=medoid_ids,
        map_ids=[ids[n] for n in shown],
        map_xy=map_xy,
        map_labels=labels[shown],
        warnings=warnings,
    )
    if save:
        t0 = time.perf_counter()
        run.run_id = _save(store, run, centroids)
        seconds["save"] = round(time.perf_counter() - t0, 3)
    seconds["total"] = round(time.perf_counter() - started, 3)
    return run


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
    """The silhouette of every (method, k); the winner is the best score. Saves nothing.

    Every method sees the same PCA space and the same silhouette rows, so the scores are
    comparable. Fit the winner with ``fit(method=..., k=...)`` to save and export it.
    """
    for m in methods:
        check_method(m)
    started = time.perf_counter()
    model_key = model_key or default_model(store)
    ids, vectors = data if data is not None else store.all_vectors(model_key)
    if len(ids) < 3:
        raise UsageError(f"{len(ids)} images with {model_key} vectors: at least 3 are needed to cluster")
    ks = _check_range(k_range, len(ids))
    rows: list[CompareRow] = []
    peak: dict[str, int] = {}
    with limit_threads(threads):
        space = prepare(
            ids,
            vectors,
            pca=pca,
            sample=sample,
            silhouette_sample=silhouette_sample,
            agglomerative_max=agglomerative_max,
            seed=seed,
        )
        for m in methods:
            scores = Sweep(space, m, seed, linkage, n_init).run(ks)
            rows += [CompareRow(m, s.k, s.silhouette, s.distortion) for s in scores]
            peak[m] = choose_k_peak([s.k for s in scores], [s.silhouette for s in scores], peak_tol)
    scored = [r for r in rows if r.silhouette is not None]
    # Best score; ties go to the earlier method and the smaller k (rows are in that order).
    winner = max(scored, key=_silhouette_of) if scored else rows[0]
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


def _silhouette_of(row: CompareRow) -> float:
    return -math.inf if row.silhouette is None else row.silhouette


# ---------------------------------------------------------------------------------------
# saving and reading runs


def _save(store: Store, run: ClusterRun, centroids: np.ndarray) -> int:
    """Insert the run, its members and its clusters in one transaction; returns the new id."""
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
        # One statement per table with list parameters, not one per row.
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
        centroids = np.asarray([r[2] for r in info], dtype=np.float32)
        shown = map_sample(len(ids), run.seed)
        found = store.get_vectors(model, [ids[n] for n in shown])
        shown = np.asarray([n for n in shown if ids[n] in found], dtype=np.int64)  # images since deleted
        if len(shown):
            run.map_ids = [ids[n] for n in shown]
            run.map_xy = map_points(np.stack([found[i] for i in run.map_ids]), centroids)
            run.map_labels = labels[shown]
    return run


def show(store: Store, run_id: int | None = None, *, top_sites: int = 3) -> list[ClusterSummary]:
    """A table of the run's clusters: size, medoid (with its representative source), mean distance, top sites.

    ``run_id`` None means the latest run. The medoid's source is the one ``Store.describe``
    gives, so every command labels an image the same way.
    """
    run_id = resolve_run(store, run_id)
    rows = store.query(
        """SELECT i.cluster, i.size, i.medoid,
                  (SELECT avg(m.distance) FROM cluster_members m WHERE m.run_id = i.run_id AND m.cluster = i.cluster)
           FROM cluster_info i WHERE i.run_id = ? ORDER BY i.cluster""",
        [run_id],
    )
    described = store.describe([str(r[2]) for r in rows])
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
    summaries = []
    for c, size, medoid, mean in rows:
        image = described.get(str(medoid))
        summaries.append(
            ClusterSummary(
                int(c),
                int(size),
                str(medoid),
                image.source if image is not None else None,
                float(mean or 0.0),
                sites.get(int(c), []),
            )
        )
    return summaries
