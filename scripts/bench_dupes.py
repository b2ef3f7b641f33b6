"""Time the `imgdb dupes` pair search at scale on synthetic data (no store, no images).

    python scripts/bench_dupes.py [--n 100000] [--verify] [--out bench-results/dupes-bench.json]

Synthetic data, made to look like the real thing where it matters for the search:

* vectors (n x 1280, L2-normalised): a shared mean direction holding 25% of the energy
  plus a power-law spectrum (k^-1.1) over a random orthonormal basis, so the top 128
  uncentred principal directions hold ~83% of the energy (measured on 3,244 real Lite0
  vectors from the shop, UKBench and Grocery sets: 84%). 10% of the images come in
  "families" of 3-5 look-alikes (cosine ~0.80-0.93, like different photos of one product)
  and 2% have a planted near-duplicate (cosine ~0.96-0.995), so there are pairs just
  below and just above the threshold.
* 64-bit hashes: uniform random bits with the top bit set (imagehash's pHash has its DC
  bit set in practice; the other bits of real pHashes are close to balanced), and 2% of
  the images get a copy of another's hash with 0..t+2 bits flipped.

``--store`` instead builds a store holding n synthetic images (DuckDB rows, LanceDB vectors
and cached pHash / centre-square / dHash values; no image files, so nothing is decoded and
every candidate is kept or dropped by the strict bounds for unverifiable pairs) and times
``dedup.find`` end to end: loading, every stage, verification attempts, grouping and saving
the run, with the share of planted near-duplicates (cosine >= ``STRICT_COSINE``) it kept.

``--verify`` also runs the brute-force searches (blocked full-dimension products and all-
pairs popcounts) and checks the fast searches return exactly the same pairs; for the
embedding search it also gives the fast search's recall by cosine band (1.0 for the exact
search; below 1 for IVF, which runs past ``--exact-max`` vectors: 200,000 by default).
Every run reports the recall of the planted near-duplicates, which needs no brute force, so
``--n 1000000`` measures the IVF search at a million images (``--cell-rows 100 --exact-max 0
--verify`` at 100,000 gives 1,000 cells, as a million has, with the exact pairs to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from imgdb import dedup
from imgdb.dedup.pairs import EXACT_MAX_ROWS, IVF_CELL_ROWS, IVF_PROBES, IVF_SECOND_DIM, popcount64


def make_vectors(
    n: int, dim: int, rng: np.random.Generator, dup_frac: float, family_frac: float, planted: list | None = None
) -> np.ndarray:
    """The vectors; ``planted`` (if given) receives the (source, copy) index pairs of the near-duplicates."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    basis = q.astype(np.float32)
    lam = np.arange(1, dim, dtype=np.float64) ** -1.1
    lam = lam / lam.sum() * 0.75
    scale = np.sqrt(lam).astype(np.float32)
    X = np.empty((n, dim), np.float32)
    step = 8192
    for s in range(0, n, step):  # in blocks: the coefficient matrix would be another n x dim
        m = min(step, n - s)
        coef = rng.standard_normal((m, dim - 1), dtype=np.float32) * scale
        X[s : s + m] = np.sqrt(0.25, dtype=np.float32) * basis[0] + coef @ basis[1:]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    # Families: members share most of a base vector (different photos of one thing).
    n_fam = int(n * family_frac)
    members = rng.choice(n, size=n_fam, replace=False)
    for chunk in np.array_split(members, max(1, n_fam // 4)):
        base = X[chunk[0]]
        w = rng.uniform(0.55, 0.75, size=(len(chunk) - 1, 1)).astype(np.float32)
        X[chunk[1:]] = w * base + (1 - w) * X[chunk[1:]]
    # Planted near-duplicates: a copy plus small isotropic noise.
    n_dup = int(n * dup_frac)
    src = rng.choice(n, size=n_dup, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=n_dup, replace=False)
    sigma = rng.uniform(0.1, 0.3, size=(n_dup, 1)).astype(np.float32)
    X[dst] = X[src] + sigma * rng.standard_normal((n_dup, dim), dtype=np.float32) / np.sqrt(dim, dtype=np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    if planted is not None:
        planted.extend(zip(np.minimum(src, dst).tolist(), np.maximum(src, dst).tolist()))
    return X


def make_hashes(n: int, rng: np.random.Generator, dup_frac: float, t: int, crowd_frac: float = 0.10) -> np.ndarray:
    """64-bit hashes shaped like real pHashes: biased bits, crowds of look-alikes, near copies.

    Each bit is set with its own probability in [0.4, 0.6] and the DC bit always (real
    pHashes of the shop, UKBench and Grocery sets: bit means 0.38-0.62 but the DC bit).
    ``crowd_frac`` of the images form crowds (geometric sizes, mean 20, up to 1,000) around
    a template with each bit flipped with probability 0.16: pairs in a crowd are ~17 bits
    apart, about 8% within 12, like white-background catalogue shots of one pose. With
    that, about 1e-4 of the pairs of a 3,000-image draw are within 12 bits, against 4e-5
    measured on the 3,221 real images (so the synthetic set is the harder one).
    ``dup_frac`` of the images get a copy of another's hash with 0..t+2 bits flipped.
    """
    p = rng.uniform(0.4, 0.6, size=64)
    bits = np.zeros(n, np.uint64)
    for b in range(63):
        bits |= (rng.random(n) < p[b]).astype(np.uint64) << np.uint64(b)
    h = bits | np.uint64(1 << 63)
    members = rng.permutation(n)[: int(n * crowd_frac)]
    sizes = np.minimum(rng.geometric(1 / 20, size=len(members)), 1000)
    ends = np.cumsum(sizes)
    ends = ends[ends < len(members)]
    for crowd in np.split(members, ends):
        if len(crowd) < 2:
            continue
        flips = np.zeros(len(crowd), np.uint64)
        for b in range(63):
            flips |= (rng.random(len(crowd)) < 0.16).astype(np.uint64) << np.uint64(b)
        h[crowd] = h[crowd[0]] ^ flips
    n_dup = int(n * dup_frac)
    src = rng.choice(n, size=n_dup, replace=False)
    dst = rng.choice(np.setdiff1d(np.arange(n), src), size=n_dup, replace=False)
    for s, d in zip(src.tolist(), dst.tolist()):
        x = int(h[s])
        for bit in rng.choice(63, size=int(rng.integers(0, t + 3)), replace=False).tolist():
            x ^= 1 << bit
        h[d] = x
    return h


def brute_hash_pairs(h: np.ndarray, t: int) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    block = 64
    for r0 in range(0, len(h), block):
        d = popcount64(h[r0 : r0 + block, None] ^ h[None, r0:]).reshape(-1, len(h) - r0)
        ii, jj = np.nonzero(d <= t)
        ok = jj > ii
        out.update(zip((ii[ok] + r0).tolist(), (jj[ok] + r0).tolist()))
    return out


def bench_store(vectors: list[np.ndarray], phash: np.ndarray, square: np.ndarray, planted: list) -> dict:
    """dedup.find at the defaults on a store of synthetic images (``vectors``: [X], emptied so
    the bench's copy is freed once the store holds it; ``planted``: pairs that should be found).
    """
    X = vectors.pop()
    import hashlib
    import tempfile
    from dataclasses import dataclass

    from imgdb.store import Store

    @dataclass(frozen=True)
    class Spec:  # what Store.register_model reads
        key: str = "synthetic-000000000000"
        name: str = "synthetic"
        sha256: str = "0" * 64
        dim: int = X.shape[1]
        size: tuple = (224, 224)
        path: str = "synthetic.onnx"
        license: str = ""
        provenance: dict | None = None

    n = len(X)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    rng = np.random.default_rng(5)
    dhash = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
    pixels = [hashlib.sha256(f"px{i}".encode()).hexdigest() for i in range(n)]
    for i in range(0, n, 500):  # a few pixel-identical pairs
        pixels[i + 1] = pixels[i]
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "db", write=True) as store:
        t0 = time.perf_counter()
        spec = Spec()
        store.register_model(spec)
        for s in range(0, n, 20000):
            store.add_vectors(spec.key, ids[s : s + 20000], X[s : s + 20000])
        store.query(
            "INSERT INTO images (id, width, height, format, bytes, model, added_at, run_id) SELECT unnest(?), 640, 480, 'JPEG', unnest(?), ?, now(), NULL",
            [ids, [100_000 + i for i in range(n)], spec.key],
        )
        store.query(
            "INSERT INTO sources (image_id, source, kind, page_url, fetched_at) "
            "SELECT unnest(?), unnest(?), 'file', '', now()",
            [ids, [f"/synthetic/{i}.jpg" for i in range(n)]],
        )
        store.query(
            "INSERT INTO image_hashes (image_id, phash, dhash, pixel_sha256, hasher, error, computed_at, square_phash) "
            "SELECT unnest(?), unnest(?::UBIGINT[]), unnest(?::UBIGINT[]), unnest(?), ?, NULL, now(), unnest(?::UBIGINT[])",
            [ids, [int(x) for x in phash], [int(x) for x in dhash], pixels, dedup.HASHER, [int(x) for x in square]],
        )
        build = time.perf_counter() - t0
        del X  # dedup.find loads its own copy from the store
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        result = dedup.find(store, model_key=spec.key)
        secs = time.perf_counter() - t0
    timings = {k: round(v, 2) for k, v in result.stats["timings"].items()}
    print(f"synthetic store built in {build:.1f} s; dedup.find stages: {timings}")
    index = {image_id: i for i, image_id in enumerate(ids)}
    kept = {tuple(sorted((index[p.a], index[p.b]))) for p in result.pairs}
    return {
        "stage": "dedup.find",
        "method": "whole run on a store (defaults; no image files, so pairs are kept by the strict bounds)",
        "threshold": None,
        "pairs": len(result.pairs),
        "planted_recall": round(sum(p in kept for p in planted) / max(1, len(planted)), 4),
        "candidates": result.stats.get("embedding_search", {}).get("candidates"),
        "embedding_search": result.stats.get("embedding_search"),
        "groups": len(result.groups),
        "seconds": round(secs, 2),
        "timings": timings,
        "load_avg_1m": [round(load0, 1), round(os.getloadavg()[0], 1)],
        "peak_rss_mb": round(peak_rss_mb()),
    }


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)  # 1,000,000: the IVF search (docs/scale.md)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--cosine", type=float, default=dedup.COSINE_MIN)
    ap.add_argument("--phash", type=int, nargs="+", default=[4, dedup.PHASH_MAX_DISTANCE, 8, 10])
    ap.add_argument("--reduced-dim", type=int, nargs="+", default=[128])
    ap.add_argument("--verify", action="store_true", help="also run brute force and compare (slow)")
    ap.add_argument("--exact-max", type=int, default=EXACT_MAX_ROWS, help="IVF past this many vectors")
    ap.add_argument("--probes", type=int, default=IVF_PROBES)
    ap.add_argument("--cell-rows", type=int, default=IVF_CELL_ROWS)
    ap.add_argument("--second-dim", type=int, nargs="+", default=[IVF_SECOND_DIM], help="0: no second-level bound")
    ap.add_argument("--store", action="store_true", help="time dedup.find on a synthetic store instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("bench-results/dupes-bench.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    print(f"{os.cpu_count()} cores; n = {args.n:,}, dim = {args.dim}")

    t0 = time.perf_counter()
    planted: list[tuple[int, int]] = []
    X = make_vectors(args.n, args.dim, rng, dup_frac=0.02, family_frac=0.10, planted=planted)
    print(f"made vectors in {time.perf_counter() - t0:.1f} s")

    table = []
    if args.store:  # the whole dedup.find path on a store, instead of the searches on arrays
        # Planted pairs the run should keep: unverifiable pairs are kept from STRICT_COSINE up.
        want = [p for p in planted if float(X[p[0]] @ X[p[1]]) >= dedup.stages.STRICT_COSINE]
        phash = make_hashes(args.n, np.random.default_rng(args.seed + 99), 0.02, dedup.PHASH_MAX_DISTANCE)
        square = make_hashes(args.n, np.random.default_rng(args.seed + 98), 0.02, dedup.SQUARE_MAX_DISTANCE)
        vectors = [X]
        del X
        row = bench_store(vectors, phash, square, want)
        print(row, flush=True)
        write_rows(args, [row])
        return 0
    searches = [(k, k2) for k in args.reduced_dim for k2 in args.second_dim]
    fast: dict[tuple[int, int], set] = {}
    search_rows: dict[tuple[int, int], dict] = {}
    for k, k2 in searches:
        st: dict = {}
        t0 = time.perf_counter()
        a, b, _s = dedup.embedding_pairs(
            X,
            args.cosine,
            reduced_dim=k,
            exact_max=args.exact_max,
            probes=args.probes,
            cell_rows=args.cell_rows,
            second_dim=k2,
            stats=st,
        )
        secs = time.perf_counter() - t0
        ivf = st.get("method") == "ivf"
        found = set(zip(a.tolist(), b.tolist()))
        fast[(k, k2)] = found
        # Planted near-duplicates (cosine ~0.96-0.995) over the threshold that the search found.
        want = [p for p in planted if float(X[p[0]] @ X[p[1]]) >= args.cosine]
        bound = f"pca{k}" + (f" then pca{st['second_dim'] - 1 + k}" if st.get("second_dim") else "")
        row = {
            "stage": "embedding",
            "method": (
                f"IVF {st['cells']} cells x {st['probes']} probes, {bound} bound, exact re-score"
                if ivf
                else f"pca{k}+residual bound, exact re-score"
                if k
                else "blocked exact"
            ),
            "compared": st.get("compared"),
            "planted_recall": round(sum(p in found for p in want) / max(1, len(want)), 4),
            "threshold": args.cosine,
            "pairs": len(a),
            "candidates": st.get("candidates"),
            "rescored_full_dim": st.get("rescored", st.get("candidates")),
            "dense_tiles": st.get("dense_tiles"),
            "seconds": round(secs, 2),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        search_rows[(k, k2)] = row
        rows.append(row)
        table.append(row)
        print(row, flush=True)
    if args.verify:
        # The reference: the bounded search without IVF, exact by construction (every pair
        # over the bound is re-scored; tests/test_dedup.py checks it against brute force).
        t0 = time.perf_counter()
        a, b, s = dedup.embedding_pairs(X, args.cosine, exact_max=args.n)
        secs = time.perf_counter() - t0
        exact = set(zip(a.tolist(), b.tolist()))
        keys = list(zip(a.tolist(), b.tolist()))
        bands = {f">={t}": (s >= t) for t in (args.cosine, 0.9, 0.95)}
        for (k, k2), got in fast.items():
            recall = {
                band: round(sum(key in got for key, m in zip(keys, mask) if m) / max(1, int(mask.sum())), 4)
                for band, mask in bands.items()
            }
            print(f"recall of pca{k}/second {k2} by cosine: {recall}; same pairs: {got == exact}")
            search_rows[(k, k2)]["recall_by_cosine"] = recall
        row = {
            "stage": "embedding",
            "method": "exact bounded search (reference)",
            "threshold": args.cosine,
            "pairs": len(exact),
            "candidates": None,
            "seconds": round(secs, 2),
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        rows.append(row)
        table.append(row)
        print(row, flush=True)
    emb_pairs = found
    del X

    hash_pairs: list[tuple[int, int]] = []
    for t in args.phash:
        h = make_hashes(args.n, np.random.default_rng(args.seed + t), dup_frac=0.02, t=t)
        t0 = time.perf_counter()
        hs: dict = {}
        a, b, _d = dedup.hash_pairs(h, t, stats=hs)
        secs = time.perf_counter() - t0
        parts = hs["substrings"] or []
        row = {
            "stage": "phash",
            "method": f"{hs['method']}: " + " + ".join(f"{w} bits r{r}" for _s, w, r in parts),
            "checked": hs["checked"],
            "load_avg_1m": round(os.getloadavg()[0], 1),
            "threshold": t,
            "pairs": len(a),
            "candidates": None,
            "seconds": round(secs, 2),
            "peak_rss_mb": round(peak_rss_mb()),
        }
        if args.verify and t == dedup.PHASH_MAX_DISTANCE:
            t1 = time.perf_counter()
            brute = brute_hash_pairs(h, t)
            row["brute_force_seconds"] = round(time.perf_counter() - t1, 2)
            row["same_pairs_as_brute_force"] = brute == set(zip(a.tolist(), b.tolist()))
        rows.append(row)
        table.append(row)
        print(row, flush=True)
        if t == dedup.PHASH_MAX_DISTANCE or not hash_pairs:
            hash_pairs = list(zip(a.tolist(), b.tolist()))

    # Grouping the union, strongest stage first, as dedup.find does.
    t0 = time.perf_counter()
    groups = dedup.group_without_chaining(hash_pairs + sorted(emb_pairs))
    secs = time.perf_counter() - t0
    row = {
        "stage": "grouping",
        "method": "complete linkage",
        "threshold": None,
        "pairs": len(hash_pairs) + len(emb_pairs),
        "candidates": None,
        "groups": len(groups),
        "seconds": round(secs, 2),
        "peak_rss_mb": round(peak_rss_mb()),
    }
    rows.append(row)
    table.append(row)
    print(row, flush=True)

    print("\n| stage | method | threshold | pairs found | candidates | re-scored at full dim | seconds | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in table:
        cands = r.get("candidates") if r.get("candidates") is not None else r.get("checked")
        print(
            f"| {r['stage']} | {r['method']} | {r['threshold'] if r['threshold'] is not None else '-'} | "
            f"{r['pairs']:,} | {f'{cands:,}' if cands is not None else '-'} | "
            f"{r.get('rescored_full_dim') or '-'} | {r['seconds']} | {r.get('load_avg_1m', '-')} |"
        )
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    write_rows(args, rows)
    return 0


def write_rows(args: argparse.Namespace, rows: list[dict]) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": args.n, "dim": args.dim, "cores": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
