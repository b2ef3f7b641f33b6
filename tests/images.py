"""Real image bytes for the test suite, generated from code.

Every picture here is drawn with numpy/Pillow from a seed, so tests get genuine JPEG,
PNG, WebP, GIF, ... files (and a few deliberately broken ones) without shipping or
downloading any third-party image. All functions are pure and deterministic: the same
arguments give the same pixels (and, for a given Pillow build, the same bytes).

    photo(seed)               photo-like RGB picture, clearly different per seed
    family(fid, member)       members of 6 visually separated families (clustering)
    jpeg_bytes(img) ...       encoders for the common formats and odd modes
    truncated_jpeg_bytes ...  broken inputs: truncated, decompression bomb, HTML, SVG
    variants(img)             near-duplicates of one picture (re-encode, resize, crop, gray)
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from imgdb.demo.pictures import hsv_to_rgb, shade_rgb  # one colour helper for demo and tests

Size = tuple[int, int]

# ---------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    """A generator seeded from a tuple of ints, so (family, member) pairs never collide."""
    return np.random.default_rng([abs(int(k)) for k in key] + [len(key)])


def _smooth_field(rng: np.random.Generator, size: Size, cells: int, channels: int = 3) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a tiny random grid upscaled bicubically."""
    w, h = size
    gw, gh = max(2, cells), max(2, round(cells * h / w))
    out = np.empty((h, w, channels), dtype=np.float32)
    for c in range(channels):
        small = Image.fromarray((rng.random((gh, gw)) * 255).astype(np.uint8), "L")
        out[..., c] = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    return out


def _palette(rng: np.random.Generator, n: int) -> list[tuple[int, int, int]]:
    """n colours around a seed-chosen hue scheme, so each seed gets its own mood."""
    base = rng.random()
    spread = rng.uniform(0.08, 0.5)  # narrow = analogous palette, wide = contrasting
    cols = []
    for i in range(n):
        hue = (base + spread * (i - n / 2) / n + rng.normal(0, 0.03)) % 1.0
        sat = rng.uniform(0.45, 1.0)
        val = rng.uniform(0.35, 1.0)
        cols.append(hsv_to_rgb(hue, sat, val))
    return cols


def _draw_random_shape(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: Size, colour) -> None:
    """One random ellipse, polygon, stripe band or checker patch."""
    w, h = size
    kind = rng.integers(0, 4)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    r = rng.uniform(0.05, 0.3) * min(w, h)
    if kind == 0:
        rx, ry = r, r * rng.uniform(0.4, 1.6)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
    elif kind == 1:
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = r * rng.uniform(0.5, 1.3, n)
        pts = [(cx + rr * np.cos(a), cy + rr * np.sin(a)) for a, rr in zip(angles, radii)]
        draw.polygon(pts, fill=colour)
    elif kind == 2:
        # A band of parallel stripes: strong oriented texture CNNs pick up on.
        period = rng.uniform(6, 24)
        horizontal = rng.random() < 0.5
        x0, y0, x1, y1 = cx - r * 1.5, cy - r, cx + r * 1.5, cy + r
        k = 0
        pos = y0 if horizontal else x0
        end = y1 if horizontal else x1
        while pos < end:
            if k % 2 == 0:
                box = [x0, pos, x1, pos + period / 2] if horizontal else [pos, y0, pos + period / 2, y1]
                draw.rectangle(box, fill=colour)
            pos += period / 2
            k += 1
    else:
        cell = rng.uniform(8, 28)
        n = int(rng.integers(3, 7))
        for i in range(n):
            for j in range(n):
                if (i + j) % 2 == 0:
                    x, y = cx + (i - n / 2) * cell, cy + (j - n / 2) * cell
                    draw.rectangle([x, y, x + cell, y + cell], fill=colour)


