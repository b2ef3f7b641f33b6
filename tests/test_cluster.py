"""Clustering: the k rules as pure functions, and fits on a real store of 6 visual families."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from imgdb import clustering
from imgdb.errors import ReadOnlyStore, UsageError
from imgdb.store import Store
from tests import images

K_RANGE = (2, 12)

# Silhouette over k = 2..30 measured with the bundled model (KMeans, PCA 100):
# on tests/images.family (6 families x 8) and on the grocery photos (scripts/eval_clusters.py).
FAMILY_CURVE = [
    0.224,
    0.329,
    0.415,
    0.532,
    0.619,
    0.55,
    0.523,
    0.494,
    0.48,
    0.386,
    0.403,
    0.332,
    0.315,
    0.311,
    0.324,
    0.346,
    0.295,
    0.228,
    0.214,
    0.204,
    0.212,
    0.206,
    0.194,
    0.284,
    0.276,
    0.183,
    0.182,
    0.16,
    0.161,
]
GROCERY_CURVE = [
    0.213,
    0.177,
    0.165,
    0.177,
    0.175,
    0.189,
    0.185,
    0.184,
    0.108,
    0.101,
    0.112,
    0.111,
    0.121,
    0.118,
    0.118,
    0.122,
    0.116,
    0.109,
    0.114,
    0.123,
    0.12,
    0.116,
    0.118,
    0.122,
    0.122,
    0.126,
    0.121,
    0.124,
    0.123,
]
KS = list(range(2, 31))


def family_of(store: Store) -> dict[str, int]:
    """image id -> family number, from the folder each image was ingested from."""
    rows = store.query("SELECT image_id, source FROM sources WHERE kind = 'file'")  # other tests add web sources
    return {image_id: int(Path(source).parent.name.split("-")[1]) for image_id, source in rows}


def nmi(store: Store, run: clustering.ClusterRun) -> float:
    truth = family_of(store)
    return normalized_mutual_info_score([truth[i] for i in run.ids], run.labels)


# ---------------------------------------------------------------------------- rules


def test_elbow_is_kneedle_on_the_monotone_curve():
    ks = list(range(2, 11))
    assert clustering.choose_k_elbow(ks, [1000, 600, 250, 100, 90, 82, 75, 70, 66]) == 5
    # A k-means local optimum (a rise) does not move the elbow: the curve is made monotone.
    assert clustering.choose_k_elbow(ks, [1000, 600, 250, 100, 90, 95, 75, 70, 66]) == 5
    # A straight line has no elbow: the smallest k; too few points: the first.
    assert clustering.choose_k_elbow(ks, [100 - 10 * i for i in range(9)]) == 2
    assert clustering.choose_k_elbow([3, 4], [10, 5]) == 3
    # Order of the input does not matter.
    assert clustering.choose_k_elbow(ks[::-1], [1000, 600, 250, 100, 90, 82, 75, 70, 66][::-1]) == 5


def test_peak_rule_on_measured_curves():
    # Well-separated families: the true k towers over the other local maxima.
    assert clustering.silhouette_peaks(KS, FAMILY_CURVE) == [6]
    assert clustering.choose_k_peak(KS, FAMILY_CURVE) == 6
    assert clustering.choose_k_silhouette(KS, FAMILY_CURVE) == 6
    # Grocery photos: plain silhouette says k = 2; every local maximum is within the floor
    # (max - 0.1 = 0.113) and the finest one wins.
    assert clustering.choose_k_silhouette(KS, GROCERY_CURVE) == 2
    assert clustering.silhouette_peaks(KS, GROCERY_CURVE) == [7, 17, 21, 27, 29]
    assert clustering.choose_k_peak(KS, GROCERY_CURVE) == 29
    # A tighter floor keeps only the coarse regime's peak.
    assert clustering.silhouette_peaks(KS, GROCERY_CURVE, tol=0.05) == [7]


def test_peak_rule_ignores_wiggles_on_a_slope():
    """UKBench-like: one broad hump at the true k, then a slow decline with k-means jitter."""
    ks = list(range(2, 201))
    curve = [0.57 - 0.00003 * (k - 125) ** 2 + 0.006 * np.sin(k * 1.7) for k in ks]
    assert clustering.silhouette_peaks(ks, curve, window=1) != [125]  # unsmoothed: wiggles are peaks
    assert abs(clustering.choose_k_peak(ks, curve) - 125) <= 3
    assert clustering.peak_window(199) == 21 and clustering.peak_window(11) == 3


def test_peak_rule_edges_and_gaps():
    # The first k is never a peak; with no peak at all the argmax is used.
    assert clustering.choose_k_peak([2, 3, 4, 5], [0.9, 0.5, 0.4, 0.3]) == 2
    # Still rising at the end of the range: the last k counts (fit warns about it).
    assert clustering.choose_k_peak([2, 3, 4, 5], [0.1, 0.2, 0.3, 0.35]) == 5
    # Undefined silhouettes (None) are skipped; a plateau keeps its first k.
    assert clustering.choose_k_peak([2, 3, 4, 5, 6], [None, 0.5, 0.5, 0.2, None]) == 3
    assert clustering.choose_k_silhouette([2, 3], [None, None]) == 2
    assert clustering.choose_k(KS, [1.0] * len(KS), GROCERY_CURVE, "silhouette") == 2
    with pytest.raises(UsageError):
        clustering.choose_k(KS, [1.0] * len(KS), GROCERY_CURVE, "gap")


# ---------------------------------------------------------------------------- fits


@pytest.mark.parametrize("method", clustering.METHODS)
def test_families_recovered_at_the_true_k(family_db, method):
    with Store.open(family_db) as store:
        run = clustering.fit(store, method=method, k=6, save=False)
        assert run.k == 6 and len(run.ids) == images.FAMILIES * images.FAMILY_MEMBERS
        assert nmi(store, run) == pytest.approx(1.0)
        assert sorted(run.sizes) == [images.FAMILY_MEMBERS] * 6


@pytest.mark.parametrize("method", ["kmeans", "agglomerative"])
def test_auto_k_finds_the_families(family_db, method):
    with Store.open(family_db) as store:
        run = clustering.fit(store, method=method, k="auto", k_range=K_RANGE, save=False)
        assert run.k == 6, run.scores_json()
        assert run.select_rule == "peak"
        assert run.choices["peak"] == run.choices["silhouette"] == 6
        assert [s.k for s in run.scores] == list(range(2, 13))
        assert nmi(store, run) == pytest.approx(1.0)
        assert run.warnings == []


def test_fit_is_saved_for_sql_and_later_commands(family_db):
    with Store.open(family_db, write=True) as store:
        run = clustering.fit(store, k="auto", k_range=K_RANGE)
        assert run.run_id is not None and store.latest_run("clusters") == run.run_id
        (model, method, pca, k, rule, seed, n, params, scores, sil) = store.query(
            "SELECT model, method, pca, k, select_rule, seed, n_images, params, scores, silhouette "
            "FROM cluster_runs WHERE id = ?",
            [run.run_id],
        )[0]
        assert (model, method, k, rule, seed, n) == (
            store.query("SELECT key FROM models")[0][0],
            "kmeans",
            6,
            "peak",
            0,
            42,
        )
        assert pca == 41  # 100 requested, capped at n - 1 rows
        params, scores = json.loads(params), json.loads(scores)
        assert params["choices"]["peak"] == 6 and params["k_range"] == [2, 12]
        assert [s["k"] for s in scores] == list(range(2, 13))
        assert all(s["distortion"] > 0 and -1 <= s["silhouette"] <= 1 for s in scores)
        assert sil == pytest.approx(max(s["silhouette"] for s in scores))
        # Every image has exactly one row, joinable with images and sources.
        joined = store.query(
            "SELECT count(*), count(DISTINCT m.image_id), count(DISTINCT m.cluster) FROM cluster_members m "
            "JOIN images i ON i.id = m.image_id WHERE m.run_id = ?",
            [run.run_id],
        )[0]
        assert joined == (42, 42, 6)
        per_family = store.query(
            "SELECT regexp_extract(s.source, 'family-(\\d)', 1) AS fam, count(DISTINCT m.cluster) "
            "FROM cluster_members m JOIN sources s ON s.image_id = m.image_id WHERE m.run_id = ? GROUP BY 1",
            [run.run_id],
        )
        assert sorted(per_family) == [(str(f), 1) for f in range(6)]
        info = store.query(
            "SELECT cluster, size, medoid, len(centroid) FROM cluster_info WHERE run_id = ? ORDER BY cluster",
            [run.run_id],
        )
        assert [r[0] for r in info] == list(range(6)) and sum(r[1] for r in info) == 42
        assert all(r[3] == 1280 for r in info)
        for c, _size, medoid, _dim in info:
            assert store.query(
                "SELECT cluster FROM cluster_members WHERE run_id = ? AND image_id = ?", [run.run_id, medoid]
            ) == [(c,)]
        # Reading it back gives the same assignment, and a map for the plot.
        loaded = clustering.load_run(store, run.run_id)
        assert loaded.ids == run.ids and np.array_equal(loaded.labels, run.labels)
        assert loaded.choices == run.choices and loaded.map_xy is not None and loaded.map_xy.shape == (42, 2)
        assert clustering.list_runs(store)[0]["id"] == run.run_id
        # A second save gets a new id and leaves the first alone.
        second = clustering.fit(store, k=3)
        assert second.run_id == run.run_id + 1
        assert store.query("SELECT count(*) FROM cluster_members WHERE run_id = ?", [run.run_id]) == [(42,)]


def test_fit_is_deterministic_for_a_seed(family_db):
    with Store.open(family_db) as store:
        a = clustering.fit(store, k="auto", k_range=(2, 8), seed=3, save=False, sample=30, silhouette_sample=20)
        b = clustering.fit(store, k="auto", k_range=(2, 8), seed=3, save=False, sample=30, silhouette_sample=20)
        assert a.ids == b.ids and np.array_equal(a.labels, b.labels) and a.scores_json() == b.scores_json()
        assert a.medoids == b.medoids
        # Clusters are numbered by size, largest first.
        assert a.sizes == sorted(a.sizes, reverse=True)


def test_samples_cap_the_sweep_but_every_image_is_assigned(family_db):
    with Store.open(family_db) as store:
        run = clustering.fit(store, k=6, sample=24, silhouette_sample=12, save=False)
        assert run.params["sample"] == 24 and run.params["silhouette_sample"] == 12
        assert len(run.labels) == 42 and nmi(store, run) == pytest.approx(1.0)
        # Agglomerative above its cap: fitted on a sample, the rest join the nearest mean.
        agg = clustering.fit(store, method="agglomerative", k=6, agglomerative_max=18, save=False)
        assert agg.params["fit_rows"] == 18
        assert len(agg.labels) == 42 and nmi(store, agg) == pytest.approx(1.0)


def test_show_lists_clusters_with_medoid_and_sites(family_db):
    with Store.open(family_db, write=True) as store:
        run = clustering.fit(store, k=6)
        rows = clustering.show(store, run.run_id)
        assert [r.cluster for r in rows] == list(range(6))
        assert sum(r.size for r in rows) == 42
        for r in rows:
            assert r.medoid == run.medoids[r.cluster]
            assert r.medoid_source and r.medoid_source.endswith(".jpg")
            assert r.top_sites == [("(files)", r.size)]
            assert r.mean_distance > 0
        assert clustering.show(store)[0].size == rows[0].size  # latest run by default


def test_plots_are_pngs(family_db, tmp_path):
    with Store.open(family_db) as store:
        run = clustering.fit(store, k="auto", k_range=K_RANGE, save=False)
        paths = clustering.plot(run, tmp_path / "plots")
        assert [p.name for p in paths] == ["run-distortion.png", "run-silhouette.png", "run-map.png"]
        for p in paths:
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        fixed = clustering.fit(store, k=4, save=False)
        assert [p.name for p in clustering.plot(fixed, tmp_path / "fixed")] == ["run-map.png"]


def test_compare_runs_the_best_silhouette_grid(family_db):
    with Store.open(family_db) as store:
        result = clustering.compare(store, k_range=(2, 8))
        assert [(r.method, r.k) for r in result.rows] == [
            (m, k) for m in ("kmeans", "agglomerative") for k in range(2, 9)
        ]
        best = max(r.silhouette for r in result.rows if r.silhouette is not None)
        assert result.winner.silhouette == best and result.winner.k == 6
        assert result.peak == {"kmeans": 6, "agglomerative": 6}


def test_errors_are_usage_errors(family_db, tmp_path):
    with Store.open(family_db) as store:
        with pytest.raises(UsageError, match="method"):
            clustering.fit(store, method="dbscan", save=False)
        with pytest.raises(UsageError, match="between 2 and 41"):
            clustering.fit(store, k=42, save=False)
        with pytest.raises(UsageError, match="range"):
            clustering.fit(store, k_range=(5, 3), save=False)
        with pytest.raises(UsageError, match="sample size"):
            clustering.fit(store, k=6, sample=5, save=False)
        with pytest.raises(ReadOnlyStore, match="writing"):
            clustering.fit(store, k=3)
        with pytest.raises(UsageError, match="no clustering run 999"):
            clustering.show(store, 999)
    with Store.open(tmp_path / "empty", write=True) as empty:
        assert empty.latest_run("clusters") is None
        with pytest.raises(UsageError, match="no clustering runs"):
            clustering.show(empty)
        with pytest.raises(UsageError, match="no images"):
            clustering.fit(empty)


def test_thread_cap_holds_for_pools_loaded_by_the_clustering_imports():
    """A fresh process (as the CLI is): scikit-learn's OpenMP and SciPy's OpenBLAS load on
    first import, after the cap was set; every pool must still run one thread."""
    import subprocess
    import sys

    code = (
        "import json\n"
        "from threadpoolctl import threadpool_info\n"
        "from imgdb.clustering.engine import limit_threads\n"
        "with limit_threads(None):\n"
        "    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads\n"
        "    pools = [(p['user_api'], p['num_threads']) for p in threadpool_info()]\n"
        "    print(json.dumps({'pools': pools, 'sklearn': _openmp_effective_n_threads()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("IMGDB_CLUSTER_THREADS", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    got = json.loads(out.stdout)
    apis = {api for api, _ in got["pools"]}
    assert {"openmp", "blas"} <= apis, got
    assert all(n == 1 for _, n in got["pools"]) and got["sklearn"] == 1, got
