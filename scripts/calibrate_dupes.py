"""Calibrate the `imgdb dupes` stages on a labelled folder: pairwise precision / recall / F1.

    python scripts/calibrate_dupes.py FOLDER LABELS_CSV [--db DIR] [--out FILE]
    python scripts/calibrate_dupes.py BENCH_DIR [BENCH_DIR/labels.csv] [--phash T] [--cosine C] [--grid]

Two label formats; the CSV's header tells which (LABELS_CSV defaults to FOLDER/labels.csv).

**Benchmark mode**: a folder written by ``scripts/make_dupes_bench.py``, whose labels have
``path,source,group,variant,kind,split``. Every file is ingested, ``dedup.find`` runs once
(library defaults, or ``--phash`` / ``--cosine``) and its groups are scored for the ``fit``
and ``report`` halves apart (pairs with both files in the half), and for ``all``:

* duplicates: pairwise P / R / F1 over file pairs; same-group pairs with a ``recolour``
  file are scored apart (neither found nor true), a recolour paired with another group
  still counts as a false pair;
* recall per variant (the ``original`` paired with each rendition), per orientation of the
  source, and on the square centre crops (``thumb150``, ``square300``) of portrait sources;
* false pairs among the iconic shots and their recolours, and the false pairs touching a
  ``ukbench-view`` or ``burst`` negative (of which: with its own source's renditions);
* recolours: of the (iconic, recolour) pairs, how many were found and how many the
  pipeline labelled ``recolour``. The label is read with ``getattr(x, "kind", None)`` from
  a found pair, else the non-kept member, else the group; today's pipeline gives none.

For tuning it prints, for the fit half, quantiles of pHash distance and cosine over the
duplicate pairs (all, and per variant), the recolour pairs, the hard negatives and all
negative pairs; ``--grid`` also runs the stage / threshold grid below on the fit half's
duplicates. Results go to ``bench-results/dupes-<name>.json`` (or ``--out``).

**Group mode** (e.g. the jammy shop's ``near_dup_groups.csv``), as before:

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
import csv
import itertools
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.dedup.pairs import popcount64
from imgdb.dedup.runs import load_vectors
from imgdb.dedup.verify import SURE
from imgdb.eval.labels import read_labels
from imgdb.eval.metrics import (
    false_pairs,
    group_pairs,
    grouping_scores,
    kind_scores,
    pair_recall,
    pair_scores,
    recall_by,
    true_pairs,
)
from imgdb.imaging.model import Model, ModelSpec
from imgdb.store import Store

PHASH_GRID = list(range(21))
COSINE_GRID = [round(x, 2) for x in np.arange(0.50, 1.0, 0.01)]
COMBINED_PHASH = [0, 2, 4, 6, 8, 10, 12, 14, 16]
COMBINED_COSINE = [None, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("labels", type=Path, nargs="?", help="labels CSV (default: FOLDER/labels.csv)")
    ap.add_argument("--db", type=Path, help="store to ingest into and reuse (default: a temp dir)")
    ap.add_argument("--name", help="name for the results file (default: the folder's name)")
    ap.add_argument("--out", type=Path, help="results JSON (default: bench-results/dupes-<name>.json)")
    ap.add_argument("--path-col", help="path column (default: path, filename or file, else the first)")
    ap.add_argument("--group-col", default="group_id", help="group column (default: group_id)")
    ap.add_argument("--phash", type=int, help="benchmark mode: dedup.find's pHash distance (default: the library's)")
    ap.add_argument("--cosine", type=float, help="benchmark mode: dedup.find's cosine (default: the library's)")
    ap.add_argument("--grid", action="store_true", help="benchmark mode: also the threshold grid on the fit half")
    args = ap.parse_args()
    folder = args.folder.resolve()
    name = args.name or (folder.name if folder.name not in ("images", "site") else folder.parent.name)
    out = args.out or Path("bench-results") / f"dupes-{name}.json"
    labels_csv = args.labels or folder / "labels.csv"
    if not labels_csv.is_file():
        ap.error(f"no labels CSV {labels_csv}")
    if is_bench_labels(labels_csv):
        find_args: dict[str, Any] = {}
        if args.phash is not None:
            find_args["phash_max_distance"] = args.phash
        if args.cosine is not None:
            find_args["cosine_min"] = args.cosine
        return bench_main(folder, labels_csv, name, out, args.db, find_args, args.grid)

    try:
        read = read_labels(labels_csv, folder, path_column=args.path_col, label_columns=[args.group_col])
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
        "labels": str(labels_csv),
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
        "stats": result.stats,
        "score": lib,
        "seconds": round(seconds, 3),
    }
    print(
        f"\ndedup.find at defaults (phash<={dedup.PHASH_MAX_DISTANCE}, cosine>={dedup.COSINE_MIN}): "
        f"{len(result.groups)} groups, pairs {result.stats['pairs']}, "
        f"P {lib['precision']:.4f} R {lib['recall']:.4f} F1 {lib['f1']:.4f} ({seconds:.2f} s)"
    )
    print_decisions(result.stats, len(sc.files))
    return report


def print_decisions(stats: dict[str, Any], files: int) -> None:
    """How the run decided its candidate pairs, per 1,000 images, and what verification cost."""
    images = stats.get("images") or 1
    per = 1000 / images

    def rate(n: int) -> str:
        return f"{n} ({n * per:.0f} per 1,000 images)"

    timings = {k: round(v, 2) for k, v in stats.get("timings", {}).items()}
    print(
        f"{images} images ({files} files): candidate pairs {rate(stats.get('candidate_pairs', 0))} "
        f"[by stage {stats.get('pairs')}]; sure zone {rate(stats.get('sure_pairs', 0))}; "
        f"verified {rate(stats.get('verified_pairs', 0))} (to verify {stats.get('to_verify')}, the rest while "
        f"grouping); verification {stats.get('verify_seconds')} s CPU, median {stats.get('verify_ms_median')} ms "
        f"a pair, {stats.get('prepared_images')} images prepared in {stats.get('prepare_seconds')} s; "
        f"timings {timings}"
    )


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


# ---------------------------------------------------------------------------------------
# benchmark mode (scripts/make_dupes_bench.py folders)

BENCH_COLUMNS = ("source", "group", "variant", "kind", "split")
SPLITS = ("fit", "report", "all")
#: CMS square centre crops: scored apart on portrait sources.
SQUARE_CROPS = ("thumb150", "square300")
#: Negative variants whose false pairs are counted apart (each file of them is its own group).
HARD_NEGATIVES = ("ukbench-view", "burst")
QUANTILES = (0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0)


def is_bench_labels(csv_path: Path) -> bool:
    """Whether the CSV's header has the benchmark columns (``make_dupes_bench.py``)."""
    with open(csv_path, newline="") as fh:
        header = next(csv.reader(fh), [])
    return "path" in header and all(c in header for c in BENCH_COLUMNS)


