"""A store in trouble says so in one line: read-only, disk full, damaged files, bad paths and URLs.

Each case was a traceback before. Hostile stores are made here: a garbage or truncated
DuckDB file, a deleted Lance data file, a store nobody may write (``chattr +i`` when run as
root, where ``chmod`` does not stop anyone), and a full disk simulated at each of the
three places a batch writes (blobs, LanceDB, DuckDB).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from imgdb.cli import app
from imgdb.imaging.model import ModelSpec
from imgdb.store import Store
from tests.test_cli import write_photos

runner = CliRunner()


def one_line(result, *fragments: str) -> str:
    """A non-zero exit with one line on stderr (no traceback) holding every fragment."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def small_db(tmp_path) -> Path:
    """A store of 4 photos, made through the CLI."""
    write_photos(tmp_path / "pics", 4)
    assert cli("ingest", str(tmp_path / "pics"), "--db", str(tmp_path / "db")).exit_code == 0
    return tmp_path / "db"


def agree(db: Path, n: int) -> None:
    """After a writer's repair-on-open, the store holds ``n`` images, each with its blob and vector."""
    Store.open(db, write=True).close()
    with Store.open(db) as store:
        ids = store.image_ids()
        assert len(ids) == n
        assert store.vector_ids(ModelSpec.load().key) == ids
        assert all(store.blob_intact(i) for i in ids)


