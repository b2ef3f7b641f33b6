"""The hash search (multi-index hashing) returns exactly the brute-force pairs."""

from __future__ import annotations

import numpy as np

from imgdb.dedup.pairs import _substrings, hash_pairs, popcount64


def flipped(x: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(63, size=bits, replace=False).tolist():
        x ^= 1 << bit
    return x


def crowded_hashes(n: int, seed: int = 0) -> np.ndarray:
    """Random hashes with the DC bit set, planted near pairs, equal values and one crowd.

    The crowd (a tenth of them, within a few bits of one template, like white-background
    catalogue shots) fills some buckets far past the others.
    """
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64) | np.uint64(1 << 63)
    template = int(h[0])
    for k in range(1, n // 10):
        h[k] = flipped(template, int(rng.integers(0, 9)), rng)
    for k in range(n // 10, n // 10 + n // 20):  # planted near pairs, 0..14 bits away
        h[k + n // 2] = flipped(int(h[k]), int(rng.integers(0, 15)), rng)
    h[n - 10 :] = h[n - 11]  # a class of equal hashes
    return h


def brute_force_distances(h: np.ndarray, t: int) -> dict[tuple[int, int], int]:
    """Every pair (i < j) within t bits, with its distance."""
    out: dict[tuple[int, int], int] = {}
    for r0 in range(0, len(h), 256):
        d = popcount64(h[r0 : r0 + 256, None] ^ h[None, :]).reshape(-1, len(h))
        ii, jj = np.nonzero(d <= t)
        ok = jj > ii + r0
        out.update(zip(zip((ii[ok] + r0).tolist(), jj[ok].tolist()), d[ii[ok], jj[ok]].tolist()))
    return out


def brute_force(h: np.ndarray, t: int) -> set[tuple[int, int]]:
    return set(brute_force_distances(h, t))


def test_multi_index_search_equals_brute_force():
    h = crowded_hashes(12000)
    within = brute_force_distances(h, 12)  # once: each bound below is a subset
    for t in (0, 1, 4, 10, 12):
        assert t == 0 or _substrings(t, len(h)) is not None  # the multi-index path, not brute force
        want = {pair for pair, d in within.items() if d <= t}
        a, b, d = hash_pairs(h, t)
        assert len(a) == len(want) and set(zip(a.tolist(), b.tolist())) == want
        assert (a < b).all()
        assert (d == popcount64(h[a] ^ h[b])).all()
    assert len(want) > 10000  # the crowd and the planted pairs are there


def test_a_bucket_bigger_than_a_chunk_is_searched_in_row_blocks():
    h = crowded_hashes(6000, seed=1)
    a, b, _ = hash_pairs(h, 12, max_chunk=1 << 12)
    assert set(zip(a.tolist(), b.tolist())) == brute_force(h, 12)


def test_few_hashes():
    h = np.array([0, 1, 3, 2**63, 1], dtype=np.uint64)
    a, b, d = hash_pairs(h, 1)
    assert sorted(zip(a.tolist(), b.tolist(), d.tolist())) == [
        (0, 1, 1),
        (0, 3, 1),
        (0, 4, 1),
        (1, 2, 1),
        (1, 4, 0),
        (2, 4, 1),
    ]
    assert [len(x) for x in hash_pairs(h[:1], 12)] == [0, 0, 0]
