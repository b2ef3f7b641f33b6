"""``imgdb serve``: a local web app over one store (Starlette + Jinja2, served by uvicorn).

Pages: the collection (thumbnail grid, paging, filters in the ``--where`` language), an
image (its sources and nearest neighbours), search by an uploaded or pasted image or URL,
clustering runs and their clusters, the duplicates review (with "not a duplicate", which
records the same decision as ``imgdb dupes reject``) and a read-only SQL box.

``app.Library`` holds one read-only ``Collection`` for the app's life (the model and the
vectors tables are loaded once) and lets go of the store whenever a writer runs
(``Store.pause``), so an ingest in another process is never held up and its images show
up once committed. Decisions open a short-lived writer ``Collection``.

Safe by default: 127.0.0.1, images and thumbnails addressed only by their sha256 id,
uploads capped in bytes and pixels and decoded by ``imaging.decode``, everything from
the web HTML-escaped (and a Content-Security-Policy without inline scripts), POSTs only
from the app's own pages.
"""

from imgdb.serve.app import DEFAULT_PORT, Library, create_app, is_loopback, run

__all__ = ["DEFAULT_PORT", "Library", "create_app", "is_loopback", "run"]
