"""The ``imgdb`` command line (Typer + rich); ``app`` is the entry point."""

from imgdb.cli.app import app

__all__ = ["app"]
