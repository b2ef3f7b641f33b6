"""Calibrate the `imgdb dupes` stages on a labelled folder: pairwise precision / recall / F1.

    python scripts/calibrate_dupes.py FOLDER LABELS_CSV [--db DIR] [--out FILE]

LABELS_CSV has a path column (``path``, ``filename`` or ``file``, relative to FOLDER or to the
CSV's folder; ``--path-col``; see ``imgdb.eval.labels``) and ``group_id`` (``--group-col``);
files with the same group are the true duplicates. Only the labelled files
are ingested (into a temp store, or into ``--db``, where re-runs reuse what is stored).

Every stage's pairs are found once at a loose threshold and then filtered over a grid, so
the grid is cheap. Scores are over *file* pairs (two files with the same bytes are one
image in the store and always count as found), in two ways:

* ``pairs``:  the stage's raw pairs (what `dupes` records in dupe_pairs);
* ``groups``: after grouping without chaining (what `dupes` shows): every two files in
  one group count as a found pair.

Finally ``dedup.find`` itself runs at the library defaults, and its groups are scored
the same way. Results go to ``bench-results/dupes-<name>.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.dedup.pairs import popcount64
from imgdb.dedup.runs import load_vectors
from imgdb.eval.labels import read_labels
from imgdb.eval.metrics import grouping_scores, pair_scores, true_pairs
from imgdb.imaging.model import Model, ModelSpec
from imgdb.store import Store

PHASH_GRID = list(range(21))
COSINE_GRID = [round(x, 2) for x in np.arange(0.50, 1.0, 0.01)]
COMBINED_PHASH = [0, 2, 4, 6, 8, 10, 12, 14, 16]
COMBINED_COSINE = [None, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("labels", type=Path)
    ap.add_argument("--db", type=Path, help="store to ingest into and reuse (default: a temp dir)")
    ap.add_argument("--name", help="name for the results file (default: the folder's name)")
    ap.add_argument("--out", type=Path, help="results JSON (default: bench-results/dupes-<name>.json)")
    ap.add_argument("--path-col", help="path column (default: path, filename or file, else the first)")
    ap.add_argument("--group-col", default="group_id", help="group column (default: group_id)")
    args = ap.parse_args()
    folder = args.folder.resolve()
    name = args.name or (folder.name if folder.name not in ("images", "site") else folder.parent.name)
    out = args.out or Path("bench-results") / f"dupes-{name}.json"

    try:
        read = read_labels(args.labels, folder, path_column=args.path_col, label_columns=[args.group_col])
    except ValueError as e:
        ap.error(str(e))
    labels = read.column()
    if read.unresolved:
        print(f"{len(read.unresolved)} labelled paths name no file, e.g. {next(iter(read.unresolved))}")
    print(f"{name}: {len(labels)} labelled files in {len(set(labels.values()))} groups")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "store"
        with Store.open(db, write=True) as store:
            t0 = time.perf_counter()
            summary = ingest(store, sorted(str(p) for p in labels), Model(ModelSpec.load()))
            print(
                f"ingest: {summary.new} new images, {summary.already_stored} known, "
                f"{dict(summary.failed) or 'no failures'} ({time.perf_counter() - t0:.1f} s)"
            )
            report = calibrate(store, labels)
    report["dataset"] = {
        "name": name,
        "folder": str(folder),
        "labels": str(args.labels),
        "files": len(labels),
        "groups": len(set(labels.values())),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {out}")
    return 0


# ---------------------------------------------------------------------------------------


class Scorer:
    """Pairwise precision/recall over labelled files, given image-level predictions.

    Files with the same bytes are one image, so every two of them count as a found pair.
    """

    def __init__(self, store: Store, labels: dict[Path, str]):
        src = dict(store.query("SELECT source, image_id FROM sources WHERE kind = 'file'"))
        self.files = [p for p in sorted(labels) if str(p) in src]
        self.image_of = {f: src[str(f)] for f in self.files}
        self.group = {f: labels[f] for f in self.files}
        self.ids = sorted(set(self.image_of.values()))
        self.files_of: dict[str, list[Path]] = defaultdict(list)
        for f in self.files:
            self.files_of[self.image_of[f]].append(f)
        self.true_pairs = true_pairs(self.group)

    def score_image_pairs(self, pairs: set[tuple[str, str]]) -> dict[str, float]:
        """Scores of the file pairs within one image or across a pair of distinct images."""
        within = (pair for fs in self.files_of.values() for pair in itertools.combinations(fs, 2))
        across = ((fa, fb) for a, b in pairs for fa in self.files_of.get(a, ()) for fb in self.files_of.get(b, ()))
        return pair_scores(itertools.chain(within, across), self.group).as_dict()

    def score_groups(self, groups: list[list[str]]) -> dict[str, float]:
        """Scores of disjoint image groups; an image in no group is a group of its files."""
        grouped = {i for g in groups for i in g}
        singles = [[i] for i in self.files_of if i not in grouped]
        files = ([f for i in g for f in self.files_of.get(i, ())] for g in [*groups, *singles])
        return grouping_scores(files, self.group).as_dict()


def calibrate(store: Store, labels: dict[Path, str]) -> dict[str, Any]:
    sc = Scorer(store, labels)
    ids = sc.ids
    index = {i: k for k, i in enumerate(ids)}
    hashes = dedup.compute_hashes(store, ids)
    key = store.main_model()
    assert key is not None
    pos, X = load_vectors(store, key, index)

    # Every stage's pairs once, at the loosest threshold of its grid.
    stage_pairs: dict[str, list[tuple[str, str, float]]] = {}
    px = dedup.equal_pairs([hashes[i].pixel_sha256 for i in ids])
    stage_pairs["pixels"] = [(ids[a], ids[b], 1.0) for a, b in zip(*px)]
    for stage in ("phash", "dhash"):
        vals = np.asarray([getattr(hashes[i], stage) for i in ids], dtype=np.uint64)
        a, b, d = dedup.hash_pairs(vals, max(PHASH_GRID))
        stage_pairs[stage] = [(ids[x], ids[y], float(z)) for x, y, z in zip(a, b, d)]
    a, b, s = dedup.embedding_pairs(X, min(COSINE_GRID))
    stage_pairs["embedding"] = [(ids[pos[x]], ids[pos[y]], float(z)) for x, y, z in zip(a, b, s)]

    def select(stage: str, t: float | None) -> list[tuple[str, str, float]]:
        if t is None:
            return []
        if stage in ("phash", "dhash"):
            return sorted([p for p in stage_pairs[stage] if p[2] <= t], key=lambda p: p[2])
        if stage == "embedding":
            return sorted([p for p in stage_pairs[stage] if p[2] >= t], key=lambda p: -p[2])
        return stage_pairs[stage]

    def evaluate(parts: list[list[tuple[str, str, float]]]) -> dict[str, Any]:
        edges = [(min(a, b), max(a, b)) for part in parts for a, b, _ in part]  # strongest stage first
        groups = dedup.group_without_chaining(edges)
        return {"pairs": sc.score_image_pairs(set(edges)), "groups": sc.score_groups(groups)}

    report: dict[str, Any] = {
        "images": len(ids),
        "files": len(sc.files),
        "true_pairs": sc.true_pairs,
        "model": key,
        "stages": {},
        "combined": [],
    }
    report["distances"] = distance_summary(sc, stage_pairs, hashes, X, pos)
    print(f"{len(sc.files)} files -> {len(ids)} images; {sc.true_pairs} true file pairs")
    print_distances(report["distances"])

    base = evaluate([])
    report["stages"]["exact"] = base
    print("\nstage      threshold  pairs P / R / F1          groups P / R / F1")
    show("exact", "-", base)
    pix = evaluate([select("pixels", 1)])
    report["stages"]["pixels"] = pix
    show("pixels", "-", pix)
    for stage, grid in (("phash", PHASH_GRID), ("dhash", PHASH_GRID), ("embedding", COSINE_GRID)):
        rows = []
        for t in grid:
            r = evaluate([select("pixels", 1), select(stage, t)])
            rows.append({"threshold": t, **r})
        report["stages"][stage] = rows
        best = max(
            rows, key=lambda r: (r["groups"]["f1"], -abs(r["threshold"]) if stage != "embedding" else r["threshold"])
        )
        for r in rows:
            if r is best or r["threshold"] in _shown(stage):
                show(stage, r["threshold"], r, mark="  <- best groups F1" if r is best else "")

    print("\ncombined exact+pixels+phash<=t (+embedding>=c): groups F1 (P/R)")
    print("phash \\ cos " + "".join(f"{'-' if c is None else c:>17}" for c in COMBINED_COSINE))
    for t in COMBINED_PHASH:
        line = f"{t:>11} "
        for c in COMBINED_COSINE:
            r = evaluate([select("pixels", 1), select("phash", t), select("embedding", c)])
            report["combined"].append({"phash": t, "cosine": c, **r})
            g = r["groups"]
            line += f"  {g['f1']:.3f} ({g['precision']:.2f}/{g['recall']:.2f})"
        print(line)

    # The library itself, at its defaults.
    t0 = time.perf_counter()
    result = dedup.find(store)
    seconds = time.perf_counter() - t0
    lib = sc.score_groups([g.ids for g in result.groups])
    report["defaults"] = {
        "params": result.params,
        "groups": len(result.groups),
        "pairs": result.stats["pairs"],
        "score": lib,
        "seconds": round(seconds, 3),
    }
    print(
        f"\ndedup.find at defaults (phash<={dedup.PHASH_MAX_DISTANCE}, cosine>={dedup.COSINE_MIN}): "
        f"{len(result.groups)} groups, pairs {result.stats['pairs']}, "
        f"P {lib['precision']:.4f} R {lib['recall']:.4f} F1 {lib['f1']:.4f} ({seconds:.2f} s)"
    )
    return report


def _shown(stage: str) -> list[float]:
    return (
        [0, 2, 4, 6, 8, 10, 12, 14, 16]
        if stage != "embedding"
        else [0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98]
    )


def show(stage: str, t: Any, r: dict[str, Any], mark: str = "") -> None:
    p, g = r["pairs"], r["groups"]
    print(
        f"{stage:<10} {t!s:>9}  {p['precision']:.3f} / {p['recall']:.3f} / {p['f1']:.3f}     "
        f"{g['precision']:.3f} / {g['recall']:.3f} / {g['f1']:.3f}  (found {g['found']}){mark}"
    )


def distance_summary(
    sc: Scorer, stage_pairs: dict[str, Any], hashes: dict[str, dedup.ImageHashes], X: np.ndarray, pos: np.ndarray
) -> dict[str, Any]:
    """Same-group vs other-group score ranges per stage (image pairs, exhaustive)."""
    ids = sc.ids
    grp = {}
    for f in sc.files:
        grp[sc.image_of[f]] = sc.group[f]
    n = len(ids)
    codes = {g: k for k, g in enumerate(sorted(set(grp.values())))}
    code = np.asarray([codes[grp[i]] for i in ids])
    same = code[:, None] == code[None, :]
    iu = np.triu_indices(n, 1)
    out: dict[str, Any] = {}
    for stage in ("phash", "dhash"):
        v = np.asarray([getattr(hashes[i], stage) for i in ids], dtype=np.uint64)
        D = popcount64(v[:, None] ^ v[None, :]).reshape(n, n)[iu]
        s = same[iu]
        out[stage] = {
            "same_max": int(D[s].max()) if s.any() else None,
            "same_p95": float(np.quantile(D[s], 0.95)) if s.any() else None,
            "other_min": int(D[~s].min()),
            "other_p001": float(np.quantile(D[~s], 0.001)),
            "other_below": {str(t): int((D[~s] <= t).sum()) for t in (4, 6, 8, 10, 12)},
        }
    Xf = np.zeros((n, X.shape[1]), np.float32)
    Xf[pos] = X
    C = (Xf @ Xf.T)[iu]
    s = same[iu]
    out["embedding"] = {
        "same_min": float(C[s].min()) if s.any() else None,
        "same_median": float(np.median(C[s])) if s.any() else None,
        "other_max": float(C[~s].max()),
        "other_p999": float(np.quantile(C[~s], 0.999)),
        "other_above": {str(t): int((C[~s] >= t).sum()) for t in (0.85, 0.9, 0.93, 0.95, 0.97)},
    }
    return out


def print_distances(d: dict[str, Any]) -> None:
    for stage in ("phash", "dhash"):
        x = d[stage]
        print(
            f"{stage}: same-group max {x['same_max']} (p95 {x['same_p95']}), other-group min {x['other_min']}; "
            f"other-group pairs <= 4/6/8/10/12 bits: {list(x['other_below'].values())}"
        )
    e = d["embedding"]
    print(
        f"embedding: same-group min {e['same_min']:.3f} (median {e['same_median']:.3f}), other-group max "
        f"{e['other_max']:.3f}; other-group pairs >= .85/.90/.93/.95/.97: {list(e['other_above'].values())}"
    )


if __name__ == "__main__":
    sys.exit(main())
