"""The screen: could one image be a crop or rendition of the other? Decided on thumbnails.

Most pairs the embedding stage proposes (cosine >= ``COSINE_MIN``, low enough to reach
crops) are different photographs of similar things: on real shop or store photos nearly
all of them. Verifying each costs a decode, ORB features and a geometric fit. The screen
turns most of them away first, from the grey thumbnails ingest stores with the hashes
(``imaging.hashes.THUMB_SIDE`` px, no decode): a rendition or crop shows the *whole* of
the smaller picture somewhere in the larger one, so the smaller thumbnail, scaled down in
steps to ``MIN_SCALE`` of the largest size that fits, is slid over the larger one, and the
best normalised correlation (OpenCV's ``TM_CCOEFF_NORMED``, blind to brightness, contrast,
grayscale and tints) is the score. Other shots of an object, or other products on the same
backdrop, do not line up pixel for pixel and score low; periodic patterns (stripes, a
checkerboard) can line up at some shift, and go on to verification.

Only pairs no hash stage found are screened; a pair whose thumbnails are flat (no
structure to correlate) or missing passes to verification. Two crops of one photograph that
overlap only in part score low here; grouping still joins them through the photograph
that contains both.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from imgdb.imaging.hashes import THUMB_SIDE, ImageHashes

#: Best correlation below which a pair is turned away unverified; fitted by
#: scripts/fit_dupes.py on the fit half of the labelled bench (docs/evaluation.md).
SCREEN_MIN = 0.65
#: The smallest placement tried, as a share of the largest that fits: 36% of the area (a
#: duplicate's crop keeps about half or more).
MIN_SCALE = 0.6
#: Each placement this much smaller than the last.
STEP = 0.85
#: A thumbnail level with less grey-level spread than this is flat: nothing to correlate.
FLAT = 1.0
#: Names the screen in a run's parameters (a change makes ``find`` run again).
SCREEN = f"thumb{THUMB_SIDE}-ncc{SCREEN_MIN}-scale{MIN_SCALE}"


class Screen:
    """Scores pairs of images by their hashes' thumbnails; each image's steps are made once."""

    def __init__(self, hashes: dict[str, ImageHashes]):
        self._hashes = hashes
        self._levels: dict[str, tuple[np.ndarray, list[np.ndarray | None]] | None] = {}
        self.screened = 0  # pairs scored
        self.seconds = 0.0

    def score(self, a: str, b: str) -> float | None:
        """The best correlation of either thumbnail placed inside the other, or None when
        the screen cannot tell (a thumbnail missing or flat)."""
        t0 = time.perf_counter()
        la, lb = self._get(a), self._get(b)
        score = None
        if la is not None and lb is not None:
            tried = [
                x for x in (_inside(la[0], lb[1], lb[0].shape), _inside(lb[0], la[1], la[0].shape)) if x is not None
            ]
            score = max(tried) if tried else None
        self.screened += 1
        self.seconds += time.perf_counter() - t0
        return score

    def passes(self, a: str, b: str) -> bool:
        score = self.score(a, b)
        return score is None or score >= SCREEN_MIN

    def _get(self, image_id: str) -> tuple[np.ndarray, list[np.ndarray | None]] | None:
        if image_id not in self._levels:
            self._levels[image_id] = _prepare(self._hashes.get(image_id))
        return self._levels[image_id]


def _prepare(hashes: ImageHashes | None) -> tuple[np.ndarray, list[np.ndarray | None]] | None:
    """The thumbnail as float32 and its steps down (None for a flat step), or None."""
    import cv2

    if hashes is None or not hashes.thumb or not hashes.thumb_width:
        return None
    thumb = np.frombuffer(hashes.thumb, np.uint8).reshape(-1, hashes.thumb_width).astype(np.float32)
    if thumb.std() < FLAT or min(thumb.shape) < 6:  # nothing to correlate (a strip or a flat frame)
        return None
    h, w = thumb.shape
    levels: list[np.ndarray | None] = []
    scale = 1.0
    while scale >= 0.2:  # the largest fit is below 1 when the aspect ratios differ
        size = (round(w * scale), round(h * scale))
        if min(size) < 6:
            break
        level = cv2.resize(thumb, size, interpolation=cv2.INTER_AREA)
        levels.append(level if level.std() >= FLAT else None)
        scale *= STEP
    return thumb, levels


def _inside(big: np.ndarray, levels: list[Any], shape: tuple[int, ...]) -> float | None:
    """Best correlation of the small image's ``levels`` (its full-size ``shape``) placed in
    ``big``; None when no level could be placed (all flat, or none fits)."""
    import cv2

    height, width = big.shape
    h, w = shape
    fit = min(width / w, height / h)  # the largest scale at which the small image fits
    best: float | None = None
    tried = 0
    for level in levels:
        if level is None:
            continue
        th, tw = level.shape
        if tw > width or th > height:
            continue
        if tw < MIN_SCALE * fit * w and th < MIN_SCALE * fit * h:
            break
        found = float(cv2.matchTemplate(big, level, cv2.TM_CCOEFF_NORMED).max())
        best = found if best is None else max(best, found)
        tried += 1
        if tried >= 8:
            break
    return best
