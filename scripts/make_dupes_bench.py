"""Build a labelled near-duplicate benchmark folder from the shared real photos.

    python scripts/make_dupes_bench.py SHARED_DATA_DIR OUT_DIR [--seed N] [--sources N] [--workers N] [--force]

SHARED_DATA_DIR is ``../shared/data`` (``jammy_shop/``, ``grocery_train/``,
``ukbench_0000_0499/``, ``grocery_iconic/``; read only). OUT_DIR must lie outside the
repository (e.g. ``/tmp/dupes-bench``); it gets one folder per group and ``labels.csv``::

    path,source,group,variant,kind,split

``path`` is relative to OUT_DIR; ``source`` is the shared photo a file derives from
(relative to SHARED_DATA_DIR); ``kind`` is ``duplicate``, ``recolour`` or ``negative``;
``split`` (``fit`` / ``report``) is drawn per source photo, a seeded half within each
category below, and every file of a source (its renditions, its hard negatives) shares it.

Duplicate sources (``--sources``, default 160, shared out in fixed proportions):

* ``jammy``: the shop's 26 originals (352x570 portrait; only the originals are used);
* ``grocery-portrait``: grocery photos that are natively 348x464 portrait;
* ``grocery-portrait-crop`` / ``ukbench-portrait-crop``: a 2:3 portrait crop (random
  horizontal position) of a 348x348 grocery photo (232x348) or of a 320x240 UKBench photo
  (160x240), because the sets have few portrait photos. The crop, saved as JPEG q92, is
  the ``original``; the full photo is not in the bench;
* ``grocery-square`` (348x348) and ``ukbench-landscape`` (320x240), as they are.

Each source gets 15 files in one duplicate group: ``original`` (the shared bytes, or the
portrait crop), CMS-style ``thumb150`` and ``square300`` (centre crop to a square, resized),
``crop330x413`` (centre crop to 330:413, resized), ``w768`` and ``w1024`` (resized to that
width: small sources are *upscaled*, as CMS do), ``webp`` (WebP q80) and ``q60`` (JPEG q60)
re-encodes, ``crop50`` / ``crop70`` / ``crop90`` (keep that share of the area, random
position), ``overlay`` (a corner badge and a translucent watermark line), ``gray``, ``tint``
(30% blend with a colour) and ``adjust`` (mild brightness / contrast / saturation).
Renditions are JPEG q85 unless named otherwise.

Hard negatives, each file its own group (``kind`` negative):

* ``burst``: for a grocery source photo ``X_n``, the shots ``X_{n-1}`` and ``X_{n+1}`` of
  the same class (the dataset's photos are taken in bursts; its ``group`` column is only
  Fruit / Packages / Vegetables). Sources are drawn so a burst never touches another source;
* ``ukbench-view``: for a UKBench source, the object's other 3 views;
* ``iconic``: all 81 catalogue shots, each with ``recolour-hue90`` / ``-hue180`` /
  ``-hue270`` copies (kind ``recolour``, same group): the pixels farther than
  ``OBJECT_THRESHOLD`` from white get their HSV hue shifted, the background stays as it is.

Group ids carry a family before ``~``: ``ukb-031`` (a source's renditions) and
``ukb-031~view2`` (a view of the same object), ``gro-Kiwi-036~burst035``, ``iconic~Kiwi``,
so a scorer can find the hard negatives of each source. Deterministic for a seed (and a
Pillow build). With the defaults: 3,045 files (2,400 duplicates of 160 sources, 402
negatives, 243 recolours), ~100 MB (mostly the upscaled ``w1024``), built in ~15 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import random
import re
import shutil
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFont, ImageOps

COLUMNS = ("path", "source", "group", "variant", "kind", "split")
SPLITS = ("fit", "report")
#: Share of the duplicate sources per category (largest remainders; capped by what the sets hold).
CATEGORY_SHARES = {
    "jammy": 0.16,
    "grocery-portrait": 0.17,
    "grocery-portrait-crop": 0.12,
    "ukbench-portrait-crop": 0.12,
    "grocery-square": 0.22,
    "ukbench-landscape": 0.21,
}
PORTRAIT_ASPECT = 2 / 3  # width / height of the portrait crops
JPEG_QUALITY = 85
RECOLOUR_DEGREES = (90, 180, 270)
#: A pixel belongs to the object when some channel is this far below 255.
OBJECT_THRESHOLD = 30
MAX_PER_GROCERY_CLASS = 3

# ---------------------------------------------------------------------------------------
# transforms: pure functions of a PIL image (and a random.Random where they draw)


def centre_crop(im: Image.Image, aspect: float) -> Image.Image:
    """The largest centred box of width / height `aspect`."""
    w, h = im.size
    if w / h > aspect:
        cw, ch = max(1, round(h * aspect)), h
    else:
        cw, ch = w, max(1, round(w / aspect))
    x, y = (w - cw) // 2, (h - ch) // 2
    return im.crop((x, y, x + cw, y + ch))


def square_crop(im: Image.Image) -> Image.Image:
    """The largest centred square."""
    return centre_crop(im, 1.0)


def fit(im: Image.Image, width: int, height: int) -> Image.Image:
    """A CMS thumbnail: centre crop to width:height, then resize to exactly that size."""
    return centre_crop(im, width / height).resize((width, height), Image.Resampling.LANCZOS)


def resize_width(im: Image.Image, width: int) -> Image.Image:
    """Resized to `width` keeping the aspect ratio (up or down)."""
    w, h = im.size
    return im.resize((width, max(1, round(h * width / w))), Image.Resampling.LANCZOS)


def portrait_crop(im: Image.Image, rng: random.Random, aspect: float = PORTRAIT_ASPECT) -> Image.Image:
    """A full-height crop of width / height `aspect` at a random horizontal position."""
    w, h = im.size
    cw = min(w, max(1, round(h * aspect)))
    x = rng.randint(0, w - cw)
    return im.crop((x, 0, x + cw, h))


def crop_area(im: Image.Image, keep: float, rng: random.Random) -> Image.Image:
    """A crop of the same aspect keeping about `keep` of the area, at a random position."""
    w, h = im.size
    s = math.sqrt(keep)
    cw, ch = max(1, round(w * s)), max(1, round(h * s))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    return im.crop((x, y, x + cw, y + ch))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=max(6, size))
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def overlay(im: Image.Image, rng: random.Random) -> Image.Image:
    """A shop badge in one corner (~3% of the area) and a translucent watermark line."""
    base = im.convert("RGBA")
    w, h = base.size
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    bw, bh = max(12, round(w * 0.3)), max(8, round(h * 0.1))
    top = rng.random() < 0.5
    left = rng.random() < 0.5
    m = max(2, round(min(w, h) * 0.03))
    x0 = m if left else w - m - bw
    y0 = m if top else h - m - bh
    colour = rng.choice([(220, 30, 40, 235), (20, 120, 60, 235), (250, 200, 0, 235), (30, 60, 200, 235)])
    d.rounded_rectangle((x0, y0, x0 + bw, y0 + bh), radius=max(1, bh // 3), fill=colour)
    d.text(
        (x0 + bw / 2, y0 + bh / 2),
        rng.choice(["SALE", "-20%", "NEW", "BIO"]),
        fill=(255, 255, 255, 255),
        font=_font(round(bh * 0.6)),
        anchor="mm",
    )
    wy = h * (0.88 if top else 0.12)
    d.text((w / 2, wy), "(c) shop.example", fill=(255, 255, 255, 120), font=_font(round(h * 0.045)), anchor="mm")
    return Image.alpha_composite(base, layer).convert("RGB")


def grayscale(im: Image.Image) -> Image.Image:
    return ImageOps.grayscale(im)


def tint(im: Image.Image, colour: tuple[int, int, int], strength: float = 0.3) -> Image.Image:
    """The whole image blended with a solid colour."""
    rgb = im.convert("RGB")
    return Image.blend(rgb, Image.new("RGB", rgb.size, colour), strength)


def adjust(im: Image.Image, rng: random.Random) -> Image.Image:
    """Mild brightness, contrast and saturation changes (each 8-15% up or down)."""

    def amount() -> float:
        return 1 + rng.choice((-1, 1)) * rng.uniform(0.08, 0.15)

    out = ImageEnhance.Brightness(im.convert("RGB")).enhance(amount())
    out = ImageEnhance.Contrast(out).enhance(amount())
    return ImageEnhance.Color(out).enhance(amount())


def object_mask(rgb: np.ndarray, threshold: int = OBJECT_THRESHOLD) -> np.ndarray:
    """True where an HxWx3 uint8 pixel is not near-white (some channel below 255 - threshold)."""
    return (255 - rgb.astype(np.int16)).max(axis=2) > threshold


def recolour(im: Image.Image, degrees: float, threshold: int = OBJECT_THRESHOLD) -> Image.Image:
    """The object (non-white pixels) with its HSV hue turned by `degrees`; white pixels unchanged."""
    rgb = np.asarray(im.convert("RGB"))
    hsv = np.array(im.convert("RGB").convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(degrees / 360 * 256)) % 256
    turned = np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))
    out = np.where(object_mask(rgb, threshold)[..., None], turned, rgb)
    return Image.fromarray(out.astype(np.uint8), "RGB")


#: A rendition: variant name -> (image, format, quality).
Rendition = tuple[Image.Image, str, int]


def renditions(im: Image.Image, rng: random.Random) -> dict[str, Rendition]:
    """Every duplicate rendition of an RGB photo except ``original``, in a fixed order."""
    q = JPEG_QUALITY
    out: dict[str, Rendition] = {
        "thumb150": (fit(im, 150, 150), "JPEG", q),
        "square300": (fit(im, 300, 300), "JPEG", q),
        "crop330x413": (fit(im, 330, 413), "JPEG", q),
        "w768": (resize_width(im, 768), "JPEG", q),
        "w1024": (resize_width(im, 1024), "JPEG", q),
        "webp": (im, "WEBP", 80),
        "q60": (im, "JPEG", 60),
    }
    for keep in (50, 70, 90):
        out[f"crop{keep}"] = (crop_area(im, keep / 100, rng), "JPEG", q)
    out["overlay"] = (overlay(im, rng), "JPEG", q)
    out["gray"] = (grayscale(im), "JPEG", q)
    colour = rng.choice([(112, 66, 20), (255, 160, 60), (40, 90, 200), (200, 40, 120), (30, 140, 90)])
    out["tint"] = (tint(im, colour), "JPEG", q)
    out["adjust"] = (adjust(im, rng), "JPEG", q)
    return out


def encode(im: Image.Image, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# sources


@dataclass
class Negative:
    variant: str  # burst | ukbench-view
    path: Path
    rel: str
    group: str


@dataclass
class Source:
    category: str  # a CATEGORY_SHARES key, or "iconic"
    path: Path
    rel: str  # path relative to SHARED_DATA_DIR: the "source" column
    group: str
    portrait_crop: bool = False
    negatives: list[Negative] = field(default_factory=list)
    split: str = ""


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _counts(n: int, available: dict[str, int]) -> dict[str, int]:
    """n sources over the categories by CATEGORY_SHARES (largest remainders), capped by `available`."""
    raw = {c: n * s / sum(CATEGORY_SHARES.values()) for c, s in CATEGORY_SHARES.items()}
    counts = {c: math.floor(x) for c, x in raw.items()}
    for c in sorted(raw, key=lambda c: counts[c] - raw[c])[: n - sum(counts.values())]:
        counts[c] += 1
    return {c: min(k, available.get(c, 0)) for c, k in counts.items()}


def select_sources(data: Path, n_sources: int, seed: int) -> list[Source]:
    """The duplicate sources with their hard negatives, then the iconic shots; split drawn."""
    rng = random.Random(f"sources/{seed}")
    sources: list[Source] = []

    jammy_rows = [r for r in _read_csv(data / "jammy_shop" / "near_dup_groups.csv") if r["variant"] == "original"]
    jammy = sorted(data / "jammy_shop" / r["path"] for r in jammy_rows)

    # Grocery: photos numbered within a class folder; bursts are consecutive numbers.
    grocery_root = data / "grocery_train"
    by_class: dict[Path, dict[int, Path]] = defaultdict(dict)
    for r in _read_csv(grocery_root / "labels.csv"):
        p = grocery_root / r["path"]
        m = re.search(r"_(\d+)$", p.stem)
        if m and p.is_file():
            by_class[p.parent][int(m.group(1))] = p
    shape: dict[Path, str] = {}
    for photos in by_class.values():
        for p in photos.values():
            with Image.open(p) as im:
                w, h = im.size
            shape[p] = "portrait" if h > w else "square" if h == w else "landscape"

    ukb_root = data / "ukbench_0000_0499"
    objects: dict[str, list[Path]] = defaultdict(list)
    for r in _read_csv(ukb_root / "groups.csv"):
        p = ukb_root / "images" / r["filename"]
        if p.is_file():
            objects[r["group_id"]].append(p)
    object_ids = sorted((k for k, v in objects.items() if len(v) >= 2), key=int)

    candidates = {
        "grocery-portrait": sum(1 for s in shape.values() if s == "portrait") // 3,
        "grocery-square": sum(1 for s in shape.values() if s == "square") // 6,
        "ukbench": len(object_ids),
    }
    counts = _counts(
        n_sources,
        {
            "jammy": len(jammy),
            "grocery-portrait": candidates["grocery-portrait"],
            "grocery-portrait-crop": candidates["grocery-square"],
            "grocery-square": candidates["grocery-square"],
            "ukbench-portrait-crop": candidates["ukbench"] // 2,
            "ukbench-landscape": candidates["ukbench"] // 2,
        },
    )

    for p in rng.sample(jammy, counts["jammy"]):
        sources.append(Source("jammy", p, _rel(p, data), f"shop-{p.parent.name}"))

    used: set[Path] = set()
    per_class: Counter[Path] = Counter()
    pool = sorted((cls, n) for cls, photos in by_class.items() for n in photos)
    rng.shuffle(pool)
    for category, want_shape in (
        ("grocery-portrait", "portrait"),
        ("grocery-portrait-crop", "square"),
        ("grocery-square", "square"),
    ):
        picked = 0
        for cls, n in pool:
            if picked >= counts[category]:
                break
            photos = by_class[cls]
            trio = [photos.get(k) for k in (n - 1, n, n + 1)]
            burst = [t for t in trio if t is not None]
            photo = photos[n]
            if (
                len(burst) < 3
                or shape[photo] != want_shape
                or any(t in used for t in burst)
                or per_class[cls] >= MAX_PER_GROCERY_CLASS
            ):
                continue
            used.update(burst)
            per_class[cls] += 1
            picked += 1
            group = f"gro-{cls.name}-{n:03d}"
            src = Source(category, photo, _rel(photo, data), group, portrait_crop=category.endswith("-crop"))
            for k in (n - 1, n + 1):
                q = photos[k]
                src.negatives.append(Negative("burst", q, _rel(q, data), f"{group}~burst{k:03d}"))
            sources.append(src)

    chosen = rng.sample(object_ids, counts["ukbench-portrait-crop"] + counts["ukbench-landscape"])
    for k, obj in enumerate(chosen):
        category = "ukbench-portrait-crop" if k < counts["ukbench-portrait-crop"] else "ukbench-landscape"
        views = sorted(objects[obj])
        p = rng.choice(views)
        group = f"ukb-{int(obj):03d}"
        src = Source(category, p, _rel(p, data), group, portrait_crop=category.endswith("-crop"))
        for i, q in enumerate(views):
            if q != p:
                src.negatives.append(Negative("ukbench-view", q, _rel(q, data), f"{group}~view{i}"))
        sources.append(src)

    iconic_root = data / "grocery_iconic"
    for r in _read_csv(iconic_root / "labels.csv"):
        p = iconic_root / r["path"]
        if p.is_file():
            sources.append(Source("iconic", p, _rel(p, data), f"iconic~{r['fine_label']}"))

    # A seeded half of each category is the fit half.
    by_category: dict[str, list[Source]] = defaultdict(list)
    for s in sources:
        by_category[s.category].append(s)
    for category, members in sorted(by_category.items()):
        order = sorted(members, key=lambda s: s.group)
        random.Random(f"split/{seed}/{category}").shuffle(order)
        for k, s in enumerate(order):
            s.split = SPLITS[k % 2]
    return sources


# ---------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class Task:
    source: Source
    out: Path
    seed: int


Row = tuple[str, str, str, str, str, str]


def render(task: Task) -> list[Row]:
    """Write one source's files; its labels rows."""
    src, out = task.source, task.out
    rng = random.Random(f"render/{task.seed}/{src.group}")
    folder = out / src.group
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []

    def write(name: str, data: bytes, variant: str, kind: str, group: str, rel: str) -> None:
        path = folder / name
        path.write_bytes(data)
        rows.append((_rel(path, out), rel, group, variant, kind, src.split))

    original = src.path.read_bytes()
    if src.category == "iconic":
        write("iconic" + src.path.suffix.lower(), original, "iconic", "negative", src.group, src.rel)
        with Image.open(src.path) as im:
            rgb = im.convert("RGB")
        for deg in RECOLOUR_DEGREES:
            name = f"recolour-hue{deg}"
            write(f"{name}.jpg", encode(recolour(rgb, deg), "JPEG", 92), name, "recolour", src.group, src.rel)
        return rows

    with Image.open(src.path) as im:
        rgb = im.convert("RGB")
    if src.portrait_crop:
        rgb = portrait_crop(rgb, rng)
        original = encode(rgb, "JPEG", 92)
    write("original.jpg", original, "original", "duplicate", src.group, src.rel)
    for variant, (im2, fmt, quality) in renditions(rgb, rng).items():
        ext = ".webp" if fmt == "WEBP" else ".jpg"
        write(variant + ext, encode(im2, fmt, quality), variant, "duplicate", src.group, src.rel)
    for neg in src.negatives:
        name = f"{neg.variant}-{neg.path.stem}{neg.path.suffix.lower()}"
        write(name, neg.path.read_bytes(), neg.variant, "negative", neg.group, neg.rel)
    return rows


