"""Synthetic product pictures for the demo shop, drawn with numpy/Pillow from a seed.

Nothing is loaded from disk or the network. :func:`render` draws one product in one view;
:func:`encode` turns a picture into file bytes.
"""

from __future__ import annotations

import functools
import io
import math
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

RGB = tuple[int, int, int]

#: The views :func:`render` can draw.
VIEWS = ("main", "context", "detail")


@functools.lru_cache(maxsize=8)
def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinate grids (cached: every picture of a size reuses them)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return xx, yy


def hsv_to_rgb(h: float, s: float, v: float) -> RGB:
    """The 8-bit RGB colour of hue, saturation and value, each in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def shade_rgb(rgb: RGB, k: float) -> RGB:
    """`rgb` with every channel multiplied by `k`, clamped to 0..255."""
    r, g, b = (int(min(255, max(0, c * k))) for c in rgb)
    return r, g, b


def _backdrop(rng: np.random.Generator, size: tuple[int, int], horizon: float, kind: str) -> Image.Image:
    """Studio sweep, wooden table against a wall, or a dark gradient, as an RGB image."""
    w, h = size
    # Smooth backdrops are computed at 1/4 scale and upsampled; only wood grain needs full resolution.
    sw, sh = max(2, w // 4), max(2, h // 4)
    xx, yy = _grid(sw, sh)
    hz = horizon / 4
    wall_rgb = hsv_to_rgb(rng.random(), rng.uniform(0.08, 0.35), rng.uniform(0.7, 0.95))
    wall = np.asarray(wall_rgb, np.float32)
    if kind == "studio":
        floor = np.asarray(shade_rgb(wall_rgb, 1.12), np.float32)
        t = (1 / (1 + np.exp(-(yy - hz) / (sh * 0.06))))[..., None]  # soft sweep, no hard edge
        out = wall * (1 - t) + floor * t
    elif kind == "table":
        out = np.broadcast_to(wall * 0.9, (sh, sw, 3))
    else:  # "dark"
        c = np.asarray(hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.35)), np.float32)
        out = c * (1.3 - 0.6 * (yy / sh))[..., None]
    # Vignette: real lenses darken the corners.
    r2 = ((xx - sw / 2) / sw) ** 2 + ((yy - sh / 2) / sh) ** 2
    out = out * (1 - 0.5 * r2)[..., None]
    img = Image.fromarray(out.clip(0, 255).astype(np.uint8), "RGB").resize(size, Image.Resampling.BILINEAR)
    if kind == "table":
        # Wood grain only below the table edge.
        top = int(max(0, min(h - 1, horizon)))
        fx, fy = _grid(w, h - top)
        wood = np.asarray(
            hsv_to_rgb(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.45, 0.75)), np.float32
        )
        grain = np.sin((fy + top) / rng.uniform(3, 7) + np.sin(fx / rng.uniform(40, 90)) * 3) * 0.12 + 0.94
        img.paste(Image.fromarray((wood * grain[..., None]).clip(0, 255).astype(np.uint8), "RGB"), (0, top))
    return img


def _draw_object(
    category: str,
    body: ImageDraw.ImageDraw,
    detail: ImageDraw.ImageDraw,
    cx: float,
    by: float,
    s: float,
    colour: tuple[int, int, int],
    rng: np.random.Generator,
) -> float:
    """Draw the product: its silhouette on `body` (a mask), trims on `detail`; return half-width."""
    dark = shade_rgb(colour, 0.45)
    if category == "Mugs":
        body.rounded_rectangle([cx - 0.4 * s, by - s, cx + 0.4 * s, by], radius=0.1 * s, fill=255)
        detail.ellipse(
            [cx + 0.28 * s, by - 0.82 * s, cx + 0.68 * s, by - 0.28 * s],
            outline=(*shade_rgb(colour, 0.8), 255),
            width=int(0.09 * s),
        )
        detail.ellipse([cx - 0.4 * s, by - s - 0.07 * s, cx + 0.4 * s, by - s + 0.07 * s], fill=(*dark, 255))
        return 0.4 * s
    if category == "Scarves":
        pts_top, pts_bot = [], []
        phase, amp = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.2) * s
        for k in range(41):
            x = cx - 0.95 * s + 1.9 * s * k / 40
            y = by - 0.35 * s + amp * math.sin(phase + k / 40 * 2 * np.pi * 1.3)
            pts_top.append((x, y - 0.17 * s))
            pts_bot.append((x, y + 0.17 * s))
        body.polygon(pts_top + pts_bot[::-1], fill=255)
        for (x0, y0), (_x1, y1) in ((pts_top[0], pts_bot[0]), (pts_top[-1], pts_bot[-1])):
            sign = -1 if x0 < cx else 1
            for j in range(9):  # fringe
                y = y0 + (y1 - y0) * j / 8
                detail.line(
                    [(x0, y), (x0 + sign * 0.12 * s, y + 0.03 * s)], fill=(*dark, 255), width=max(2, int(s * 0.015))
                )
        return 0.95 * s
    # Shapes vary by picture: plain products drawn as one shape in other colours were
    # pixel for pixel a recoloured copy of each other, and dupes rightly joined them.
    if category == "Lamps":
        top, bottom = rng.uniform(0.18, 0.3) * s, rng.uniform(0.38, 0.52) * s
        body.polygon(
            [(cx - top, by - s), (cx + top, by - s), (cx + bottom, by - 0.55 * s), (cx - bottom, by - 0.55 * s)],
            fill=255,
        )
        metal = (70, 70, 75, 255)
        detail.rectangle([cx - 0.03 * s, by - 0.55 * s, cx + 0.03 * s, by - 0.06 * s], fill=metal)
        detail.ellipse([cx - 0.25 * s, by - 0.09 * s, cx + 0.25 * s, by + 0.02 * s], fill=metal)
        return bottom
    if category == "Planters":
        body.polygon(
            [(cx - 0.32 * s, by - 0.48 * s), (cx + 0.32 * s, by - 0.48 * s), (cx + 0.23 * s, by), (cx - 0.23 * s, by)],
            fill=255,
        )
        for _ in range(int(rng.integers(5, 9))):  # leaves fanning out of the pot
            a = rng.uniform(-2.4, -0.7)
            ln = rng.uniform(0.35, 0.6) * s
            x0, y0 = cx + rng.uniform(-0.1, 0.1) * s, by - 0.48 * s
            x1, y1 = x0 + ln * math.cos(a), y0 + ln * math.sin(a)
            nx, ny = -math.sin(a) * 0.09 * s, math.cos(a) * 0.09 * s
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            green = hsv_to_rgb(rng.uniform(0.25, 0.38), rng.uniform(0.5, 0.8), rng.uniform(0.35, 0.7))
            detail.polygon([(x0, y0), (mx + nx, my + ny), (x1, y1), (mx - nx, my - ny)], fill=(*green, 255))
        return 0.32 * s
    if category == "Bags":
        top, bottom, height = rng.uniform(0.28, 0.4) * s, rng.uniform(0.4, 0.5) * s, rng.uniform(0.6, 0.82) * s
        gap, loop, reach = rng.uniform(0.12, 0.22) * s, rng.uniform(0.08, 0.13) * s, rng.uniform(0.2, 0.32) * s
        body.polygon([(cx - top, by - height), (cx + top, by - height), (cx + bottom, by), (cx - bottom, by)], fill=255)
        for off in (-gap, gap):
            detail.arc(
                [cx + off - loop, by - height - reach, cx + off + loop, by - height + reach],
                180,
                360,
                fill=(*dark, 255),
                width=max(3, int(0.035 * s)),
            )
        return bottom
    # Clocks: the pattern goes on the rim, the face stays readable.
    r = 0.46 * s
    cy = by - r
    body.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    fr = 0.8 * r
    detail.ellipse([cx - fr, cy - fr, cx + fr, cy + fr], fill=(245, 242, 232, 255))
    for k in range(12):
        a = k * np.pi / 6
        detail.line(
            [
                (cx + 0.85 * fr * math.cos(a), cy + 0.85 * fr * math.sin(a)),
                (cx + 0.97 * fr * math.cos(a), cy + 0.97 * fr * math.sin(a)),
            ],
            fill=(30, 30, 30, 255),
            width=max(2, int(s * 0.015)),
        )
    for length, ang, width in ((0.5, rng.uniform(0, 2 * np.pi), 0.035), (0.8, rng.uniform(0, 2 * np.pi), 0.02)):
        detail.line(
            [(cx, cy), (cx + length * fr * math.cos(ang), cy + length * fr * math.sin(ang))],
            fill=(20, 20, 20, 255),
            width=max(2, int(s * width)),
        )
    return r


def _pattern_mask(pattern: str, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the product's pattern at pixel coordinates xx, yy (None for plain)."""
    if pattern == "plain":
        return None
    p = rng.uniform(16, 30)
    if pattern == "striped":
        a = rng.uniform(0, np.pi)
        return ((xx * np.cos(a) + yy * np.sin(a)) // (p / 2)) % 2 == 0
    if pattern == "dotted":
        return ((xx % p - p / 2) ** 2 + (yy % p - p / 2) ** 2) < (p * 0.28) ** 2
    return ((xx // p + yy // p) % 2) == 0  # checked


@functools.lru_cache(maxsize=1)
def _grain_tile() -> Image.Image:
    """Gaussian sensor grain centred on 8 (so ImageChops.add(..., offset=-8) applies it).

    One fixed-seed tile per process; each picture uses a crop at a random offset.
    """
    noise = np.random.default_rng(0x6A).standard_normal((900, 1200, 3), dtype=np.float32) * 2.5 + 8
    return Image.fromarray(noise.clip(0, 16).astype(np.uint8), "RGB")


def _grain(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    tile = _grain_tile()
    w, h = size
    x, y = int(rng.integers(0, tile.width - w + 1)), int(rng.integers(0, tile.height - h + 1))
    return tile.crop((x, y, x + w, y + h))


def render(category: str, colour: RGB, pattern: str, *, seed: int, view: str, size: tuple[int, int]) -> Image.Image:
    """One RGB picture of a product, `size` = (width, height), at most 1200 x 900.

    `category` is one of the shop's categories ("Mugs", "Scarves", "Lamps", "Planters",
    "Bags"; anything else draws a clock), `pattern` is "plain", "striped", "dotted" or
    "checked", and `view` (one of :data:`VIEWS`) is "main" (studio), "context" (on a table)
    or "detail" (close-up). The same arguments always give the same pixels.
    """
    rng = np.random.default_rng([seed, VIEWS.index(view)])
    w, h = size
    if view == "main":
        s, cx, by, kind = rng.uniform(0.48, 0.62) * h, rng.uniform(0.4, 0.6) * w, rng.uniform(0.78, 0.88) * h, "studio"
    elif view == "context":
        s, cx, by, kind = rng.uniform(0.3, 0.38) * h, rng.uniform(0.25, 0.75) * w, rng.uniform(0.8, 0.9) * h, "table"
    else:
        s, cx, by, kind = rng.uniform(1.0, 1.3) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(1.05, 1.25) * h, "dark"
    img = _backdrop(rng, size, horizon=by - 0.15 * s, kind=kind)

    mask = Image.new("L", size, 0)
    detail = Image.new("RGBA", size, (0, 0, 0, 0))
    half = _draw_object(category, ImageDraw.Draw(mask), ImageDraw.Draw(detail), cx, by, s, colour, rng)

    # Soft contact shadow: blend towards a darker copy through a blurred ellipse.
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse([cx - half * 1.15, by - 0.05 * s, cx + half * 1.25, by + 0.07 * s], fill=255)
    shadow = shadow.filter(ImageFilter.BoxBlur(max(2, int(0.04 * s))))
    img = Image.composite(img.point(lambda v: int(v * 0.55)), img, shadow)

    # Props beside the product, so no two product shots share a layout.
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3)) if view != "detail" else 0):
        pr = rng.uniform(0.05, 0.12) * s
        px = cx + float(rng.choice([-1, 1])) * rng.uniform(0.7, 1.3) * s
        py = by - rng.uniform(0, 0.1) * s
        draw.ellipse(
            [px - pr, py - 2 * pr, px + pr, py],
            fill=hsv_to_rgb(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.4, 0.9)),
        )

    # Body: flat colour + pattern, lit from the left like a studio softbox; only its bbox is computed.
    box = mask.getbbox()
    if box:
        x0, y0, x1, y1 = box
        xx, yy = _grid(x1 - x0, y1 - y0)
        body = np.empty((y1 - y0, x1 - x0, 3), np.float32)
        body[:] = colour
        pm = _pattern_mask(pattern, rng, xx + x0, yy + y0)
        if pm is not None:
            body[pm] = (235, 230, 215) if sum(colour) < 400 else (40, 40, 50)
        body *= np.clip(1.2 - 0.55 * (xx + x0 - (cx - half)) / (2 * half), 0.6, 1.25)[..., None]
        img.paste(Image.fromarray(body.clip(0, 255).astype(np.uint8), "RGB"), box, mask.crop(box))

    img = img.convert("RGBA")
    img.alpha_composite(detail)
    img = ImageChops.add(img.convert("RGB"), _grain(rng, size), offset=-8)
    return img.filter(ImageFilter.GaussianBlur(0.7))


def encode(img: Image.Image, fmt: str, **options: Any) -> bytes:
    """`img` saved in Pillow format `fmt` (e.g. "JPEG") with save `options`, as bytes."""
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()
