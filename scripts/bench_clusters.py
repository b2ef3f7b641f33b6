"""`clusters fit` against scikit-learn alone on the same sweep, and how the fit grows with N.

Usage:
    python scripts/bench_clusters.py [--n 2500,20000] [--repeats 5] [--method kmeans]
        [--variants imgdb,sklearn-1,sklearn-all] [--dim 1280] [--out bench-results/clusters.json]
    python scripts/bench_clusters.py --n 1000000 --method minibatch --repeats 1 --variants imgdb \
        --out bench-results/clusters-1m.json

Vectors are synthetic: ``--dim``-dimensional unit vectors around 40 seeded centres with
noise (deterministic for ``--seed``), generated inside each measured process. Every
measurement is a fresh Python process, as a CLI run is: the thread pools scikit-learn and
SciPy load on first import are part of what is measured. Variants (repeats interleaved, so
a busy moment hits them all alike):

* ``imgdb``       - ``clustering.fit`` with the defaults (PCA 100, k 2..30 by ``peak``,
                    n_init 3, 20k sweep sample, 3k silhouette sample) and the run saved to
                    a fresh store's DuckDB: what ``imgdb clusters fit`` does after loading;
* ``sklearn-1``   - scikit-learn alone, the same sweep on the same rows: PCA fitted on the
                    sample, KMeans (or MiniBatchKMeans) for every k, the silhouette of every
                    k on the same rows, and the final fit on every row from the chosen k's
                    centres; one BLAS/OpenMP thread (threadpoolctl, set after the imports);
* ``sklearn-all`` - the same with scikit-learn's default threads (every core).

The table gives the median seconds, the spread ((max - min) / median), the same for the
process's CPU seconds (on a shared machine the wall-clock spread is mostly other
processes'), the CPU seconds per wall second, the share of the CPUs other processes used
meanwhile, and the ratio imgdb / sklearn-1 (target: <= 1.3, spread < 20%). For ``imgdb`` each phase's median
seconds (pca, sweep, final, save) shows what grows with N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.eval.tables import render

TARGET_RATIO = 1.3
TARGET_SPREAD = 0.20
CENTRES = 40


def synthetic_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """n unit vectors around CENTRES seeded centres (uneven sizes), float32, built in chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CENTRES, dim), dtype=np.float32)
    weights = rng.dirichlet(np.full(CENTRES, 2.0))
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        which = rng.choice(CENTRES, stop - start, p=weights)
        block = centres[which] + rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(1.3)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


# ---------------------------------------------------------------------------------------
# one measured process


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _busy_seconds() -> float | None:
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def worker(variant: str, n: int, dim: int, method: str, seed: int) -> dict[str, Any]:
    vectors = synthetic_vectors(n, dim, seed)
    ids = [f"{i:012d}" for i in range(n)]
    if variant == "imgdb":
        with tempfile.TemporaryDirectory(prefix="imgdb-bench-clusters-") as tmp:
            wall, cpu_used, busy, after, phases, k = _imgdb(ids, vectors, method, tmp)
    else:
        busy, cpu, start = _busy_seconds(), _cpu_seconds(), time.perf_counter()
        phases, k = _sklearn(vectors, method, threads=1 if variant == "sklearn-1" else None)
        wall = time.perf_counter() - start
        cpu_used = _cpu_seconds() - cpu
        after = _busy_seconds()
    others = None
    if busy is not None and after is not None:
        others = max(0.0, (after - busy - cpu_used) / (wall * (os.cpu_count() or 1)))
    return {"seconds": wall, "cpu": cpu_used, "others": others, "k": k, "phases": phases}


def _imgdb(ids: list[str], vectors: np.ndarray, method: str, tmp: str) -> tuple[Any, ...]:
    """``clustering.fit`` timed from the call (which imports scikit-learn) to the saved run.

    Opening the store and importing imgdb (LanceDB, DuckDB) happen before the clock starts:
    the baseline has no store to open either.
    """
    from imgdb import clustering
    from imgdb.store import Store

    with Store.open(tmp, write=True) as store:
        busy, cpu, start = _busy_seconds(), _cpu_seconds(), time.perf_counter()
        run = clustering.fit(store, model_key="synthetic", method=method, data=(ids, vectors))
        wall = time.perf_counter() - start
        cpu_used = _cpu_seconds() - cpu
        after = _busy_seconds()
    seconds = dict(run.params["seconds"])
    seconds.pop("load", None)
    return wall, cpu_used, busy, after, seconds, run.k