def build(data: Path, out: Path, *, seed: int = 0, n_sources: int = 160, workers: int = 2) -> list[Row]:
    """Write the bench into `out` (which must not exist or be empty); its labels rows, sorted."""
    sources = select_sources(data, n_sources, seed)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [Task(s, out, seed) for s in sources]
    run: Callable[[Task], list[Row]] = render
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(run, tasks, chunksize=4))
    else:
        parts = [run(t) for t in tasks]
    rows = sorted(r for part in parts for r in part)
    with open(out / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        w.writerows(rows)
    return rows


def composition(rows: list[Row]) -> dict[str, dict[str, int]]:
    """Files per kind, per variant and per split; and the duplicate sources per split."""
    return {
        "kind": dict(sorted(Counter(r[4] for r in rows).items())),
        "variant": dict(sorted(Counter(r[3] for r in rows).items())),
        "split": dict(sorted(Counter(r[5] for r in rows).items())),
        "sources": dict(sorted(Counter(r[5] for r in rows if r[3] == "original").items())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path, help="the shared data folder (../shared/data)")
    ap.add_argument("out", type=Path, help="the bench folder to write (outside the repository)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sources", type=int, default=160, help="duplicate sources (default 160)")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--force", action="store_true", help="replace an existing bench in OUT")
    args = ap.parse_args(argv)
    data, out = args.data.resolve(), args.out.resolve()
    repo = Path(__file__).resolve().parents[1]
    for root, what in ((repo, "the repository"), (data, "the shared data")):
        if out == root or root in out.parents:
            ap.error(f"{out} is inside {what}; write the bench elsewhere (e.g. /tmp/dupes-bench)")
    if not (data / "jammy_shop").is_dir():
        ap.error(f"{data} has no jammy_shop/: give the shared data folder")
    if out.exists() and any(out.iterdir()):
        if not args.force or not (out / "labels.csv").is_file():
            ap.error(f"{out} is not empty (--force replaces a bench built before, one with labels.csv)")
        shutil.rmtree(out)
    t0 = time.perf_counter()
    rows = build(data, out, seed=args.seed, n_sources=args.sources, workers=max(1, args.workers))
    comp = composition(rows)
    print(f"wrote {len(rows)} files and {out / 'labels.csv'} in {time.perf_counter() - t0:.1f} s")
    for key, counts in comp.items():
        print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
