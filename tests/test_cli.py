"""The command line as a user runs it: real processes, real stores, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from typer.testing import CliRunner

from imgdb import open as imgdb_open
from imgdb.cli import app
from imgdb.imaging.model import ModelSpec
from imgdb.store import Store
from tests import images

runner = CliRunner()


def imgdb(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "imgdb.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        **kw,
    )


def assert_one_line_error(result, *fragments: str) -> None:
    """A process (subprocess) or a command (CliRunner) that failed with one line on stderr."""
    if isinstance(result, subprocess.CompletedProcess):
        assert result.returncode != 0
    else:
        assert result.exit_code not in (0, None), result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def write_photos(folder: Path, n: int, size=(96, 72)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"img{i:04d}.png").write_bytes(images.png_bytes(images.photo(1000 + i, size)))


def test_every_command_has_help():
    commands = [
        ["ingest"],
        ["info"],
        ["verify"],
        ["similar"],
        ["sql"],
        ["dupes"],
        ["dupes", "reject"],
        ["clusters", "fit"],
        ["clusters", "show"],
        ["clusters", "export"],
        ["demo"],
    ]
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for name in ("ingest", "info", "verify", "similar", "sql", "dupes", "clusters", "demo"):
        assert name in top.output
    for command in commands:
        sub = runner.invoke(app, [*command, "--help"])
        assert sub.exit_code == 0 and "Usage" in sub.output, command


def test_help_imports_nothing_heavy():
    code = (
        "import sys; from imgdb.cli import app\n"
        "heavy = {'onnxruntime', 'lancedb', 'duckdb', 'sklearn', 'bs4', 'numpy', 'PIL', 'httpx', 'pyarrow'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert imgdb("--help").returncode == 0


def test_queries_run_without_importing_pandas(tmp_path):
    """pandas (installed here by Ray Data) is half of a query's start-up, and imgdb never uses it."""
    write_photos(tmp_path / "pics", 3)
    db = str(tmp_path / "db")
    assert runner.invoke(app, ["ingest", str(tmp_path / "pics"), "--db", db]).exit_code == 0
    with Store.open(db) as store:
        image_id = store.query("SELECT id FROM images LIMIT 1")[0][0]
    code = (
        "import sys; from imgdb.cli import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('pandas' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "similar", image_id, "--db", db, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "False", done.stderr
    assert len(json.loads(done.stdout)) == 2  # the other two photos


def test_ingest_then_info_json(tmp_path):
    write_photos(tmp_path / "pics", 3)
    result = runner.invoke(app, ["ingest", str(tmp_path / "pics"), "--db", str(tmp_path / "db"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["new"] == 3
    result = runner.invoke(app, ["info", "--json"], env={"IMGDB_DB": str(tmp_path / "db")})
    data = json.loads(result.stdout)
    assert isinstance(data["images"], int) and data["images"] == 3
    table = runner.invoke(app, ["info", "--db", str(tmp_path / "db")])
    assert table.exit_code == 0 and "images" in table.output


def test_bad_input_is_one_line_and_nonzero(tmp_path):
    db = str(tmp_path / "db")
    assert_one_line_error(runner.invoke(app, ["ingest", str(tmp_path / "missing"), "--db", db]), "no such file")
    assert_one_line_error(runner.invoke(app, ["ingest", "ftp://example.com/x", "--db", db]), "unsupported URL")
    model = str(tmp_path / "x.onnx")
    assert_one_line_error(
        runner.invoke(app, ["ingest", str(tmp_path), "--db", db, "--model", model]), "model spec not found"
    )
    assert not (tmp_path / "db").exists()  # checked before the store is opened: a typo creates no store
    assert_one_line_error(runner.invoke(app, ["info", "--db", str(tmp_path / "nothing-here")]), "no imgdb store")
    # ... and as a real process: nothing Python prints on its own way out, either.
    assert_one_line_error(imgdb("info", "--db", str(tmp_path / "nothing-here")), "no imgdb store")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_one_line_error(imgdb("ingest", f"http://127.0.0.1:{port}/", "--db", db, "--timeout", "1"))


def test_a_second_writer_gets_a_clear_error_and_nothing_is_lost(tmp_path):
    write_photos(tmp_path / "pics", 2)
    db = tmp_path / "db"
    assert runner.invoke(app, ["ingest", str(tmp_path / "pics"), "--db", str(db)]).exit_code == 0
    with Store.open(db, write=True) as writer:  # this process is now the writer
        assert_one_line_error(imgdb("ingest", str(tmp_path / "pics"), "--db", str(db)), "busy", "writing")
        # A reader is let in between writes and sees what is committed ...
        seen = imgdb("info", "--db", str(db), "--json")
        assert seen.returncode == 0, seen.stderr
        assert json.loads(seen.stdout)["images"] == 2
        # ... but not in the middle of one that lasts longer than it waits.
        with writer._db():
            assert_one_line_error(imgdb("info", "--db", str(db)), "busy", "is writing to it")
    info = json.loads(runner.invoke(app, ["info", "--db", str(db), "--json"]).stdout)
    assert info["images"] == 2


def test_killed_ingest_completes_on_rerun_with_both_stores_agreeing(tmp_path):
    n = 120
    write_photos(tmp_path / "pics", n)
    db = tmp_path / "db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "imgdb.cli", "ingest", str(tmp_path / "pics"), "--db", str(db), "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    blobs = db / "blobs"
    while time.monotonic() < deadline and proc.poll() is None:
        stored = sum(1 for p in blobs.rglob("*") if p.is_file()) if blobs.exists() else 0
        if stored >= 40:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "ingest finished before it could be killed; make the folder bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    with Store.open(db) as store:  # a killed store opens
        partial = len(store.image_ids())
    assert partial < n

    result = runner.invoke(app, ["ingest", str(tmp_path / "pics"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    with Store.open(db) as store:
        key = ModelSpec.load().key
        ids = store.image_ids()
        assert len(ids) == n
        assert store.vector_ids(key) == ids
        assert store.vectors(key).count_rows() == n
        assert store.query("SELECT count(*) FROM sources")[0][0] == n
        statuses = [s for (s,) in store.query("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "done"]  # the killed run never finished, and the next writer says so


def _demo_product(url: str) -> str:
    """The demo product a picture's URL shows: its folder, or the product a variant names."""
    path = urlsplit(url).path
    name = path.rsplit("/", 1)[-1]
    variant = re.fullmatch(r"(?:also|bundle)-(.+)\.jpg", name)
    if variant:
        return variant.group(1)
    if path.startswith("/media/sale/"):
        return name.removesuffix("-sale.jpg")
    return path.split("/")[2]


def test_demo_crawls_the_generated_shop_and_never_overwrites_a_real_store(tmp_path):
    result = runner.invoke(app, ["demo", "--db", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    with Store.open(tmp_path / "demo") as store:
        info = store.info()
        failures = dict(store.query("SELECT reason, count(*) FROM failures GROUP BY 1"))
    assert info["images"] > 50 and info["pages"] >= 4
    assert failures.get("not-image") == 1  # the one broken image
    assert failures.get("robots", 0) >= 1  # /private/ is disallowed
    # Its duplicate groups are one product's renditions each: products drawn the same way
    # in other colours (plain totes, plain lamps) never join.
    with imgdb_open(tmp_path / "demo", "w") as images_:
        groups = images_.find_dupes().groups
    assert len(groups) >= 20
    for group in groups:
        assert len({_demo_product(s) for m in group.members for s in m.sources}) == 1, group
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    refused = imgdb("demo", "--db", str(tmp_path / "real"))
    assert_one_line_error(refused, "not a demo store")
    assert (tmp_path / "real" / "keep.txt").read_text() == "mine"
