"""Benchmark `similar` search: exact flat scan vs the IVF_RQ index with re-ranking.

Usage:
    python scripts/bench_similar.py [--sizes 10000 100000] [--dim 1280] [--queries 50]
                                    [--out bench-results/similar.json]

Synthetic, clustered, L2-normalised float32 vectors are written to a real store
through `Store.add_images` (so the table looks exactly like an ingested one); for each
size it times the flat scan, the index build (`Store.maintain_vectors`), and indexed
queries through `imgdb.similar.search` (nprobes + refine_factor), and measures recall@10
of the index against exact numpy ground truth. Query embedding is excluded. Medians of
per-query latencies are reported.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import imgdb.config
from imgdb.search import search
from imgdb.store import NewImage, SourceRow, Store


@dataclass(frozen=True)
class SyntheticSpec:
    key: str
    dim: int
    name: str = "synthetic"
    sha256: str = "0" * 64
    size: tuple[int, int] = (1, 1)
    path: str = "synthetic.onnx"
    license: str = "none"
    provenance: dict | None = None


def synthetic_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    """Clustered like real embeddings (1000 centres), unit length."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(1000, dim)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        out[start:stop] = centres[rng.integers(0, 1000, stop - start)] + rng.normal(size=(stop - start, dim)).astype(
            np.float32
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def fill_store(store: Store, spec: SyntheticSpec, vectors: np.ndarray) -> list[str]:
    ids = [f"{i:064x}" for i in range(len(vectors))]
    store.register_model(spec)
    store._put_blob = lambda *_: False  # type: ignore[method-assign]  # synthetic rows have no bytes
    for start in range(0, len(ids), 20_000):
        batch = [
            NewImage(i, b"", 1, 1, "SYN", [SourceRow(f"synthetic:{i}", "file")]) for i in ids[start : start + 20_000]
        ]
        store.add_images(batch, spec.key, vectors[start : start + 20_000], run_id=None)
    return ids


def timed_queries(store: Store, key: str, queries: np.ndarray, k: int = 10) -> tuple[list[list[str]], float]:
    results, latencies = [], []
    for q in queries:
        started = time.perf_counter()
        hits = search(store, key, q, k=k)
        latencies.append(time.perf_counter() - started)
        results.append([h[0] for h in hits])
    return results, float(np.median(latencies) * 1000)


def bench_size(n: int, dim: int, n_queries: int) -> dict[str, float]:
    vectors = synthetic_vectors(n, dim)
    rng = np.random.default_rng(1)
    picks = rng.choice(n, n_queries, replace=False)
    queries = vectors[picks] + 0.05 * rng.normal(size=(n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth = [set(np.argsort(-(vectors @ q))[:10]) for q in queries]
    spec = SyntheticSpec(key=f"synthetic-{n}", dim=dim)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "db", write=True) as store:
        started = time.perf_counter()
        ids = fill_store(store, spec, vectors)
        write_s = time.perf_counter() - started
        index_of = {image_id: row for row, image_id in enumerate(ids)}
        flat_queries = queries[: min(n_queries, 10 if n > 200_000 else n_queries)]
        flat, flat_ms = timed_queries(store, spec.key, flat_queries)
        started = time.perf_counter()
        imgdb.config.EXACT_MAX_ROWS = 0  # force the index at every size
        store.maintain_vectors(spec.key, n)
        build_s = time.perf_counter() - started
        ann, ann_ms = timed_queries(store, spec.key, queries)
    recall = np.mean([len(truth[q] & {index_of[i] for i in ann[q]}) / 10 for q in range(n_queries)])
    flat_recall = np.mean([len(truth[q] & {index_of[i] for i in flat[q]}) / 10 for q in range(len(flat))])
    return {
        "rows": n,
        "dim": dim,
        "write_s": round(write_s, 2),
        "flat_p50_ms": round(flat_ms, 1),
        "flat_recall@10": round(float(flat_recall), 3),
        "index_build_s": round(build_s, 1),
        "ann_p50_ms": round(ann_ms, 1),
        "ann_recall@10": round(float(recall), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("bench-results/similar.json"))
    args = parser.parse_args()

    rows = []
    header = f"{'rows':>9} {'write s':>8} {'flat p50 ms':>12} {'build s':>8} {'ANN p50 ms':>11} {'ANN recall@10':>14} {'flat/ANN':>9}"
    print(header)
    for n in args.sizes:
        r = bench_size(n, args.dim, args.queries)
        rows.append(r)
        print(
            f"{n:>9} {r['write_s']:>8} {r['flat_p50_ms']:>12} {r['index_build_s']:>8} {r['ann_p50_ms']:>11} "
            f"{r['ann_recall@10']:>14} {r['flat_p50_ms'] / max(r['ann_p50_ms'], 1e-9):>9.1f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
