"""imgdb: a local, searchable, deduplicated, clustered image collection."""

__version__ = "0.1.0"
