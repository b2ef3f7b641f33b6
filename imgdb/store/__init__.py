"""The store: image bytes on disk, metadata in DuckDB, vectors in LanceDB, one image id.

``Store`` (``store.py``) is the only code that opens the files; ``schema.py`` owns every
table and view and migrates older stores; ``sql.py`` runs users' read-only SQL.
"""

from imgdb.store.store import ImageInfo, NewImage, SourceRow, Store, site_of, utcnow

__all__ = ["ImageInfo", "NewImage", "SourceRow", "Store", "site_of", "utcnow"]
