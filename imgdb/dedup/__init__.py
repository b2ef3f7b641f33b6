"""Near-duplicate detection: staged pair finding, grouping without chaining, kept in DuckDB.

Stages, strongest first (``methods`` picks which run):

``exact``      identical bytes. The store already collapses those into one image id, so an
               "exact" duplicate is one image with several distinct sources (paths / URLs);
               it is reported as a one-image group whose member lists every source.
``pixels``     identical decoded RGB pixels (sha256 of size + pixels): PNG vs lossless WebP,
               a JPEG with its metadata stripped, ...
``phash``      64-bit DCT perceptual hash (``imagehash.phash``), Hamming distance <= t.
``dhash``      64-bit difference hash, Hamming distance <= t (optional, off by default).
``embedding``  cosine of the store's L2-normalised model vectors >= t.

Every pair a stage finds is recorded, once per stage that found it, with a similarity
``score`` in [0, 1] (1.0 for pixels, ``1 - bits/64`` for the hashes, the cosine for
embeddings) and, for hash stages, the Hamming ``distance``.

Grouping is complete linkage over the union of the pairs, taken strongest first: two groups
merge only if *every* cross pair is a found, non-rejected pair, so A~B and B~C never put A
with C unless A~C as well (no chaining). The price: a member that only one stage links to
the original, while another member is only linked by a different stage (a crop found by the
embedding, a grayscale copy found by pHash, and the crop and the grayscale copy unrelated
to each other), cannot sit in the same group as both; it forms a pair of its own or stays
out. A pair the user rejected (``reject``) is dropped before grouping in every later run,
so its two images can never share a group.

Why the defaults (``PHASH_MAX_DISTANCE``, ``COSINE_MIN``) are what they are: see
``scripts/calibrate_dupes.py``. In short, on the real Jammy shop copy (26 products x
original / grayscale / red-tinted / thumbnail) the Lite0 embedding alone cannot separate
near-duplicates from look-alikes at any threshold, while pHash separates them cleanly; the
embedding stage is kept at a high cosine where it adds (crop-tolerant) pairs without false
positives on the shop, on UKBench or on the Grocery photos.

Scale: no N x N matrix is ever held. Hash pairs come from band bucketing (with t bits
allowed, t + 1 bands guarantee one equal band; an estimate of the bucket sizes falls back
to blocked brute force when that would be cheaper). Embedding pairs come from an exact,
pruned search: a blocked matrix product on (PCA-k projection + residual norm) vectors gives
an upper bound on every cosine (Cauchy-Schwarz on the residual), so no pair >= t is missed;
only candidates over the bound are re-scored at full dimension. ``scripts/bench_dupes.py``
times both on 100k synthetic images.

Nothing on disk is ever deleted here: groups only *mark* which member to keep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from imgdb.errors import DecodeError, UsageError
from imgdb.progress import NullProgress, Progress
from imgdb.store import Store, utcnow

#: Stages in order of strength; a pair found by several keeps the strongest for grouping.
STAGES = ("exact", "pixels", "phash", "dhash", "embedding")
DEFAULT_METHODS = ("exact", "pixels", "phash", "embedding")
_RANK = {s: i for i, s in enumerate(STAGES)}

#: Calibrated with scripts/calibrate_dupes.py. Jammy shop: every same-product pair is within
#: 4 bits, every other pair 16 or more (F1 1.0 for 4..14). False positives (pairs of
#: different objects/products) start at 12 bits on UKBench and 10 on Grocery, and grow
#: ~6-10x per 2 bits there; extrapolated to 100k images that is ~30 unrelated pairs at 6
#: bits vs ~200 at 8. So 6: 2 bits of margin over the shop's variants, fewer false pairs
#: at scale, and a 7-band search that takes ~2 s for 100k hashes (8 bits: ~8 s).
PHASH_MAX_DISTANCE = 6
#: dHash is the weaker hash here (shop variants up to 5 bits, UKBench false pairs from 6).
DHASH_MAX_DISTANCE = 5
#: Not the 0.9 other tools use: different products reach 0.92 on Grocery (0.85 on UKBench,
#: 0.80 on the shop), and on the shop no cosine separates variants from look-alikes at all.
#: 0.94 keeps precision 1.0 on all three and still catches 5% crops (cosine ~0.946-0.98),
#: which pHash misses (0.95 missed a 5% crop at 0.948 in the tests).
COSINE_MIN = 0.94

#: Looser bounds a member must meet with every *other* member of its group (it must meet
#: the strict ones with at least one). Without them, a crop found by the embedding and a
#: thumbnail found by pHash could not both join their original, since the crop and the
#: thumbnail are not strict duplicates of each other (measured: pHash 12, cosine 0.81-0.90).
#: The no-chaining guarantee still holds against unrelated pictures (a blend of two photos
#: is 36 bits and cosine < 0.8 from the far one).
LOOSE_PHASH = 12
LOOSE_COSINE = 0.80

KEEP_POLICIES = ("largest", "smallest", "earliest", "latest")

#: Identifies how image_hashes rows were computed; rows from another hasher are recomputed.
HASHER = "imagehash4-phash8-dhash8+rgb-sha256-v1"


# ---------------------------------------------------------------------------------------
# results


@dataclass
class Pair:
    a: str  # a < b
    b: str
    stage: str
    score: float  # similarity in [0, 1]
    distance: int | None = None  # Hamming bits for hash stages


@dataclass
class Member:
    image_id: str
    width: int
    height: int
    bytes: int
    format: str
    added_at: datetime | None
    sources: list[str]
    stage: str | None = None  # how this member matches the kept one; None for the kept one
    score: float | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class Group:
    group_id: int
    stage: str  # the weakest stage linking a member to the kept image ("exact": one image, many sources)
    best_score: float  # the best member-to-kept score at that stage
    keep_id: str
    members: list[Member]  # the kept member first

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def ids(self) -> list[str]:
        return [m.image_id for m in self.members]

    @property
    def copies(self) -> int:
        """Files / URLs in the group (an image found at two paths counts twice)."""
        return sum(max(1, len(m.sources)) for m in self.members)


@dataclass
class DupeResult:
    run_id: int | None  # None when the store was opened read-only (nothing saved)
    groups: list[Group]
    pairs: list[Pair]
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# schema and small store helpers


def resolve_image(store: Store, ref: str) -> str:
    """An image id from a full id, a unique id prefix (>= 6 hex chars) or a source path/URL."""
    ref = ref.strip()
    rows = store.query("SELECT DISTINCT image_id FROM sources WHERE source IN (?, ?)", [ref, str(Path(ref).resolve())])
    if len(rows) == 1:
        return rows[0][0]
    image_id = store.image_by_prefix(ref)
    if image_id is not None:
        return image_id
    raise UsageError(f"no image {ref!r} in {store.path} (give an image id, an id prefix or a source path/URL)")


def reject(store: Store, a: str, b: str) -> tuple[str, str]:
    """Remember that ``a`` and ``b`` are not duplicates; every later run keeps them apart.

    ``a``/``b`` may be ids, unique id prefixes or source paths/URLs. Returns the canonical
    (smaller id, larger id) pair that was stored.
    """
    store.require_write()
    ia, ib = resolve_image(store, a), resolve_image(store, b)
    if ia == ib:
        raise UsageError("an image cannot be rejected as a duplicate of itself")
    lo, hi = min(ia, ib), max(ia, ib)
    store.query(
        "INSERT INTO dupe_rejects (a, b, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [lo, hi, utcnow()]
    )
    return lo, hi


def rejected_pairs(store: Store) -> set[tuple[str, str]]:
    return {(a, b) for a, b in store.query("SELECT a, b FROM dupe_rejects")}


# ---------------------------------------------------------------------------------------
# per-image hashes (cached in image_hashes)


@dataclass
class ImageHashes:
    phash: int | None
    dhash: int | None
    pixel_sha256: str | None
    error: str | None = None


def hash_image(image: Any) -> ImageHashes:
    """pHash, dHash and pixel sha256 of a decoded RGB ``PIL.Image``."""
    import imagehash

    rgb = image if image.mode == "RGB" else image.convert("RGB")
    w, h = rgb.size
    digest = hashlib.sha256(f"{w}x{h}:RGB:".encode())
    digest.update(rgb.tobytes())
    gray = rgb.convert("L")  # both hashes start from luminance; convert once
    return ImageHashes(
        _bits_to_int(imagehash.phash(gray).hash), _bits_to_int(imagehash.dhash(gray).hash), digest.hexdigest()
    )


def hash_bytes(data: bytes) -> ImageHashes:
    """Hashes of an encoded image, decoded at full size (``decode``: EXIF-rotated, alpha on white)."""
    from imgdb.imaging.decode import decode

    try:
        return hash_image(decode(data).image)
    except DecodeError as exc:
        return ImageHashes(None, None, None, exc.reason)


def _bits_to_int(bits: np.ndarray) -> int:
    # Same value as int(str(imagehash_obj), 16): row-major bits, first bit most significant.
    return int.from_bytes(np.packbits(np.asarray(bits, dtype=bool).ravel()).tobytes(), "big")


def compute_hashes(
    store: Store, ids: Sequence[str] | None = None, *, workers: int | None = None, progress: Progress | None = None
) -> dict[str, ImageHashes]:
    """Hashes for ``ids`` (default: every image), computing and caching the missing ones.

    Decoding is the cost (full size, since pixel identity needs every pixel), so it runs in
    a thread pool (Pillow releases the GIL) and is written in chunks: an interrupted run
    keeps what it computed. A read-only store computes in memory and caches nothing.
    """
    ids = sorted(store.image_ids()) if ids is None else list(ids)
    cached: dict[str, ImageHashes] = {}
    for image_id, ph, dh, px, err in store.query(
        "SELECT image_id, phash, dhash, pixel_sha256, error FROM image_hashes WHERE hasher = ?", [HASHER]
    ):
        cached[image_id] = ImageHashes(ph, dh, px, err)
    missing = [i for i in ids if i not in cached]
    progress = progress or NullProgress()
    progress.found("hash", len(missing))
    workers = workers or min(4, os.cpu_count() or 1)
    chunk = 256
    with ThreadPoolExecutor(workers, thread_name_prefix="imgdb-hash") as pool:
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            results = list(pool.map(lambda i: _hash_stored(store, i), part))
            cached.update(zip(part, results))
            # A missing blob may come back (restored backup): only decode outcomes are cached.
            keep = [(i, h) for i, h in zip(part, results) if h.error != "unreadable"]
            if store.write and keep:
                _save_hashes(store, [i for i, _ in keep], [h for _, h in keep])
            progress.done("hash", len(part))
    return {i: cached[i] for i in ids}


def _hash_stored(store: Store, image_id: str) -> ImageHashes:
    try:
        data = store.read_blob(image_id)
    except OSError:
        return ImageHashes(None, None, None, "unreadable")
    return hash_bytes(data)


def _save_hashes(store: Store, ids: list[str], hashes: list[ImageHashes]) -> None:
    now = utcnow()
    store.query(
        "INSERT OR REPLACE INTO image_hashes (image_id, phash, dhash, pixel_sha256, hasher, error, computed_at) "
        "SELECT unnest(?), unnest(?::UBIGINT[]), unnest(?::UBIGINT[]), unnest(?::VARCHAR[]), ?, "
        "unnest(?::VARCHAR[]), ?",
        [
            ids,
            [h.phash for h in hashes],
            [h.dhash for h in hashes],
            [h.pixel_sha256 for h in hashes],
            HASHER,
            [h.error for h in hashes],
            now,
        ],
    )


# ---------------------------------------------------------------------------------------
# pair finding on arrays (index pairs i < j into the caller's arrays)


def _popcount64(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int16)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)
    return table[x.view(np.uint8).reshape(-1, 8)].sum(axis=1, dtype=np.int16)


def _run_pairs(
    order: np.ndarray, starts: np.ndarray, counts: np.ndarray, max_pairs: int
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """All (order[p], order[q]), p < q, inside each run [start, start + count), in bounded chunks."""
    keep = counts >= 2
    starts, counts = starts[keep], counts[keep]
    if not len(starts):
        return
    # For every position inside a run: how many later positions of the same run it pairs with.
    pos = _positions(starts, counts)
    ends = np.repeat(starts + counts, counts)
    after = ends - pos - 1
    cum = np.cumsum(after)
    lo = 0
    while lo < len(pos):
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + max_pairs, side="right"))
        hi = max(hi, lo + 1)  # one huge run still progresses
        p, n = pos[lo:hi], after[lo:hi]
        total = int(n.sum())
        if total:
            left = np.repeat(p, n)
            first = np.repeat(np.cumsum(n) - n, n)
            right = left + 1 + (np.arange(total) - first)
            yield order[left], order[right]
        lo = hi


def _positions(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated aranges [s, s + c) for every run, vectorised."""
    total = int(counts.sum())
    run_first = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - run_first)


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, count) of each run of equal values in a sorted array."""
    if not len(sorted_keys):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    edges = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    starts = np.concatenate([[0], edges]).astype(np.int64)
    counts = np.diff(np.concatenate([starts, [len(sorted_keys)]]))
    return starts, counts


def _bands(max_distance: int, bits: int = 64) -> list[tuple[int, int]]:
    """(shift, width) of max_distance + 1 bands covering the bits as evenly as possible."""
    n = min(bits, max_distance + 1)
    widths = [bits // n + (1 if i < bits % n else 0) for i in range(n)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def hash_pairs(
    hashes: np.ndarray, max_distance: int, *, max_chunk: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) of 64-bit hashes within ``max_distance`` bits, and their distances.

    Identical hash values are collapsed first (so a thousand blank images cost one
    bucket entry), then the distinct values are searched by bands: of ``max_distance + 1``
    bands at least one is equal in any pair within the distance (pigeonhole), so only pairs
    sharing a band value are checked. When the buckets are so full that this would check
    more pairs than brute force, a blocked brute force runs instead. Memory stays bounded by
    ``max_chunk`` candidate pairs at a time.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    empty = np.zeros(0, np.int64)
    if len(h) < 2:
        return empty, empty, empty.astype(np.int16)
    uniq, inverse = np.unique(h, return_inverse=True)
    m = len(uniq)
    us, vs, ds = [], [], []
    bands = _bands(max_distance)
    band_keys = []
    estimate = 0
    for shift, width in bands:
        key = (uniq >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(key, kind="stable")
        starts, counts = _runs(key[order])
        band_keys.append((order, starts, counts))
        estimate += int((counts * (counts - 1) // 2).sum())
    if estimate * 3 > m * (m - 1) // 2:  # buckets too full: brute force is cheaper
        block = max(1, max_chunk // max(m, 1))
        for r0 in range(0, m, block):
            r1 = min(m, r0 + block)
            d = _popcount64(uniq[r0:r1, None] ^ uniq[None, r0:]).reshape(r1 - r0, m - r0)
            ii, jj = np.nonzero(d <= max_distance)
            ok = jj > ii
            us.append(ii[ok] + r0)
            vs.append(jj[ok] + r0)
            ds.append(d[ii[ok], jj[ok]])
    else:
        for order, starts, counts in band_keys:
            for a, b in _run_pairs(order, starts, counts, max_chunk):
                d = _popcount64(uniq[a] ^ uniq[b])
                ok = d <= max_distance
                us.append(np.minimum(a[ok], b[ok]))
                vs.append(np.maximum(a[ok], b[ok]))
                ds.append(d[ok])
    u = np.concatenate(us) if us else empty
    v = np.concatenate(vs) if vs else empty
    d = np.concatenate(ds) if ds else empty.astype(np.int16)
    if len(u):  # a pair equal in several bands was found several times
        _, first = np.unique(u.astype(np.int64) * m + v, return_index=True)
        u, v, d = u[first], v[first], d[first]
    # Expand distinct-value pairs back to image pairs, plus pairs inside equal-value classes.
    img_order = np.argsort(inverse, kind="stable")
    cstart, ccount = _runs(inverse[img_order])
    ia, ib, dist = _expand(img_order, cstart, ccount, u, v, d)
    parts_a, parts_b, parts_d = [ia], [ib], [dist]
    for a, b in _run_pairs(img_order, cstart, ccount, max_chunk):
        parts_a.append(a)
        parts_b.append(b)
        parts_d.append(np.zeros(len(a), np.int16))
    a, b, dist = np.concatenate(parts_a), np.concatenate(parts_b), np.concatenate(parts_d)
    return np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64), dist.astype(np.int16)


def _expand(
    img_order: np.ndarray, cstart: np.ndarray, ccount: np.ndarray, u: np.ndarray, v: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image pair (x in class u, y in class v) for each value pair (u, v)."""
    if not len(u):
        empty = np.zeros(0, np.int64)
        return empty, empty, empty.astype(np.int16)
    cu, cv = ccount[u], ccount[v]
    if (cu == 1).all() and (cv == 1).all():  # the usual case: distinct hashes
        return img_order[cstart[u]], img_order[cstart[v]], d
    tot = cu * cv
    rep = np.repeat(np.arange(len(u)), tot)
    k = np.arange(int(tot.sum())) - np.repeat(np.cumsum(tot) - tot, tot)
    a = img_order[cstart[u][rep] + k // cv[rep]]
    b = img_order[cstart[v][rep] + k % cv[rep]]
    return a, b, d[rep]


def equal_pairs(keys: Sequence[Hashable | None]) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) with equal, non-None keys (every pair of each class)."""
    classes: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        if k is not None:
            classes.setdefault(k, []).append(i)
    a: list[int] = []
    b: list[int] = []
    for members in classes.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                a.append(members[x])
                b.append(members[y])
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def embedding_pairs(
    vectors: np.ndarray,
    cosine_min: float,
    *,
    reduced_dim: int = 128,
    block_rows: int = 2048,
    block_cols: int = 4096,
    sample: int = 20000,
    stats: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose cosine is >= ``cosine_min``, exactly, without an N x N matrix.

    ``vectors`` must be L2-normalised rows. With P an orthonormal d x k basis (top
    principal directions of the uncentred vectors, fitted on a sample), each vector splits
    as x = P z + r with r orthogonal to P, so x.y = z_x.z_y + r_x.r_y <= z_x.z_y + |r_x||r_y|
    (Cauchy-Schwarz). Appending |r| to z makes that bound a plain dot product: a blocked
    (k + 1)-d matrix product finds every candidate, and only candidates are re-scored in the
    full dimension. Nothing is approximate: recall is 1 by construction. A tile whose
    candidates are too dense to gather cheaply is re-scored as a full-dimension tile instead.
    """
    X = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = X.shape
    empty = np.zeros(0, np.int64)
    st = stats if stats is not None else {}
    if n < 2:
        return empty, empty, np.zeros(0, np.float32)
    eps = 1e-4  # float32 rounding in the bound
    if reduced_dim and dim > 2 * reduced_dim and n > block_rows:
        Z = _bounding_projection(X, reduced_dim, sample)
        bound_thr = cosine_min - eps
    else:
        Z, bound_thr = X, cosine_min
    out_a, out_b, out_s = [], [], []
    candidates = dense_tiles = 0
    # 2048 x 4096 float32 tiles (32 MB) stay mostly in cache for the threshold scan, which
    # costs as much as the product itself at k = 128 (measured: 3x slower with 16k columns).
    buf = np.empty((block_rows, block_cols), dtype=np.float32)
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        rows = Z[r0:r1]
        for c0 in range(r0, n, block_cols):
            c1 = min(n, c0 + block_cols)
            tile = buf[: r1 - r0, : c1 - c0]
            np.matmul(rows, Z[c0:c1].T, out=tile)
            flat = np.flatnonzero(tile >= bound_thr)
            if not len(flat):
                continue
            ii = flat // (c1 - c0) + r0
            jj = flat % (c1 - c0) + c0
            upper = jj > ii
            ii, jj = ii[upper], jj[upper]
            if Z is X:  # no projection: the tile already holds exact cosines
                out_a.append(ii)
                out_b.append(jj)
                out_s.append(tile[ii - r0, jj - c0])
                continue
            candidates += len(ii)
            if len(ii) > 0.02 * tile.size:
                # Dense: one exact full-dimension tile beats gathering this many rows.
                dense_tiles += 1
                exact = X[r0:r1] @ X[c0:c1].T
                ii, jj = np.nonzero(exact >= cosine_min)
                upper = jj + c0 > ii + r0
                ii, jj = ii[upper], jj[upper]
                out_a.append(ii + r0)
                out_b.append(jj + c0)
                out_s.append(exact[ii, jj])
                continue
            for s0 in range(0, len(ii), 1 << 16):  # re-score candidates at full dimension
                a, b = ii[s0 : s0 + (1 << 16)], jj[s0 : s0 + (1 << 16)]
                score = np.einsum("ij,ij->i", X[a], X[b])
                ok = score >= cosine_min
                out_a.append(a[ok])
                out_b.append(b[ok])
                out_s.append(score[ok])
    st.update(candidates=candidates, dense_tiles=dense_tiles, reduced_dim=Z.shape[1] if Z is not X else None)
    if not out_a:
        return empty, empty, np.zeros(0, np.float32)
    return (
        np.concatenate(out_a).astype(np.int64),
        np.concatenate(out_b).astype(np.int64),
        np.concatenate(out_s).astype(np.float32),
    )


