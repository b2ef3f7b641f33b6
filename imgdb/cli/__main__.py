"""``python -m imgdb.cli``: the same as the ``imgdb`` command."""

from imgdb.cli import main

main()
