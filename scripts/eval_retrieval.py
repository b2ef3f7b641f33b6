"""Score `imgdb similar` on a labelled folder: the UKBench N-S score, and recall@k.

Usage:
    python scripts/eval_retrieval.py FOLDER LABELS_CSV [--db DIR] [--out FILE]

LABELS_CSV has a path column (`path`, `filename` or `file`: relative to FOLDER or to the
CSV's folder, or a bare file name; see `imgdb.eval.labels`) and a `group_id` column. For every image as a query, the N-S score counts how many
of its group's images (itself included) are among its top 4 results; 4.0 is perfect for
groups of 4. The folder is ingested into a temporary store (or `--db`) with the bundled
model, through the same code path as `imgdb ingest`.

Example (the shared UKBench sample; never copied into the project):
    python scripts/eval_retrieval.py ../shared/data/ukbench_0000_0499/images \
        ../shared/data/ukbench_0000_0499/groups.csv
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.acquire.ingest import ingest
from imgdb.eval.labels import read_labels
from imgdb.eval.metrics import ns_score, recall_at_k
from imgdb.imaging.model import Model, ModelSpec
from imgdb.search import search
from imgdb.store import Store


def score(store: Store, model_key: str, labels: dict[Path, str], top: int = 4) -> dict[str, Any]:
    rows = store.query("SELECT source, image_id FROM sources WHERE kind = 'file'")
    id_of = {Path(source).resolve(): image_id for source, image_id in rows}
    group_of_id = {id_of[p]: g for p, g in labels.items() if p in id_of}
    vectors = store.get_vectors(model_key, list(group_of_id))
    results: dict[str, list[str]] = {}
    latencies = []
    for image_id in group_of_id:
        started = time.perf_counter()
        hits = search(store, model_key, vectors[image_id], k=top)
        latencies.append(time.perf_counter() - started)
        results[image_id] = [i for i, _ in hits]
    return {
        "queries": len(results),
        "ns_score": ns_score(results, group_of_id, top),
        f"recall_at_{top}": recall_at_k(results, group_of_id, top),
        "p50_ms": float(np.median(latencies) * 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--db", type=Path, help="reuse or create this store instead of a temporary one")
    parser.add_argument("--out", type=Path, default=Path("bench-results/retrieval.json"))
    args = parser.parse_args()

    try:
        labels = read_labels(args.labels, args.folder, label_columns=["group_id"]).column()
    except ValueError as e:
        parser.error(str(e))
    model = Model(ModelSpec.load())
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "db"
        with Store.open(db, write=True) as store:
            summary = ingest(store, [str(args.folder)], model)
            result = score(store, model.spec.key, labels)
    result.update(folder=str(args.folder), images=summary.new + summary.already_stored, model=model.spec.key)
    # The whole-image query counts itself as one of its 4, as the UKBench protocol does.
    print(f"{'folder':<50} {'queries':>8} {'N-S (4.0 best)':>15} {'recall@4':>9} {'p50 ms':>7}")
    print(
        f"{str(args.folder)[-50:]:<50} {result['queries']:>8} {result['ns_score']:>15.3f} "
        f"{result['recall_at_4']:>9.3f} {result['p50_ms']:>7.1f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
