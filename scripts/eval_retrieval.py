"""Score `imgdb similar` on a labelled folder: the UKBench N-S score, and recall@k.

Usage:
    python scripts/eval_retrieval.py FOLDER LABELS_CSV [--db DIR] [--out FILE]

LABELS_CSV has a file-name column (`filename` or `path`, relative to FOLDER or a bare
name) and a `group_id` column. For every image as a query, the N-S score counts how many
of its group's images (itself included) are among its top 4 results; 4.0 is perfect for
groups of 4. The folder is ingested into a temporary store (or `--db`) with the bundled
model, through the same code path as `imgdb ingest`.

Example (the shared UKBench sample; never copied into the project):
    python scripts/eval_retrieval.py ../shared/data/ukbench_0000_0499/images \
        ../shared/data/ukbench_0000_0499/groups.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from imgdb.acquire.ingest import ingest
from imgdb.imaging.model import Model, ModelSpec
from imgdb.search import search
from imgdb.store import Store


def read_labels(folder: Path, labels_csv: Path) -> dict[Path, str]:
    """Resolved image path -> group id."""
    labels = {}
    with open(labels_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            name = row.get("filename") or row.get("path")
            candidates = [folder / name, folder / Path(name).name, labels_csv.parent / name]
            path = next((p for p in candidates if p.exists()), None)
            if path is not None:
                labels[path.resolve()] = row["group_id"]
    return labels


def score(store: Store, model_key: str, labels: dict[Path, str], top: int = 4) -> dict[str, float]:
    rows = store.query("SELECT source, image_id FROM sources WHERE kind = 'file'")
    id_of = {Path(source).resolve(): image_id for source, image_id in rows}
    group_of_id = {id_of[p]: g for p, g in labels.items() if p in id_of}
    members = defaultdict(set)
    for image_id, group in group_of_id.items():
        members[group].add(image_id)
    vectors = store.get_vectors(model_key, list(group_of_id))
    ns_scores, recalls, latencies = [], [], []
    for image_id, group in group_of_id.items():
        started = time.perf_counter()
        hits = search(store, model_key, vectors[image_id], k=top)
        latencies.append(time.perf_counter() - started)
        found = [i for i, _ in hits]
        ns_scores.append(sum(1 for i in found if i in members[group]))
        others = members[group] - {image_id}
        recalls.append(len(others & set(found)) / max(1, len(others)))
    return {
        "queries": len(ns_scores),
        "ns_score": float(np.mean(ns_scores)),
        f"recall_at_{top}": float(np.mean(recalls)),
        "p50_ms": float(np.median(latencies) * 1000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--db", type=Path, help="reuse or create this store instead of a temporary one")
    parser.add_argument("--out", type=Path, default=Path("bench-results/retrieval.json"))
    args = parser.parse_args()

    labels = read_labels(args.folder, args.labels)
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
