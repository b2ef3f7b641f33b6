"""What dupes' per-image hashes cost at ingest, and how close they are to plain imagehash.

    python scripts/bench_hashes.py --folder PATH [--limit 800] [--large 100] [--repeats 5]
        [--out bench-results/hashes.json]

On the JPEGs under ``--folder`` (sorted, at most ``--limit``) and on ``--large`` of them
upscaled to 1600x1200 (LANCZOS, saved at quality 90, in a temp folder: a camera-sized
file), one thread, CPU time per image (median of ``--repeats`` passes):

* ``decode + preprocess``: what an ingest worker does anyway (``decode`` at the bundled
  model's target, which is ``HASH_TARGET``, then ``spec.preprocess``);
* ``hash_image``: what ingest adds (``imaging.hashes.hash_image`` on that decode);
* ``before``: what the first ``dupes`` paid per image before ingest hashed (a full-size
  decode, then plain imagehash on its luminance: pHash, dHash, centre-square pHash, and
  the pixel sha256).

Agreement: Hamming distance between ``hash_image``'s hashes and plain imagehash on the
full-size decode (the previous definition), per hash: mean bits, share identical, p99, max.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imagehash
import numpy as np
from PIL import Image

from imgdb.eval.tables import render
from imgdb.imaging.decode import decode
from imgdb.imaging.hashes import HASH_TARGET, HASHER, bits_to_int, hamming, hash_image
from imgdb.imaging.model import ModelSpec


def reference_hashes(image: Image.Image) -> tuple[int, int, int, str]:
    """The previous definition: plain imagehash on the full-size decode's luminance."""
    w, h = image.size
    digest = hashlib.sha256(f"{w}x{h}:RGB:".encode())
    digest.update(image.tobytes())
    gray = image.convert("L")
    side = min(w, h)
    center = gray.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    return (
        bits_to_int(imagehash.phash(gray).hash),
        bits_to_int(imagehash.dhash(gray).hash),
        bits_to_int(imagehash.phash(center).hash),
        digest.hexdigest(),
    )


def cpu_ms(fn: Callable[[Any], Any], items: list[Any], repeats: int) -> float:
    """Median CPU milliseconds per item of ``fn`` over ``repeats`` passes."""
    runs = []
    for _ in range(repeats):
        start = time.process_time()
        for item in items:
            fn(item)
        runs.append((time.process_time() - start) / len(items) * 1000)
    return statistics.median(runs)


def measure(name: str, blobs: list[bytes], spec: ModelSpec, repeats: int) -> dict[str, Any]:
    decoded = [decode(b, target=HASH_TARGET) for b in blobs]
    full = [decode(b).image for b in blobs]
    hash_image(decoded[0].image)  # warm up: imagehash imports scipy on first use
    result: dict[str, Any] = {
        "set": name,
        "images": len(blobs),
        "decoded_size": f"{decoded[0].image.size[0]}x{decoded[0].image.size[1]}",
        "decode_preprocess_ms": cpu_ms(lambda b: spec.preprocess(decode(b, target=HASH_TARGET).image), blobs, repeats),
        "hash_image_ms": cpu_ms(lambda d: hash_image(d.image, d.alpha), decoded, repeats),
        "before_ms": cpu_ms(lambda b: reference_hashes(decode(b).image), blobs, repeats),
    }
    bits = np.array(
        [
            [hamming(a, b or 0) for a, b in zip(ref[:3], (h.phash, h.dhash, h.square_phash))]
            for ref, h in zip(map(reference_hashes, full), (hash_image(d.image, d.alpha) for d in decoded))
        ]
    )
    for i, hash_name in enumerate(("phash", "dhash", "square")):
        result[hash_name] = {
            "mean_bits": round(float(bits[:, i].mean()), 3),
            "identical": round(float((bits[:, i] == 0).mean()), 3),
            "p99": round(float(np.percentile(bits[:, i], 99)), 1),
            "max": int(bits[:, i].max()),
        }
    return result


def large_copies(paths: list[Path], folder: Path) -> list[bytes]:
    out = []
    for i, path in enumerate(paths):
        img = decode(path.read_bytes()).image.resize((1600, 1200), Image.Resampling.LANCZOS)
        target = folder / f"{i:04d}.jpg"
        img.save(target, "JPEG", quality=90)
        out.append(target.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=800)
    ap.add_argument("--large", type=int, default=100, help="how many to upscale to 1600x1200 (0: none)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("bench-results/hashes.json"))
    args = ap.parse_args(argv)

    spec = ModelSpec.load()
    if spec.decode_target != HASH_TARGET:
        print(f"note: the model decodes at {spec.decode_target}, the hashes at {HASH_TARGET}", file=sys.stderr)
    paths = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[: args.limit]
    results = [measure(args.folder.name, [p.read_bytes() for p in paths], spec, args.repeats)]
    if args.large:
        with tempfile.TemporaryDirectory() as tmp:
            blobs = large_copies(paths[: args.large], Path(tmp))
            results.append(measure(f"{args.folder.name} at 1600x1200", blobs, spec, args.repeats))

    rows = [
        [
            r["set"],
            r["images"],
            r["decoded_size"],
            f"{r['decode_preprocess_ms']:.3f}",
            f"{r['hash_image_ms']:.3f}",
            f"{r['hash_image_ms'] / r['decode_preprocess_ms']:.0%}",
            f"{r['before_ms']:.3f}",
        ]
        for r in results
    ]
    cost = render(
        f"per-image CPU ms, one thread, median of {args.repeats} ({HASHER})",
        ["images", "n", "decoded", "decode+preprocess", "hash_image", "share", "before (full decode + imagehash)"],
        rows,
    )
    agree_rows = [
        [r["set"], h, r[h]["mean_bits"], f"{r[h]['identical']:.1%}", r[h]["p99"], r[h]["max"]]
        for r in results
        for h in ("phash", "dhash", "square")
    ]
    agree = render(
        "bits that differ from plain imagehash on the full-size decode",
        ["images", "hash", "mean", "identical", "p99", "max"],
        agree_rows,
    )
    text = f"{cost}\n\n{agree}\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"hasher": HASHER, "results": results}, indent=2))
    args.out.with_suffix(".txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
