"""The store on its own: real DuckDB and LanceDB files in a temp dir, vectors made up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgdb.errors import StoreBusy, UsageError
from imgdb.store import SourceRow, Store
from tests.fakes import FakeSpec, new_image, unit_vectors


def test_add_images_writes_blob_vector_and_row(tmp_path):
    spec = FakeSpec()
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        images = [new_image(i) for i in range(3)]
        store.add_images(images, spec.key, unit_vectors(3), run_id=None)
        assert store.image_ids() == {im.id for im in images}
        assert store.vector_ids(spec.key) == store.image_ids()
        assert store.read_blob(images[0].id) == images[0].data
        got = store.get_vectors(spec.key, [images[1].id])[images[1].id]
        assert np.allclose(got, unit_vectors(3)[1])
        # Adding the same batch again stores nothing twice.
        store.add_images(images, spec.key, unit_vectors(3), run_id=None)
        assert store.vectors(spec.key).count_rows() == 3
        assert store.query("SELECT count(*) FROM images")[0][0] == 3
        assert not (tmp_path / "db" / "journal.json").exists()


def test_vectors_are_written_once_per_id_across_sessions_and_after_a_delete(tmp_path):
    spec = FakeSpec()
    images = [new_image(i) for i in range(4)]
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        store.add_images(images[:2], spec.key, unit_vectors(2), run_id=None)
        store.add_vectors(spec.key, [images[0].id, images[0].id], unit_vectors(2))  # known, and twice
        assert store.vectors(spec.key).count_rows() == 2
    with Store.open(tmp_path / "db", write=True) as store:  # a new writer reads what is there
        store.add_images(images, spec.key, unit_vectors(4), run_id=None)
        assert store.vectors(spec.key).count_rows() == 4
        store.delete_vectors(spec.key, [images[3].id])
        assert images[3].id not in store.vector_ids(spec.key)
        store.add_vectors(spec.key, [images[3].id], unit_vectors(1))
        assert sorted(store.vector_ids(spec.key)) == sorted(im.id for im in images)
        assert store.vectors(spec.key).count_rows() == 4


def test_one_image_many_sources(tmp_path):
    spec = FakeSpec()
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        im = new_image(1)
        store.add_images([im], spec.key, unit_vectors(1), run_id=None)
        store.add_sources([(im.id, SourceRow("http://other/x.png", "url", page_url="http://other/"))], run_id=None)
        store.add_sources([(im.id, SourceRow("http://other/x.png", "url", page_url="http://other/"))], run_id=None)
        rows = store.query("SELECT source, site FROM sources WHERE image_id = ? ORDER BY source", [im.id])
        assert rows == [("http://h/1.png", "h"), ("http://other/x.png", "other")]


def test_repair_on_open_drops_vectors_of_an_unfinished_batch(tmp_path):
    """A crash after the LanceDB write but before the DuckDB commit leaves orphan vectors."""
    spec = FakeSpec()
    db = tmp_path / "db"
    with Store.open(db, write=True) as store:
        store.register_model(spec)
        kept = new_image(0)
        store.add_images([kept], spec.key, unit_vectors(1), run_id=None)
        lost = [new_image(i) for i in (1, 2)]
        # Steps 1-3 of add_images, then "crash" before step 4.
        (db / "journal.json").write_text(json.dumps({"model": spec.key, "ids": [im.id for im in lost]}))
        store.add_vectors(spec.key, [im.id for im in lost], unit_vectors(2))
        assert len(store.vector_ids(spec.key)) == 3
    (db / "blobs" / "tmp").mkdir(parents=True, exist_ok=True)
    (db / "blobs" / "tmp" / "half-written").write_bytes(b"x")
    with Store.open(db, write=True) as store:
        assert store.vector_ids(spec.key) == store.image_ids() == {kept.id}
        assert not (db / "journal.json").exists()
        assert list((db / "blobs" / "tmp").iterdir()) == []


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    with Store.open(tmp_path / "db", write=True), pytest.raises(StoreBusy, match="busy"):
        Store.open(tmp_path / "db", write=True)
    with Store.open(tmp_path / "db", write=True):  # the lock is released on close
        pass


def test_reading_a_missing_store_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no imgdb store"):
        Store.open(tmp_path / "nothing")


def test_pages_keep_last_good_parse(tmp_path):
    with Store.open(tmp_path / "db", write=True) as store:
        store.record_page("http://h/", run_id=1, status=200, etag='"v1"', parsed={"images": []})
        store.record_page("http://h/", run_id=2, status=None, error="timeout")
        etag, _, parsed = store.page_state("http://h/")
        assert etag == '"v1"' and parsed == {"images": []}


def test_info_counts(tmp_path):
    spec = FakeSpec()
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        store.add_images([new_image(i) for i in range(2)], spec.key, unit_vectors(2), run_id=None)
        info = store.info()
    assert info["images"] == 2 and info["formats"] == {"PNG": 2}
    assert info["models"][0]["vectors"] == 2 and info["sites"][0]["site"] == "h"
    with Store.open(tmp_path / "db") as store:  # read-only
        assert store.info()["images"] == 2


def test_a_blob_whose_bytes_are_not_its_id_is_rewritten(tmp_path):
    """The blob writer used to return early whenever the file existed, damaged or not."""
    spec = FakeSpec()
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        im = new_image(1)
        path = store.blob_path(im.id)
        path.parent.mkdir(parents=True)
        path.write_bytes(im.data[:3])  # a truncated leftover from a crash
        store.add_images([im], spec.key, unit_vectors(1), run_id=None)
        assert store.read_blob(im.id, verify=True) == im.data
        path.write_bytes(b"something else entirely")
        assert not store.blob_intact(im.id) and store.restore_blob(im.id, im.data)
        assert store.blob_intact(im.id) and not store.restore_blob(im.id, im.data)  # intact: left alone