def _gradient(size: Size, c0, c1, angle: float) -> np.ndarray:
    """Linear gradient c0 -> c1 along `angle` (radians), float32 HxWx3."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = ((xx / w - 0.5) * np.cos(angle) + (yy / h - 0.5) * np.sin(angle) + 0.5).clip(0, 1)[..., None]
    return np.asarray(c0, np.float32) * (1 - t) + np.asarray(c1, np.float32) * t


def _scene_collage(rng, size, pal) -> Image.Image:
    """Abstract collage: noisy gradient with ellipses, polygons, stripes and checker patches."""
    bg = _gradient(size, pal[0], pal[1], rng.uniform(0, 2 * np.pi))
    bg *= 0.6 + 0.8 * _smooth_field(rng, size, cells=int(rng.integers(2, 6)))
    img = Image.fromarray(bg.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(7, 14))):
        _draw_random_shape(draw, rng, size, pal[int(rng.integers(0, len(pal)))])
    return img


def _scene_landscape(rng, size, pal) -> Image.Image:
    """Sky, a sun, layered hills from 1-D smooth noise, a few trees."""
    w, h = size
    sky_top = hsv_to_rgb(rng.uniform(0.5, 0.7), rng.uniform(0.3, 0.9), rng.uniform(0.5, 1.0))
    sky = _gradient(size, sky_top, shade_rgb(pal[0], 1.3), np.pi / 2)
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    r = rng.uniform(0.05, 0.12) * w
    sx, sy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.35) * h
    d.ellipse([sx - r, sy - r, sx + r, sy + r], fill=hsv_to_rgb(rng.uniform(0.08, 0.16), 0.6, 1.0))
    layers = int(rng.integers(2, 5))
    for i in range(layers):
        base = h * (0.4 + 0.5 * (i + 1) / (layers + 1))
        ridge = _smooth_field(rng, (w, 1), cells=int(rng.integers(3, 9)), channels=1)[0, :, 0]
        ys = base - ridge * h * rng.uniform(0.1, 0.35)
        pts = [(0, h)] + [(x, float(ys[x])) for x in range(0, w, 4)] + [(w - 1, float(ys[-1])), (w, h)]
        d.polygon(pts, fill=shade_rgb(pal[1 + i % 5], 0.5 + 0.5 * i / layers))
    for _ in range(int(rng.integers(0, 12))):
        x, y = rng.uniform(0, w), rng.uniform(0.7, 1.0) * h
        th = rng.uniform(0.06, 0.16) * h
        d.polygon([(x, y - th), (x - th / 3, y), (x + th / 3, y)], fill=shade_rgb(pal[5], 0.4))
    return img


def _scene_still_life(rng, size, pal) -> Image.Image:
    """A wall, a table edge and shaded spheres/boxes with shadows."""
    w, h = size
    horizon = rng.uniform(0.45, 0.7) * h
    arr = _gradient(size, shade_rgb(pal[0], 0.9), shade_rgb(pal[0], 0.6), rng.uniform(0, np.pi))
    arr[int(horizon) :] = _gradient((w, h - int(horizon)), shade_rgb(pal[1], 0.8), shade_rgb(pal[1], 0.4), np.pi / 2)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    objects = sorted(rng.uniform(0.1, 0.9, int(rng.integers(2, 6))))
    for ox in objects:
        col = pal[2 + int(rng.integers(0, 4))]
        x, base = ox * w, horizon + rng.uniform(0.05, 0.3) * (h - horizon)
        r = rng.uniform(0.06, 0.16) * min(w, h)
        d.ellipse([x - r * 1.2, base - r * 0.15, x + r * 1.4, base + r * 0.25], fill=shade_rgb(pal[1], 0.25))
        if rng.random() < 0.5:
            # Sphere: radial shading towards an upper-left light source.
            cy = base - r
            dist = np.sqrt((xx - x + r * 0.35) ** 2 + (yy - cy + r * 0.35) ** 2) / (r * 1.6)
            mask = ((xx - x) ** 2 + (yy - cy) ** 2) <= r * r
            cur = np.asarray(img, dtype=np.float32)
            shade = (1.25 - dist.clip(0, 1))[..., None] * np.asarray(col, np.float32)
            cur[mask] = shade[mask]
            img = Image.fromarray(cur.clip(0, 255).astype(np.uint8), "RGB")
            d = ImageDraw.Draw(img)
        else:
            bw, bh, dp = r * 1.6, r * rng.uniform(1.2, 2.4), r * 0.4
            d.polygon(
                [
                    (x - bw / 2, base - bh),
                    (x - bw / 2 + dp, base - bh - dp),
                    (x + bw / 2 + dp, base - bh - dp),
                    (x + bw / 2, base - bh),
                ],
                fill=shade_rgb(col, 1.3),
            )
            d.polygon(
                [
                    (x + bw / 2, base),
                    (x + bw / 2, base - bh),
                    (x + bw / 2 + dp, base - bh - dp),
                    (x + bw / 2 + dp, base - dp),
                ],
                fill=shade_rgb(col, 0.6),
            )
            d.rectangle([x - bw / 2, base - bh, x + bw / 2, base], fill=col)
    return img


def _scene_texture(rng, size, pal) -> Image.Image:
    """Close-up material: wood grain, bricks or woven fabric."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    kind = int(rng.integers(0, 3))
    c0 = np.asarray(pal[0], np.float32)
    if kind == 0:
        warp = _smooth_field(rng, size, cells=int(rng.integers(3, 7)), channels=1)[..., 0] * rng.uniform(20, 60)
        cx, cy = rng.uniform(-0.5, 1.5) * w, rng.uniform(-1, 2) * h
        rings = np.sin((np.sqrt((xx - cx) ** 2 * 0.05 + (yy - cy) ** 2) + warp) / rng.uniform(6, 14))
        t = (rings * 0.5 + 0.5)[..., None] ** 2  # sharp dark grain lines on a light board
        return Image.fromarray((c0 * (1 - t) + c0 * 0.35 * t).clip(0, 255).astype(np.uint8), "RGB")
    if kind == 1:
        img = Image.new("RGB", size, shade_rgb(pal[1], 0.8))
        d = ImageDraw.Draw(img)
        bw, bh = rng.uniform(40, 90), rng.uniform(18, 34)
        for j in range(int(h / bh) + 1):
            off = (bw / 2) * (j % 2)
            for i in range(-1, int(w / bw) + 1):
                k = rng.uniform(0.75, 1.15)
                d.rectangle(
                    [i * bw + off + 2, j * bh + 2, (i + 1) * bw + off - 2, (j + 1) * bh - 2], fill=shade_rgb(pal[0], k)
                )
        return img
    # Coarse periods so the weave survives a 2x downscale without aliasing away.
    p1, p2 = rng.uniform(36, 72), rng.uniform(36, 72)
    weave = np.sign(np.sin(xx / p1 * 2 * np.pi)) * np.sin(yy / p2 * 2 * np.pi)
    t = (weave * 0.5 + 0.5)[..., None]
    c2 = np.asarray(shade_rgb(pal[2], 0.35), np.float32)
    return Image.fromarray((c0 * t + c2 * (1 - t)).clip(0, 255).astype(np.uint8), "RGB")