@dataclass
class BenchLabels:
    """The benchmark's labels, per resolved file path."""

    group: dict[Path, str]
    variant: dict[Path, str]
    kind: dict[Path, str]
    split: dict[Path, str]
    family: dict[Path, str]  # the group id before "~": a source with its own hard negatives
    original: dict[str, Path]  # duplicate group -> its original (or an iconic group -> the iconic shot)
    orientation: dict[str, str]  # duplicate group -> portrait / square / landscape (of the original)

    @classmethod
    def read(cls, csv_path: Path, folder: Path) -> tuple[BenchLabels, int]:
        """The labels and how many rows name no file."""
        read = read_labels(csv_path, folder, path_column="path", label_columns=BENCH_COLUMNS)
        rows = read.by_path
        col = {c: {p: v[c] for p, v in rows.items()} for c in BENCH_COLUMNS}
        original = {col["group"][p]: p for p in rows if col["variant"][p] in ("original", "iconic")}
        orientation = {}
        for g, p in original.items():
            if col["variant"][p] == "original":
                with Image.open(p) as im:
                    w, h = im.size
                orientation[g] = "portrait" if h > w else "square" if h == w else "landscape"
        family = {p: g.split("~")[0] for p, g in col["group"].items()}
        labels = cls(col["group"], col["variant"], col["kind"], col["split"], family, original, orientation)
        return labels, len(read.unresolved)


