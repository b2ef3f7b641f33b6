"""Readers during a write, with real processes: a long crawl does not lock everyone out.

While an ingest runs, ``imgdb info`` and ``imgdb sql`` from other processes get in within
about a second and see what is committed so far; a writer that a reader holds up waits,
and when it gives up it says a reader, not a writer, is in the way.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from typer.testing import CliRunner

from imgdb import config
from imgdb.cli import app
from tests import images
from tests.test_cli import imgdb, write_photos
from tests.test_store_errors import one_line

N = 6
SPACING = 1.0  # seconds between two images arriving

# Times only what a reader waits for: opening the store and one query (imports excluded).
TIMED_READ = textwrap.dedent(
    """
    import json, sys, time
    import duckdb, lance, numpy  # what opening a store and a query load, loaded before the clock starts
    import imgdb, imgdb.collection, imgdb.store.sql
    started = time.monotonic()
    with imgdb.open(sys.argv[1]) as col:
        n = col.sql("SELECT count(*) FROM images")[1][0][0]
    print(json.dumps({"n": n, "seconds": time.monotonic() - started}))
    """
)


def _slow_shop(server) -> str:
    """A page of N images that arrive SPACING seconds apart (the server sleeps before each)."""
    for i in range(N):
        server.route(f"/p{i}.png", images.png_bytes(images.photo(500 + i, (96, 72))), delay=SPACING * i)
    server.route("/", "".join(f'<img src="/p{i}.png">' for i in range(N)))
    return server.url("/")


def test_readers_see_committed_images_while_an_ingest_runs(tmp_path, http_server):
    db = tmp_path / "db"
    write_photos(tmp_path / "seed", 1)
    seeded = CliRunner().invoke(app, ["ingest", str(tmp_path / "seed"), "--db", str(db)])
    assert seeded.exit_code == 0, seeded.output  # the store exists
    args = ["ingest", _slow_shop(http_server), "--db", str(db), "--json", "--per-host", str(N), "--timeout", "60"]
    writer = subprocess.Popen(
        [sys.executable, "-m", "imgdb.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[int] = []
    waits: list[float] = []
    # One reader at a time, taking turns, so that several of them look in while the crawl runs.
    readers = itertools.cycle(["timed", "info", "sql"])
    try:
        while writer.poll() is None:
            reader = next(readers)
            if reader == "timed":
                timed = subprocess.run([sys.executable, "-c", TIMED_READ, str(db)], capture_output=True, text=True)
                assert timed.returncode == 0, timed.stderr
                read = json.loads(timed.stdout)
                waits.append(read["seconds"])
                seen.append(read["n"])
            elif reader == "info":
                info = imgdb("info", "--db", str(db), "--json")
                assert info.returncode == 0, info.stderr
                seen.append(json.loads(info.stdout)["images"])
            else:
                sql = imgdb("sql", "SELECT count(*) AS n FROM images", "--db", str(db), "--json")
                assert sql.returncode == 0, sql.stderr
                seen.append(json.loads(sql.stdout)[0]["n"])
    finally:
        if writer.poll() is None:
            writer.kill()
        out, err = writer.communicate()
    assert writer.returncode == 0, err
    assert json.loads(out)["new"] == N
    print("readers waited", [round(w, 2) for w in waits], "and saw", seen)
    assert max(waits) < 2.0, waits
    assert seen == sorted(seen), seen  # never a step back
    assert any(1 < n < 1 + N for n in seen), seen  # part of the crawl, committed and seen while it ran
    after = imgdb("sql", "SELECT count(*) AS n FROM images", "--db", str(db), "--json")
    assert json.loads(after.stdout)[0]["n"] == 1 + N
    final = CliRunner().invoke(app, ["info", "--db", str(db), "--json"])
    assert json.loads(final.stdout)["images"] == 1 + N


def _hold_reader(db: Path, seconds: float) -> subprocess.Popen[str]:
    code = f"import time; from imgdb.store import Store; s = Store.open({str(db)!r}); print('in', flush=True); time.sleep({seconds}); s.close()"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "in"
    return proc


def test_a_writer_held_up_by_a_reader_waits_then_says_who_is_in_the_way(tmp_path, monkeypatch):
    db = tmp_path / "db"
    write_photos(tmp_path / "pics", 3)
    assert CliRunner().invoke(app, ["ingest", str(tmp_path / "pics"), "--db", str(db)]).exit_code == 0
    write_photos(tmp_path / "more", 5)
    reader = _hold_reader(db, 30)
    try:
        monkeypatch.setattr(config, "WRITE_WAIT", 0.5)
        line = one_line(CliRunner().invoke(app, ["ingest", str(tmp_path / "more"), "--db", str(db)]), "busy", "reading")
        assert "writing" not in line
    finally:
        reader.kill()
        reader.wait()
    # With its usual patience a writer simply waits for a short reader to finish.
    monkeypatch.undo()
    reader = _hold_reader(db, 4)
    started = time.monotonic()
    result = imgdb("ingest", str(tmp_path / "more"), "--db", str(db), "--json")
    waited = time.monotonic() - started
    reader.wait()
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["new"] == 2 and waited >= 3.9  # it could only finish after the reader
