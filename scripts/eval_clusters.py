"""Score imgdb's clustering against folder labels, and time ``fit --k auto`` at 100k.

Usage:
    python scripts/eval_clusters.py FOLDER LABELS_CSV [--db DIR] [--k-range 2 30] [--seeds 0,1,2]
                                    [--labels fine_id,coarse_id] [--pca 100] [--out bench-results/clusters.json]
    python scripts/eval_clusters.py --synthetic 100000 [--dim 1280] [--classes 60]
    (both at once is fine)

Labels: a CSV with a path column (``path``, ``filename`` or ``file``: relative to FOLDER or
to the CSV's folder; see ``imgdb.eval.labels``) and one or more label columns. Default
label columns: ``fine_id`` and ``coarse_id`` when present (the grocery set), else
``group_id``, else the column after the path column.

The folder is ingested with the real bundled model into a temp store, or into ``--db``
(re-used when it already holds the images, so repeated runs skip the embedding). The data
is only read, never copied into the project.

For every label set it reports NMI and ARI (scikit-learn) of:

* ``true-k``        KMeans / agglomerative at k = number of classes;
* ``recipe-A``      KMeans, k by the elbow (Kneedle) of the distortion curve over the range;
* ``recipe-B``      the best silhouette over methods x k (``clustering.compare``);
* ``imgdb-peak``    KMeans / agglomerative, k by imgdb's "peak" rule (the default);
* ``silhouette``    KMeans, k by plain silhouette argmax (recipe B restricted to KMeans);

and, per seed in ``--seeds``, the k each rule picks (is the choice stable?).

``--synthetic N`` builds a store of N random unit vectors (``--dim``, drawn around
``--classes`` centres) and times ``clustering.fit(k="auto")`` end to end for each of
``--synthetic-methods``: load from LanceDB, PCA, k sweep, final fit and saving the run.
Target: under 120 s for 100,000 x 1280 with KMeans.

Results go to ``--out`` (JSON; keys of an earlier run that this run did not redo are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from imgdb import clustering, config
from imgdb.eval import metrics
from imgdb.eval.labels import Labels, read_labels
from imgdb.store import Store

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 120.0


# ---------------------------------------------------------------------------------------
# labels


def image_labels(store: Store, labels: Labels) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """image id -> labels, via each image's file sources; counts of what did not match.

    A source that is no labelled file takes the labels of the one labelled path (resolved
    or not) with its file name, when there is exactly one.
    """
    names = [(path.name, lab) for path, lab in labels.by_path.items()]
    names += [(Path(cell).name, lab) for cell, lab in labels.unresolved.items()]
    by_name: dict[str, list[dict[str, str]]] = {}
    for name, values in names:
        by_name.setdefault(name, []).append(values)
    out: dict[str, dict[str, str]] = {}
    stats: Counter[str] = Counter()
    for image_id, source in store.query("SELECT image_id, source FROM sources WHERE kind = 'file' ORDER BY source"):
        lab = labels.by_path.get(Path(source).resolve())
        if lab is None and len(by_name.get(Path(source).name, [])) == 1:
            lab = by_name[Path(source).name][0]
        if lab is None:
            stats["unlabelled sources"] += 1
            continue
        if image_id in out and out[image_id] != lab:
            stats["same bytes, different labels"] += 1  # first (sorted) source wins
            continue
        out.setdefault(image_id, lab)
    return out, dict(stats)


# ---------------------------------------------------------------------------------------
# the store


def open_store(folder: Path, db: Path | None) -> tuple[Store, tempfile.TemporaryDirectory | None]:
    """Ingest ``folder`` (skipped when ``db`` already has it) and reopen read-only."""
    from imgdb.acquire.ingest import ingest
    from imgdb.imaging.model import Model, ModelSpec

    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="imgdb-eval-")
        db = Path(tmp.name) / "db"
    started = time.perf_counter()
    with Store.open(db, write=True) as store:
        summary = ingest(store, [str(folder)], Model(ModelSpec.load()))
    print(
        f"ingest: {summary.new} new, {summary.already_stored} already stored, "
        f"{sum(summary.failed.values())} failed, {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return Store.open(db), tmp


# ---------------------------------------------------------------------------------------
# scoring


def scores(truth: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """NMI and ARI, rounded for the report."""
    return {"nmi": round(metrics.nmi(truth, labels), 4), "ari": round(metrics.ari(truth, labels), 4)}


def evaluate(store: Store, folder: Path, labels_csv: Path, args: argparse.Namespace) -> dict[str, Any]:
    try:
        labels = read_labels(labels_csv, folder, label_columns=args.labels.split(",") if args.labels else None)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    columns = list(labels.columns)
    id_labels, unmatched = image_labels(store, labels)
    model = clustering.default_model(store)
    ids_all, vecs_all = store.all_vectors(model)
    keep = [i for i, image_id in enumerate(ids_all) if image_id in id_labels]
    ids, vecs = [ids_all[i] for i in keep], vecs_all[keep]
    data = (ids, vecs)
    truth = {c: np.unique([id_labels[i][c] for i in ids], return_inverse=True)[1] for c in columns}
    n_classes = {c: int(t.max()) + 1 for c, t in truth.items()}
    k_range = (args.k_range[0], args.k_range[1])
    common = {"pca": args.pca, "k_range": k_range, "save": False, "data": data}
    print(f"{len(ids)} labelled images; classes: {n_classes}; k range {k_range[0]}..{k_range[1]}", file=sys.stderr)

    fits: list[dict[str, Any]] = []

    def record(setting: str, run: clustering.ClusterRun, seconds: float, for_label: str | None = None) -> None:
        row = {
            "setting": setting,
            "method": run.method,
            "k": run.k,
            "rule": run.select_rule,
            "silhouette": None if run.silhouette is None else round(run.silhouette, 4),
            "seconds": round(seconds, 2),
        }
        for c, t in truth.items():
            if for_label is None or for_label == c:
                row[c] = scores(t, run.labels)
        fits.append(row)
        print(
            f"  {setting:<14} {run.method:<13} k={run.k:<4} {json.dumps({c: row.get(c) for c in truth})}",
            file=sys.stderr,
        )

    def timed_fit(**kw: Any) -> tuple[clustering.ClusterRun, float]:
        t0 = time.perf_counter()
        run = clustering.fit(store, **{**common, **kw})
        return run, time.perf_counter() - t0

    # The k sweeps (seed 0) and the fits at each rule's k.
    sweeps: dict[str, clustering.ClusterRun] = {}
    for method in ("kmeans", "agglomerative"):
        run, secs = timed_fit(method=method, k="auto", select="peak", seed=0)
        sweeps[method] = run
        record("imgdb-peak", run, secs)
    km = sweeps["kmeans"]
    for rule, setting in (("elbow", "recipe-A"), ("silhouette", "silhouette")):
        k = km.choices[rule]
        run, secs = (km, 0.0) if k == km.k else timed_fit(method="kmeans", k=k, seed=0)
        run.select_rule = rule
        record(setting, run, secs)
    t0 = time.perf_counter()
    cmp = clustering.compare(store, methods=("kmeans", "agglomerative"), pca=args.pca, k_range=k_range, data=data)
    t_cmp = time.perf_counter() - t0
    run, secs = timed_fit(method=cmp.winner.method, k=cmp.winner.k, seed=0)
    run.select_rule = "compare"
    record("recipe-B", run, secs + t_cmp)
    for c, n in n_classes.items():
        for method in ("kmeans", "agglomerative"):
            if n < len(ids):
                run, secs = timed_fit(method=method, k=n, seed=0)
                record(f"true-k {c}", run, secs, for_label=c)

    # Is each rule's k stable across seeds (sampling, k-means initialisation)?
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in args.seeds:
        run, secs = timed_fit(method="kmeans", k="auto", select="peak", seed=seed)
        entry: dict[str, Any] = {"k": dict(run.choices), "seconds": round(secs, 2)}
        for rule, k in run.choices.items():
            r = run if k == run.k else clustering.fit(store, **{**common, "method": "kmeans", "k": k, "seed": seed})
            entry[rule] = {c: scores(t, r.labels) for c, t in truth.items()}
        per_seed[str(seed)] = entry
        print(f"  seed {seed}: {entry['k']}", file=sys.stderr)

    return {
        "dataset": str(folder),
        "labels_csv": str(labels_csv),
        "label_columns": columns,
        "images": len(ids),
        "unmatched": unmatched,
        "classes": n_classes,
        "model": model,
        "k_range": list(k_range),
        "pca": args.pca,
        "curves": {m: clustering.scores_table(r) for m, r in sweeps.items()},
        "compare": {"winner": vars(cmp.winner), "peak": cmp.peak, "rows": [vars(r) for r in cmp.rows]},
        "fits": fits,
        "seeds": per_seed,
    }


def print_table(result: dict[str, Any]) -> None:
    cols = result["label_columns"]
    head = f"{'setting':<16} {'method':<14} {'k':>4} {'sil':>6}  "
    head += "  ".join(f"{c + ' NMI':>12} {c + ' ARI':>12}" for c in cols)
    print(
        f"\n{result['dataset']}: {result['images']} images, classes {result['classes']}, "
        f"k range {result['k_range'][0]}..{result['k_range'][1]}, PCA {result['pca']}"
    )
    print(head)
    print("-" * len(head))
    for row in result["fits"]:
        sil = "" if row["silhouette"] is None else f"{row['silhouette']:.3f}"
        cells = "  ".join(
            f"{row[c]['nmi']:>12.3f} {row[c]['ari']:>12.3f}" if c in row else f"{'':>12} {'':>12}" for c in cols
        )
        print(f"{row['setting']:<16} {row['method']:<14} {row['k']:>4} {sil:>6}  {cells}")
    print("\nk picked per seed (kmeans):")
    for seed, entry in result["seeds"].items():
        print(f"  seed {seed}: " + ", ".join(f"{rule} {k}" for rule, k in entry["k"].items()))


# ---------------------------------------------------------------------------------------
# synthetic timing


def synthetic(n: int, dim: int, classes: int, synthetic_methods: list[str], seed: int = 0) -> dict[str, Any]:
    """Time ``fit(k='auto')`` on a store of n unit vectors drawn around ``classes`` centres."""
    rng = np.random.default_rng(seed)
    sizes = rng.dirichlet(np.full(classes, 2.0))  # uneven class sizes, as in real collections
    truth = rng.choice(classes, size=n, p=sizes)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):
        block = truth[start : start + 10_000]
        noise = rng.standard_normal((len(block), dim), dtype=np.float32) * 1.4
        vectors[start : start + len(block)] = centres[block] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"{i:064x}" for i in range(n)]  # sha256-shaped ids
    spec = SimpleNamespace(
        key=f"synthetic-{dim}",
        name="synthetic",
        sha256="0" * 64,
        dim=dim,
        path="-",
        size=(0, 0),
        license="",
        provenance={},
    )
    with tempfile.TemporaryDirectory(prefix="imgdb-synth-") as tmp:
        t0 = time.perf_counter()
        with Store.open(Path(tmp) / "db", write=True) as store:
            store.register_model(spec)
            store.add_vectors(spec.key, ids, vectors)
            store.query(
                "INSERT INTO images (id, width, height, format, bytes, model, added_at) "
                "SELECT unnest(?::VARCHAR[]), 1, 1, 'SYNTH', 0, ?, now()",
                [ids, spec.key],
            )
        build = time.perf_counter() - t0
        del vectors
        print(f"synthetic store: {n} x {dim} in {build:.1f} s; fitting k=auto ...", file=sys.stderr)
        pos = {image_id: i for i, image_id in enumerate(ids)}
        methods: dict[str, Any] = {}
        with Store.open(Path(tmp) / "db", write=True) as store:
            for method in synthetic_methods:
                t0 = time.perf_counter()
                run = clustering.fit(store, method=method, k="auto")
                total = time.perf_counter() - t0
                saved = store.query("SELECT count(*) FROM cluster_members WHERE run_id = ?", [run.run_id])[0][0]
                nmi = metrics.nmi(truth[[pos[i] for i in run.ids]], run.labels)
                methods[method] = {
                    "k": run.k,
                    "choices": run.choices,
                    "seconds": round(total, 2),
                    "phases": run.params["seconds"],
                    "fit_rows": run.params["fit_rows"],
                    "saved_members": int(saved),
                    "nmi_vs_truth": round(float(nmi), 4),
                    "ok": total < TARGET_SECONDS,
                }
                print(
                    f"fit {method} k=auto on {n} x {dim}: {total:.1f} s (target < {TARGET_SECONDS:.0f} s) "
                    f"-> k = {run.k}, NMI vs truth {nmi:.3f}; phases {run.params['seconds']}",
                    file=sys.stderr,
                )
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "n": n,
        "dim": dim,
        "classes": classes,
        "store_build_seconds": round(build, 1),
        "peak_rss_mb": round(peak_mb),
        "target_seconds": TARGET_SECONDS,
        "methods": methods,
        "cpus": os.cpu_count(),
        "threads": config.cluster_threads(),
    }


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", nargs="?", type=Path, help="folder of labelled images")
    ap.add_argument("labels_csv", nargs="?", type=Path, help="CSV: path column + label columns")
    ap.add_argument("--db", type=Path, help="store to ingest into / re-use (default: a temp store)")
    ap.add_argument("--labels", help="label columns, comma-separated (default: see above)")
    ap.add_argument("--k-range", nargs=2, type=int, default=list(clustering.DEFAULT_K_RANGE), metavar=("LOW", "HIGH"))
    ap.add_argument("--pca", type=int, default=100)
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--synthetic", type=int, metavar="N", help="also time fit k=auto on N synthetic vectors")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument(
        "--synthetic-methods",
        default="kmeans,agglomerative,minibatch",
        help="methods to time on the synthetic store (kmeans is the target)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench-results" / "clusters.json")
    args = ap.parse_args(argv)
    if (args.folder is None) != (args.labels_csv is None):
        ap.error("give both FOLDER and LABELS_CSV, or neither (with --synthetic)")
    if args.folder is None and not args.synthetic:
        ap.error("nothing to do: give FOLDER LABELS_CSV and/or --synthetic N")

    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    out["env"] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if args.folder is not None:
        store, tmp = open_store(args.folder.resolve(), args.db)
        try:
            result = evaluate(store, args.folder.resolve(), args.labels_csv.resolve(), args)
        finally:
            store.close()
            if tmp is not None:
                tmp.cleanup()
        # Named after the labels' folder: grocery_train/dataset would otherwise be "dataset".
        key = f"{args.labels_csv.resolve().parent.name}:k{args.k_range[0]}-{args.k_range[1]}"
        out.setdefault("datasets", {})[key] = result
        print_table(result)
    if args.synthetic:
        result = synthetic(args.synthetic, args.dim, args.classes, args.synthetic_methods.split(","))
        out["synthetic"] = result
        print(
            f"\nsynthetic {result['n']} x {result['dim']} ({result['classes']} classes), fit k=auto "
            f"(target < {TARGET_SECONDS:.0f} s):"
        )
        for method, r in result["methods"].items():
            print(
                f"  {method:<14} {r['seconds']:>7.1f} s  {'OK' if r['ok'] else 'MISSED':<6}  k = {r['k']:<3} "
                f"NMI vs truth {r['nmi_vs_truth']:.3f}  phases {r['phases']}"
            )
        print(f"  process peak RSS {result['peak_rss_mb']} MB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
