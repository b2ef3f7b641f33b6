"""What verification costs per pair on a store's own candidate pairs, and how a run decides them.

    python scripts/bench_verify.py STORE [STORE ...] [--sample N] [--out FILE]

For each store (read only): the candidate pairs the library's stages propose at their
default bounds, how many the sure zone takes (``verify.sure``), how many the screen turns
away (``dedup.screen``, with its CPU time a pair), how many are verified and
how many of those may fall back to comparing whole frames (``FRAME_MAX_PHASH``), per 1,000
images; then, on a seeded sample of the pairs to verify, the CPU time (process time, one
thread) of preparing an image (decode at ``SIDE`` px and ORB features) and of verifying a
pair, split into the keypoint match (ORB + RANSAC) and the rest (block and colour checks).
Prints a table and writes ``bench-results/verify-cost.json`` (or ``--out``).
Run it under the shared benchmark lock; the load average is recorded with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgdb import dedup
from imgdb.dedup import runs, verify
from imgdb.dedup.screen import Screen
from imgdb.store import Store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stores", type=Path, nargs="+")
    ap.add_argument("--sample", type=int, default=300, help="pairs to time per store (default 300)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench-results/verify-cost.json"))
    args = ap.parse_args()
    rows = [measure(path, args.sample, args.seed) for path in args.stores]
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")
    return 0


def measure(path: Path, sample: int, seed: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with Store.open(path) as store:
        run = runs._Run(sorted(store.image_ids()))
        hashes = dedup.compute_hashes(store, run.ids)
        found = runs._hash_stages(
            run, hashes, dedup.DEFAULT_METHODS, dedup.PHASH_MAX_DISTANCE, dedup.SQUARE_MAX_DISTANCE, 0
        )
        vectors, found["embedding"] = runs._embedding_stage(store, run, store.main_model() or "", dedup.COSINE_MIN)
        candidates = dedup.stages.Candidates.concat(list(found.values()))
        stages = candidates.stages_by_pair()
        keys = sorted(stages)
        pairs = [runs._pair(run, a, b, "", 0.0, None, sorted(stages[a, b]), hashes, vectors) for a, b in keys]
        sure = [p for p in pairs if verify.sure(p.phash_distance, p.cosine)]
        screen = Screen(hashes)
        unsure, screen_s = [], 0.0
        for p in pairs:
            if verify.sure(p.phash_distance, p.cosine):
                continue
            t0 = time.process_time()
            away = screen.turns_away(p.a, p.b, p.stages)
            screen_s += time.process_time() - t0
            if not away:
                unsure.append(p)
        framed = sum(1 for p in unsure if p.phash_distance is not None and p.phash_distance <= verify.FRAME_MAX_PHASH)
        timed = random.Random(seed).sample(unsure, min(sample, len(unsure)))
        load = runs._loader(store)
        prepared: dict[str, verify.Prepared | None] = {}
        prepare_s = []
        for image_id in sorted({i for p in timed for i in (p.a, p.b)}):
            t0 = time.process_time()
            loaded = load(image_id)
            prepared[image_id] = verify.prepare(*loaded) if loaded is not None else None
            prepare_s.append(time.process_time() - t0)
        pair_s, match_s = [], []
        for p in timed:
            pa, pb = prepared[p.a], prepared[p.b]
            if pa is None or pb is None:
                continue
            frames = p.phash_distance is None or p.phash_distance <= verify.FRAME_MAX_PHASH
            t0 = time.process_time()
            verify.verify(pa, pb, frames=frames)
            t1 = time.process_time()
            verify._align(pa, pb)
            pair_s.append(t1 - t0)
            match_s.append(time.process_time() - t1)
    n = len(run.ids)
    per = 1000 / n if n else 0.0
    in_pairs = len({i for k in keys for i in k})

    def ms(xs: list[float], q: str) -> float | None:
        return round(1000 * float(np.median(xs) if q == "median" else np.mean(xs)), 2) if xs else None

    rest = [a - b for a, b in zip(pair_s, match_s)]
    return {
        "store": str(path),
        "images": n,
        "images_in_pairs": in_pairs,
        "candidate_pairs": len(keys),
        "sure": len(sure),
        "screened": screen.screened,
        "screened_out": len(pairs) - len(sure) - len(unsure),
        "screen_ms": round(1000 * screen_s / screen.screened, 3) if screen.screened else None,
        "to_verify": len(unsure),
        "frames_allowed": framed,
        "per_1000": {k: round(v * per, 1) for k, v in (("candidates", len(keys)), ("sure", len(sure)),
                                                      ("screened_out", len(pairs) - len(sure) - len(unsure)),
                                                      ("to_verify", len(unsure)))},
        "timed_pairs": len(pair_s),
        "pair_ms": {"median": ms(pair_s, "median"), "mean": ms(pair_s, "mean")},
        "match_ms": {"median": ms(match_s, "median"), "mean": ms(match_s, "mean")},
        "checks_ms": {"median": ms(rest, "median"), "mean": ms(rest, "mean")},
        "prepare_ms": {"median": ms(prepare_s, "median"), "mean": ms(prepare_s, "mean")},
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'store':<22}{'images':>8}{'cand/1k':>9}{'sure/1k':>9}{'screened/1k':>12}{'screen ms':>10}{'verify/1k':>10}"
        f"{'pair ms med/mean':>18}{'ORB mean':>9}{'checks':>9}{'prep ms':>9}{'load':>12}"
    )
    print(head)
    for r in rows:
        p = r["per_1000"]
        print(
            f"{Path(r['store']).name[:21]:<22}{r['images']:>8}{p['candidates']:>9.0f}{p['sure']:>9.0f}"
            f"{p['screened_out']:>12.0f}{r['screen_ms']!s:>10}"
            f"{p['to_verify']:>10.0f}{r['pair_ms']['median']!s:>9}/{r['pair_ms']['mean']!s:<8}"
            f"{r['match_ms']['mean']!s:>9}{r['checks_ms']['mean']!s:>9}{r['prepare_ms']['mean']!s:>9}"
            f"{r['load_average'][0]:>6}-{r['load_average'][1]:<5}"
        )


if __name__ == "__main__":
    sys.exit(main())
