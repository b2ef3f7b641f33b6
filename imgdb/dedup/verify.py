"""Verification: is a candidate pair the same photograph, a recolour of it, or neither?

The cheap stages only say two images look alike. ``verify`` decides with evidence:

1. Geometry. ORB keypoints matched with Lowe's ratio test, then a similarity transform
   (rotation, uniform scale, shift) fitted with RANSAC. Renditions and crops of one
   photograph line up pixel for pixel; another shot of an object, or another product in
   the same pose, does not, or only in parts. ``inliers`` and ``matched_area`` (the part of
   the smaller image the inliers span) are the evidence.
2. Content. The larger image is warped onto the smaller one and both are compared in a
   grid of blocks: a block "changed" when its luminance no longer correlates (new text,
   another flavour's label, another object). A duplicate may differ in a few blocks (a
   watermark or badge, ``MAX_CHANGED``), never in many.
3. Colour. A global colour change (grayscale, a tint, brightness, contrast) is a
   duplicate. A recolour keeps the photograph and its neutral background but turns the
   product's hue: many saturated pixels change hue by more than ``RECOLOUR_HUE`` degrees
   while neutral pixels stay neutral, and nothing else changes (another flavour of one
   packaging design turns colours *and* changes its text: neither).

Smooth pictures are searched for fainter corners; images with none at all (flat logos,
plain backgrounds) are compared frame to frame when their aspect ratios and their pHash agree. Transparent images are compared as drawn
on mid-grey, so their shapes count, never as blank white.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Names how pairs are verified; a change makes ``find`` run again on an unchanged store.
VERIFIER = "orb-blocks-v12"
# MAX_CHANGED, RECOLOUR_SHARE and RECOLOUR_MAX_CHANGED were fitted by scripts/fit_dupes.py
# on the fit half of the labelled bench (docs/evaluation.md, "Near-duplicates").

#: Longest side images are verified at; enough for ORB and the block grid, and cheap.
SIDE = 384
#: Keypoint matches that must agree with one transform for a geometric match.
MIN_INLIERS = 15
#: Share of the good matches that must be inliers.
MIN_INLIER_RATIO = 0.3
#: Share of changed blocks a duplicate may have (a small overlay); more means another image.
MAX_CHANGED = 0.08
#: A recolour changes colour only: almost no block may change in both lightness and value.
RECOLOUR_MAX_CHANGED = 0.05
#: Part of the smaller image the two must share (crops keeping about half still pass).
MIN_OVERLAP = 0.4
#: Hue turn (degrees) that makes a saturated pixel "recoloured".
RECOLOUR_HUE = 30.0
#: Share of the overlap whose hue turned for a recolour (the product is a real part of it).
RECOLOUR_SHARE = 0.04
#: Lab chroma above which a pixel's hue counts (in both images): dull greens and browns too.
RECOLOUR_CHROMA = 12.0
#: Two frames are compared whole (when their keypoints do not line up) only when their
#: pHash are this close: one framing. Comparing every other pair block by block anyway
#: was most of a negative pair's cost, and on the fit half it only ever rejected them.
FRAME_MAX_PHASH = 12
GRID = 12
#: A block is textured above this lightness deviation; textured blocks must correlate this much.
TEXTURED = 8.0
MIN_BLOCK_CORRELATION = 0.8

DUPLICATE = "duplicate"
RECOLOUR = "recolour"

#: The sure zone: a candidate pair within ``SURE_PHASH`` bits of whole-image pHash *and*
#: at cosine >= ``SURE_COSINE`` is a resize or re-encode of one frame, a duplicate without
#: verification. pHash alone is not enough: it is computed on luminance, so a recolour
#: keeps it; the embedding sees the colour. Fitted on the fit half's evidence
#: (scripts/fit_dupes.py --zones): no recolour or other image came this close.
SURE_PHASH = 6
SURE_COSINE = 0.98
#: Marks a pair decided in the sure zone (in its ``stages``: nothing was verified).
SURE = "sure"


def sure(phash_distance: int | None, cosine: float | None) -> bool:
    """Whether the cheap evidence alone makes a pair a duplicate (``SURE_PHASH``, ``SURE_COSINE``)."""
    return phash_distance is not None and cosine is not None and phash_distance <= SURE_PHASH and cosine >= SURE_COSINE


@dataclass
class Evidence:
    """What verification measured for one pair; ``kind`` is None when it is neither."""

    kind: str | None
    inliers: int = 0
    matched_area: float = 0.0  # of the smaller image, spanned by the inliers
    overlap: float = 0.0  # of the smaller image, covered by the other after alignment
    changed: float = 1.0  # share of blocks whose lightness differs
    reshaped: float = 1.0  # share of blocks whose lightness and value both differ
    recoloured: float = 0.0  # share of the overlap whose hue turned
    method: str = "keypoints"  # keypoints | frame | none
    first_contains: bool = True  # the first image shows all the second does (the second is a crop)
    textured: float = 0.0  # share of compared blocks with texture in both (the rest say little)


@dataclass
class Prepared:
    """One image ready for verification: RGB at most ``SIDE`` px, its grey copy and features."""

    rgb: np.ndarray  # uint8 H x W x 3
    gray: np.ndarray  # uint8 H x W
    keypoints: Any
    descriptors: np.ndarray | None
    feature_scale: float  # feature coordinates = pixel coordinates * feature_scale


def prepare(image: Any, alpha: Any = None) -> Prepared:
    """A decoded RGB ``PIL.Image`` (and its alpha band, if any) ready for ``verify``."""
    import cv2
    from PIL import Image

    rgb_image = image.convert("RGB")
    if alpha is not None:  # drawn on mid-grey: a white logo must not vanish into white
        grey = Image.new("RGB", rgb_image.size, (128, 128, 128))
        rgb_image = Image.composite(_unflatten(rgb_image, alpha), grey, alpha)
    if max(rgb_image.size) > SIDE:
        rgb_image = rgb_image.copy()
        rgb_image.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    rgb = np.asarray(rgb_image, dtype=np.uint8)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    scale = 1.0
    features = gray
    if max(gray.shape) < 320:  # small thumbnails: upscale so ORB finds enough corners
        scale = 320 / max(gray.shape)
        features = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    keypoints, descriptors = _orb().detectAndCompute(features, None)
    if len(keypoints) < 100:  # smooth pictures: look for fainter corners before giving up
        keypoints, descriptors = _orb(faint=True).detectAndCompute(features, None)
    return Prepared(rgb, gray, keypoints, descriptors, scale)


def verify(a: Prepared, b: Prepared, *, frames: bool = True) -> Evidence:
    """Same photograph (``duplicate``), the same photograph recoloured (``recolour``), or neither.

    ``frames``: whether the whole frames may be compared when no keypoints line up (flat
    pictures); ``Verifier`` allows it for pairs of one framing only (``FRAME_MAX_PHASH``).
    """
    transform, inliers, points = _align(a, b)
    method = "keypoints"
    if transform is None:
        transform, method = (_frame_transform(a, b) if frames else None), "frame"
        if transform is None:
            return Evidence(None, inliers=inliers, method="none")
    if not _plausible(transform):
        return Evidence(None, inliers=inliers, method=method)
    evidence = _compare(a, b, transform)
    evidence.inliers, evidence.method = inliers, method
    evidence.matched_area = _matched_area(a, b, transform, points) if method == "keypoints" else evidence.overlap
    if evidence.overlap < MIN_OVERLAP:
        evidence.kind = None
    elif evidence.recoloured >= RECOLOUR_SHARE:
        # Another flavour of one packaging changes colours *and* some content: neither.
        evidence.kind = RECOLOUR if evidence.reshaped <= RECOLOUR_MAX_CHANGED else None
    else:
        evidence.kind = DUPLICATE if evidence.changed <= MAX_CHANGED else None
    return evidence


# ---------------------------------------------------------------------------------------
# geometry


_ORB: dict[bool, Any] = {}


def _orb(faint: bool = False) -> Any:
    import cv2

    if faint not in _ORB:
        _ORB[faint] = cv2.ORB_create(  # type: ignore[attr-defined]
            nfeatures=1000, fastThreshold=2 if faint else 10, edgeThreshold=15, patchSize=15
        )
    return _ORB[faint]


def _align(a: Prepared, b: Prepared) -> tuple[np.ndarray | None, int, np.ndarray]:
    """The 2x3 transform from a's pixels to b's (None when they do not match), its inlier
    count, and the inliers' positions in a."""
    import cv2

    none = np.zeros((0, 2), np.float32)
    if a.descriptors is None or b.descriptors is None or len(a.keypoints) < 8 or len(b.keypoints) < 8:
        return None, 0, none
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a.descriptors, b.descriptors, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.8 * m[1].distance]
    if len(good) < MIN_INLIERS:
        return None, 0, none
    pa = np.array([a.keypoints[m.queryIdx].pt for m in good], np.float32) / a.feature_scale
    pb = np.array([b.keypoints[m.trainIdx].pt for m in good], np.float32) / b.feature_scale
    threshold = 3.0 / max(a.feature_scale, b.feature_scale, 1.0) + 1.0
    transform, mask = cv2.estimateAffinePartial2D(
        pa, pb, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=2000, confidence=0.99
    )
    if transform is None:
        return None, 0, none
    inliers = int(mask.sum())
    if inliers < MIN_INLIERS or inliers < MIN_INLIER_RATIO * len(good):
        return None, inliers, none
    return transform, inliers, pa[mask.ravel() == 1]


