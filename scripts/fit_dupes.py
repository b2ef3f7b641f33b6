"""Fit the verification thresholds of `imgdb dupes` on the fit half of the labelled bench.

    python scripts/make_dupes_bench.py ../shared/data /tmp/dupes-bench
    python scripts/fit_dupes.py /tmp/dupes-bench [--db /tmp/bench-store] [--out FILE]
    python scripts/calibrate_dupes.py /tmp/dupes-bench --db /tmp/bench-store   # reports both halves

``--zones`` fits the sure zone and ``--screen`` the screen's ``SCREEN_MIN`` instead, both on
the cheap evidence alone (nothing verified).

Only files of the ``fit`` split are used. Every candidate pair the cheap stages propose
among them (at the library's candidate bounds) is verified once, and its evidence kept;
then a grid over ``MAX_CHANGED``, ``RECOLOUR_SHARE`` and ``RECOLOUR_MAX_CHANGED`` keeps the
settings with pair precision >= 0.995 and no false pair among the iconic catalogue shots,
and of those within 0.003 of the best duplicate F1 picks the one labelling most recolours. Pairs are scored before grouping. The chosen values
are what ``imgdb/dedup/verify.py`` ships; ``calibrate_dupes.py`` then reports the whole
pipeline on the ``report`` half, which took no part in the fit.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.dedup import runs, verify
from imgdb.dedup.screen import Screen, screens
from imgdb.imaging.model import Model
from imgdb.store import Store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", type=Path)
    ap.add_argument("--db", type=Path, help="a store holding the bench (ingested when missing)")
    ap.add_argument("--out", type=Path, default=Path("bench-results/dupes-fit.json"))
    ap.add_argument("--evidence", type=Path, help="reuse (or save) the verified pairs here: re-fit without verifying")
    ap.add_argument(
        "--zones", action="store_true", help="fit the sure zone on the cheap evidence instead (nothing verified)"
    )
    ap.add_argument("--screen", action="store_true", help="fit the screen's SCREEN_MIN instead (nothing verified)")
    args = ap.parse_args()
    cheap = args.zones or args.screen
    with open(args.bench / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    fit = {str((args.bench / r["path"]).resolve()): r for r in rows if r["split"] == "fit"}
    if args.evidence and args.evidence.is_file() and not cheap:
        evidence = json.loads(args.evidence.read_text())
    else:
        with tempfile.TemporaryDirectory() as tmp:
            db = args.db or Path(tmp) / "store"
            with Store.open(db, write=True) as store:
                if not store.image_ids():
                    ingest(store, sorted(fit), Model.load())
                evidence = collect(store, fit, verified=not cheap)
        if args.evidence and not cheap:
            args.evidence.write_text(json.dumps(evidence))
    if cheap:
        fitted = {"sure_zones": zone_grid(evidence)} if args.zones else {"screen": screen_grid(evidence)}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**fitted, "pairs": len(evidence)}, indent=1))
        print(f"wrote {args.out}")
        return 0
    table = grid(evidence)
    best = table[0]
    print(f"\n{len(evidence)} candidate pairs among the fit half's files")
    print(f"chosen: {best}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"chosen": best, "top": table[:20], "pairs": len(evidence)}, indent=1))
    print(f"wrote {args.out}")
    return 0


def collect(store: Store, fit: dict[str, dict[str, str]], *, verified: bool = True) -> list[dict[str, Any]]:
    """Each candidate pair among fit files: its truth, its cheap evidence, its verification
    (``verified``; without it, the cheap evidence only, in seconds)."""
    by_image: dict[str, list[dict[str, str]]] = {}
    for source, image_id in store.query("SELECT source, image_id FROM sources WHERE kind = 'file'"):
        if source in fit:
            by_image.setdefault(image_id, []).append(fit[source])
    run = runs._Run(sorted(by_image))
    hashes = dedup.compute_hashes(store, run.ids)
    found = runs._hash_stages(
        run, hashes, dedup.DEFAULT_METHODS, dedup.PHASH_MAX_DISTANCE, dedup.SQUARE_MAX_DISTANCE, 0
    )
    vectors, found["embedding"] = runs._embedding_stage(store, run, store.main_model() or "", dedup.COSINE_MIN)
    candidates = dedup.stages.Candidates.concat(list(found.values())).ordered()
    stages_of = candidates.stages_by_pair()
    keys = sorted(stages_of)
    truth_pairs = {(a, b) for a, b in itertools.combinations(range(len(run.ids)), 2) if _truth(by_image, run, a, b)}
    print(
        f"{len(run.ids)} fit images; {len(keys)} candidate pairs; candidate recall of true duplicate pairs: "
        f"{sum(1 for k in keys if _truth(by_image, run, *k) == 'duplicate')}/"
        f"{sum(1 for k in truth_pairs if _truth(by_image, run, *k) == 'duplicate')}",
        flush=True,
    )
    screen = Screen(hashes)
    checker = verify.Verifier(runs._loader(store), phash=runs._phash_distance(hashes))
    evidence = checker.check_many([(run.ids[a], run.ids[b]) for a, b in keys]) if verified else [None] * len(keys)
    out = []
    for (a, b), ev in zip(keys, evidence):
        ra, rb = by_image[run.ids[a]][0], by_image[run.ids[b]][0]
        cheap = runs._pair(run, a, b, "", 0.0, None, [], hashes, vectors)
        out.append({
            "truth": _truth(by_image, run, a, b),
            "iconic": ra["variant"] in ("iconic", "recolour-hue90", "recolour-hue180", "recolour-hue270")
            or rb["variant"].startswith(("iconic", "recolour")),
            "variants": f"{ra['variant']}~{rb['variant']}",
            "verified": ev is not None,
            **({k: getattr(ev, k) for k in ("inliers", "overlap", "changed", "reshaped", "recoloured", "method",
                                            "textured", "matched_area", "kind")}
               if ev is not None else {}),
            "stages": sorted(stages_of[(a, b)]),
            "phash": cheap.phash_distance, "square": cheap.square_distance, "cosine": cheap.cosine,
            "screen": screen.score(run.ids[a], run.ids[b]),
        })  # fmt: skip
    print(
        f"verified {checker.verified} pairs in {checker.seconds:.1f} s of verification "
        f"(median {1000 * float(np.median(checker.pair_seconds or [0])):.1f} ms a pair), "
        f"prepared {checker.prepared} images in {checker.prepare_seconds:.1f} s",
        flush=True,
    )
    return out


def _truth(by_image: dict[str, list[dict[str, str]]], run: Any, a: int, b: int) -> str:
    """duplicate | recolour | negative, for two stored images (any of their files)."""
    for ra in by_image[run.ids[a]]:
        for rb in by_image[run.ids[b]]:
            if ra["group"] != rb["group"]:
                continue
            if "recolour" in (ra["kind"], rb["kind"]):
                return "recolour" if ra["variant"] != rb["variant"] else "negative"
            return "duplicate"
    return "negative"


def grid(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    dup_total = sum(1 for e in evidence if e["truth"] == "duplicate")
    rec_total = sum(1 for e in evidence if e["truth"] == "recolour")
    for max_changed, share, rec_max in itertools.product(
        np.arange(0.03, 0.21, 0.01), np.arange(0.02, 0.21, 0.02), (0.0, 0.01, 0.02, 0.03, 0.05, 0.08)
    ):
        kinds = [_decide(e, max_changed, share, rec_max) for e in evidence]
        tp = sum(1 for e, k in zip(evidence, kinds) if k == "duplicate" and e["truth"] == "duplicate")
        fp = sum(1 for e, k in zip(evidence, kinds) if k is not None and e["truth"] == "negative")
        fp_kind = sum(1 for e, k in zip(evidence, kinds) if k == "duplicate" and e["truth"] == "recolour")
        iconic_fp = sum(
            1 for e, k in zip(evidence, kinds) if k is not None and e["truth"] == "negative" and e["iconic"]
        )
        rec_ok = sum(1 for e, k in zip(evidence, kinds) if k == "recolour" and e["truth"] == "recolour")
        found = sum(1 for k in kinds if k == "duplicate")
        precision = tp / found if found else 1.0
        recall = tp / dup_total if dup_total else 1.0
        rows.append({
            "max_changed": round(float(max_changed), 2), "recolour_share": round(float(share), 2),
            "recolour_max_changed": rec_max, "precision": round(precision, 4), "recall": round(recall, 4),
            "f1": round(2 * precision * recall / (precision + recall), 4) if precision + recall else 0.0,
            "false_pairs": fp, "recolour_as_duplicate": fp_kind, "iconic_false": iconic_fp,
            "recolours_labelled": f"{rec_ok}/{rec_total}",
        })  # fmt: skip
    # Precision first; then, among the settings within 0.003 of the best F1, the one that
    # labels the most recolours (scored apart, they have a target of their own).
    ok = [r for r in rows if r["precision"] >= 0.995 and r["iconic_false"] == 0] or rows
    best = max(r["f1"] for r in ok)
    ok.sort(
        key=lambda r: (r["f1"] < best - 0.003, -int(r["recolours_labelled"].split("/")[0]), -r["f1"], r["max_changed"])
    )
    print("best settings on the fit half (pairs before grouping):")
    for r in ok[:8]:
        print(" ", r)
    return ok


def zone_grid(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sure zone: pHash <= p and cosine >= c, accepted as a duplicate without verification.

    A zone qualifies when no recolour and no other image falls in it, nor in the zone one
    step looser each way (2 bits, 0.01 of cosine: a margin for the report half); of those,
    the one holding the most pairs.
    """
    bits, cosines = range(0, 13, 2), [round(float(c), 2) for c in np.arange(0.90, 1.0, 0.01)]

    def inside(e: dict[str, Any], p: int, c: float) -> bool:
        return e["phash"] is not None and e["cosine"] is not None and e["phash"] <= p and e["cosine"] >= c

    def wrong(p: int, c: float) -> int:
        return sum(1 for e in evidence if e["truth"] != "duplicate" and inside(e, p, c))

    rows = []
    for p, c in itertools.product(bits, cosines):
        zone = [e for e in evidence if inside(e, p, c)]
        rows.append({
            "phash": p, "cosine": c, "pairs": len(zone), "duplicates": sum(e["truth"] == "duplicate" for e in zone),
            "recolours": sum(e["truth"] == "recolour" for e in zone),
            "negatives": sum(e["truth"] == "negative" for e in zone),
            "wrong_one_step_looser": wrong(p + 2, round(c - 0.01, 2)),
        })  # fmt: skip
    ok = [r for r in rows if r["recolours"] + r["negatives"] + r["wrong_one_step_looser"] == 0]
    ok.sort(key=lambda r: (-r["pairs"], r["phash"], -r["cosine"]))
    print(f"sure zones with no recolour or other image, nor one step looser ({len(evidence)} candidate pairs):")
    for r in ok[:10]:
        print(" ", r)
    return ok