def bench_main(
    folder: Path, labels_csv: Path, name: str, out: Path, db: Path | None, find_args: dict[str, Any], grid: bool
) -> int:
    bench, missing = BenchLabels.read(labels_csv, folder)
    if missing:
        print(f"{missing} labelled paths name no file")
    files = sorted(bench.group)
    print(
        f"{name}: {len(files)} files; "
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(bench.kind.values()).items()))
        + "; "
        + ", ".join(f"{k} {v}" for k, v in sorted(Counter(bench.split.values()).items()))
    )
    with tempfile.TemporaryDirectory() as tmp, Store.open(db or Path(tmp) / "store", write=True) as store:
        t0 = time.perf_counter()
        summary = ingest(store, [str(p) for p in files], Model(ModelSpec.load()))
        print(
            f"ingest: {summary.new} new images, {summary.already_stored} known, "
            f"{dict(summary.failed) or 'no failures'} ({time.perf_counter() - t0:.1f} s)"
        )
        report = bench_report(store, bench, find_args)
        if grid:
            fit = {f: bench.group[f] for f in files if bench.split[f] == "fit" and bench.kind[f] != "recolour"}
            print("\nthreshold grid on the fit half's duplicates and negatives (recolours left out):")
            report["grid_fit"] = calibrate(store, fit)
    report["dataset"] = {
        "name": name,
        "folder": str(folder),
        "labels": str(labels_csv),
        "files": len(files),
        "kinds": dict(Counter(bench.kind.values())),
        "variants": dict(Counter(bench.variant.values())),
        "splits": {s: dict(Counter(bench.kind[f] for f in files if bench.split[f] == s)) for s in SPLITS[:2]},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=float))
    print(f"\nwrote {out}")
    return 0


def pair_kinds(result: dedup.DupeResult) -> dict[tuple[str, str], str | None]:
    """The kind the pipeline gives each pair of grouped images, (smaller id, larger id) -> kind.

    Read with getattr, so a pipeline without kinds gives None: a found pair's ``kind``
    (its strongest stage first), else the non-kept member's when the other is the kept
    one, else the group's.
    """
    by_pair: dict[tuple[str, str], str] = {}
    for p in result.pairs:
        k = getattr(p, "kind", None)
        if k is not None:
            by_pair.setdefault((min(p.a, p.b), max(p.a, p.b)), k)
    out: dict[tuple[str, str], str | None] = {}
    for g in result.groups:
        member_kind = {m.image_id: getattr(m, "kind", None) for m in g.members}
        for a, b in itertools.combinations(g.ids, 2):
            key = (min(a, b), max(a, b))
            k = by_pair.get(key)
            if k is None and g.keep_id in key:
                k = member_kind.get(b if a == g.keep_id else a)
            out[key] = k if k is not None else getattr(g, "kind", None)
    return out


def bench_report(store: Store, bench: BenchLabels, find_args: dict[str, Any]) -> dict[str, Any]:
    src = dict(store.query("SELECT source, image_id FROM sources WHERE kind = 'file'"))
    files = [f for f in sorted(bench.group) if str(f) in src]
    if len(files) < len(bench.group):
        print(f"{len(bench.group) - len(files)} labelled files are not in the store (failed to ingest)")
    image_of = {f: src[str(f)] for f in files}
    files_of: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        files_of[image_of[f]].append(f)

    t0 = time.perf_counter()
    result = dedup.find(store, **find_args)
    seconds = time.perf_counter() - t0
    kinds = pair_kinds(result)
    grouped = {i for g in result.groups for i in g.ids}
    file_groups = [[f for i in g.ids for f in files_of.get(i, ())] for g in result.groups]
    file_groups += [fs for i, fs in files_of.items() if i not in grouped and len(fs) > 1]
    found = list(group_pairs(file_groups))
    # The stages' raw pairs (what dupe_pairs records), before grouping without chaining.
    raw: dict[tuple[Path, Path], None] = dict.fromkeys(group_pairs(fs for fs in files_of.values() if len(fs) > 1))
    for p in result.pairs:
        for fa in files_of.get(p.a, ()):
            for fb in files_of.get(p.b, ()):
                raw[(min(fa, fb), max(fa, fb))] = None
    found_kind: dict[tuple[Path, Path], str | None] = {}
    for a, b in found:
        ia, ib = image_of[a], image_of[b]
        found_kind[(a, b)] = None if ia == ib else kinds.get((min(ia, ib), max(ia, ib)))
    for p in result.pairs:  # recolour pairs stay out of groups unless asked, but are reported
        if getattr(p, "kind", None) == "recolour":
            for fa in files_of.get(p.a, ()):
                for fb in files_of.get(p.b, ()):
                    found_kind.setdefault((min(fa, fb), max(fa, fb)), "recolour")
    print(f"dedup.find {result.params}: {len(result.groups)} groups ({seconds:.2f} s)")
    print_decisions(result.stats, len(image_of))
    report: dict[str, Any] = {
        "params": result.params,
        "find": {"groups": len(result.groups), "seconds": round(seconds, 3), "stats": result.stats},
        "splits": {
            s: split_scores(
                bench, [f for f in files if s == "all" or bench.split[f] == s], found, list(raw), found_kind
            )
            for s in SPLITS
        },
    }
    print_bench(report["splits"])
    report["sure_zone"] = sure_zone_scores(bench, result, files_of)
    print(f"sure zone (accepted without verification), file pairs per split: {report['sure_zone']}")
    fit = [f for f in files if bench.split[f] == "fit"]
    report["distances_fit"] = bench_distances(store, bench, fit, image_of)
    print_bench_distances(report["distances_fit"])
    return report


