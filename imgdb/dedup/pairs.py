"""Pair finding on arrays: every function returns index pairs ``i < j`` into the caller's arrays.

``equal_pairs``     every pair of equal, non-None keys.
``hash_pairs``      64-bit hashes within a Hamming distance, by multi-index hashing: split
                    into s substrings with radii summing to t - s + 1, any pair within t
                    bits is within its radius on some substring (pigeonhole), so only
                    buckets that close are paired and checked. A cost model picks s (and
                    brute force for few hashes); the pairs are exactly brute force's.
``embedding_pairs`` L2-normalised vectors with cosine >= t, exactly: a blocked product on
                    (PCA-k projection + residual norm) vectors bounds every cosine from
                    above (Cauchy-Schwarz on the residual), so no pair >= t is missed, and
                    only candidates over the bound are re-scored at full dimension. That
                    product grows as N^2; past ``EXACT_MAX_ROWS`` vectors an inverted file
                    (IVF) bounds it: k-means cells of about ``IVF_CELL_ROWS`` vectors, and
                    each vector is compared only with the vectors of its ``IVF_PROBES``
                    nearest cells, which grows as N (recall measured in scripts/bench_dupes.py);
                    its candidates pass a second, tighter bound (``IVF_SECOND_DIM``
                    coordinates) before the full-dimension re-score.

No function holds an N x N matrix; memory is bounded by a block or chunk size.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from itertools import combinations
from math import comb
from typing import Any

import numpy as np


def popcount64(x: np.ndarray) -> np.ndarray:
    """Set bits of each 64-bit value (int16), e.g. Hamming distances of XORed hashes."""
    x = np.ascontiguousarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x).astype(np.int16)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.int16)
    return table[x.view(np.uint8).reshape(*x.shape, 8)].sum(axis=-1, dtype=np.int16)


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


def hash_pairs(
    hashes: np.ndarray, max_distance: int, *, max_chunk: int = 1 << 22, stats: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) of 64-bit hashes within ``max_distance`` bits, and their distances.

    Identical hash values are collapsed first (any number of equal hashes cost one bucket
    entry), then the distinct values are searched by multi-index hashing
    (``_near_values``), or by a blocked brute force when that is cheaper (few values).
    The pairs are exactly those of the brute force. Memory stays bounded by ``max_chunk``
    candidate pairs at a time. ``stats`` (if given) receives the substrings and the number
    of candidate pairs checked.
    """
    h = np.asarray(hashes, dtype=np.uint64)
    empty = np.zeros(0, np.int64)
    if len(h) < 2:
        return empty, empty, empty.astype(np.int16)
    uniq, inverse = np.unique(h, return_inverse=True)
    inverse = inverse.ravel()
    u, v, d = _near_values(uniq, max_distance, max_chunk, stats if stats is not None else {})
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