def _scene_city(rng, size, pal) -> Image.Image:
    """Skyline: buildings with window grids against a dusk sky."""
    w, h = size
    sky = _gradient(
        size, hsv_to_rgb(rng.uniform(0.55, 0.75), 0.7, rng.uniform(0.2, 0.6)), shade_rgb(pal[0], 1.2), np.pi / 2
    )
    img = Image.fromarray(sky.clip(0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    x = -rng.uniform(0, 30)
    while x < w:
        bw = rng.uniform(0.06, 0.18) * w
        top = rng.uniform(0.15, 0.7) * h
        col = shade_rgb(pal[1 + int(rng.integers(0, 5))], rng.uniform(0.3, 0.7))
        d.rectangle([x, top, x + bw, h], fill=col)
        lit = hsv_to_rgb(rng.uniform(0.1, 0.18), 0.5, 1.0)
        step_x, step_y = rng.uniform(8, 16), rng.uniform(10, 20)
        wy = top + 6
        while wy < h - 10:
            wx = x + 5
            while wx < x + bw - 8:
                if rng.random() < 0.45:
                    d.rectangle([wx, wy, wx + step_x * 0.5, wy + step_y * 0.5], fill=lit)
                wx += step_x
            wy += step_y
        x += bw + rng.uniform(0, 12)
    return img


_SCENES = (_scene_collage, _scene_landscape, _scene_still_life, _scene_texture, _scene_city)


def photo(seed: int, size: Size = (640, 480)) -> Image.Image:
    """A deterministic, photo-like RGB picture whose content, palette and texture follow seed.

    Consecutive seeds cycle through five scene kinds (collage, landscape, still life,
    material close-up, skyline), and within a kind the layout and palette are random,
    so an ImageNet CNN sees different seeds as different content. A light grain and a
    blur pass make it photo-like while keeping it recognisable after JPEG q60 + half size.
    """
    rng = _rng(seed, 0x9E37)
    pal = _palette(rng, 6)
    img = _SCENES[seed % len(_SCENES)](rng, size, pal)

    # Grain: seed-dependent strength plus a mid-frequency blotch layer, like sensor noise.
    arr = np.asarray(img, dtype=np.float32)
    arr += (_smooth_field(rng, size, cells=int(rng.integers(20, 50))) - 0.5) * rng.uniform(10, 40)
    arr += rng.standard_normal(arr.shape, dtype=np.float32) * rng.uniform(2, 8)
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB")
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.4)))