def _bounding_projection(X: np.ndarray, k: int, sample: int) -> np.ndarray:
    """[X P, |X - X P P^T|]: the (k + 1)-d vectors whose dot products bound the cosines."""
    n = len(X)
    rng = np.random.default_rng(0)  # deterministic basis: same store, same candidates
    S = X[np.sort(rng.choice(n, size=min(n, sample), replace=False))]
    _w, V = np.linalg.eigh((S.T @ S).astype(np.float64))
    P = np.ascontiguousarray(V[:, ::-1][:, :k], dtype=np.float32)
    Z = X @ P
    resid = np.sqrt(np.maximum(0.0, np.einsum("ij,ij->i", X, X) - np.einsum("ij,ij->i", Z, Z)))
    # Inflate by a hair so float32 rounding can never make the bound undershoot.
    return np.hstack([Z, (resid * (1 + 1e-4) + 1e-4)[:, None]]).astype(np.float32)


# ---------------------------------------------------------------------------------------
# grouping

T = TypeVar("T", bound=Hashable)


def group_without_chaining(
    edges: Iterable[tuple[T, T]], compatible: Callable[[T, T], bool] | None = None
) -> list[list[T]]:
    """Complete-linkage groups from pairs given strongest first.

    Each pair may merge the two groups its ends are in only if every cross pair of the two
    groups is itself one of ``edges`` or passes ``compatible`` (a looser "still looks like
    the same picture" test); so A~B and B~C never group A with C unless A and C are also
    at least compatible. Groups of two or more, each in order of first appearance, are
    returned in order of creation.
    """
    edge_list = [(a, b) for a, b in edges if a != b]
    adj: dict[T, set[T]] = {}
    for a, b in edge_list:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)

    def linked(x: T, y: T) -> bool:
        return y in adj[x] or (compatible is not None and compatible(x, y))

    group_of: dict[T, int] = {}
    members: dict[int, list[T]] = {}
    fresh = itertools.count()  # group ids in order of creation, never reused
    for a, b in edge_list:
        for x in (a, b):
            if x not in group_of:
                group_of[x] = g = next(fresh)
                members[g] = [x]
        ga, gb = group_of[a], group_of[b]
        if ga == gb:
            continue
        # Fold the smaller group into the larger (the older one on a tie): cheaper checks.
        big, small = (ga, gb) if (len(members[ga]), -ga) >= (len(members[gb]), -gb) else (gb, ga)
        if all(linked(x, y) for x in members[big] for y in members[small]):
            for x in members[small]:
                group_of[x] = big
            members[big].extend(members.pop(small))
    order = sorted(members.items(), key=lambda kv: kv[0])
    return [m for _g, m in order if len(m) > 1]


