"""The screen: could one image be a crop or rendition of the other? Decided on thumbnails.

Most pairs the embedding stage proposes (cosine >= ``COSINE_MIN``, low enough to reach
crops) are different photographs of similar things: on real shop or store photos nearly
all of them. Verifying each costs a decode, ORB features and a geometric fit. The screen
turns most of them away first, from the grey thumbnails ingest stores with the hashes
(``imaging.hashes.THUMB_SIDE`` px, no decode): a rendition or crop shows the *whole* of
the contained picture somewhere in the other, so each thumbnail, scaled from the largest
size that fits inside the other down in steps to ``MIN_SCALE`` of it, is slid over the
other (both ways: either may be the crop), and the best normalised correlation (OpenCV's
``TM_CCOEFF_NORMED``, blind to brightness, contrast, grayscale and tints) is the score.
Other shots of an object, or other products on the same backdrop, do not line up pixel
for pixel and score low; periodic patterns (stripes, a checkerboard) can line up at some
shift, and go on to verification.

Only pairs no hash stage found are screened (``screens``); a pair the screen cannot judge
(a thumbnail missing, damaged or flat, or neither fits inside the other at a useful size)
passes to verification. Two crops of one photograph that overlap only in part score low
here; grouping still joins them through the photograph that contains both.
"""

from __future__ import annotations

import time
from collections import OrderedDict

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
#: A thumbnail (or a scaled copy) with less grey-level spread than this is flat: nothing to correlate.
FLAT = 1.0
#: Scaled copies smaller than this on a side say too little to be compared.
MIN_PIXELS = 6
#: Scaled copies of thumbnails kept for the pairs still to come.
SCALED_CACHE = 16384
#: Names the screen in a run's parameters (a change makes ``find`` run again).
SCREEN = f"thumb{THUMB_SIDE}-ncc{SCREEN_MIN}-scale{MIN_SCALE}-step{STEP}-v2"


def screens(stages: list[str]) -> bool:
    """Whether the screen decides a pair found by ``stages``: the embedding stage's alone."""
    return stages == ["embedding"]


class Screen:
    """Scores pairs of images by their hashes' thumbnails (each read once, its scaled copies kept)."""

    def __init__(self, hashes: dict[str, ImageHashes]):
        self._hashes = hashes
        self._thumbs: dict[str, np.ndarray | None] = {}
        # Scaled copies, by image and size: most pairs of a store share a few shapes, so the
        # same copies come back (bounded: at most ~4 KB each).
        self._scaled: OrderedDict[tuple[str, int, int], np.ndarray | None] = OrderedDict()
        self.screened = 0  # pairs given a score
        self.seconds = 0.0

    def score(self, a: str, b: str) -> float | None:
        """The best correlation of either thumbnail placed inside the other, or None when
        the screen cannot tell (see the module docstring)."""
        t0 = time.perf_counter()
        ta, tb = self._get(a), self._get(b)
        score = None
        if ta is not None and tb is not None:
            tried = [x for x in (self._inside(ta, b, tb), self._inside(tb, a, ta)) if x is not None]
            score = max(tried) if tried else None
        if score is not None:
            self.screened += 1
        self.seconds += time.perf_counter() - t0
        return score

    def passes(self, a: str, b: str) -> bool:
        score = self.score(a, b)
        return score is None or score >= SCREEN_MIN

    def turns_away(self, a: str, b: str, stages: list[str]) -> bool:
        """Whether a pair found by ``stages`` is dropped unverified."""
        return screens(stages) and not self.passes(a, b)

    def _get(self, image_id: str) -> np.ndarray | None:
        if image_id not in self._thumbs:
            self._thumbs[image_id] = _thumbnail(self._hashes.get(image_id))
        return self._thumbs[image_id]

    def _inside(self, big: np.ndarray, small_id: str, small: np.ndarray) -> float | None:
        """Best correlation of ``small``, scaled from the largest size that fits in ``big``
        down to ``MIN_SCALE`` of it, placed anywhere in ``big``; None when no scaled copy
        could be compared (too small, or flat)."""
        import cv2

        height, width = big.shape
        h, w = small.shape
        fit = min(width / w, height / h)  # the largest scale at which the small image fits
        best: float | None = None
        scale = fit
        while scale >= MIN_SCALE * fit - 1e-9:
            size = (min(width, round(w * scale)), min(height, round(h * scale)))
            if min(size) < MIN_PIXELS:
                break
            level = self._scaled_copy(small_id, small, size)
            if level is not None:
                found = float(cv2.matchTemplate(big, level, cv2.TM_CCOEFF_NORMED).max())
                best = found if best is None else max(best, found)
            scale *= STEP
        return best

    def _scaled_copy(self, image_id: str, thumb: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
        """``thumb`` resized to ``size`` (width, height), or None when that copy is flat."""
        import cv2

        key = (image_id, *size)
        if key in self._scaled:
            self._scaled.move_to_end(key)
            return self._scaled[key]
        level = cv2.resize(thumb, size, interpolation=cv2.INTER_AREA)
        copy = level if level.std() >= FLAT else None
        self._scaled[key] = copy
        if len(self._scaled) > SCALED_CACHE:
            self._scaled.popitem(last=False)
        return copy


def _thumbnail(hashes: ImageHashes | None) -> np.ndarray | None:
    """The stored thumbnail as float32 rows, or None when it is missing, damaged or flat."""
    if hashes is None or not hashes.thumb or not hashes.thumb_width:
        return None
    if len(hashes.thumb) % hashes.thumb_width or len(hashes.thumb) > THUMB_SIDE * THUMB_SIDE:
        return None  # not a thumbnail this hasher wrote
    thumb = np.frombuffer(hashes.thumb, np.uint8).reshape(-1, hashes.thumb_width).astype(np.float32)
    if thumb.std() < FLAT or min(thumb.shape) < MIN_PIXELS:  # nothing to correlate (a strip or a flat frame)
        return None
    return thumb
