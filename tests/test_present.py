"""What a hostile web page or file name can put on the screen: plain text, nothing else.

URLs, alt text and file names come from outside. Rich markup in them (``[/x]`` crashed
``similar`` and ``sql`` with MarkupError; ``[red]`` restyled the table) and terminal escape
sequences (ESC reached the terminal raw) must be shown as the characters they are.
"""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import pytest
from rich.console import Console
from typer.testing import CliRunner

from imgdb.cli import app, present
from imgdb.store import NewImage, SourceRow, Store
from tests import images

runner = CliRunner()

ESC = "\x1b"
HOSTILE_URL = "http://shop.example/[/x]/[bold]big[/bold]" + ESC + "[31mred" + ESC + "]0;pwned\x07.png"
HOSTILE_ALT = "[red]alt[/red] " + ESC + "[2J\u202eevil"
HOSTILE_FILE = "/pics/[/]" + ESC + "[1mphoto.png"


def assert_plain(output: str, *fragments: str) -> None:
    """No raw control character reached the output; each fragment is there as plain text."""
    assert ESC not in output and "\x07" not in output and "\u202e" not in output, repr(output)
    flat = "".join(output.split())  # tables fold long cells over lines
    for fragment in fragments:
        assert "".join(fragment.split()) in flat, (fragment, output)


@pytest.fixture
def hostile_db(tmp_path, model):
    """A real store (real model vectors) whose sources carry markup and escape sequences."""
    db = tmp_path / "db"
    with Store.open(db, write=True) as store:
        store.register_model(model.spec)
        new = []
        for n, source in enumerate([HOSTILE_URL, HOSTILE_FILE]):
            data = images.png_bytes(images.photo(700 + n, (64, 48)))
            kind = "url" if n == 0 else "file"
            row = SourceRow(source, kind, page_url="http://shop.example/[/p]" if n == 0 else "", alt=HOSTILE_ALT)
            new.append(NewImage(hashlib.sha256(data).hexdigest(), data, 64, 48, "PNG", [row]))
        vectors = model.embed_images([images.photo(700 + n, (64, 48)) for n in range(2)])
        store.add_images(new, model.spec.key, vectors, run_id=None)
    return db, [im.id for im in new]


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setattr(present.console, "width", 400)
    monkeypatch.setattr(present.err_console, "width", 400)


def test_similar_and_sql_show_markup_and_escapes_as_text(hostile_db, wide):
    db, ids = hostile_db
    for query, shown in (
        (ids[1], "[/x]/[bold]big[/bold]\\x1b[31mred\\x1b]0;pwned\\x07.png"),
        (ids[0], "[/]\\x1b[1mphoto.png"),
    ):
        result = runner.invoke(app, ["similar", query[:12], "--db", str(db)])
        assert result.exit_code == 0, result.output
        assert_plain(result.stdout, shown)
    result = runner.invoke(
        app, ["sql", "SELECT source, alt, page_url FROM sources ORDER BY kind DESC", "--db", str(db)]
    )
    assert result.exit_code == 0, result.output
    assert_plain(result.stdout, "[/x]/[bold]big[/bold]", "[red]alt[/red] \\x1b[2J\\u202eevil", "[/p]")
    # Machine formats keep the data as it is (JSON escapes control characters itself).
    result = runner.invoke(app, ["sql", "SELECT alt FROM sources LIMIT 1", "--db", str(db), "--json"])
    assert '"alt": "[red]alt[/red] \\u001b[2J\\u202eevil"' in result.stdout


def test_messages_quoting_outside_text_are_plain_and_one_line(tmp_path, wide):
    target = str(tmp_path / "[/x]") + ESC + "[2J\nmore"
    result = runner.invoke(app, ["ingest", target, "--db", str(tmp_path / "db")])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert_plain(result.stderr, "imgdb: error:", "[/x]\\x1b[2J\\nmore")


def test_every_table_shows_outside_text_plainly(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(present, "console", Console(file=out, width=400, force_terminal=True))
    member = SimpleNamespace(
        image_id="a" * 64, width=10, height=10, source=HOSTILE_URL, sources=[HOSTILE_URL, "x"], kind=None
    )
    group = SimpleNamespace(group_id=1, size=1, keep_id="a" * 64, members=[member])
    present.dupe_groups(SimpleNamespace(pairs=[], groups=[group], run_id=1, params={}))
    cluster = SimpleNamespace(cluster=0, size=3, medoid="b" * 64, medoid_source=HOSTILE_FILE, top_sites=[("[red]s", 2)])
    present.cluster_show(1, [cluster])
    info = {
        "store": "/data/[/store]",
        "images": 1,
        "sources": 1,
        "pages": 0,
        "runs": 1,
        "failures": 0,
        "sites": [{"site": "[bold]evil" + ESC + "[5m", "images": 1}],
        "formats": {"PNG": 1},
        "models": [{"key": "m", "dim": 8, "vectors": 1}],
        "image_bytes": 1,
        "disk_bytes": 1,
    }
    present.store_info(info)
    summary = SimpleNamespace(
        run_id=1, status="done", seconds=1.0, pages=0, pages_failed=0, images_found=1, downloaded=0, new=1,
        already_stored=0, failed={"[/r]" + ESC + "[0m": 1},
    )  # fmt: skip
    present.ingest_summary(summary)
    text = out.getvalue()
    # force_terminal: rich's own colours are escape sequences; none of the outside text's may be.
    for raw in ("\x1b[31mred", "\x1b]0;pwned", "\x1b[1mphoto", "evil\x1b[5m", "[/r]\x1b[0m", "\x07"):
        assert raw not in text, raw
    for fragment in ("[/x]/[bold]big[/bold]\\x1b[31mred", "[/]\\x1b[1mphoto.png", "[red]s (2)", "/data/[/store]"):
        assert fragment in text, fragment
    assert "[bold]evil\\x1b[5m (1)" in text and "failed: [/r]\\x1b[0m" in text