def _plausible(transform: np.ndarray) -> bool:
    """A finite transform that neither collapses nor blows up an image (renditions scale by < 20x)."""
    if not np.all(np.isfinite(transform)):
        return False
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    return 0.05 < scale < 20


def _frame_transform(a: Prepared, b: Prepared) -> np.ndarray | None:
    """Whole frame onto whole frame, for images too flat for keypoints: same aspect ratio only."""
    ha, wa = a.gray.shape
    hb, wb = b.gray.shape
    if abs(wa / ha - wb / hb) > 0.02 * (wa / ha):
        return None
    return np.array([[wb / wa, 0, 0], [0, hb / ha, 0]], np.float32)


def _matched_area(a: Prepared, b: Prepared, transform: np.ndarray, points: np.ndarray) -> float:
    """Share of the smaller image that the inlier keypoints (``points``, in a) span."""
    import cv2

    if len(points) < 3:
        return 0.0
    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    if scale < 1:  # b is smaller: measure there
        points = cv2.transform(points.reshape(-1, 1, 2), transform).reshape(-1, 2)
        area = b.gray.shape[0] * b.gray.shape[1]
    else:
        area = a.gray.shape[0] * a.gray.shape[1]
    return float(min(1.0, cv2.contourArea(cv2.convexHull(points)) / area))