def _loose_link(
    ids: list[str],
    hashes: dict[str, ImageHashes] | None,
    vec_rows: dict[int, int],
    X: np.ndarray | None,
    i: int,
    j: int,
) -> tuple[int, float]:
    """(stage rank, score) of a member that joined through the loose test, measured to the kept one."""
    if hashes is not None:
        a, b = hashes[ids[i]].phash, hashes[ids[j]].phash
        if a is not None and b is not None and bin(a ^ b).count("1") <= LOOSE_PHASH:
            return _RANK["phash"], 1 - bin(a ^ b).count("1") / 64
    assert X is not None
    return _RANK["embedding"], float(X[vec_rows[i]] @ X[vec_rows[j]])


def _compatibility(
    ids: list[str],
    hashes: dict[str, ImageHashes] | None,
    vec_rows: dict[int, int],
    X: np.ndarray | None,
    rejected: set[tuple[int, int]],
) -> Callable[[int, int], bool]:
    """The loose test for completing a group: pHash within LOOSE_PHASH or cosine >= LOOSE_COSINE."""

    def compatible(i: int, j: int) -> bool:
        if (min(i, j), max(i, j)) in rejected:
            return False
        if hashes is not None:
            a, b = hashes[ids[i]].phash, hashes[ids[j]].phash
            if a is not None and b is not None and bin(a ^ b).count("1") <= LOOSE_PHASH:
                return True
        if X is not None and i in vec_rows and j in vec_rows:
            return float(X[vec_rows[i]] @ X[vec_rows[j]]) >= LOOSE_COSINE
        return False

    return compatible


