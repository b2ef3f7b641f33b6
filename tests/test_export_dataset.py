"""Dataset export: Parquet and WebDataset shards read back with DuckDB, pandas and webdataset."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

import imgdb
from imgdb import clustering, dedup
from imgdb.acquire.ingest import ingest
from imgdb.errors import UsageError
from imgdb.export import dataset
from imgdb.imaging.model import Model
from imgdb.store import SourceRow, Store
from tests import images

SITE = "shop.example"


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, family_db: Path, model: Model) -> Path:
    """The family store plus near-duplicates of one photo, one image found in two places,
    web sources with alt text, a clustering run and a dupes run."""
    root = tmp_path_factory.mktemp("dataset")
    db = root / "db"
    shutil.copytree(family_db, db)
    extra = root / "extra"
    extra.mkdir()
    for name, data in images.variants(images.family(0, 0)).items():
        (extra / f"{name}.jpg").write_bytes(data)
    (extra / "again.jpg").write_bytes(images.jpeg_bytes(images.family(1, 1)))  # a second place, same bytes
    with Store.open(db, write=True) as store:
        ingest(store, [str(extra)], model)
        ids = sorted(store.image_ids())
        store.add_sources(
            [
                (ids[0], SourceRow(f"https://{SITE}/a.jpg", "url", page_url=f"https://{SITE}/p/1", alt=" Red kettle ")),
                (ids[1], SourceRow(f"https://{SITE}/b.jpg", "url", page_url=f"https://{SITE}/p/2", title="Blue cup")),
                (ids[2], SourceRow(f"https://{SITE}/c.jpg", "url", page_url=f"https://{SITE}/p/3")),
            ],
            None,
        )
        clustering.fit(store, k=4)
        assert dedup.find(store).groups, "the variants make at least one duplicate group"
    return db


def table(con: Any, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def expected(db: Path) -> dict[str, Any]:
    """What the store says, to compare exports with."""
    with Store.open(db) as store:
        ids = sorted(store.image_ids())
        key = store.main_model()
        assert key is not None
        vectors = store.get_vectors(key, ids)
        meta = {r[0]: r[1:] for r in store.query("SELECT id, width, height, format, bytes FROM images")}
        clusters = dict(store.query("SELECT image_id, cluster FROM clusters"))
        dupes = {r[0]: (r[1], r[2]) for r in store.query("SELECT image_id, group_id, is_keep FROM dupes")}
        places = dict(store.query("SELECT image_id, count(*) FROM sources GROUP BY 1"))
    return {
        "ids": ids,
        "vectors": vectors,
        "meta": meta,
        "clusters": clusters,
        "dupes": dupes,
        "places": places,
    }


def test_parquet_export_reads_back_with_duckdb_and_pandas(store_path: Path, tmp_path: Path) -> None:
    want = expected(store_path)
    out = tmp_path / "parquet"
    with imgdb.open(store_path) as col:
        result = col.export_dataset(out, shard_size=20)
    n = len(want["ids"])
    assert result.images == n
    assert [p.name for p in result.shards] == [f"{i:05d}.parquet" for i in range(-(-n // 20))]
    assert result.cluster_run is not None and result.dupes_run is not None

    rows = table(duckdb.connect(), f"SELECT * FROM read_parquet('{out}/*.parquet') ORDER BY id")
    assert [r["id"] for r in rows] == want["ids"]
    for r in rows:
        assert hashlib.sha256(r["image"]).hexdigest() == r["id"]
        assert (r["width"], r["height"], r["format"], r["bytes"]) == want["meta"][r["id"]]
        assert np.array_equal(np.asarray(r["vector"], dtype=np.float32), want["vectors"][r["id"]])
        assert r["cluster"] == want["clusters"].get(r["id"])
        assert (r["dupe_group"], r["dupe_keep"]) == want["dupes"].get(r["id"], (None, None))
        assert len(r["sources"]) == want["places"][r["id"]]
    assert any(r["dupe_group"] is not None for r in rows) and any(r["dupe_group"] is None for r in rows)

    by_id = {r["id"]: r for r in rows}
    first, second, third = (by_id[i] for i in want["ids"][:3])
    assert first["source"] == f"https://{SITE}/a.jpg" and first["site"] == SITE and first["caption"] == "Red kettle"
    assert first["page_url"] == f"https://{SITE}/p/1"
    assert second["caption"] == "Blue cup" and third["caption"] is None
    assert max(len(r["sources"]) for r in rows) == 2  # the photo found in two folders: one row, two sources

    # Parquet has no fixed-size list: DuckDB reads FLOAT[], Arrow readers the fixed-size list it was written as
    pq = pytest.importorskip("pyarrow.parquet")
    vector_type = pq.read_schema(out / "00000.parquet").field("vector").type
    assert vector_type.list_size == result.dim and str(vector_type.value_type) == "float"
    assert {len(r["vector"]) for r in rows} == {result.dim}

    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(out)
    assert sorted(frame["id"]) == want["ids"]
    assert {"image", "width", "sources", "vector", "cluster", "dupe_group", "dupe_keep", "caption"} <= set(frame)

    stats = json.loads((out / "_stats.json").read_text())
    assert stats["images"] == n and stats["format"] == "parquet" and stats["model"] == result.model
    assert sum(s["images"] for s in stats["shards"]) == n


def test_webdataset_export_reads_back_with_the_webdataset_loader(store_path: Path, tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    want = expected(store_path)
    out = tmp_path / "wds"
    with imgdb.open(store_path) as col:
        result = col.export_dataset(out, format="webdataset", shard_size=16)
    assert result.images == len(want["ids"])
    tars = [str(p) for p in result.shards]
    assert all(p.endswith(".tar") for p in tars) and len(tars) == -(-len(want["ids"]) // 16)

    samples = list(wds.WebDataset(tars, shardshuffle=False).decode())
    assert sorted(s["__key__"] for s in samples) == want["ids"]
    for s in samples:
        key = s["__key__"]
        assert (
            hashlib.sha256(s["jpg"]).hexdigest() == key
        )  # the stored bytes (decode() without a handler keeps images as bytes)
        meta = s["json"]
        assert meta["id"] == key and (meta["width"], meta["height"]) == want["meta"][key][:2]
        assert meta["cluster"] == want["clusters"].get(key)
        assert (meta["dupe_group"], meta["dupe_keep"]) == want["dupes"].get(key, (None, None))
        assert np.array_equal(s["npy"], want["vectors"][key])
        assert s["txt"] == (meta["caption"] or "")
        assert s.get("cls") == want["clusters"].get(key)  # the cluster as WebDataset's class label

    # img2dataset's layout: beside each tar, a Parquet of the same rows without the bytes
    rows = duckdb.connect().execute(f"SELECT id, vector FROM read_parquet('{out}/*.parquet') ORDER BY id").fetchall()
    assert [r[0] for r in rows] == want["ids"]
    assert "image" not in duckdb.connect().execute(f"SELECT * FROM '{out}/00000.parquet' LIMIT 0").fetchdf()


def test_where_is_the_predicate_similar_takes(store_path: Path, tmp_path: Path) -> None:
    where = f"site = '{SITE}' OR width < 200"
    with imgdb.open(store_path) as col:
        result = col.export_dataset(tmp_path / "some", where=where)
        _, wanted = col.sql(f"SELECT DISTINCT id FROM image_sources WHERE {where} ORDER BY id")
        _, matches = col.similar(wanted[0][0], k=50, where=where)
    got = [r[0] for r in duckdb.connect().execute(f"SELECT id FROM '{tmp_path}/some/*.parquet' ORDER BY id").fetchall()]
    assert got == [r[0] for r in wanted] and 3 <= len(got) < len(expected(store_path)["ids"])
    assert {m.id for m in matches} <= set(got)
    assert result.images == len(got)
    stats = json.loads((tmp_path / "some" / "_stats.json").read_text())
    assert stats["where"] == where


def test_a_where_that_matches_nothing_writes_an_empty_readable_shard(store_path: Path, tmp_path: Path) -> None:
    with imgdb.open(store_path) as col:
        result = col.export_dataset(tmp_path / "none", where="width < 0")
    assert result.images == 0 and [p.name for p in result.shards] == ["00000.parquet"]
    con = duckdb.connect()
    assert con.execute(f"SELECT count(*) FROM '{tmp_path}/none/00000.parquet'").fetchone() == (0,)
    columns = [d[0] for d in con.execute(f"SELECT * FROM '{tmp_path}/none/00000.parquet'").description]
    assert columns == result.columns and "vector" in columns and "image" in columns


def test_bad_input_is_a_one_line_error(store_path: Path, tmp_path: Path) -> None:
    with imgdb.open(store_path) as col:
        for kwargs, message in [
            ({"where": "widht > 10"}, "bad --where"),
            ({"where": "1=1; DROP TABLE images"}, "one SQL statement"),
            ({"format": "tfrecord"}, "unknown export format"),
            ({"images": "links"}, "unknown image mode"),
            ({"format": "webdataset", "images": "paths"}, "use --format parquet"),
            ({"shard_size": 0}, "at least 1"),
        ]:
            with pytest.raises(UsageError, match=message) as err:
                col.export_dataset(tmp_path / "bad", **kwargs)  # type: ignore[arg-type]
            assert "\n" not in str(err.value)
        (tmp_path / "file").write_text("x")
        with pytest.raises(UsageError, match="not a folder"):
            col.export_dataset(tmp_path / "file")
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    with imgdb.open(store_path, mode="w") as writer, pytest.raises(UsageError, match="read-only"):
        writer.export_dataset(tmp_path / "w", where="width > 1")


def test_a_foreign_folder_is_refused_and_an_earlier_export_replaced(store_path: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with imgdb.open(store_path) as col:
        with pytest.raises(UsageError, match="not empty and is not an imgdb dataset export"):
            col.export_dataset(foreign)
        assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

        out = tmp_path / "out"
        first = col.export_dataset(out, format="webdataset", shard_size=10)
        assert len(first.shards) > 2
        (out / "README.md").write_text("my notes")  # the user's own file beside the export
        second = col.export_dataset(out, shard_size=1000)
        names = sorted(p.name for p in out.iterdir())
        assert names == sorted([".imgdb-dataset.json", "00000.parquet", "README.md", "_stats.json"])
        assert second.images == first.images

        # a file in one of the export's names that the export did not write stops it, untouched
        (out / "00001.parquet").write_bytes(b"PAR1 not ours")
        with pytest.raises(UsageError, match=r"00001\.parquet was not written by an imgdb dataset export"):
            col.export_dataset(out)
        assert (out / "00000.parquet").exists() and (out / "00001.parquet").read_bytes() == b"PAR1 not ours"

        # a cluster export's folder is not a dataset export
        gallery = tmp_path / "gallery"
        col.export_clusters(gallery)
        with pytest.raises(UsageError, match="not an imgdb dataset export"):
            col.export_dataset(gallery)


def test_an_interrupted_export_is_cleaned_by_the_next(store_path: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "cut"
    calls = {"n": 0}
    real = dataset._Writer._complete

    def failing(self: Any, rows: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, rows)

    monkeypatch.setattr(dataset._Writer, "_complete", failing)
    with imgdb.open(store_path) as col:
        with pytest.raises(KeyboardInterrupt):
            col.export_dataset(out, format="webdataset", shard_size=5)
        assert any(p.name.endswith(".partial") for p in out.iterdir())
        monkeypatch.setattr(dataset._Writer, "_complete", real)
        result = col.export_dataset(out, format="webdataset", shard_size=5)
    assert not any(p.name.endswith(".partial") for p in out.iterdir())
    assert sorted(p.name for p in out.glob("*.tar")) == [p.name for p in result.shards]


def test_paths_and_small_pages_give_the_same_rows(store_path: Path, tmp_path: Path, monkeypatch) -> None:
    want = expected(store_path)
    monkeypatch.setattr(dataset, "PAGE_ROWS", 7)  # pages, shards and chunks all cut across each other
    monkeypatch.setattr(dataset, "CHUNK_BYTES", 60_000)
    with imgdb.open(store_path) as col:
        result = col.export_dataset(tmp_path / "paths", images="paths", shard_size=9)
    rows = table(duckdb.connect(), f"SELECT * FROM '{tmp_path}/paths/*.parquet' ORDER BY id")
    assert [r["id"] for r in rows] == want["ids"] and "image" not in rows[0]
    for r in rows:
        assert Path(r["path"]).is_absolute()
        assert hashlib.sha256(Path(r["path"]).read_bytes()).hexdigest() == r["id"]
        assert np.array_equal(np.asarray(r["vector"], dtype=np.float32), want["vectors"][r["id"]])
    assert [s.name for s in result.shards] == [f"{i:05d}.parquet" for i in range(-(-len(rows) // 9))]
