"""Data you cannot lose: damaged blobs are noticed and restored, killed runs are marked,
DuckDB and LanceDB are checked against each other, and a lost DuckDB file is rebuilt.

``imgdb verify [--repair]`` checks every blob's sha256 and the DuckDB/LanceDB agreement;
ingest rewrites a blob whose bytes are not its id's; a lost ``imgdb.duckdb`` is rebuilt by
ingesting the store's ``blobs/`` folder (its files have no extension: read by content).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import imgdb
from imgdb.cli import app
from imgdb.imaging.model import ModelSpec
from imgdb.store import Store
from tests import images
from tests.test_cli import write_photos
from tests.test_store_errors import agree, one_line

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def db(tmp_path) -> Path:
    """6 photos ingested from a folder, and a clustering run to export."""
    write_photos(tmp_path / "pics", 6)
    assert cli("ingest", str(tmp_path / "pics"), "--db", str(tmp_path / "db")).exit_code == 0
    assert cli("clusters", "fit", "--k", "2", "--db", str(tmp_path / "db")).exit_code == 0
    return tmp_path / "db"


def damage(db: Path) -> tuple[str, str]:
    """Delete one blob and truncate another; returns their ids."""
    with Store.open(db) as store:
        gone, cut = sorted(store.image_ids())[:2]
        store.blob_path(gone).unlink()
        path = store.blob_path(cut)
        path.write_bytes(path.read_bytes()[:100])
    return gone, cut


def test_export_refuses_a_damaged_blob_in_one_line(db, tmp_path):
    damage(db)
    one_line(cli("clusters", "export", "--to", str(tmp_path / "out"), "--db", str(db)), "verify --repair")
    for copy in (tmp_path / "out").glob("cluster-*/*"):  # what was copied before the stop is whole
        assert hashlib.sha256(copy.read_bytes()).hexdigest().startswith(copy.stem.rsplit("-", 1)[1])


def test_reingest_restores_deleted_and_truncated_blobs(db):
    damage(db)
    result = cli("ingest", str(db.parent / "pics"), "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["restored"] == 2 and summary["new"] == 0
    agree(db, 6)


def test_verify_finds_restores_and_reports(db, tmp_path):
    gone, cut = damage(db)
    found = cli("verify", "--db", str(db), "--json")
    assert found.exit_code == 1
    report = json.loads(found.stdout)
    assert sorted((p["kind"], p["image_id"]) for p in report["problems"]) == sorted(
        [("blob-missing", gone), ("blob-damaged", cut)]
    )
    table = cli("verify", "--db", str(db))
    assert table.exit_code == 1 and "blob-missing" in table.stdout
    # One source is gone for good: reported, not invented.
    with Store.open(db) as store:
        (source,) = store.query("SELECT source FROM sources WHERE image_id = ?", [cut])[0]
    Path(source).unlink()
    repaired = cli("verify", "--repair", "--db", str(db), "--json")
    assert repaired.exit_code == 1
    problems = {p["image_id"]: p for p in json.loads(repaired.stdout)["problems"]}
    assert problems[gone]["fixed"] and "restored from" in problems[gone]["how"]
    assert not problems[cut]["fixed"] and "could not restore" in problems[cut]["how"]
    with Store.open(db) as store:
        assert store.blob_intact(gone) and not store.blob_intact(cut)
        assert len(store.image_ids()) == 6  # nothing deleted from DuckDB
    # The photo comes back (same bytes): ingest restores it and verify is clean.
    write_photos(tmp_path / "again", 6)
    Path(source).write_bytes((tmp_path / "again" / Path(source).name).read_bytes())
    assert cli("ingest", str(db.parent / "pics"), "--db", str(db)).exit_code == 0
    clean = cli("verify", "--db", str(db))
    assert clean.exit_code == 0 and "all intact" in clean.stdout


def test_verify_repair_refetches_a_url_source(tmp_path, http_server):
    photos = [images.png_bytes(images.photo(900 + i, (96, 72))) for i in range(3)]
    for i, data in enumerate(photos):
        http_server.route(f"/p{i}.png", data)
    http_server.route("/", "".join(f'<img src="/p{i}.png">' for i in range(3)))
    db = tmp_path / "db"
    assert cli("ingest", http_server.url("/"), "--db", str(db)).exit_code == 0
    with Store.open(db) as store:
        victim = sorted(store.image_ids())[0]
        store.blob_path(victim).write_bytes(b"garbage")
    result = cli("verify", "--repair", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    (problem,) = json.loads(result.stdout)["problems"]
    assert problem["fixed"] and problem["how"].startswith("restored from http://127.0.0.1")
    agree(db, 3)


def test_verify_repairs_vectors_disagreeing_with_duckdb(db):
    key = ModelSpec.load().key
    with Store.open(db, write=True) as store:
        ids = sorted(store.image_ids())
        orphan = "f" * 64
        store.add_vectors(key, [orphan], store.get_vectors(key, [ids[0]])[ids[0]][None, :])
        store.delete_vectors(key, [ids[1]])
    report = json.loads(cli("verify", "--db", str(db), "--json").stdout)
    assert sorted(p["kind"] for p in report["problems"]) == ["orphan-vector", "vector-missing"]
    result = cli("verify", "--repair", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    agree(db, 6)


def test_verify_repair_rebuilds_a_table_with_a_missing_lance_file(tmp_path):
    db = tmp_path / "db"
    write_photos(tmp_path / "a", 3)
    write_photos(tmp_path / "b", 5)  # the same 3, then 2 more: a second data file
    assert cli("ingest", str(tmp_path / "a"), "--db", str(db)).exit_code == 0
    assert cli("ingest", str(tmp_path / "b"), "--db", str(db)).exit_code == 0
    files = sorted(db.glob("vectors/*.lance/data/*.lance"), key=lambda p: p.stat().st_mtime)
    assert len(files) == 2
    files[0].unlink()
    found = cli("verify", "--db", str(db), "--json")
    assert found.exit_code == 1
    assert [p["kind"] for p in json.loads(found.stdout)["problems"]] == ["vectors-unreadable"]
    result = cli("verify", "--repair", "--db", str(db), "--json")
    assert result.exit_code == 0, result.output
    kinds = {p["kind"]: p for p in json.loads(result.stdout)["problems"]}
    assert "2 vectors kept, 3 lost" in kinds["vectors-unreadable"]["how"]
    assert kinds["vector-missing"]["how"] == "re-embedded 3"
    agree(db, 5)
    similar = cli("similar", str(tmp_path / "a" / "img0000.png"), "--db", str(db), "--json")
    assert similar.exit_code == 0 and json.loads(similar.stdout)


def test_a_killed_run_is_marked_interrupted_by_the_next_writer(tmp_path):
    db = tmp_path / "db"
    store = Store.open(db, write=True)
    run_id = store.start_run("ingest", {})
    store._release()  # what kill -9 leaves: the row says running; then the lock goes with the process
    store._lock_file.close()
    store._lock_file = None
    with Store.open(db) as reader:  # readers change nothing
        assert reader.query("SELECT status FROM runs WHERE id = ?", [run_id]) == [("running",)]
    with Store.open(db, write=True) as writer:
        assert writer.query("SELECT status FROM runs WHERE id = ?", [run_id]) == [("interrupted",)]
        current = writer.start_run("ingest", {})
        writer._repair()  # a repair during a run (a refused batch) leaves the run alone
        assert writer.query("SELECT status FROM runs WHERE id = ?", [current]) == [("running",)]
    store.close()


def test_a_lost_duckdb_file_is_rebuilt_by_ingesting_the_blobs(db, tmp_path):
    (db / "blobs" / "README").write_text("an extensionless file that is not an image")
    (db / "imgdb.duckdb").unlink()
    rebuilt = tmp_path / "rebuilt"
    result = cli("ingest", str(db / "blobs"), "--db", str(rebuilt), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["new"] == 6 and not summary["failed"]
    agree(rebuilt, 6)
    with imgdb.open(rebuilt) as col:
        assert col.verify().ok