# ---------------------------------------------------------------------------------------
# the whole run


def find(
    store: Store,
    *,
    model_key: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    phash_max_distance: int = PHASH_MAX_DISTANCE,
    dhash_max_distance: int = DHASH_MAX_DISTANCE,
    cosine_min: float = COSINE_MIN,
    keep: str = "largest",
    progress: Progress | None = None,
) -> DupeResult:
    """Find duplicate groups with the chosen stages, save them as a new run, return them.

    ``model_key``: whose vectors the embedding stage uses (default: the model most images
    were ingested with). ``keep``: which member each group marks to keep: ``largest`` (most
    pixels, then most bytes), ``smallest`` (fewest pixels, then fewest bytes), ``earliest`` /
    ``latest`` (by when the store first saw it); ties go to the earliest, then the smaller id.
    Pairs rejected with ``reject`` are dropped. A read-only store computes but saves nothing.
    """
    methods = tuple(dict.fromkeys(methods))
    bad = [m for m in methods if m not in STAGES]
    if bad:
        raise UsageError(f"unknown dupes method {bad[0]!r} (choose from {', '.join(STAGES)})")
    if keep not in KEEP_POLICIES:
        raise UsageError(f"unknown keep policy {keep!r} (choose from {', '.join(KEEP_POLICIES)})")
    for name, t in (("phash", phash_max_distance), ("dhash", dhash_max_distance)):
        if name in methods and not 0 <= t <= 32:
            raise UsageError(f"{name} distance must be between 0 and 32 bits")
    if "embedding" in methods and not 0 < cosine_min <= 1:
        raise UsageError("cosine threshold must be in (0, 1]")
    started = time.perf_counter()
    timings: dict[str, float] = {}
    stats: dict[str, Any] = {"timings": timings}
    ids = sorted(store.image_ids())
    n = len(ids)
    index = {i: k for k, i in enumerate(ids)}
    # (a, b, rank, score, distance) arrays, one block per stage
    found: list[tuple[np.ndarray, np.ndarray, str, np.ndarray, np.ndarray | None]] = []
    hashes: dict[str, ImageHashes] | None = None
    vec_rows: dict[int, int] = {}
    X: np.ndarray | None = None

    if any(m in methods for m in ("pixels", "phash", "dhash")):
        t0 = time.perf_counter()
        before = _cached_count(store)
        hashes = compute_hashes(store, ids, progress=progress)
        timings["hashes"] = time.perf_counter() - t0
        stats["hashed_now"] = max(0, _cached_count(store) - before) if store.write else None
        failed = [i for i in ids if hashes[i].error]
        stats["undecodable"] = len(failed)
        if "pixels" in methods:
            t0 = time.perf_counter()
            a, b = equal_pairs([hashes[i].pixel_sha256 for i in ids])
            found.append((a, b, "pixels", np.ones(len(a), np.float32), None))
            timings["pixels"] = time.perf_counter() - t0
        for stage, t, attr in (("phash", phash_max_distance, "phash"), ("dhash", dhash_max_distance, "dhash")):
            if stage not in methods:
                continue
            t0 = time.perf_counter()
            have = np.asarray([k for k, i in enumerate(ids) if getattr(hashes[i], attr) is not None], dtype=np.int64)
            values = np.asarray([getattr(hashes[ids[k]], attr) for k in have], dtype=np.uint64)
            a, b, d = hash_pairs(values, t)
            found.append((have[a], have[b], stage, (1 - d / 64).astype(np.float32), d))
            timings[stage] = time.perf_counter() - t0

    if "embedding" in methods:
        t0 = time.perf_counter()
        key = model_key or default_model(store)
        if key is None:
            stats["embedding"] = "no model in the store"
        else:
            vec_ids, X = load_vectors(store, key, index)
            vec_rows = {int(i): row for row, i in enumerate(vec_ids)}
            stats["without_vectors"] = n - len(vec_ids)
            emb_stats: dict[str, Any] = {}
            a, b, s = embedding_pairs(X, cosine_min, stats=emb_stats)
            stats["embedding_search"] = emb_stats
            found.append((vec_ids[a], vec_ids[b], "embedding", np.minimum(s, 1.0), None))
            model_key = key
        timings["embedding"] = time.perf_counter() - t0

    # Combine, drop rejected pairs, order strongest first.
    t0 = time.perf_counter()
    rejects = rejected_pairs(store)
    rej_keys = np.asarray([index[a] * n + index[b] for a, b in rejects if a in index and b in index], dtype=np.int64)
    A, B, R, S, D = [], [], [], [], []
    stats["pairs"] = {}
    stats["rejected_dropped"] = 0
    for a, b, stage, score, dist in found:
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        ok = ~np.isin(lo * n + hi, rej_keys) if len(rej_keys) else np.ones(len(lo), bool)
        stats["rejected_dropped"] += int((~ok).sum())
        stats["pairs"][stage] = int(ok.sum())
        A.append(lo[ok])
        B.append(hi[ok])
        R.append(np.full(int(ok.sum()), _RANK[stage], np.int8))
        S.append(np.asarray(score, np.float64)[ok])
        D.append(np.asarray(dist, np.int64)[ok] if dist is not None else np.full(int(ok.sum()), -1, np.int64))
    if A:
        A_, B_, R_, S_, D_ = (np.concatenate(x) for x in (A, B, R, S, D))
    else:
        A_ = B_ = D_ = np.zeros(0, np.int64)
        R_ = np.zeros(0, np.int8)
        S_ = np.zeros(0, np.float64)
    order = np.lexsort((B_, A_, -S_, R_))  # stage strength, then score, then ids (stable runs)
    A_, B_, R_, S_, D_ = A_[order], B_[order], R_[order], S_[order], D_[order]
    rejected_idx = {(min(index[a], index[b]), max(index[a], index[b])) for a, b in rejects if a in index and b in index}
    compatible = _compatibility(ids, hashes, vec_rows, X, rejected_idx)
    groups_idx = group_without_chaining(zip(A_.tolist(), B_.tolist()), compatible)
    timings["grouping"] = time.perf_counter() - t0

    # Best link (strongest stage, best score) per pair, for member-to-kept annotations.
    best: dict[tuple[int, int], tuple[int, float]] = {}
    in_group = {i for g in groups_idx for i in g}
    for a, b, r, s in zip(A_.tolist(), B_.tolist(), R_.tolist(), S_.tolist()):
        if a in in_group and (a, b) not in best:
            best[(a, b)] = (r, s)

    exact_ids: list[str] = []
    if "exact" in methods:
        exact_ids = [
            r[0]
            for r in store.query(
                "SELECT image_id FROM sources GROUP BY image_id HAVING count(DISTINCT source) > 1 ORDER BY image_id"
            )
        ]
    stats["exact_images"] = len(exact_ids)
    grouped_ids = {ids[i] for i in in_group}
    info = _image_info(store, sorted(grouped_ids | set(exact_ids)))
    groups: list[Group] = []
    for g in groups_idx:
        mem = [info[ids[i]] for i in g]
        kept = _pick_keep(mem, keep)
        k_idx = index[kept.image_id]
        others = []
        for m in mem:
            if m is kept:
                continue
            i = index[m.image_id]
            link = best.get((min(i, k_idx), max(i, k_idx))) or _loose_link(ids, hashes, vec_rows, X, i, k_idx)
            m.stage, m.score = STAGES[link[0]], float(link[1])
            others.append(m)
        weakest = max(_RANK[m.stage] for m in others)  # type: ignore[index]
        others.sort(key=lambda m: (_RANK[m.stage], -(m.score or 0.0), m.image_id))  # type: ignore[index]
        best_score = max(m.score for m in others if _RANK[m.stage] == weakest)  # type: ignore[index,type-var]
        groups.append(Group(0, STAGES[weakest], float(best_score), kept.image_id, [kept, *others]))
    if "exact" in methods:
        for image_id in exact_ids:
            if image_id not in grouped_ids:
                m = info[image_id]
                groups.append(Group(0, "exact", 1.0, image_id, [m]))
    groups.sort(key=lambda g: (_RANK[g.stage], -g.size, -g.copies, -g.best_score, g.keep_id))
    for k, g in enumerate(groups, 1):
        g.group_id = k

    pairs = [
        Pair(ids[a], ids[b], STAGES[r], float(s), int(d) if d >= 0 else None)
        for a, b, r, s, d in zip(A_.tolist(), B_.tolist(), R_.tolist(), S_.tolist(), D_.tolist())
    ]
    stats["groups"] = len(groups)
    stats["images"] = n
    timings["total"] = time.perf_counter() - started
    params = {
        "methods": list(methods),
        "phash_max_distance": phash_max_distance,
        "dhash_max_distance": dhash_max_distance,
        "cosine_min": cosine_min,
        "keep": keep,
        "model_key": model_key if "embedding" in methods else None,
        "hasher": HASHER,
    }
    run_id = _save_run(store, params, stats, pairs, groups) if store.write else None
    return DupeResult(run_id, groups, pairs, params, stats)