def sure_zone_scores(bench: BenchLabels, result: dedup.DupeResult, files_of: dict[str, list[Path]]) -> dict[str, Any]:
    """Per split, the file pairs of the pairs the sure zone accepted: how many, how many
    of one source (correct), and how many are a recolour or another image (wrong)."""
    out: dict[str, Any] = {s: Counter() for s in SPLITS}
    for p in result.pairs:
        if SURE not in p.stages:
            continue
        for fa in files_of.get(p.a, ()):
            for fb in files_of.get(p.b, ()):
                same = bench.group[fa] == bench.group[fb]
                recolour = same and "recolour" in (bench.kind[fa], bench.kind[fb])
                verdict = "recolour" if recolour else "correct" if same else "other image"
                split = bench.split[fa] if bench.split[fa] == bench.split[fb] else None
                for s in ("all", split):
                    if s is not None:
                        out[s]["pairs"] += 1
                        out[s][verdict] += 1
    return {s: dict(c) for s, c in out.items()}


def split_scores(
    bench: BenchLabels,
    files: list[Path],
    found: list[tuple[Path, Path]],
    raw: list[tuple[Path, Path]],
    found_kind: dict[tuple[Path, Path], str | None],
) -> dict[str, Any]:
    """Every score of one split: `files` are its files, `found` the file pairs of the groups,
    `raw` those of the stages' pairs before grouping (scored too, to tell thresholds from grouping).
    """
    sel = set(files)
    pairs = [(a, b) for a, b in found if a in sel and b in sel]
    raw_pairs = [(a, b) for a, b in raw if a in sel and b in sel]
    labels = {f: bench.group[f] for f in files}
    recolours = {f for f in files if bench.kind[f] == "recolour"}
    dup = pair_scores(pairs, labels, apart=recolours)
    dup_raw = pair_scores(raw_pairs, labels, apart=recolours)

    def to_original(keep: Any) -> list[tuple[Path, Path]]:
        """(original, rendition) pairs of this split's duplicate files that `keep(file)` selects."""
        return [
            (bench.original[bench.group[f]], f)
            for f in files
            if bench.kind[f] == "duplicate" and bench.variant[f] != "original" and keep(f)
        ]

    variants = sorted({bench.variant[f] for f in files if bench.kind[f] == "duplicate"} - {"original"})
    wanted_by_variant = {v: to_original(lambda f, v=v: bench.variant[f] == v) for v in variants}
    by_variant = recall_by(pairs, wanted_by_variant)
    by_variant_raw = recall_by(raw_pairs, wanted_by_variant)
    by_orientation = recall_by(
        pairs,
        {
            o: to_original(lambda f, o=o: bench.orientation[bench.group[f]] == o)
            for o in ("portrait", "square", "landscape")
        },
    )
    wanted_squares = to_original(
        lambda f: bench.variant[f] in SQUARE_CROPS and bench.orientation[bench.group[f]] == "portrait"
    )
    portrait_squares, portrait_squares_raw = pair_recall(pairs, wanted_squares), pair_recall(raw_pairs, wanted_squares)

    wrong = false_pairs(pairs, labels)
    iconic = false_pairs(pairs, labels, among={f for f in files if bench.family[f] == "iconic"})
    iconic_shots = false_pairs(pairs, labels, among={f for f in files if bench.variant[f] == "iconic"})
    hard: dict[str, Any] = {}
    for v in HARD_NEGATIVES:
        touching = [(a, b) for a, b in wrong if v in (bench.variant[a], bench.variant[b])]
        own = [(a, b) for a, b in touching if bench.family[a] == bench.family[b]]
        hard[v] = {
            "files": sum(1 for f in files if bench.variant[f] == v),
            "false_pairs": len(touching),
            "same_family": len(own),
            "examples": _examples(touching),
        }

    wanted = [(bench.original[bench.group[f]], f) for f in recolours]
    # Recolours are reported apart from groups (unless asked): a recolour pair counts wherever it is.
    recolour_found = {p: found_kind[p] for p in pairs}
    recolour_found.update({p: k for p, k in found_kind.items() if k == "recolour" and p[0] in sel and p[1] in sel})
    recolour = kind_scores(recolour_found, wanted, "recolour")
    return {
        "files": len(files),
        "duplicates": dup.as_dict(),
        "duplicates_raw_pairs": dup_raw.as_dict(),
        "recall_by_variant": {v: r.as_dict() for v, r in by_variant.items()},
        "recall_by_variant_raw_pairs": {v: r.as_dict() for v, r in by_variant_raw.items()},
        "recall_by_orientation": {o: r.as_dict() for o, r in by_orientation.items()},
        "recall_square_crops_of_portraits": portrait_squares.as_dict(),
        "recall_square_crops_of_portraits_raw_pairs": portrait_squares_raw.as_dict(),
        "false_pairs": {
            "all": len(wrong),
            "by_variants": {
                f"{x} ~ {y}": n
                for (x, y), n in Counter(
                    tuple(sorted((bench.variant[a], bench.variant[b]))) for a, b in wrong
                ).most_common()
            },
            "iconic": {
                "files": sum(1 for f in files if bench.variant[f] == "iconic"),
                "false_pairs": len(iconic),  # the shots and their recolours
                "between_shots": len(iconic_shots),  # the shots alone
                "examples": _examples(iconic),
            },
            **hard,
        },
        "recolour": recolour.as_dict(),
    }


