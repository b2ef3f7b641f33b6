"""What a user reads: help with defaults and examples, one set of output formats on every
query verb, messages for empty results, honest progress, the minimum image size."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from imgdb.acquire.fetch import FetchPolicy
from imgdb.acquire.ingest import IngestOptions, ingest
from imgdb.cli import app
from imgdb.cli.present import ProgressView
from imgdb.store import Store
from tests import images

runner = CliRunner()


def _commands(group=None, path=()):
    """Every command of the CLI as its word path, e.g. ("dupes", "reject")."""
    group = group or get_command(app)
    for name, cmd in group.commands.items():
        yield (*path, name)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))


def test_every_command_shows_its_defaults_an_example_and_plain_metavars():
    commands = list(_commands())
    assert {("ingest",), ("similar",), ("dupes", "reject"), ("clusters", "fit"), ("serve",)} <= set(commands)
    root = get_command(app)
    for path in commands:
        result = runner.invoke(app, [*path, "-h"])
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        assert "Example" in text and f"imgdb {' '.join(path)}" in text, path
        for bad in ("<bool>", "<list", "<str>", "<int", "<path>", "{"):
            assert bad not in text, (path, bad, text)
        cmd = root
        for word in path:
            cmd = cmd.commands[word]  # type: ignore[attr-defined]
        entries = re.split(r"\n  (?=-)", text.split("Options:", 1)[-1])
        for param in cmd.params:
            if (
                param.param_type_name != "option"
                or param.required
                or getattr(param, "is_flag", False)
                or param.name == "help"
            ):
                continue
            entry = next(e for e in entries if e.split() and e.split()[0].rstrip(",") in param.opts)
            assert "default:" in entry, (path, param.name, entry)


def test_version_and_short_help():
    from imgdb import __version__

    assert runner.invoke(app, ["--version"]).output.strip() == f"imgdb {__version__}"
    assert "Usage" in runner.invoke(app, ["-h"]).output


def _parse(fmt: str, text: str) -> list[dict]:
    if fmt == "json":
        return json.loads(text)
    if fmt == "nl":
        return [json.loads(line) for line in text.splitlines()]
    return list(csv.DictReader(io.StringIO(text), dialect="excel-tab" if fmt == "tsv" else "excel"))


@pytest.mark.parametrize("fmt", ["json", "nl", "csv", "tsv"])
def test_query_verbs_share_one_set_of_output_formats(family_db, fmt):
    db = ["--db", str(family_db)]
    sql = runner.invoke(app, ["sql", "SELECT id, width FROM images ORDER BY id LIMIT 3", *db, f"--{fmt}"])
    assert sql.exit_code == 0, sql.output
    records = _parse(fmt, sql.stdout)
    assert len(records) == 3 and {"id", "width"} <= set(records[0])
    assert "\r\n" not in sql.stdout
    first = records[0]["id"]
    similar = runner.invoke(app, ["similar", first[:12], "-k", "2", *db, f"--{fmt}"])
    assert similar.exit_code == 0, similar.output
    assert len(_parse(fmt, similar.stdout)) == 2
    info = runner.invoke(app, ["info", *db, f"--{fmt}"])
    assert info.exit_code == 0, info.output
    if fmt == "json":
        assert json.loads(info.stdout)["images"] > 0
    else:
        assert any(r["what"] == "images" and int(r["value"]) > 0 for r in _parse(fmt, info.stdout))


def test_one_output_format_at_a_time(family_db):
    result = runner.invoke(app, ["sql", "SELECT 1", "--db", str(family_db), "--json", "--csv"])
    assert result.exit_code != 0 and "one output format" in result.output


def test_empty_results_are_said_not_drawn(family_db):
    db = ["--db", str(family_db)]
    sql = runner.invoke(app, ["sql", "SELECT id FROM images WHERE width < 0", *db])
    assert sql.exit_code == 0 and sql.stdout.strip() == "no rows"
    first = runner.invoke(app, ["sql", "SELECT id FROM images LIMIT 1", *db, "--csv"]).stdout.splitlines()[1]
    similar = runner.invoke(app, ["similar", first, "--where", "width < 0", *db])
    assert similar.exit_code == 0 and "no stored image matches --where" in similar.stdout


def test_sql_errors_keep_duckdbs_hints(family_db):
    result = runner.invoke(app, ["sql", "SELECT widht FROM images", "--db", str(family_db)])
    assert result.exit_code == 1
    assert "SQL error" in result.stderr and "Traceback" not in result.stderr
    assert '"width"' in result.stderr  # the candidate bindings DuckDB suggests


def test_piped_tables_never_wrap(family_db):
    long = "x" * 300
    result = runner.invoke(app, ["sql", f"SELECT '{long}' AS path", "--db", str(family_db)])
    assert long in result.stdout


def test_no_store_names_db_and_the_demo_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("IMGDB_DB", raising=False)
    result = runner.invoke(app, ["info", "--db", "nowhere"])
    assert result.exit_code == 1 and "--db" in result.stderr and "IMGDB_DB" in result.stderr
    assert "demo" not in result.stderr
    (tmp_path / "imgdb-demo").mkdir()
    (tmp_path / "imgdb-demo" / ".imgdb-demo").write_text("")
    result = runner.invoke(app, ["info", "--db", "nowhere"])
    assert "--db imgdb-demo" in result.stderr


def test_progress_when_not_a_terminal_prints_plain_lines(capsys):
    with ProgressView(every=0.0) as progress:
        progress.found("images", 3)
        progress.done("images")
        progress.total("images", 4)
        progress.done("images")
        progress.failed("images")
        progress.done("images")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("images 1/≥3")  # the total is not known yet
    assert lines[-1].startswith("images 3/4") and "/s" in lines[-1] and "ETA" in lines[-1]
    assert "1 failed" in lines[-1]


def _web_ingest(tmp_path: Path, server, model, **kw) -> tuple[dict, int]:
    server.route("/big.jpg", images.jpeg_bytes(images.photo(1, (96, 72))))
    server.route("/icon.png", images.png_bytes(images.photo(2, (48, 48))))
    server.route("/", '<img src="/big.jpg"><img src="/icon.png">')
    policy = FetchPolicy(timeout=5.0, retries=0)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [server.url("/")], model, IngestOptions(fetch_policy=policy, **kw))
        return dict(summary.failed), summary.new


def test_tiny_web_images_are_too_small_by_default_and_kept_when_asked(tmp_path, http_server, model):
    failed, new = _web_ingest(tmp_path / "a", http_server, model)
    assert failed == {"too-small": 1} and new == 1
    failed, new = _web_ingest(tmp_path / "b", http_server, model, min_size=(0, 0))
    assert failed == {} and new == 2


def test_folder_images_are_kept_whatever_their_size_unless_asked(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "small.png").write_bytes(images.png_bytes(images.photo(3, (40, 30))))
    (pics / "big.png").write_bytes(images.png_bytes(images.photo(4, (96, 72))))
    result = runner.invoke(app, ["ingest", str(pics), "--db", str(tmp_path / "db"), "--json"])
    assert json.loads(result.stdout)["new"] == 2
    result = runner.invoke(app, ["ingest", str(pics), "--db", str(tmp_path / "db2"), "--json", "--min-size", "64x64"])
    data = json.loads(result.stdout)
    assert data["new"] == 1 and data["failed"] == {"too-small": 1}
    bad = runner.invoke(app, ["ingest", str(pics), "--db", str(tmp_path / "db3"), "--min-size", "big"])
    assert bad.exit_code != 0 and "WIDTHxHEIGHT" in bad.output


def test_export_says_what_it_wrote(family_db, tmp_path):
    result = runner.invoke(app, ["export", "--to", str(tmp_path / "out"), "--db", str(family_db)])
    assert result.exit_code == 0, result.output
    n = images.FAMILIES * images.FAMILY_MEMBERS
    assert f"exported {n} images to {tmp_path / 'out'} as parquet: 1 shard" in result.stdout
    assert (tmp_path / "out" / "00000.parquet").is_file()
    bad = runner.invoke(app, ["export", "--to", str(tmp_path / "x"), "--format", "zip", "--db", str(family_db)])
    assert bad.exit_code != 0 and "parquet or webdataset" in bad.output
