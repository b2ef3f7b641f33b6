"""``imgdb demo``: a generated web shop on 127.0.0.1, crawled into a fresh store.

Every file of the shop (HTML, CSS, robots.txt and all product pictures) is generated
from a seed with numpy/Pillow. There is no third-party content (no downloaded, copied or
traced images or text); the output is covered by the project's license (Apache-2.0).

:mod:`~imgdb.demo.pictures` draws the pictures, :mod:`~imgdb.demo.site` writes the shop
(:func:`build_site`) and :mod:`~imgdb.demo.server` serves it (:func:`serve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgdb.demo.server import serve
from imgdb.demo.site import HOST_TOKEN, SiteInfo, build_site

__all__ = ["DEMO_DB", "DEMO_MARKER", "HOST_TOKEN", "SiteInfo", "build_site", "run", "serve"]

#: File that marks a store as created by :func:`run`, so the next run may replace it.
DEMO_MARKER = ".imgdb-demo"
#: Where ``imgdb demo`` builds its store unless told otherwise (relative to the working folder).
DEMO_DB = Path("imgdb-demo")


def run(db: Path, *, progress: Any = None) -> tuple[Any, dict[str, Any], str]:
    """Build the shop, serve it, ingest it with ``--depth 1`` into a fresh store at ``db``.

    Returns (ingest summary, store info, listing URL). ``db`` is recreated only when it is
    missing or an earlier demo store, so a real collection is never overwritten.
    """
    import shutil
    import tempfile

    import imgdb
    from imgdb.acquire.ingest import IngestOptions
    from imgdb.errors import UsageError

    db = Path(db)
    if db.exists():
        if not (db / DEMO_MARKER).exists():
            raise UsageError(f"{db} exists and is not a demo store; pass another --db")
        shutil.rmtree(db)
    db.mkdir(parents=True)
    (db / DEMO_MARKER).write_text("created by `imgdb demo`; deleted by the next demo run\n")
    with tempfile.TemporaryDirectory(prefix="imgdb-demo-site-") as site_dir:
        site = build_site(Path(site_dir))
        with serve(Path(site_dir)) as base:
            url = base + site.listing_url
            with imgdb.open(db, "w") as images:
                summary = images.ingest([url], options=IngestOptions(depth=1), progress=progress)
    with imgdb.open(db) as images:
        return summary, images.info(), url
