"""Choosing k from a k sweep: pure functions of the (k, distortion, silhouette) curves.

Rules (``RULES``): "peak" (the default: the finest peak of the smoothed silhouette curve
within ``tol`` of its maximum), "silhouette" (the best silhouette) and "elbow" (Kneedle on
the distortion curve). Each takes the ks in any order; ``None`` silhouettes are skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imgdb.errors import UsageError

RULES: tuple[str, ...] = ("peak", "silhouette", "elbow")
PEAK_TOL = 0.1  # the peak rule's floor: peaks at or above max(smoothed) - PEAK_TOL count


@dataclass
class KScore:
    """One point of the k sweep."""

    k: int
    distortion: float  # within-cluster sum of squares on the sweep sample
    silhouette: float | None  # on the silhouette sample; None when undefined


def _as_arrays(ks: Sequence[int], values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray]:
    if len(ks) != len(values) or not len(ks):
        raise ValueError("ks and values must be non-empty and of equal length")
    order = np.argsort(ks)
    k = np.asarray(ks, dtype=np.int64)[order]
    v = np.asarray([np.nan if x is None else float(x) for x in values], dtype=np.float64)[order]
    return k, v


def choose_k_silhouette(ks: Sequence[int], silhouettes: Sequence[float | None]) -> int:
    """The k with the best silhouette (the smaller k on ties; the smallest k when none is defined)."""
    k, s = _as_arrays(ks, silhouettes)
    if np.all(np.isnan(s)):
        return int(k[0])
    return int(k[int(np.nanargmax(s))])


def choose_k_elbow(ks: Sequence[int], distortions: Sequence[float]) -> int:
    """The elbow of the distortion curve by Kneedle (Satopaa et al. 2011), offline form.

    The curve is made monotone first (running minimum: an optimal partition's distortion
    never rises with k, so any rise is a k-means local optimum), both axes are scaled to
    [0, 1], and the elbow is the point farthest below the chord from the first to the last
    point, i.e. argmax of (1 - x) - y. A curve that never dips below its chord has no elbow:
    the smallest k is returned, as it is for fewer than three points.
    """
    k, d = _as_arrays(ks, distortions)
    if len(k) < 3:
        return int(k[0])
    d = np.minimum.accumulate(d)
    span = d[0] - d[-1]
    if not span > 0:
        return int(k[0])
    x = (k - k[0]) / (k[-1] - k[0])
    y = (d - d[-1]) / span
    gap = (1 - x) - y
    i = int(np.argmax(gap))
    return int(k[i]) if gap[i] > 0 else int(k[0])


def peak_window(n: int) -> int:
    """Smoothing window for a curve of ``n`` ks: about a tenth of them, odd, at least 3."""
    w = max(3, round(n / 10))
    return w if w % 2 else w + 1


def smooth_curve(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average that shrinks at the ends and skips NaN (-inf where all are NaN)."""
    half = window // 2
    out = np.full(len(values), -np.inf)
    for i in range(len(values)):
        seg = values[max(0, i - half) : i + half + 1]
        seg = seg[np.isfinite(seg)]
        if len(seg):
            out[i] = float(seg.mean())
    return out


def silhouette_peaks(
    ks: Sequence[int],
    silhouettes: Sequence[float | None],
    tol: float = PEAK_TOL,
    window: int | None = None,
) -> list[int]:
    """The peaks of the silhouette curve at or above the floor, each as its best raw k.

    The curve is smoothed first (``smooth_curve`` over ``window`` ks, default
    ``peak_window``) so that small jitter from one k to the next is not taken for peaks.
    A peak is a local maximum of the smoothed curve (greater than its left neighbour, not
    less than its right one) at or above ``max(smoothed) - tol``; the first k of the range
    is never one (nothing to its left says it is a peak rather than the end of a slope),
    the last one can be (the curve still rises there). Each peak is reported as the k with
    the best raw silhouette within half a window of it. Sorted; empty when no silhouette
    is defined.
    """
    k, raw = _as_arrays(ks, silhouettes)
    if not np.isfinite(raw).any():
        return []
    w = window or peak_window(len(k))
    sm = smooth_curve(raw, w)
    floor = float(np.max(sm)) - tol
    scored = np.where(np.isfinite(raw), raw, -np.inf)
    peaks = set()
    for i in range(1, len(k)):
        right = sm[i + 1] if i + 1 < len(k) else -np.inf
        if sm[i] > sm[i - 1] and sm[i] >= right and sm[i] >= floor:
            lo, hi = max(1, i - w // 2), min(len(k), i + w // 2 + 1)  # never snap onto the first k
            peaks.add(int(k[lo + int(np.argmax(scored[lo:hi]))]))
    return sorted(peaks)


def choose_k_peak(
    ks: Sequence[int],
    silhouettes: Sequence[float | None],
    tol: float = PEAK_TOL,
    window: int | None = None,
) -> int:
    """The "peak" rule: the largest k among ``silhouette_peaks``; with none, the plain argmax."""
    peaks = silhouette_peaks(ks, silhouettes, tol, window)
    return max(peaks) if peaks else choose_k_silhouette(ks, silhouettes)


def choose_k(
    ks: Sequence[int],
    distortions: Sequence[float],
    silhouettes: Sequence[float | None],
    rule: str = "peak",
    *,
    tol: float = PEAK_TOL,
) -> int:
    """Dispatch to the rule named ``rule`` (one of ``RULES``); UsageError for any other name."""
    if rule == "peak":
        return choose_k_peak(ks, silhouettes, tol)
    if rule == "silhouette":
        return choose_k_silhouette(ks, silhouettes)
    if rule == "elbow":
        return choose_k_elbow(ks, distortions)
    raise UsageError(f"unknown k selection rule {rule!r} (use one of: {', '.join(RULES)})")


def all_choices(scores: Sequence[KScore], tol: float = PEAK_TOL) -> dict[str, int]:
    """The k every rule picks from one sweep (for the plots and the run's params)."""
    ks = [s.k for s in scores]
    dist = [s.distortion for s in scores]
    sil = [s.silhouette for s in scores]
    return {rule: choose_k(ks, dist, sil, rule, tol=tol) for rule in RULES}