def _examples(pairs: list[tuple[Path, Path]], n: int = 10) -> list[str]:
    return [f"{a.parent.name}/{a.name} ~ {b.parent.name}/{b.name}" for a, b in pairs[:n]]


def print_bench(splits: dict[str, Any]) -> None:
    """The split table: groups (what `dupes` shows) unless a row says raw stage pairs."""
    cols = SPLITS
    print("\n" + f"{'':<36}" + "".join(f"{s:>22}" for s in cols))

    def row(label: str, cell: Any) -> None:
        print(f"{label:<36}" + "".join(f"{cell(splits[s]):>22}" for s in cols))

    def rate(r: dict[str, Any]) -> str:
        return "-" if r["rate"] is None else f"{r['rate']:.3f} ({r['hit']}/{r['total']})"

    def two(g: dict[str, Any], r: dict[str, Any]) -> str:
        return "-" if g["rate"] is None else f"{g['rate']:.3f} | {r['rate']:.3f}"

    def prf(d: dict[str, Any]) -> str:
        return "{precision:.3f}/{recall:.3f}/{f1:.3f}".format(**d)

    row("duplicates P / R / F1", lambda d: prf(d["duplicates"]))
    row("  found / correct / true", lambda d: "{found}/{correct}/{true}".format(**d["duplicates"]))
    row("  raw stage pairs P / R / F1", lambda d: prf(d["duplicates_raw_pairs"]))
    row("square crops of portraits R", lambda d: rate(d["recall_square_crops_of_portraits"]))
    row("  raw stage pairs R", lambda d: rate(d["recall_square_crops_of_portraits_raw_pairs"]))
    row("false pairs, all", lambda d: str(d["false_pairs"]["all"]))
    row(
        "  iconic family (between shots)",
        lambda d: "{false_pairs} ({between_shots})".format(**d["false_pairs"]["iconic"]),
    )
    for v in HARD_NEGATIVES:
        row(
            f"  touching {v} (same family)",
            lambda d, v=v: "{false_pairs} ({same_family})".format(**d["false_pairs"][v]),
        )
    row("recolour pairs found", lambda d: "{found}/{true}".format(**d["recolour"]))
    row("  labelled recolour (of found)", lambda d: "{labelled} ({labelled_rate:.3f})".format(**d["recolour"]))
    print("recall by orientation")
    for o in ("portrait", "square", "landscape"):
        row(f"  {o}", lambda d, o=o: rate(d["recall_by_orientation"][o]))
    print("recall by variant (original ~ rendition): groups | raw stage pairs")
    for v in splits["all"]["recall_by_variant"]:
        row(
            f"  {v}",
            lambda d, v=v: two(
                d["recall_by_variant"].get(v, {"rate": None}), d["recall_by_variant_raw_pairs"].get(v, {"rate": None})
            ),
        )
    top = list(splits["all"]["false_pairs"]["by_variants"].items())[:8]
    if top:
        print("false pairs by variants (all): " + ", ".join(f"{k} {n}" for k, n in top))


