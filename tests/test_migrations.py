"""The schema owner: a store made by release 0.1.0 opens, is migrated, and keeps its data."""

from __future__ import annotations

import tarfile
from pathlib import Path

import duckdb
import pytest

from imgdb.errors import ReadOnlyStore
from imgdb.store import Store, schema
from tests.fakes import FakeSpec, new_image, unit_vectors

FIXTURE = Path(__file__).parent / "data" / "store-0.1.0.tar.gz"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """8 images (6 photos, a PNG copy and a half-size copy of one), a dupes run and a clustering run."""
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store"


def _names() -> list[str]:
    return [name for name, _ in schema.MIGRATIONS]


def test_a_reader_migrates_a_release_0_1_0_store_and_keeps_its_data(old_store: Path):
    with Store.open(old_store) as store:
        assert schema.applied(store.con) == _names()
        assert store.query("SELECT count(*) FROM images") == [(8,)]
        model_key = store.main_model()
        assert model_key is not None and store.vector_ids(model_key) == store.image_ids()
        # The views that 0.1.0 made per connection are now in the store, over the old rows.
        assert store.query("SELECT count(DISTINCT id) FROM image_sources") == [(8,)]
        assert store.query("SELECT count(*) FROM clusters") == [(8,)]
        assert store.query("SELECT count(*) FROM dupes")[0][0] >= 2
        assert store.latest_run("clusters") == 1 and store.latest_run("dupes") == 1


def test_migrations_run_once_each(old_store: Path):
    with Store.open(old_store, write=True) as store:
        first = store.query("SELECT name, applied_at FROM _imgdb_migrations ORDER BY name")
    with Store.open(old_store, write=True) as store:
        assert store.query("SELECT name, applied_at FROM _imgdb_migrations ORDER BY name") == first
        assert schema.pending(store.con) == []


def test_a_column_added_later_reaches_an_existing_store(old_store: Path, monkeypatch):
    Store.open(old_store, write=True).close()

    def m999_add_note(con):
        con.execute("ALTER TABLE images ADD COLUMN note VARCHAR")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, ("m999_add_note", m999_add_note)])
    with Store.open(old_store, write=True) as store:
        assert "note" in [r[0] for r in store.query("DESCRIBE images")]
        # Inserts name their columns, so a new column with no value is no problem.
        spec = FakeSpec()
        store.register_model(spec)
        store.add_images([new_image(1)], spec.key, unit_vectors(1), run_id=None)
        assert store.query("SELECT count(*), count(note) FROM images") == [(9, 0)]


def test_a_failed_migration_leaves_the_store_as_it_was(old_store: Path, monkeypatch):
    Store.open(old_store, write=True).close()

    def m999_broken(con):
        con.execute("ALTER TABLE images ADD COLUMN half VARCHAR")
        con.execute("SELECT * FROM no_such_table")

    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, ("m999_broken", m999_broken)])
    with pytest.raises(duckdb.CatalogException):
        Store.open(old_store, write=True)
    monkeypatch.undo()
    with Store.open(old_store) as store:
        assert "half" not in [r[0] for r in store.query("DESCRIBE images")]
        assert "m999_broken" not in schema.applied(store.con)


def test_a_read_only_store_refuses_writes(old_store: Path):
    with Store.open(old_store) as store, pytest.raises(ReadOnlyStore), store.transaction():
        pass