# ---------------------------------------------------------------------------------------
# content and colour


def _compare(a: Prepared, b: Prepared, transform: np.ndarray) -> Evidence:
    """Warp one image onto the other (the one with the smaller footprint) and compare blocks."""
    import cv2

    scale = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))  # b pixels per a pixel
    area_a, area_b = a.gray.size * scale**2, b.gray.size  # footprints, in b's pixels
    first_contains = area_b <= area_a
    if first_contains:  # b shows less: a goes onto b
        src, dst, t, s = a.rgb, b.rgb, transform, scale
    else:
        src, dst, t, s = b.rgb, a.rgb, cv2.invertAffineTransform(transform), 1 / scale
    h, w = dst.shape[:2]
    source: np.ndarray = src.astype(np.float32)
    target: np.ndarray = dst.astype(np.float32)
    if s < 1:  # shrinking: low-pass first, or aliasing reads as change
        source = cv2.GaussianBlur(source, (0, 0), 0.5 / s)
    elif s > 1.2:  # enlarging: soften the target to the same blur
        target = cv2.GaussianBlur(target, (0, 0), 0.5 * s)
    warped = cv2.warpAffine(source, t, (w, h), flags=cv2.INTER_LINEAR)
    footprint = cv2.warpAffine(np.ones(src.shape[:2], np.uint8), t, (w, h), flags=cv2.INTER_NEAREST)
    valid = cv2.erode(footprint, np.ones((3, 3), np.uint8)) > 0
    overlap = float(valid.mean())
    if overlap < MIN_OVERLAP:
        return Evidence(None, overlap=overlap, first_contains=first_contains)
    # Both at the same softness: resampling and JPEG noise must not count as change.
    soft_w = cv2.GaussianBlur(warped, (0, 0), 1.0)
    soft_d = cv2.GaussianBlur(target, (0, 0), 1.0)
    lab_w, lab_d = _lab(soft_w), _lab(soft_d)
    # A recolour that turns the hue moves lightness but keeps HSV value: a block changed
    # in content (``reshaped``) only where both differ (new text or another object changes both).
    (changed, reshaped), textured = _changed_blocks(
        (lab_w[..., 0], _value(soft_w)), (lab_d[..., 0], _value(soft_d)), valid
    )
    # Hue is compared on a softer copy: at edges, a pixel of misalignment or JPEG's halved
    # colour resolution turns hues that no recolour turned.
    soften = max(0.5, min(3.0, min(h, w) / 100))  # ~3 px, less on a thumbnail
    recoloured = _recoloured(
        _lab(cv2.GaussianBlur(warped, (0, 0), soften)), _lab(cv2.GaussianBlur(target, (0, 0), soften)), valid
    )
    return Evidence(
        None,
        overlap=overlap,
        changed=changed,
        reshaped=reshaped,
        recoloured=recoloured,
        textured=textured,
        first_contains=first_contains,
    )