def bench_distances(store: Store, bench: BenchLabels, files: list[Path], image_of: dict[Path, str]) -> dict[str, Any]:
    """Quantiles of pHash distance and cosine over pair sets of `files` (exhaustive)."""
    ids = sorted({image_of[f] for f in files})
    index = {i: k for k, i in enumerate(ids)}
    hashes = dedup.compute_hashes(store, ids)
    key = store.main_model()
    assert key is not None
    pos, X = load_vectors(store, key, index)
    Xf = np.full((len(ids), X.shape[1]), np.nan, np.float32)
    Xf[pos] = X
    has_hash = np.asarray([hashes[i].phash is not None for i in ids])
    ph = np.asarray([hashes[i].phash or 0 for i in ids], dtype=np.uint64)
    fi = np.asarray([index[image_of[f]] for f in files])
    fs = list(files)
    n = len(fs)
    a, b = np.triu_indices(n, 1)
    ia, ib = fi[a], fi[b]
    D = popcount64(ph[ia] ^ ph[ib]).astype(np.float64)
    D[~(has_hash[ia] & has_hash[ib])] = np.nan
    C = np.einsum("ij,ij->i", Xf[ia], Xf[ib])

    def arr(values: dict[Path, str]) -> np.ndarray:
        return np.asarray([values[f] for f in fs], dtype=object)

    group, variant, kind, family = arr(bench.group), arr(bench.variant), arr(bench.kind), arr(bench.family)
    same = group[a] == group[b]
    dup = same & (kind[a] == "duplicate") & (kind[b] == "duplicate")
    orig_a, orig_b = variant[a] == "original", variant[b] == "original"
    sets: dict[str, np.ndarray] = {"duplicate": dup}
    sets["recolour ~ iconic"] = same & (
        ((kind[a] == "recolour") & (variant[b] == "iconic")) | ((kind[b] == "recolour") & (variant[a] == "iconic"))
    )
    neg = ~same
    sets["negative: iconic ~ iconic"] = neg & (family[a] == "iconic") & (family[b] == "iconic")
    for v in HARD_NEGATIVES:
        sets[f"negative: {v} ~ same family"] = neg & (family[a] == family[b]) & ((variant[a] == v) | (variant[b] == v))
    sets["negative: all"] = neg
    for v in sorted(set(variant[kind == "duplicate"]) - {"original"}):
        sets[f"original ~ {v}"] = dup & ((orig_a & (variant[b] == v)) | (orig_b & (variant[a] == v)))

    def quantiles(x: np.ndarray) -> list[float] | None:
        x = x[~np.isnan(x)]
        return [round(float(q), 4) for q in np.quantile(x, QUANTILES)] if len(x) else None

    out: dict[str, Any] = {"quantiles": list(QUANTILES), "sets": {}}
    for name, m in sets.items():
        out["sets"][name] = {"pairs": int(m.sum()), "phash": quantiles(D[m]), "cosine": quantiles(C[m])}
    return out


def print_bench_distances(d: dict[str, Any]) -> None:
    qs = " ".join(f"{'q' + format(q, 'g'):>6}" for q in d["quantiles"])
    for measure in ("phash", "cosine"):
        print(f"\nfit half: {measure} quantiles by pair set\n{'':<34}{'pairs':>8} {qs}")
        for name, s in d["sets"].items():
            vals = s[measure]
            cells = " ".join(f"{v:>6.0f}" if measure == "phash" else f"{v:>6.3f}" for v in vals) if vals else "-"
            print(f"{name:<34}{s['pairs']:>8} {cells}")


if __name__ == "__main__":
    sys.exit(main())