def _sklearn(vectors: np.ndarray, method: str, threads: int | None) -> tuple[dict[str, float], int]:
    """The same sweep as ``clustering.fit``'s defaults, written directly against scikit-learn."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from threadpoolctl import threadpool_limits

    from imgdb.clustering.engine import DEFAULT_SAMPLE, DEFAULT_SILHOUETTE_SAMPLE
    from imgdb.clustering.select_k import choose_k_peak

    limits = threadpool_limits(limits=threads) if threads else None
    t0 = time.perf_counter()
    n = len(vectors)
    rng = np.random.default_rng(0)  # the same rows as clustering.prepare draws for seed 0

    def subset(rows: np.ndarray, size: int) -> np.ndarray:
        return rows if len(rows) <= size else np.sort(rng.choice(rows, size, replace=False))

    fit_rows = subset(np.arange(n), DEFAULT_SAMPLE)
    sil_rows = subset(subset(fit_rows, 10_000), DEFAULT_SILHOUETTE_SAMPLE)
    sil = np.searchsorted(fit_rows, sil_rows)
    z = PCA(n_components=100, random_state=0).fit(vectors[fit_rows]).transform(vectors).astype(np.float32)
    t1 = time.perf_counter()
    zs = z[fit_rows]
    ks = list(range(2, 31))
    scores, centres = [], {}
    for k in ks:
        if method == "minibatch":
            km: Any = MiniBatchKMeans(n_clusters=k, n_init=3, random_state=0, batch_size=2048).fit(zs)
        else:
            km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(zs)
        centres[k] = km.cluster_centers_
        scores.append(float(silhouette_score(zs[sil], km.labels_[sil])))
    chosen = choose_k_peak(ks, scores)
    t2 = time.perf_counter()
    if len(fit_rows) < n:
        KMeans(n_clusters=chosen, init=centres[chosen], n_init=1, random_state=0).fit(z)
    t3 = time.perf_counter()
    if limits is not None:
        limits.restore_original_limits()
    return {"pca": t1 - t0, "sweep": t2 - t1, "final": t3 - t2}, chosen


# ---------------------------------------------------------------------------------------
# the driver


def measure(variant: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", variant, "--n", str(n), "--dim", str(args.dim)]
    cmd += ["--method", args.method, "--seed", str(args.seed)]
    env = {k: v for k, v in os.environ.items() if k != "IMGDB_CLUSTER_THREADS"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{variant} at N={n} failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", default="2500,20000", help="comma-separated vector counts")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--method", default="kmeans", choices=("kmeans", "minibatch"))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="imgdb,sklearn-1,sklearn-all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-results/clusters.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    sizes = [int(v) for v in args.n.split(",") if v.strip()]
    if args.worker:
        print(json.dumps(worker(args.worker, sizes[0], args.dim, args.method, args.seed)))
        return 0

    variants = [v for v in args.variants.split(",") if v]
    machine: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    print(f"machine: {machine['cpu_count']} CPUs, load average {machine['loadavg_at_start'][0]:.2f}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(args.repeats):
        for n in sizes:
            for v in variants:
                result = measure(v, n, args)
                runs.setdefault(f"{v}/{n}", []).append(result)
                print(
                    f"  repeat {r + 1}/{args.repeats} N={n} {v}: {result['seconds']:.1f} s "
                    f"(cpu {result['cpu']:.1f} s, k={result['k']}, others {result['others'] or 0:.0%})",
                    flush=True,
                )

    rows, summary = [], []
    for n in sizes:
        base = statistics.median(r["seconds"] for r in runs[f"sklearn-1/{n}"]) if "sklearn-1" in variants else None
        for v in variants:
            got = runs[f"{v}/{n}"]
            secs = [r["seconds"] for r in got]
            med = statistics.median(secs)
            spread = (max(secs) - min(secs)) / med
            cpu = statistics.median(r["cpu"] / r["seconds"] for r in got)
            cpus = [r["cpu"] for r in got]
            cpu_spread = (max(cpus) - min(cpus)) / statistics.median(cpus)
            others = [r["others"] for r in got if r["others"] is not None]
            ratio = med / base if base else None
            phases = {p: statistics.median(r["phases"].get(p, 0.0) for r in got) for p in got[0]["phases"]}
            entry = {
                "n": n,
                "variant": v,
                "median": med,
                "spread": spread,
                "cpu_per_wall": cpu,
                "cpu_spread": cpu_spread,
            }
            entry |= {"others": statistics.median(others) if others else None, "ratio": ratio, "phases": phases}
            summary.append(entry)
            rows.append(
                [
                    f"{v}, N={n:,}",
                    f"{med:.2f}",
                    f"{min(secs):.2f}-{max(secs):.2f}",
                    f"{spread:.0%}",
                    f"{statistics.median(cpus):.2f}",
                    f"{cpu_spread:.0%}",
                    f"{cpu:.2f}",
                    "?" if not others else f"{statistics.median(others):.0%}",
                    "-" if ratio is None else f"{ratio:.2f}",
                    " ".join(f"{p} {s:.1f}" for p, s in phases.items() if p != "total"),
                ]
            )
    title = (
        f"clusters fit ({args.method}, defaults), {args.repeats} runs each, fresh process per run; "
        f"{args.dim}-d synthetic vectors, {machine['cpu_count']} CPUs"
    )
    header = ["variant", "median s", "range", "spread", "cpu s", "cpu spread", "cpu/wall", "others", "vs sklearn-1"]
    header.append("phases (median s)")
    text = render(title, header, rows)
    verdicts = []
    for e in summary:
        if e["variant"] == "imgdb":
            ok_ratio = e["ratio"] is None or e["ratio"] <= TARGET_RATIO
            ratio_text = "" if e["ratio"] is None else f"ratio {e['ratio']:.2f} <= {TARGET_RATIO}: "
            verdicts.append(
                f"N={e['n']:,}: {ratio_text}{'yes' if ok_ratio else 'NO'}"
                if e["ratio"] is not None
                else f"N={e['n']:,}: {e['median']:.0f} s"
            )
            verdicts[-1] += (
                f"; spread {e['spread']:.0%} < {TARGET_SPREAD:.0%}: {'yes' if e['spread'] < TARGET_SPREAD else 'NO'}"
            )
    text += "\n" + "\n".join(verdicts)
    text += "\n(others = median share of all CPUs used by other processes during the runs)"
    print()
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "method": args.method, "dim": args.dim, "summary": summary, "runs": runs}
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