#: Renditions that show the whole photograph (the others show a part of it).
WHOLE = {"original", "w768", "w1024", "webp", "q60", "adjust", "gray", "tint", "overlay"}


def screen_grid(evidence: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The screen's bound: the pairs only the embedding stage finds, scored by ``Screen``.

    A bound qualifies when it keeps every recolour pair and at least 99.9% of the
    duplicate pairs where one image shows the whole photograph (a rendition or crop placed
    inside it: the links grouping needs; two partial crops of one photograph are joined
    through it); of those, the one that turns away the most other pairs.
    """
    pairs = [e for e in evidence if screens(e["stages"])]

    def passes(e: dict[str, Any], t: float) -> bool:
        return e["screen"] is None or e["screen"] >= t

    whole = [e for e in pairs if e["truth"] == "duplicate" and WHOLE & set(e["variants"].split("~"))]
    partial = [e for e in pairs if e["truth"] == "duplicate" and not WHOLE & set(e["variants"].split("~"))]
    rows = []
    for t in [round(float(x), 2) for x in np.arange(0.40, 0.86, 0.05)]:
        rows.append({
            "screen_min": t,
            "whole_kept": sum(passes(e, t) for e in whole), "whole": len(whole),
            "partial_kept": sum(passes(e, t) for e in partial),
            "recolours_kept": sum(passes(e, t) for e in pairs if e["truth"] == "recolour"),
            "recolours": sum(e["truth"] == "recolour" for e in pairs),
            "negatives_passing": sum(passes(e, t) for e in pairs if e["truth"] == "negative"),
            "negatives": sum(e["truth"] == "negative" for e in pairs),
        })  # fmt: skip
    ok = [r for r in rows if r["recolours_kept"] == r["recolours"] and r["whole_kept"] >= 0.999 * r["whole"]]
    ok.sort(key=lambda r: (r["negatives_passing"], -r["screen_min"]))
    print(f"screen bounds on the {len(pairs)} embedding-only pairs of the fit half:")
    for r in rows:
        print(" ", r, "<- chosen" if ok and r is ok[0] else "")
    return ok


def _decide(e: dict[str, Any], max_changed: float, share: float, rec_max: float) -> str | None:
    if not e["verified"]:
        return None
    if e["overlap"] < verify.MIN_OVERLAP:
        return None
    if e["recoloured"] >= share:
        return "recolour" if e["reshaped"] <= rec_max else None
    return "duplicate" if e["changed"] <= max_changed else None


if __name__ == "__main__":
    sys.exit(main())