# Six families, each with its own palette, background and motif; members jitter within it.
FAMILIES = 6


def family(family_id: int, member: int, size: Size = (320, 240)) -> Image.Image:
    """Member `member` of family `family_id` (0..5); families are visually well separated.

    0 red circles on dark · 1 blue stripes on light · 2 green checkerboard ·
    3 yellow triangles on white · 4 magenta concentric rings on grey · 5 white stars on navy.
    Members differ in positions, scales and slight colour jitter only.
    """
    if not 0 <= family_id < FAMILIES:
        raise ValueError(f"family_id must be in 0..{FAMILIES - 1}")
    rng = _rng(family_id, member, 0xFA)
    w, h = size

    def jit(rgb, amount=18):
        return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)

    if family_id == 0:
        img = Image.new("RGB", size, jit((25, 20, 25), 10))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(5, 10))):
            r = rng.uniform(0.06, 0.2) * min(w, h)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            d.ellipse([x - r, y - r, x + r, y + r], fill=jit((220, 30, 30)))
    elif family_id == 1:
        img = Image.new("RGB", size, jit((235, 240, 250), 10))
        d = ImageDraw.Draw(img)
        period = rng.uniform(14, 30)
        phase = rng.uniform(0, period)
        slope = rng.uniform(-0.4, 0.4)  # slightly tilted stripes
        y = -h + phase
        while y < 2 * h:
            d.polygon(
                [(0, y), (w, y + slope * w), (w, y + slope * w + period / 2), (0, y + period / 2)],
                fill=jit((30, 60, 200)),
            )
            y += period
    elif family_id == 2:
        img = Image.new("RGB", size, jit((230, 245, 230), 10))
        d = ImageDraw.Draw(img)
        cell = rng.uniform(16, 34)
        ox, oy = rng.uniform(0, cell), rng.uniform(0, cell)
        green = jit((30, 150, 50))
        for i in range(-1, int(w / cell) + 2):
            for j in range(-1, int(h / cell) + 2):
                if (i + j) % 2 == 0:
                    x, y = ox + i * cell, oy + j * cell
                    d.rectangle([x, y, x + cell - 1, y + cell - 1], fill=green)
    elif family_id == 3:
        img = Image.new("RGB", size, jit((250, 250, 248), 5))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(4, 8))):
            r = rng.uniform(0.1, 0.25) * min(w, h)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            a = rng.uniform(0, 2 * np.pi)
            pts = [(x + r * np.cos(a + k * 2 * np.pi / 3), y + r * np.sin(a + k * 2 * np.pi / 3)) for k in range(3)]
            d.polygon(pts, fill=jit((240, 200, 20)), outline=(120, 100, 10))
    elif family_id == 4:
        img = Image.new("RGB", size, jit((128, 128, 128), 12))
        d = ImageDraw.Draw(img)
        x, y = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        step = rng.uniform(10, 20)
        col = jit((200, 30, 170))
        for k in range(int(max(w, h) / step), 0, -1):
            r = k * step
            d.ellipse([x - r, y - r, x + r, y + r], fill=col if k % 2 else (128, 128, 128))
    else:
        img = Image.new("RGB", size, jit((15, 20, 70), 8))
        d = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(25, 45))):
            r = rng.uniform(2, 9)
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            pts = []
            for k in range(10):  # five-pointed star: alternate outer/inner radius
                rr = r if k % 2 == 0 else r * 0.4
                a = -np.pi / 2 + k * np.pi / 5
                pts.append((x + rr * np.cos(a), y + rr * np.sin(a)))
            d.polygon(pts, fill=jit((250, 250, 235), 5))

    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, 3, (h, w, 3)).astype(np.float32)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "RGB").filter(ImageFilter.GaussianBlur(0.7))