@contextmanager
def read_only(*paths: Path, recursive: bool = False) -> Iterator[None]:
    """Make paths unwritable even for root (``chattr +i``), else with ``chmod``; undo after."""
    if os.geteuid() == 0:
        flag = ["-R"] if recursive else []
        if shutil.which("chattr") is None or subprocess.run(["chattr", *flag, "+i", *map(str, paths)]).returncode:
            pytest.skip("running as root without chattr +i: cannot make a read-only store")
        try:
            yield
        finally:
            subprocess.run(["chattr", *flag, "-i", *map(str, paths)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


# ---------------------------------------------------------------------------------------
# bad paths and URLs


def test_db_pointing_at_a_file_is_one_line(tmp_path):
    afile = tmp_path / "photo.png"
    afile.write_bytes(b"x")
    one_line(cli("ingest", str(tmp_path), "--db", str(afile)), "is a file, not an imgdb store")
    one_line(cli("info", "--db", str(afile)), "is a file, not an imgdb store")
    assert afile.read_bytes() == b"x"


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:99999/", "http://127.0.0.1:99999/x.jpg", "http://:80/"]
)
def test_malformed_urls_and_ports_are_one_line(small_db, url):
    one_line(cli("ingest", url, "--db", str(small_db)), "invalid URL")
    one_line(cli("similar", url, "--db", str(small_db)), "invalid URL")


def test_crawled_links_with_broken_urls_are_recorded_not_fatal(tmp_path, http_server):
    from tests import images

    http_server.route("/ok.png", images.png_bytes(images.photo(5, (96, 72))))  # over --min-size
    page = '<img src="/ok.png"><img src="http://127.0.0.1:99999/a.png"><img src="http://[::1/b.png">'
    http_server.route("/", page + '<a href="http://127.0.0.1:70000/next">next</a>')
    result = cli("ingest", http_server.url("/"), "--db", str(tmp_path / "db"), "--depth", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new"] == 1


# ---------------------------------------------------------------------------------------
# damaged DuckDB file


@pytest.mark.parametrize("damage", ["garbage", "truncated-header", "truncated-data"])
def test_a_damaged_duckdb_file_is_one_line_for_every_command(small_db, damage):
    path = small_db / "imgdb.duckdb"
    if damage == "garbage":
        path.write_bytes(os.urandom(300_000))
    else:
        # The header survives a cut past it: then opening works and the first query fails.
        size = 5_000 if damage == "truncated-header" else path.stat().st_size // 10
        with open(path, "r+b") as fh:
            fh.truncate(size)
    pics = str(small_db.parent / "pics")
    for args in (["info"], ["sql", "SELECT count(*) FROM images"], ["ingest", pics], ["clusters", "fit"], ["dupes"]):
        one_line(cli(*args, "--db", str(small_db)), str(small_db))


# ---------------------------------------------------------------------------------------
# a store nobody may write


def test_a_read_only_store_folder_refuses_writes_in_one_line_and_still_reads(small_db):
    pics = str(small_db.parent / "pics")
    with read_only(small_db, recursive=True):
        for args in (
            ["ingest", pics],
            ["dupes"],
            ["clusters", "fit", "--k", "2"],
            ["dupes", "reject", "abcdef", "abcdef0"],
        ):
            one_line(cli(*args, "--db", str(small_db)), "read-only")
        info = cli("info", "--db", str(small_db), "--json")
        assert info.exit_code == 0, info.output
        assert json.loads(info.stdout)["images"] == 4
    agree(small_db, 4)


def test_a_read_only_duckdb_file_refuses_writes_in_one_line(small_db):
    with read_only(small_db / "imgdb.duckdb"):
        one_line(cli("ingest", str(small_db.parent / "pics"), "--db", str(small_db)), "read-only")
    agree(small_db, 4)


# ---------------------------------------------------------------------------------------
# a full disk, at each place a batch writes


class _FullDisk:
    """A vectors table whose writes fail as LanceDB's do when the disk is full."""

    def __init__(self, table):
        self._table = table

    def __getattr__(self, name):
        return getattr(self._table, name)

    def add(self, *args, **kwargs):
        raise RuntimeError("lance error: LanceError(IO): Generic LocalFileSystem error: No space left on device")


@pytest.mark.parametrize("where", ["blobs", "lance", "duckdb"])
def test_a_full_disk_is_one_line_and_loses_nothing(small_db, tmp_path, monkeypatch, where):
    write_photos(tmp_path / "more", 40)  # the 4 stored ones and 36 more
    if where == "blobs":

        def put_blob(self, image_id, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(Store, "_put_blob", put_blob)
    elif where == "lance":
        vectors = Store.vectors
        monkeypatch.setattr(Store, "vectors", lambda self, key: _FullDisk(vectors(self, key)))
    else:

        def insert(self, table, *args, **kwargs):
            raise duckdb.IOException(
                f'IO Error: Could not write file "{small_db}/imgdb.duckdb.wal": No space left on device'
            )

        monkeypatch.setattr(Store, "_insert", insert)
    line = one_line(cli("ingest", str(tmp_path / "more"), "--db", str(small_db)), "full")
    assert "Traceback" not in line
    monkeypatch.undo()
    agree(small_db, 4)  # what was stored before is all there, and consistent
    result = cli("ingest", str(tmp_path / "more"), "--db", str(small_db), "--json")
    assert result.exit_code == 0, result.output
    agree(small_db, 40)


# ---------------------------------------------------------------------------------------
# unwritable export and plots folders


def test_unwritable_export_and_plots_paths_are_one_line(family_db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    fit = cli("clusters", "fit", "--db", str(family_db), "--k", "3", "--plots", str(blocker / "plots"))
    one_line(fit, "cannot write the plots", "is saved")
    one_line(cli("clusters", "export", "--to", str(blocker / "out"), "--db", str(family_db)), "cannot write the export")
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        one_line(cli("clusters", "export", "--to", str(locked / "out"), "--db", str(family_db)), "cannot write")
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------------------------
# a missing Lance data file


def test_a_missing_lance_file_is_one_line_and_info_still_tells(small_db):
    (data_file,) = small_db.glob("vectors/*.lance/data/*.lance")
    data_file.unlink()
    pics = small_db.parent / "pics"
    info = cli("info", "--db", str(small_db), "--json")
    assert info.exit_code == 0, info.output
    model = json.loads(info.stdout)["models"][0]
    assert model["vectors"] is None and "verify --repair" in model["problem"]
    table = cli("info", "--db", str(small_db))
    assert table.exit_code == 0 and "vectors damaged" in table.stdout
    for args in (["similar", str(pics / "img0000.png")], ["ingest", str(pics)], ["dupes"], ["clusters", "fit"]):
        one_line(cli(*args, "--db", str(small_db)), "verify --repair")
