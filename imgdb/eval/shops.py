"""A shop of generated images on paginated listing pages, for the Ray tests and benches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_listing_shop(root: Path, n: int, per_page: int = 100) -> None:
    """``n`` distinct small JPEGs under ``root/img`` on listing pages ``root/list/1.html``,
    ``2.html``, ... (``per_page`` images each, a ``rel="next"`` link to the next page)."""
    rng = np.random.default_rng(10)
    (root / "img").mkdir(parents=True)
    (root / "list").mkdir()
    pages = -(-n // per_page)
    for page in range(pages):
        tags = []
        for i in range(page * per_page, min(n, (page + 1) * per_page)):
            colours = (rng.random((4, 4, 3)) * 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(colours).resize((128, 96), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=85)
            (root / "img" / f"{i}.jpg").write_bytes(buf.getvalue())
            tags.append(f'<img src="/img/{i}.jpg" alt="item {i}">')
        more = f'<a rel="next" href="/list/{page + 2}.html">Next</a>' if page + 1 < pages else ""
        (root / "list" / f"{page + 1}.html").write_text(f"<html><body>{''.join(tags)}{more}</body></html>")