def _cached_count(store: Store) -> int:
    return int(store.query("SELECT count(*) FROM image_hashes WHERE hasher = ?", [HASHER])[0][0])


def default_model(store: Store) -> str | None:
    return store.main_model()


def load_vectors(store: Store, model_key: str, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``ids``, float32 matrix) of the images that have a vector for the model."""
    vid, X = store.all_vectors(model_key)  # sorted by id, as ``index`` is
    keep = [row for row, v in enumerate(vid) if v in index]
    return np.asarray([index[vid[row]] for row in keep], dtype=np.int64), X[keep]


def _image_info(store: Store, ids: list[str]) -> dict[str, Member]:
    if not ids:
        return {}
    sources: dict[str, list[str]] = {}
    for image_id, source in store.query(
        "SELECT image_id, source FROM sources WHERE image_id IN (SELECT unnest(?)) "
        "GROUP BY image_id, source ORDER BY image_id, min(fetched_at), source",
        [ids],
    ):
        sources.setdefault(image_id, []).append(source)
    out = {}
    for image_id, w, h, nbytes, fmt, added in store.query(
        "SELECT id, width, height, bytes, format, added_at FROM images WHERE id IN (SELECT unnest(?))", [ids]
    ):
        out[image_id] = Member(image_id, int(w), int(h), int(nbytes), fmt, added, sources.get(image_id, []))
    return out


def _pick_keep(members: list[Member], policy: str) -> Member:
    def when(m: Member) -> float:
        return m.added_at.timestamp() if m.added_at is not None else 0.0

    keys: dict[str, Callable[[Member], tuple[Any, ...]]] = {
        "largest": lambda m: (-m.pixels, -m.bytes, when(m), m.image_id),
        "smallest": lambda m: (m.pixels, m.bytes, when(m), m.image_id),
        "earliest": lambda m: (when(m), -m.pixels, m.image_id),
        "latest": lambda m: (-when(m), -m.pixels, m.image_id),
    }
    return min(members, key=keys[policy])


def _save_run(
    store: Store, params: dict[str, Any], stats: dict[str, Any], pairs: list[Pair], groups: list[Group]
) -> int:
    """One transaction: a Ctrl-C never leaves a half-saved run as the latest."""
    with store.transaction():
        return _insert_run(store, params, stats, pairs, groups)


def _insert_run(
    store: Store, params: dict[str, Any], stats: dict[str, Any], pairs: list[Pair], groups: list[Group]
) -> int:
    run_id = int(
        store.query(
            "INSERT INTO dupe_runs (created_at, params, stats) VALUES (?, ?, ?) RETURNING id",
            [utcnow(), json.dumps(params), json.dumps(stats, default=str)],
        )[0][0]
    )
    step = 200_000  # bounded parameter lists for very large runs
    for s in range(0, len(pairs), step):
        part = pairs[s : s + step]
        store.query(
            "INSERT INTO dupe_pairs (run_id, a, b, stage, score, distance) SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::DOUBLE[]), unnest(?::INTEGER[])",
            [
                run_id,
                [p.a for p in part],
                [p.b for p in part],
                [p.stage for p in part],
                [p.score for p in part],
                [p.distance for p in part],
            ],
        )
    rows = [
        (
            g.group_id,
            m.image_id,
            m.image_id == g.keep_id,
            g.stage if m.image_id == g.keep_id else m.stage,
            g.best_score if m.image_id == g.keep_id else m.score,
        )
        for g in groups
        for m in g.members
    ]
    for s in range(0, len(rows), step):
        part = rows[s : s + step]
        store.query(
            "INSERT INTO dupe_groups (run_id, group_id, image_id, is_keep, stage, score) SELECT ?, unnest(?::INTEGER[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]), "
            "unnest(?::VARCHAR[]), unnest(?::DOUBLE[])",
            [run_id, *[list(c) for c in zip(*part)]],
        )
    return run_id


def latest_groups(store: Store, run_id: int | None = None) -> list[Group]:
    """The groups of the latest run (or of ``run_id``), as saved, with current sources."""
    if run_id is None:
        run_id = store.latest_run("dupes")
        if run_id is None:
            return []
    rows = store.query(
        "SELECT group_id, image_id, is_keep, stage, score FROM dupe_groups WHERE run_id = ? "
        "ORDER BY group_id, is_keep DESC, score DESC, image_id",
        [run_id],
    )
    info = _image_info(store, sorted({r[1] for r in rows}))
    groups: dict[int, Group] = {}
    for gid, image_id, is_keep, stage, score in rows:
        m = info.get(image_id) or Member(image_id, 0, 0, 0, "", None, [])  # image row gone: still show the id
        if is_keep:
            groups[gid] = Group(gid, stage, float(score), image_id, [m])
        else:
            m.stage, m.score = stage, float(score)
            groups[gid].members.append(m)
    for g in groups.values():
        g.members[1:] = sorted(
            g.members[1:], key=lambda m: (_RANK.get(m.stage or "", 9), -(m.score or 0.0), m.image_id)
        )
    return [groups[k] for k in sorted(groups)]