def _value(rgb: np.ndarray) -> np.ndarray:
    """HSV value, the largest channel (``max(axis=2)`` is several times slower on 3 channels)."""
    return np.maximum(np.maximum(rgb[..., 0], rgb[..., 1]), rgb[..., 2])


def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)


def _changed_blocks(
    channels_a: tuple[np.ndarray, ...], channels_b: tuple[np.ndarray, ...], valid: np.ndarray
) -> tuple[list[float], float]:
    """Shares of blocks that differ beyond one global tone curve per channel: in the first
    channel, in the first two, ... (one share per channel); and the share of blocks the
    first channel finds textured in both.

    A block takes part when at least 80% of it lies in the overlap. Textured blocks must
    still correlate; flat ones (where grain and JPEG noise would decide a correlation) must
    keep their level and contrast.
    """
    h, w = valid.shape
    grid = max(4, min(GRID, min(h, w) // 10))  # blocks of at least ~10 px
    # Block r spans the rows n with n * grid // h == r (the same for columns); sums over
    # blocks are two ``reduceat`` passes over whole rows, not a scatter of every pixel.
    row_starts = np.searchsorted((np.arange(h) * grid) // h, np.arange(grid))
    col_starts = np.searchsorted((np.arange(w) * grid) // w, np.arange(grid))

    def block_sums(values: np.ndarray) -> np.ndarray:
        return np.add.reduceat(np.add.reduceat(values, row_starts, axis=0), col_starts, axis=1).ravel()

    size = np.outer(np.diff(row_starts, append=h), np.diff(col_starts, append=w)).ravel()
    count = block_sums(valid.astype(np.float64))
    used = count >= 0.8 * size
    if not used.any():
        return [1.0] * len(channels_a), 0.0
    differs = np.ones(grid * grid, bool)
    shares: list[float] = []
    textured_share = 0.0
    n = np.maximum(count, 1)
    for a, b in zip(channels_a, channels_b):
        # A grayscale, tinted or brighter copy moves the tones: match them first.
        x = np.zeros((h, w))
        x[valid] = _match_tones(a[valid], b[valid])
        y = np.where(valid, b, 0).astype(np.float64)
        mx, my = block_sums(x) / n, block_sums(y) / n
        sx = np.sqrt(np.maximum(block_sums(x * x) / n - mx**2, 0))
        sy = np.sqrt(np.maximum(block_sums(y * y) / n - my**2, 0))
        cov = block_sums(x * y) / n - mx * my
        textured = (sx > TEXTURED) & (sy > TEXTURED)
        if not shares:
            textured_share = float(textured[used].sum() / used.sum())
        ncc = cov / np.maximum(sx * sy, 1e-6)
        this = np.where(textured, ncc < MIN_BLOCK_CORRELATION, (np.abs(mx - my) > 15) | (np.abs(sx - sy) > 8))
        differs &= this  # changed only where every channel so far differs
        shares.append(float(differs[used].sum() / used.sum()))
    return shares, textured_share


def _match_tones(lum_a: np.ndarray, lum_b: np.ndarray) -> np.ndarray:
    """``lum_a`` through the monotone curve that gives it ``lum_b``'s histogram (the overlap's pixels)."""
    q = np.linspace(0, 1, 65)
    step = max(1, len(lum_a) // 20000)  # the curve needs quantiles, not every pixel
    return np.interp(lum_a, np.quantile(lum_a[::step], q), np.quantile(lum_b[::step], q))


def _recoloured(lab_a: np.ndarray, lab_b: np.ndarray, valid: np.ndarray) -> float:
    """Share of the overlap where a saturated colour turned hue while neutral pixels stayed neutral.

    A tint or a grayscale copy changes neutral pixels too, or removes colour everywhere: 0.
    """
    a1, b1 = lab_a[..., 1] - 128, lab_a[..., 2] - 128
    a2, b2 = lab_b[..., 1] - 128, lab_b[..., 2] - 128
    c1, c2 = np.hypot(a1, b1), np.hypot(a2, b2)
    neutral = valid & (c1 < 6)
    if neutral.mean() > 0.05 and float(np.median(c2[neutral])) > 6:
        return 0.0  # neutrals gained colour: a whole-image tint
    saturated = valid & (c1 > RECOLOUR_CHROMA) & (c2 > RECOLOUR_CHROMA)
    if saturated.sum() < 0.01 * valid.sum():
        return 0.0
    h1, h2 = np.arctan2(b1[saturated], a1[saturated]), np.arctan2(b2[saturated], a2[saturated])
    # A colourful image against a monochrome one is a duotone tint, when no neutral pixels
    # show otherwise (neutrals that stayed neutral mean only the product changed).
    if neutral.mean() <= 0.05 and _one_hue(h1) != _one_hue(h2):
        return 0.0
    turn = np.degrees(np.abs((h2 - h1 + np.pi) % (2 * np.pi) - np.pi))  # the turn, wrapped to [0, 180]
    turned = turn > RECOLOUR_HUE
    if neutral.mean() <= 0.05 and turned.mean() > 0.7:
        return 0.0  # every colour turned and nothing neutral shows otherwise: a colour grade
    return float(turned.sum() / valid.sum())


def _one_hue(hues: np.ndarray) -> bool:
    """Whether the hues (radians) huddle around one angle, as in a monochrome tint."""
    return bool(np.hypot(np.cos(hues).mean(), np.sin(hues).mean()) > 0.9)  # length of the mean unit vector


def _unflatten(rgb: Any, alpha: Any) -> Any:
    """Undo decode's compositing onto white where pixels are partly transparent (approximately)."""
    from PIL import Image

    a = np.asarray(alpha, np.float32)[..., None] / 255
    w = np.asarray(rgb, np.float32)
    colour = np.where(a > 0.02, (w - 255 * (1 - a)) / np.maximum(a, 0.02), 0)
    return Image.fromarray(np.clip(colour, 0, 255).astype(np.uint8), "RGB")


# ---------------------------------------------------------------------------------------
# many pairs


class Verifier:
    """Verifies pairs of stored images, preparing each image once (a bounded cache).

    ``load(image_id)`` returns the decoded image and its alpha band, or None when the
    image cannot be read or decoded; such pairs get no evidence (None). ``phash(a, b)``
    gives two images' pHash distance (None when unknown): whole frames are compared only
    within ``FRAME_MAX_PHASH`` bits (without it, always).
    """

    def __init__(self, load: Any, *, phash: Any = None, workers: int | None = None, cache: int = 1024):
        import threading
        from collections import OrderedDict

        self._lock = threading.Lock()
        self._load = load
        self._phash = phash
        self._workers = workers or os.cpu_count() or 2  # verification is CPU-bound: one thread a core
        self._cache_size = cache
        self._prepared: OrderedDict[str, Prepared | None] = OrderedDict()
        self._evidence: dict[tuple[str, str], Evidence | None] = {}
        self.verified = 0  # pairs verified so far
        self.seconds = 0.0  # CPU spent in ``verify`` (matching and comparing), all pairs
        self.pair_seconds: list[float] = []  # each verified pair's share of ``seconds``
        self.prepared = 0  # images decoded and given features
        self.prepare_seconds = 0.0

    def known(self, a: str, b: str) -> Evidence | bool | None:
        """The evidence already gathered for a pair, or False when it was never checked."""
        return self._evidence.get((min(a, b), max(a, b)), False)

    def check(self, a: str, b: str) -> Evidence | None:
        key = (min(a, b), max(a, b))
        if key not in self._evidence:
            self._evidence[key] = self._verify(*key)
        return self._evidence[key]

    def check_many(self, pairs: list[tuple[str, str]]) -> list[Evidence | None]:
        """Evidence for many pairs, on a thread pool (OpenCV and Pillow release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor

        todo = _local_order(sorted({(min(a, b), max(a, b)) for a, b in pairs} - self._evidence.keys()))
        # In chunks, in an order where an image's pairs come together: the cache then
        # prepares almost every image once.
        with ThreadPoolExecutor(self._workers, thread_name_prefix="imgdb-verify") as pool:
            step = max(1, self._cache_size // 4)
            for start in range(0, len(todo), step):
                chunk = todo[start : start + step]
                for key, evidence in zip(chunk, pool.map(lambda k: self._verify(*k), chunk)):
                    self._evidence[key] = evidence
        return [self._evidence[(min(a, b), max(a, b))] for a, b in pairs]

    def _verify(self, a: str, b: str) -> Evidence | None:
        pa, pb = self._get(a), self._get(b)
        if pa is None or pb is None:
            return None
        distance = self._phash(a, b) if self._phash is not None else None
        t0 = time.perf_counter()
        evidence = verify(pa, pb, frames=distance is None or distance <= FRAME_MAX_PHASH)
        took = time.perf_counter() - t0
        with self._lock:
            self.seconds += took
            self.pair_seconds.append(took)
            self.verified += 1
        return evidence

    def _get(self, image_id: str) -> Prepared | None:
        with self._lock:
            if image_id in self._prepared:
                self._prepared.move_to_end(image_id)
                return self._prepared[image_id]
        t0 = time.perf_counter()
        loaded = self._load(image_id)  # two threads may prepare one image: harmless
        prepared = prepare(*loaded) if loaded is not None else None
        took = time.perf_counter() - t0
        with self._lock:
            self.prepared += 1
            self.prepare_seconds += took
            self._prepared[image_id] = prepared
            while len(self._prepared) > self._cache_size:
                self._prepared.popitem(last=False)
        return prepared


def _local_order(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs ordered so that each image's pairs lie close together: the images in the
    reverse Cuthill-McKee order of the pair graph (small bandwidth), then the pairs by
    their first and last image in that order."""
    if not pairs:
        return pairs
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    ids = sorted({i for pair in pairs for i in pair})
    index = {image_id: k for k, image_id in enumerate(ids)}
    a = np.asarray([index[x] for x, _y in pairs])
    b = np.asarray([index[y] for _x, y in pairs])
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(ids), len(ids))).tocsr()
    position = np.empty(len(ids), np.int64)
    position[reverse_cuthill_mckee(graph + graph.T, symmetric_mode=True)] = np.arange(len(ids))
    pa, pb = position[a], position[b]
    order = np.lexsort((np.maximum(pa, pb), np.minimum(pa, pb)))
    return [pairs[k] for k in order.tolist()]