# ---------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------


FAMILY_MEMBERS = 7  # per family in the shared family store: 42 images, embedded in about 2 s


def write_families(folder: Path, members: int = FAMILY_MEMBERS) -> None:
    """``family-F/member-M.jpg`` for every family, as JPEG."""
    for f in range(FAMILIES):
        for m in range(members):
            path = folder / f"family-{f}" / f"member-{m}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(family(f, m)))


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, quality: int = 90, **kw) -> bytes:
    """Baseline JPEG; RGBA/P inputs are flattened to RGB first (JPEG has no alpha)."""
    if img.mode not in ("RGB", "L", "CMYK"):
        img = img.convert("RGB")
    return _save(img, "JPEG", quality=quality, **kw)


def png_bytes(img: Image.Image) -> bytes:
    """Lossless PNG in the image's own mode."""
    return _save(img, "PNG")


def webp_bytes(img: Image.Image, quality: int = 85) -> bytes:
    """Lossy WebP."""
    return _save(img.convert("RGB") if img.mode not in ("RGB", "RGBA") else img, "WEBP", quality=quality)


def gif_bytes(img: Image.Image, frames: int = 3) -> bytes:
    """Animated GIF: frame 0 is `img`, later frames differ strongly (inverted, flipped)."""
    first = img.convert("RGB")
    others = [ImageOps.invert(first), first.transpose(Image.Transpose.ROTATE_180).convert("L").convert("RGB")]
    extra = [others[i % len(others)] for i in range(max(1, frames - 1))]
    return _save(first, "GIF", save_all=True, append_images=extra, duration=200, loop=0)


def bmp_bytes(img: Image.Image) -> bytes:
    """Uncompressed BMP."""
    return _save(img.convert("RGB"), "BMP")


def tiff_bytes(img: Image.Image) -> bytes:
    """LZW-compressed TIFF (keeps test fixtures small)."""
    return _save(img, "TIFF", compression="tiff_lzw")


