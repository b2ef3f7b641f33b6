"""Benchmark `imgdb serve`: a real server process, timed with httpx (p50/p95 per request).

Usage:
    python scripts/bench_serve.py [--rows 100000] [--photos 120] [--rounds 40]
                                  [--out bench-results/serve.json]

The store: ``--photos`` generated photos ingested for real (blobs, model vectors), plus
``--rows`` synthetic rows whose vectors sit in the same model's table (clustered, unit
length, as in bench_similar.py), so search runs at that size with the IVF_RQ index the
ingest would build. Then `imgdb serve` runs as a subprocess and this script times:

* neighbours: GET /image/ID (the image page: sources + 12 nearest neighbours);
* upload: POST /search with a 640x480 JPEG not in the store (decode + embed + search);
* thumbnails page: GET /?format=JPEG (60 cards) and then its 60 WebP thumbnails over 6
  connections like a browser, warm (thumbnails already cached in the store); also the
  first, cold, making of a thumbnail;
* collection: GET / (newest 60 of every row);
* the clusters' map: GET /clusters/RUN/map, its first request and then kept (the store
  gets a k = 30 clustering run when it is built);
* what a request would cost if the app opened a read Collection per request instead of
  keeping one (in process: open + similar + close, against similar on a kept collection);
* the CLI: `imgdb --help` against `imgdb similar ID` (whole commands, same run).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import imgdb
from imgdb.acquire.ingest import ingest
from imgdb.imaging.model import Model, ModelSpec
from imgdb.store import NewImage, SourceRow, Store
from tests import images

IMGDB = str(Path(sys.executable).parent / "imgdb")


def synthetic_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    out = centres[rng.integers(0, 1000, n)] + rng.normal(size=(n, dim)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def build(db: Path, rows: int, photos: int) -> None:
    pics = db.parent / "pics"
    pics.mkdir(parents=True)
    for n in range(photos):
        (pics / f"photo-{n:04d}.jpg").write_bytes(images.jpeg_bytes(images.photo(n)))
    spec = ModelSpec.load()
    with Store.open(db, write=True) as store:
        store.register_model(spec)
        if rows:
            vectors = synthetic_vectors(rows, spec.dim)
            put_blob = store._put_blob
            store._put_blob = lambda *_: False  # type: ignore[method-assign]  # synthetic rows have no bytes
            for start in range(0, rows, 20_000):
                batch = [
                    NewImage(
                        f"{i:064x}", b"", 640, 480, "SYN", [SourceRow(f"https://synthetic.example/{i}.jpg", "url")]
                    )
                    for i in range(start, min(rows, start + 20_000))
                ]
                store.add_images(batch, spec.key, vectors[start : start + len(batch)], run_id=None)
            store._put_blob = put_blob  # type: ignore[method-assign]
        ingest(store, [str(pics)], Model(spec))  # real photos last: the newest page; builds the index
    with imgdb.open(db, "w") as collection:
        collection.fit_clusters(k=30)  # a run for the clusters' map


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentiles(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        "n": len(ordered),
    }


def timed(fn: Any, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def bench_http(base: str, db: Path, rounds: int) -> dict[str, Any]:
    import httpx

    with imgdb.open(db) as collection:
        _, real = collection.sql("SELECT id FROM images WHERE format = 'JPEG' ORDER BY id")
        _, synthetic = collection.sql("SELECT id FROM images WHERE format = 'SYN' ORDER BY id LIMIT 5000")
    real_ids = [r[0] for r in real]
    ids = real_ids + [r[0] for r in synthetic]
    rng = random.Random(0)
    results: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60) as client:

        def ok(response: httpx.Response) -> httpx.Response:
            response.raise_for_status()
            return response

        for image_id in ids[:5]:  # warm up: first requests compile templates and touch the table
            ok(client.get(f"/image/{image_id}"))
        results["neighbours"] = percentiles(timed(lambda: ok(client.get(f"/image/{rng.choice(ids)}")), rounds))

        queries = [images.jpeg_bytes(images.photo(10_000 + n)) for n in range(rounds)]
        upload = iter(queries * 2)
        ok(client.post("/search", files={"file": ("q.jpg", next(upload), "image/jpeg")}))
        results["upload"] = percentiles(
            timed(lambda: ok(client.post("/search", files={"file": ("q.jpg", next(upload), "image/jpeg")})), rounds)
        )

        cold = []
        for image_id in real_ids[:60]:
            started = time.perf_counter()
            ok(client.get(f"/thumb/{image_id}"))
            cold.append((time.perf_counter() - started) * 1000)
        results["thumbnail_cold"] = percentiles(cold)

        def thumbnails_page() -> None:
            html = ok(client.get("/", params={"format": "JPEG"})).text
            thumbs = [part.split('"', 1)[0] for part in html.split('src="/thumb/')[1:]]
            assert len(thumbs) == 60, len(thumbs)
            with httpx.Client(base_url=base, timeout=60) as extra:

                def fetch(image_id: str) -> None:
                    ok(extra.get(f"/thumb/{image_id}"))

                with concurrent.futures.ThreadPoolExecutor(6) as pool:
                    list(pool.map(fetch, thumbs))

        thumbnails_page()
        results["page_html_jpeg_filter"] = percentiles(
            timed(lambda: ok(client.get("/", params={"format": "JPEG"})), rounds)
        )
        results["page_with_60_thumbnails_warm"] = percentiles(timed(thumbnails_page, max(10, rounds // 2)))
        results["collection_page"] = percentiles(timed(lambda: ok(client.get("/")), rounds))

        runs = re.findall(r'href="/clusters/(\d+)/map"', ok(client.get("/clusters")).text)
        if runs:  # the first request fetches the mapped vectors; the app keeps the drawing
            results["cluster_map_first"] = percentiles(timed(lambda: ok(client.get(f"/clusters/{runs[0]}/map")), 1))
            results["cluster_map_kept"] = percentiles(timed(lambda: ok(client.get(f"/clusters/{runs[0]}/map")), rounds))

        # While a writer holds the store (as an ingest does), the app lets go of the DuckDB
        # file between requests and opens it again for each one: what that costs.
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
        )
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
            time.sleep(0.2)
            results["neighbours_during_a_write"] = percentiles(
                timed(lambda: ok(client.get(f"/image/{rng.choice(ids)}")), rounds)
            )
        finally:
            writer.kill()
            writer.wait()
        results["collection_page_5"] = percentiles(timed(lambda: ok(client.get("/", params={"page": 5})), rounds))
    return results


def bench_reopen(db: Path, rounds: int) -> dict[str, Any]:
    """A read Collection per request (what the app avoids) against the one it keeps."""
    with imgdb.open(db) as kept:
        _, rows = kept.sql("SELECT id FROM images WHERE format = 'JPEG' ORDER BY id LIMIT 50")
        ids = [r[0] for r in rows]
        kept.similar(ids[0], k=12)
        kept_ms = timed(lambda: kept.similar(random.choice(ids), k=12), rounds)

    def per_request() -> None:
        with imgdb.open(db) as fresh:
            fresh.similar(random.choice(ids), k=12)

    per_request()
    return {
        "similar_kept_collection": percentiles(kept_ms),
        "similar_fresh_collection": percentiles(timed(per_request, rounds)),
    }


WRITER = (
    "import sys, time; from imgdb.store import Store; store = Store.open(sys.argv[1], write=True); "
    "store.query('SELECT count(*) FROM images'); print('writing', flush=True); time.sleep(600)"
)  # a writer holding the store, idle between writes like an ingest waiting on downloads

LANCEDB_ONLY = (
    "import sys; from imgdb.store import Store; Store._dataset = lambda self, key: None; "
    "from imgdb.cli.app import app; import imgdb.cli; app(prog_name='imgdb')"
)  # the same command reading vectors through lancedb, as before pylance


def bench_cli(db: Path, runs: int) -> dict[str, Any]:
    import compileall

    # An installed imgdb runs from bytecode; a checkout under PYTHONDONTWRITEBYTECODE (as
    # here) would compile its own modules in every command, which only `similar` imports.
    compileall.compile_dir(Path(imgdb.__file__).parent, quiet=1)
    with imgdb.open(db) as collection:
        _, rows = collection.sql("SELECT id FROM images WHERE format = 'JPEG' ORDER BY id LIMIT 1")
    image_id = rows[0][0]
    similar = ["similar", image_id[:12], "--db", str(db), "--json"]

    def run(*args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True)

    run(IMGDB, "--help")
    run(IMGDB, *similar)
    help_ms, lance_ms, lancedb_ms = [], [], []
    for _ in range(runs):  # interleaved, so that the machine's load falls on all three alike
        help_ms += timed(lambda: run(IMGDB, "--help"), 1)
        lance_ms += timed(lambda: run(IMGDB, *similar), 1)
        lancedb_ms += timed(lambda: run(sys.executable, "-c", LANCEDB_ONLY, *similar), 1)
    return {
        "help": percentiles(help_ms),
        "similar": percentiles(lance_ms),
        "similar_lancedb": percentiles(lancedb_ms),
        "ratio_p50": round(statistics.median(lance_ms) / statistics.median(help_ms), 2),
        "ratio_p50_lancedb": round(statistics.median(lancedb_ms) / statistics.median(help_ms), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows beside the real photos")
    parser.add_argument("--photos", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="reuse (or keep) the store here instead of a temp dir")
    parser.add_argument("--out", type=Path, default=Path("bench-results/serve.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "store" / "db"
        if not (db / "imgdb.duckdb").exists():
            started = time.perf_counter()
            build(db, args.rows, args.photos)
            print(f"built a store of {args.rows:,} + {args.photos} images in {time.perf_counter() - started:.0f} s")
        port = free_port()
        server = subprocess.Popen(
            [IMGDB, "serve", "--db", str(db), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ},
        )
        try:
            assert server.stdout is not None
            started = time.perf_counter()
            line = server.stdout.readline()
            start_s = time.perf_counter() - started
            if "imgdb serve: http" not in line:
                raise SystemExit(f"imgdb serve did not start: {line}{server.stdout.read()}")
            results: dict[str, Any] = {"rows": args.rows, "photos": args.photos, "server_start_s": round(start_s, 2)}
            results.update(bench_http(f"http://127.0.0.1:{port}", db, args.rounds))
        finally:
            server.terminate()
            server.wait(10)
        results.update(bench_reopen(db, args.rounds))
        results["cli"] = bench_cli(db, args.cli_runs)
    results["load"] = os.getloadavg()
    lines = [f"imgdb serve at {args.rows:,} + {args.photos} images (ms; the machine's 2 cores were shared)"]
    lines.append(f"{'request':32} {'p50':>8} {'p95':>8} {'n':>4}")
    for name, value in results.items():
        if isinstance(value, dict) and "p50" in value:
            lines.append(f"{name:32} {value['p50']:8.1f} {value['p95']:8.1f} {value['n']:4d}")
    cli = results["cli"]
    lines.append(f"{'cli: imgdb --help':32} {cli['help']['p50']:8.1f} {cli['help']['p95']:8.1f} {cli['help']['n']:4d}")
    lines.append(
        f"{'cli: imgdb similar ID':32} {cli['similar']['p50']:8.1f} {cli['similar']['p95']:8.1f} {cli['similar']['n']:4d}"
    )
    lines.append(
        f"{'cli: similar through lancedb':32} {cli['similar_lancedb']['p50']:8.1f} "
        f"{cli['similar_lancedb']['p95']:8.1f} {cli['similar_lancedb']['n']:4d}"
    )
    lines.append(
        f"similar / --help (p50): {cli['ratio_p50']}x (through lancedb: {cli['ratio_p50_lancedb']}x); "
        f"server start {results['server_start_s']} s"
    )
    lines.append(f"load average at the end: {', '.join(f'{x:.2f}' for x in results['load'])}")
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    args.out.with_suffix(".txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
