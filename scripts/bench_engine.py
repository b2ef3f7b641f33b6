"""Ingest of one web shop, local vs ``--engine ray`` on a Ray cluster on this machine.

Usage:
    python scripts/bench_engine.py [--n 2000] [--repeats 1] [--out bench-results/engine.json]

Writes ``--n`` distinct JPEGs (128x96) on paginated listing pages, serves them on
127.0.0.1, and ingests the shop into a fresh store, ``--repeats`` times each, interleaved:

* ``local``     the local path (``IngestOptions(engine="local")``), every core;
* ``ray-1``     ``engine="ray"`` on a one-node cluster (1 CPU: one embedding actor);
* ``ray-2``     ``engine="ray"`` on a head + one worker node (1 CPU each): the same two
                cores as ``local``, so ``ray-2 / local`` is Ray's cost on one machine
                (target >= 0.80) and ``ray-2 / ray-1`` how well it spreads over workers.

Each run is the CLI (``imgdb ingest URL --engine ...``) in a process of its own, timed
from start to exit, so images/s covers everything: start-up, crawl, downloads, embedding,
commits, and for Ray connecting, starting actors and loading a model per actor. The
machine may be shared: the load average before each run is recorded. Results go to ``--out`` (JSON) and
a table beside it (``.txt``).
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

from imgdb.demo.server import serve
from imgdb.engine.cluster import LocalCluster
from imgdb.eval.shops import write_listing_shop
from imgdb.store import Store

TARGET = 0.80  # the issue: Ray on one machine at >= 80% of the local path's rate


def run_once(url: str, work: Path, engine: str, cluster: LocalCluster | None, n: int) -> dict[str, Any]:
    """One ``imgdb ingest`` (the CLI, in a process of its own) into a fresh store; its wall time."""
    db = Path(tempfile.mkdtemp(prefix=f"{engine}-", dir=work))
    command = [sys.executable, "-m", "imgdb.cli", "ingest", url, "--pages", "1000", "--db", str(db), "--engine", engine]
    if cluster is not None:
        command += ["--ray-address", cluster.address]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=cluster.env if cluster else None)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{engine}: {done.stderr[-2000:]}")
    with Store.open(db) as store:
        stored = len(store.image_ids())
    if stored != n:
        raise SystemExit(f"{engine}: stored {stored} of {n} images")
    return {"seconds": seconds, "rate": n / seconds, "load_before": load}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench-results/engine.json"))
    args = ap.parse_args(argv)

    runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray-1": [], "ray-2": []}
    with tempfile.TemporaryDirectory(prefix="imgdb-bench-engine-") as tmp:
        work = Path(tmp)
        write_listing_shop(work / "site", args.n)
        with serve(work / "site") as base:
            url = base + "list/1.html"
            for _ in range(args.repeats):
                runs["local"].append(run_once(url, work, "local", None, args.n))
                for workers, name in ((0, "ray-1"), (1, "ray-2")):
                    with LocalCluster(workers=workers, cpus=1) as cluster:
                        runs[name].append(run_once(url, work, "ray", cluster, args.n))
                print({name: [round(r["rate"], 1) for r in rs] for name, rs in runs.items()}, flush=True)

    med = {name: statistics.median(r["rate"] for r in rs) for name, rs in runs.items()}
    ratio_local = med["ray-2"] / med["local"]
    ratio_scale = med["ray-2"] / med["ray-1"]
    lines = [
        f"ingest of {args.n} images (128x96 JPEG) from 127.0.0.1, median of {args.repeats} run(s)",
        f"{'path':<8} {'seconds':>8} {'images/s':>9} {'load before':>12}",
    ]
    for name, rs in runs.items():
        load = statistics.median(r["load_before"] for r in rs)
        secs = statistics.median(r["seconds"] for r in rs)
        lines.append(f"{name:<8} {secs:>8.1f} {med[name]:>9.1f} {load:>12.2f}")
    overhead = args.n / med["ray-2"] - args.n / med["local"]
    lines += [
        f"ray-2 / local = {ratio_local:.2f} (target >= {TARGET:.2f}: {'met' if ratio_local >= TARGET else 'NOT met'})",
        f"ray-2 / ray-1 = {ratio_scale:.2f} (2 workers vs 1)",
        f"Ray overhead on this machine: {overhead:+.1f} s per {args.n} images (ray-2 - local, from the median rates)",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "n": args.n,
        "repeats": args.repeats,
        "runs": runs,
        "median_rate": med,
        "ray2_over_local": ratio_local,
        "ray2_over_ray1": ratio_scale,
        "ray_overhead_seconds": overhead,
        "target": TARGET,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