def png_rgba_bytes(img: Image.Image) -> bytes:
    """RGBA PNG: left quarter fully transparent, a centre band half transparent."""
    rgba = img.convert("RGBA")
    w, h = rgba.size
    alpha = Image.new("L", rgba.size, 255)
    d = ImageDraw.Draw(alpha)
    d.rectangle([0, 0, w // 4 - 1, h - 1], fill=0)
    d.rectangle([w // 4, h // 3, w - 1, 2 * h // 3], fill=128)
    rgba.putalpha(alpha)
    return _save(rgba, "PNG")


def palette_png_bytes(img: Image.Image, colors: int = 64) -> bytes:
    """Mode "P" PNG with an adaptive palette."""
    return _save(img.convert("RGB").quantize(colors=colors), "PNG")


def grayscale_jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """Single-channel (mode "L") JPEG."""
    return _save(img.convert("L"), "JPEG", quality=quality)


def cmyk_jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    """A real four-channel CMYK JPEG (as print workflows produce); Pillow reads it back as "CMYK"."""
    return _save(img.convert("CMYK"), "JPEG", quality=quality)


# What ImageOps.exif_transpose applies for each orientation, and the inverse we must
# store so that applying it gives the original back.
_EXIF_INVERSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # exif_transpose applies ROTATE_270
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,  # exif_transpose applies ROTATE_90
}


def exif_rotated_jpeg_bytes(img: Image.Image, orientation: int = 6, quality: int = 90) -> bytes:
    """JPEG whose pixels are stored rotated/flipped with a matching EXIF Orientation tag.

    ``ImageOps.exif_transpose(Image.open(...))`` restores `img`'s orientation, as a phone
    photo would be shown upright by a viewer.
    """
    if orientation == 1:
        stored = img.convert("RGB")
    elif orientation in _EXIF_INVERSE:
        stored = img.convert("RGB").transpose(_EXIF_INVERSE[orientation])
    else:
        raise ValueError("EXIF orientation must be 1..8")
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    return _save(stored, "JPEG", quality=quality, exif=exif.tobytes())


def truncated_jpeg_bytes(img: Image.Image, keep: float = 0.5) -> bytes:
    """A JPEG cut off part-way through its scan data (no EOI marker)."""
    data = jpeg_bytes(img)
    return data[: int(len(data) * keep)]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def pixel_bomb_png_bytes(width: int = 20000, height: int = 20000) -> bytes:
    """A valid, small 1-bit PNG whose header declares width*height pixels (a decompression bomb).

    The default 400 MP is over 2 x Pillow's default MAX_IMAGE_PIXELS (~89.5 MP), so
    ``Image.open`` raises ``DecompressionBombError``. Rows are streamed through zlib so
    building it never allocates the full bitmap (~50 KB file, well under a second).
    """
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + all-black packed bits
    comp = zlib.compressobj(9)
    chunk_rows = 256
    block = row * chunk_rows
    parts = []
    done = 0
    while done < height:
        n = min(chunk_rows, height - done)
        parts.append(comp.compress(block if n == chunk_rows else row * n))
        done += n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def html_as_image_bytes() -> bytes:
    """An HTML error page, as servers return for a missing image (soft 404)."""
    return (
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>\n"
        b"<body><h1>Not Found</h1><p>The requested image was not found.</p></body></html>\n"
    )


def svg_bytes() -> bytes:
    """A small SVG (vector; Pillow cannot decode it)."""
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n'
        b'<svg xmlns="http://www.w3.org/2000/svg" width="120" height="80" viewBox="0 0 120 80">'
        b'<rect width="120" height="80" fill="#2a9d8f"/><circle cx="60" cy="40" r="25" fill="#e9c46a"/></svg>\n'
    )


# ---------------------------------------------------------------------------
# Near-duplicates
# ---------------------------------------------------------------------------


def variants(img: Image.Image) -> dict[str, bytes]:
    """The original (JPEG q95) and four near-duplicates of it, all as JPEG bytes.

    reencode_q60: same pixels, heavier compression · half_size: downscaled 2x ·
    crop_5pct: 5% trimmed off the width and height (split between opposite edges) ·
    grayscale: colour removed.
    """
    rgb = img.convert("RGB")
    w, h = rgb.size
    dx, dy = round(w * 0.025), round(h * 0.025)
    return {
        "original": jpeg_bytes(rgb, 95),
        "reencode_q60": jpeg_bytes(rgb, 60),
        "half_size": jpeg_bytes(rgb.resize((w // 2, h // 2), Image.Resampling.LANCZOS), 90),
        "crop_5pct": jpeg_bytes(rgb.crop((dx, dy, w - dx, h - dy)), 90),
        "grayscale": grayscale_jpeg_bytes(rgb, 90),
    }
