"""`imgdb export` (dataset) against the floor any export has: reading and writing the bytes.

Usage:
    python scripts/bench_export_dataset.py [--n 2000,8000] [--repeats 3] [--kb 40] [--dim 1280]
        [--out bench-results/export-dataset.json]

For each N a synthetic store is built once (N images of about ``--kb`` KiB of random bytes,
each with a URL source and alt text, one in ten found in a second place, ``--dim``-float
vectors). Image bytes are not decoded by the export, so random bytes cost what photos do.
Every measurement is a fresh Python process (repeats interleaved, so a busy moment hits
every variant alike):

* ``floor``      - read every blob, check its sha256, append it to one file: the I/O any
                   export of the bytes must do;
* ``parquet``    - ``Collection.export_dataset(format="parquet")``;
* ``webdataset`` - ``Collection.export_dataset(format="webdataset")`` (tars plus a Parquet
                   of metadata beside each, as img2dataset writes);
* ``paths``      - Parquet with blob paths instead of bytes (metadata and vectors only).

Each process exports twice: ``cold`` is what a CLI run pays (first use of LanceDB's
query builder and friends), ``warm`` the work itself. The table gives the median seconds
of both, their ratio to ``floor``, images per second (warm) and the process's peak RSS;
the peak should not grow with N (the export streams), which the two sizes show.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.eval.tables import render

VARIANTS = ("floor", "parquet", "webdataset", "paths")


def build_store(path: Path, n: int, kb: int, dim: int, seed: int = 0) -> None:
    """N images of random bytes with sources, alt text and vectors, written in batches."""
    from dataclasses import dataclass

    from imgdb.store import NewImage, SourceRow, Store

    @dataclass(frozen=True)
    class Spec:
        key: str = "bench-000000000000"
        name: str = "bench"
        sha256: str = "0" * 64
        dim: int = 1280
        size: tuple[int, int] = (224, 224)
        path: str = "bench.onnx"
        license: str = "none"
        provenance: dict | None = None

    spec = Spec(dim=dim)
    rng = np.random.default_rng(seed)
    with Store.open(path, write=True) as store:
        store.register_model(spec)
        for start in range(0, n, 500):
            batch = []
            for i in range(start, min(n, start + 500)):
                data = rng.bytes(int(kb * 1024 * rng.uniform(0.5, 1.5)))
                sources = [
                    SourceRow(f"https://shop.example/img/{i}.jpg", "url", "https://shop.example/p", alt=f"p {i}")
                ]
                if i % 10 == 0:
                    sources.append(SourceRow(f"/photos/{i}.jpg", "file"))
                batch.append(NewImage(hashlib.sha256(data).hexdigest(), data, 640, 480, "JPEG", sources))
            vectors = rng.standard_normal((len(batch), dim), dtype=np.float32)
            store.add_images(batch, spec.key, vectors, None)


def worker(variant: str, store: Path, out: Path) -> dict[str, Any]:
    """Export twice in one process: ``cold`` is what a CLI run pays (first use of LanceDB's
    query builder and the like), ``warm`` the work itself."""
    import duckdb  # noqa: F401 - imports are not what is measured
    import lancedb  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import imgdb
    import imgdb.export.dataset

    seconds = []
    for attempt in range(2):
        started = time.perf_counter()
        target = out.with_name(f"{out.name}-{attempt}")
        if variant == "floor":
            from imgdb.store import Store

            with Store.open(store) as s, open(target, "wb") as fh:
                ids = sorted(r[0] for r in s.query("SELECT id FROM images"))
                for image_id in ids:
                    fh.write(s.read_blob(image_id, verify=True))
            images = len(ids)
        else:
            with imgdb.open(store) as col:
                fmt = "webdataset" if variant == "webdataset" else "parquet"
                mode = "paths" if variant == "paths" else "bytes"
                images = col.export_dataset(target, format=fmt, images=mode).images  # type: ignore[arg-type]
        seconds.append(time.perf_counter() - started)
    written = target.stat().st_size if target.is_file() else sum(p.stat().st_size for p in target.iterdir())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "variant": variant,
        "cold": seconds[0],
        "warm": seconds[1],
        "images": images,
        "bytes": written,
        "peak_rss_mib": peak,
    }


def measure(variant: str, store: Path, scratch: Path, run: int) -> dict[str, Any]:
    out = scratch / f"{variant}-{run}"
    done = subprocess.run(
        [sys.executable, __file__, "--worker", variant, "--store", str(store), "--to", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    for leftover in (f"{out}-0", f"{out}-1"):
        shutil.rmtree(leftover, ignore_errors=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="2000,8000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kb", type=int, default=40)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--out", type=Path, default=Path("bench-results/export-dataset.json"))
    ap.add_argument("--worker", choices=VARIANTS)
    ap.add_argument("--store", type=Path)
    ap.add_argument("--to", type=Path)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.store, args.to)))
        return 0

    results: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="imgdb-bench-export-") as tmp:
        for n in [int(x) for x in args.n.split(",")]:
            store = Path(tmp) / f"store-{n}"
            t0 = time.perf_counter()
            build_store(store, n, args.kb, args.dim)
            print(f"built a store of {n} images in {time.perf_counter() - t0:.1f} s", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
            for r in range(args.repeats):
                for variant in VARIANTS:
                    runs[variant].append(measure(variant, store, Path(tmp), r))
            floor = {kind: statistics.median(m[kind] for m in runs["floor"]) for kind in ("cold", "warm")}
            for variant in VARIANTS:
                cold = statistics.median(m["cold"] for m in runs[variant])
                warm = statistics.median(m["warm"] for m in runs[variant])
                entry = {
                    "n": n,
                    "variant": variant,
                    "median_cold_seconds": round(cold, 3),
                    "median_warm_seconds": round(warm, 3),
                    "warm_images_per_second": round(n / warm),
                    "cold_ratio_to_floor": round(cold / floor["cold"], 2),
                    "warm_ratio_to_floor": round(warm / floor["warm"], 2),
                    "peak_rss_mib": round(max(m["peak_rss_mib"] for m in runs[variant])),
                    "output_mib": round(runs[variant][0]["bytes"] / 2**20, 1),
                    "cold": [round(m["cold"], 3) for m in runs[variant]],
                    "warm": [round(m["warm"], 3) for m in runs[variant]],
                }
                results.append(entry)
                rows.append(
                    [
                        n,
                        variant,
                        f"{cold:.2f}",
                        f"{cold / floor['cold']:.2f}",
                        f"{warm:.2f}",
                        f"{warm / floor['warm']:.2f}",
                        entry["warm_images_per_second"],
                        entry["peak_rss_mib"],
                        entry["output_mib"],
                    ]
                )
                print(rows[-1], flush=True)
    header = ["n", "variant", "cold s", "x floor", "warm s", "x floor", "warm img/s", "peak RSS MiB", "output MiB"]
    table = render(None, header, rows)
    machine = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "note": "machine shared with other sessions; compare ratios within this run",
    }
    print(table)
    print(f"load average before {machine['load_before']}, after {machine['load_after']} on {machine['cpus']} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    params = {"n": args.n, "repeats": args.repeats, "kb": args.kb, "dim": args.dim}
    args.out.write_text(json.dumps({"params": params, "machine": machine, "results": results}, indent=1) + "\n")
    args.out.with_suffix(".txt").write_text(table + "\n" + json.dumps(machine) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
