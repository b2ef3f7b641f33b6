"""The IVF embedding search that ``dupes`` uses past ``EXACT_MAX_ROWS`` vectors (a million images)."""

from __future__ import annotations

import numpy as np

from imgdb.dedup.pairs import EXACT_MAX_ROWS, embedding_pairs


def clustered_vectors(n: int, dim: int = 300, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Unit vectors around 40 centres, with 100 planted near-copies (cosine ~0.97+)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    X = centres[rng.integers(0, 40, n)] + 1.2 * rng.standard_normal((n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    src = rng.choice(n // 2, 100, replace=False)
    dst = src + n // 2
    X[dst] = X[src] + 0.15 * rng.standard_normal((100, dim)).astype(np.float32) / np.sqrt(dim)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, list(zip(src.tolist(), dst.tolist()))


def test_ivf_finds_the_near_copies_and_scores_every_pair_exactly():
    X, planted = clustered_vectors(6000)
    stats: dict = {}
    a, b, s = embedding_pairs(X, 0.8, reduced_dim=64, exact_max=0, cell_rows=200, probes=8, stats=stats)
    assert stats["method"] == "ivf" and stats["cells"] == 30
    assert stats["compared"] < 6000 * 6000 / 2  # it did not look at every pair
    found = set(zip(a.tolist(), b.tolist()))
    assert set(planted) <= found
    assert np.all(a < b)
    np.testing.assert_allclose(s, np.einsum("ij,ij->i", X[a], X[b]), atol=1e-5)
    assert np.all(s >= 0.8)

    # Every pair it returns is one the exact search returns too.
    ea, eb, _ = embedding_pairs(X, 0.8, reduced_dim=64)
    assert found <= set(zip(ea.tolist(), eb.tolist()))


def test_small_stores_keep_the_exact_search():
    X, _ = clustered_vectors(3000)
    stats: dict = {}
    embedding_pairs(X, 0.8, reduced_dim=64, stats=stats)
    assert EXACT_MAX_ROWS >= 3000
    assert stats.get("method") != "ivf"