def _near_values(
    uniq: np.ndarray, t: int, max_chunk: int, st: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (u < v) of distinct sorted 64-bit values within ``t`` bits, each once, with distances.

    Multi-index hashing: the 64 bits are split into substrings p with radii r_p such that
    sum(r_p + 1) > t, so a pair within ``t`` bits is within r_p bits on at least one
    substring (pigeonhole). Per substring, the values are bucketed by its bits and every
    bucket is paired with the buckets at most r_p bits away (itself included); each such
    block of candidates is checked on all 64 bits.
    """
    m = len(uniq)
    us, vs, ds = [], [], []
    parts = _substrings(t, m)
    checked = 0
    if t < 1:  # distinct values are at least one bit apart
        parts = []
    elif parts is None:  # brute force is cheaper
        checked = m * (m - 1) // 2
        block = max(1, max_chunk // max(m, 1))
        for r0 in range(0, m, block):
            r1 = min(m, r0 + block)
            d = popcount64(uniq[r0:r1, None] ^ uniq[None, r0:]).reshape(r1 - r0, m - r0)
            ii, jj = np.nonzero(d <= t)
            ok = jj > ii
            us.append(ii[ok] + r0)
            vs.append(jj[ok] + r0)
            ds.append(d[ii[ok], jj[ok]])
    else:
        for shift, width, radius in parts:
            key = ((uniq >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.int64)
            order = np.argsort(key, kind="stable")
            vals = uniq[order]
            counts = np.bincount(key, minlength=1 << width)
            starts = np.cumsum(counts) - counts
            full = np.flatnonzero(counts)
            pairs_inside = full[counts[full] > 1]
            blocks = [(pairs_inside, pairs_inside)]  # each bucket with itself
            masks = _ball_masks(width, radius)
            step = max(1, (1 << 22) // len(full))
            for f0 in range(0, len(masks), step):  # each bucket with those r_p bits away or less
                f = masks[f0 : f0 + step]
                bu = np.repeat(full, len(f))
                bv = bu ^ np.tile(f, len(full))
                keep = bv > bu  # each pair of buckets once
                bu, bv = bu[keep], bv[keep]
                keep = counts[bv] > 0
                blocks.append((bu[keep], bv[keep]))
            for bu, bv in blocks:
                cu, cv = counts[bu], counts[bv]
                checked += int((cu * (cu - 1) // 2).sum() if bu is bv else (cu * cv).sum())
                for a, b, d in _block_pairs(vals, starts, counts, bu, bv, t, max_chunk):
                    a, b = order[a], order[b]
                    us.append(np.minimum(a, b))
                    vs.append(np.maximum(a, b))
                    ds.append(d)
    st.update(method="brute force" if parts is None else "multi-index", substrings=parts, checked=checked)
    empty = np.zeros(0, np.int64)
    u = np.concatenate(us) if us else empty
    v = np.concatenate(vs) if vs else empty
    d = np.concatenate(ds) if ds else empty.astype(np.int16)
    if len(u):  # a pair close on several substrings was found several times
        _, first = np.unique(u.astype(np.int64) * m + v, return_index=True)
        u, v, d = u[first], v[first], d[first]
    return u, v, d


def _block_pairs(
    vals: np.ndarray, starts: np.ndarray, counts: np.ndarray, bu: np.ndarray, bv: np.ndarray, t: int, max_chunk: int
) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Positions (into ``vals``) of the pairs within ``t`` bits between buckets bu[k] and bv[k].

    Bucket pairs of the same shape (sizes) are checked together as one dense
    (pairs x rows x cols) XOR, which costs a few operations per candidate instead of
    building an index pair for each. A bucket paired with itself (bu == bv) gives row < col.
    """
    if not len(bu):
        return
    cu, cv = counts[bu], counts[bv]
    shape = cu * (int(counts.max()) + 1) + cv
    by_shape = np.argsort(shape, kind="stable")
    sstart, scount = _runs(shape[by_shape])
    for s0, sc in zip(sstart.tolist(), scount.tolist()):
        idx = by_shape[s0 : s0 + sc]
        rows, cols = int(cu[idx[0]]), int(cv[idx[0]])
        per = rows * cols
        ar, ac = np.arange(rows), np.arange(cols)
        if per <= max_chunk:
            pieces = [(idx[k : k + max(1, max_chunk // per)], 0, rows) for k in range(0, sc, max(1, max_chunk // per))]
        else:  # one huge pair of buckets: row blocks
            step = max(1, max_chunk // cols)
            pieces = [(idx[k : k + 1], r0, min(rows, r0 + step)) for k in range(sc) for r0 in range(0, rows, step)]
        for sel, r0, r1 in pieces:
            ra = starts[bu[sel]][:, None] + ar[None, r0:r1]
            cb = starts[bv[sel]][:, None] + ac[None, :]
            x = vals[ra][:, :, None] ^ vals[cb][:, None, :]
            d = popcount64(x)
            p, x, y = np.nonzero(d <= t)
            if len(p) and bu[sel[0]] == bv[sel[0]]:  # a bucket with itself: same-shape blocks all are
                ok = y > x + r0
                p, x, y = p[ok], x[ok], y[ok]
            yield ra[p, x], cb[p, y], d[p, x, y].astype(np.int16)


def _ball_masks(width: int, radius: int) -> np.ndarray:
    """Every ``width``-bit mask with 1 to ``radius`` bits set."""
    masks = [sum(1 << b for b in bits) for r in range(1, radius + 1) for bits in combinations(range(width), r)]
    return np.asarray(masks, dtype=np.int64)


def _substrings(t: int, n: int, bits: int = 64) -> list[tuple[int, int, int]] | None:
    """(shift, width, radius) of the substrings to search, or None when brute force is cheaper.

    With s substrings, radii summing to t - s + 1 make sum(r_p + 1) > t (the pigeonhole
    above); s >= t + 1 (all radii 0) is plain band bucketing. The s picked is the cheapest
    by a cost model of uniform bits: the bucket pairs to enumerate (weighted: each is a
    few array operations) plus the candidate pairs they hold.
    """
    best, best_cost = None, n * (n - 1) / 2
    for s in range(1, bits + 1):
        widths = [bits // s + (1 if i < bits % s else 0) for i in range(s)]
        if widths[0] > 24:  # bucket tables past 2^24 entries are not worth their memory
            continue
        need = max(0, t - s + 1)  # the widest substrings get the larger radii
        radii = [need // s + (1 if i < need % s else 0) for i in range(s)]
        volume = [sum(comb(w, k) for k in range(r + 1)) for w, r in zip(widths, radii)]
        candidates = n * n / 2 * sum(v / 2**w for v, w in zip(volume, widths))
        probes = sum(min(n, 2**w) * v for v, w in zip(volume, widths))
        cost = candidates + 4 * probes
        if cost < best_cost:
            shifts = np.cumsum([0, *widths[:-1]]).tolist()
            best, best_cost = list(zip(shifts, widths, radii)), cost
    return best


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


#: Up to this many vectors the search is exact (all pairs, bounded; 30 s at 100k on 2 cores);
#: past it, the IVF search (docs/scale.md).
EXACT_MAX_ROWS = 200_000
IVF_CELL_ROWS = 1024  # vectors per k-means cell, on average
IVF_PROBES = 32  # cells each vector is compared with, nearest first (recall: docs/scale.md)
IVF_SECOND_DIM = 512  # principal coordinates of the second, tighter bound (0: none)


def embedding_pairs(
    vectors: np.ndarray,
    cosine_min: float,
    *,
    reduced_dim: int = 128,
    block_rows: int = 2048,
    block_cols: int = 4096,
    sample: int = 20000,
    exact_max: int = EXACT_MAX_ROWS,
    probes: int = IVF_PROBES,
    cell_rows: int = IVF_CELL_ROWS,
    second_dim: int = IVF_SECOND_DIM,
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

    Past ``exact_max`` vectors, ``_ivf_pairs`` limits the pairs looked at (``probes`` cells
    per vector); its candidates also meet the bound of the next ``second_dim - reduced_dim``
    coordinates and the residual past them, and every pair it returns is scored exactly.
    """
    X = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = X.shape
    empty = np.zeros(0, np.int64)
    st = stats if stats is not None else {}
    if n < 2:
        return empty, empty, np.zeros(0, np.float32)
    eps = 1e-4  # float32 rounding in the bound
    if n > exact_max and reduced_dim and dim > 2 * reduced_dim:
        Z, Z2 = _bounding_projection(X, reduced_dim, sample, second_dim)
        cells = max(1, round(n / cell_rows))
        return _ivf_pairs(X, cosine_min, Z, Z2, cosine_min - eps, cells, probes, st)
    if reduced_dim and dim > 2 * reduced_dim and n > block_rows:
        Z, _ = _bounding_projection(X, reduced_dim, sample)
        bound_thr = cosine_min - eps
    else:
        Z, bound_thr = X, cosine_min
    out_a, out_b, out_s = [], [], []
    candidates = dense_tiles = 0
    # Tiles are sized (2048 x 4096 float32: 32 MB) to stay mostly in cache for the threshold
    # scan that follows each product (timings: see docs/evaluation.md).
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


def _bounding_projection(X: np.ndarray, k: int, sample: int, k2: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """[X P, |X - X P P^T|]: the (k + 1)-d vectors whose dot products bound the cosines.

    With ``k2 > k``, also the second level: the next k2 - k principal coordinates and the
    residual norm past them, whose dot products added to the first level's coordinates'
    bound the cosines more tightly (the same Cauchy-Schwarz step on a smaller residual).
    """
    n, dim = X.shape
    rng = np.random.default_rng(0)  # deterministic basis: same store, same candidates
    S = X[np.sort(rng.choice(n, size=min(n, sample), replace=False))]
    _w, V = np.linalg.eigh((S.T @ S).astype(np.float64))
    top = max(k, min(k2, dim - 1))
    P = np.ascontiguousarray(V[:, ::-1][:, :top], dtype=np.float32)
    Z1 = np.empty((n, k + 1), np.float32)
    Z2 = np.empty((n, top - k + 1), np.float32) if top > k else None
    for s0 in range(0, n, 65536):  # in chunks: X P at full width would be another n x k2
        x = X[s0 : s0 + 65536]
        z = x @ P
        left = np.einsum("ij,ij->i", x, x)
        for out, part in ((Z1, z[:, :k]), (Z2, z[:, k:])):
            if out is None:
                break
            left = left - np.einsum("ij,ij->i", part, part)
            # Inflate by a hair so float32 rounding can never make the bound undershoot.
            out[s0 : s0 + 65536, :-1] = part
            out[s0 : s0 + 65536, -1] = np.sqrt(np.maximum(0.0, left)) * (1 + 1e-4) + 1e-4
    return Z1, Z2


def _ivf_pairs(
    X: np.ndarray,
    cosine_min: float,
    Z: np.ndarray,
    Z2: np.ndarray | None,
    bound_thr: float,
    cells: int,
    probes: int,
    st: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i < j) with cosine >= ``cosine_min`` among those sharing a cell: j's home cell
    is one of i's ``probes`` nearest, or the other way round.

    Cells are spherical k-means centroids of the PCA coordinates ``Z[:, :-1]``; within a
    cell the residual bound of ``embedding_pairs`` prunes, then the tighter second-level
    bound ``Z2`` (a gather of k2 - k floats a candidate, not ``dim``), and only what is left
    is re-scored at full dimension. Work grows as N x probes x (N / cells) instead of N^2.
    """
    n = len(X)
    coords = Z[:, :-1]
    centroids = _spherical_kmeans(coords, cells)
    probes = min(probes, cells)
    near = np.empty((n, probes), dtype=np.int32)
    for s0 in range(0, n, 65536):  # nearest cells, a chunk of vectors at a time
        sim = coords[s0 : s0 + 65536] @ centroids.T
        top = np.argpartition(-sim, probes - 1, axis=1)[:, :probes] if probes < cells else np.tile(np.arange(cells), (len(sim), 1))  # fmt: skip
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1)
        near[s0 : s0 + 65536] = np.take_along_axis(top, order, axis=1)
    home = near[:, 0]
    members = np.argsort(home, kind="stable")
    m_starts = np.searchsorted(home[members], np.arange(cells + 1))
    flat = near.ravel()
    visitors = np.argsort(flat, kind="stable")
    v_starts = np.searchsorted(flat[visitors], np.arange(cells + 1))
    visitors //= probes  # row of each (vector, probe) entry
    out_a, out_b, out_s = [], [], []
    looked = candidates = second = 0
    for c in range(cells):
        m = members[m_starts[c] : m_starts[c + 1]]
        q = visitors[v_starts[c] : v_starts[c + 1]]
        if not len(m) or not len(q):
            continue
        zm, xm = Z[m], X[m]
        z2m = Z2[m] if Z2 is not None else None
        for q0 in range(0, len(q), 4096):
            qq = q[q0 : q0 + 4096]
            zq = Z[qq]
            tile = zq @ zm.T
            looked += tile.size
            ii, jj = np.nonzero(tile >= bound_thr)
            keep = qq[ii] != m[jj]
            ii, jj = ii[keep], jj[keep]
            candidates += len(ii)
            if z2m is not None and len(ii):
                # Second level: the first level's coordinates (its bound minus the residual
                # term) plus the next coordinates and the smaller residual's bound.
                assert Z2 is not None
                z2q = Z2[qq]
                bound = tile[ii, jj] - zq[ii, -1] * zm[jj, -1]
                for s0 in range(0, len(ii), 8192):  # gathers of a few MB stay in cache
                    i8, j8 = ii[s0 : s0 + 8192], jj[s0 : s0 + 8192]
                    bound[s0 : s0 + 8192] += np.einsum("ij,ij->i", z2q[i8], z2m[j8])
                ok = bound >= bound_thr
                ii, jj = ii[ok], jj[ok]
                second += len(ii)
            # Re-scored here, while the cell's rows are at hand: collecting every candidate
            # first would hold about 1e8 pairs at a million vectors.
            a = qq[ii]
            score = np.empty(len(ii), np.float32)
            for s0 in range(0, len(ii), 8192):
                score[s0 : s0 + 8192] = np.einsum("ij,ij->i", X[a[s0 : s0 + 8192]], xm[jj[s0 : s0 + 8192]])
            ok = score >= cosine_min
            a, b = a[ok], m[jj[ok]]
            out_a.append(np.minimum(a, b))
            out_b.append(np.maximum(a, b))
            out_s.append(score[ok])
    st.update(method="ivf", cells=cells, probes=probes, compared=looked, candidates=candidates, dense_tiles=0)
    st.update(reduced_dim=Z.shape[1], second_dim=Z2.shape[1] if Z2 is not None else None)
    st["rescored"] = second if Z2 is not None else candidates
    if not out_a:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    # A pair met from both sides (each in the other's probed cells) is kept once.
    keys, first = np.unique(np.concatenate(out_a).astype(np.int64) * n + np.concatenate(out_b), return_index=True)
    return keys // n, keys % n, np.concatenate(out_s)[first].astype(np.float32)


def _spherical_kmeans(coords: np.ndarray, cells: int, iters: int = 10, per_cell: int = 40) -> np.ndarray:
    """``cells`` unit centroids fitted on a sample of ``per_cell`` vectors a cell (deterministic)."""
    rng = np.random.default_rng(0)
    n = len(coords)
    S = coords[np.sort(rng.choice(n, size=min(n, cells * per_cell), replace=False))]
    S = S / np.maximum(np.linalg.norm(S, axis=1, keepdims=True), 1e-12)
    C = S[rng.choice(len(S), size=cells, replace=False)].copy()
    for _ in range(iters):
        label = np.argmax(S @ C.T, axis=1)
        sums = np.zeros_like(C)
        np.add.at(sums, label, S)
        empty = np.flatnonzero(np.bincount(label, minlength=cells) == 0)
        sums[empty] = S[rng.choice(len(S), size=len(empty), replace=False)]  # re-seed an empty cell
        C = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return C.astype(np.float32)
