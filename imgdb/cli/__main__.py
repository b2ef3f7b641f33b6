"""``python -m imgdb.cli``: the same as the ``imgdb`` command."""

from imgdb.cli.app import app

app(prog_name="imgdb")
