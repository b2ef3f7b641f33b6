"""The public API: ``imgdb.open`` and what a Collection lets a caller do in each mode."""

from __future__ import annotations

from pathlib import Path

import pytest

import imgdb
from imgdb.errors import ReadOnlyStore, UsageError
from tests import images


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("collection")
    pics = root / "pics"
    pics.mkdir()
    for seed in range(4):
        photo = images.photo(300 + seed, (320, 240))
        (pics / f"p{seed}.jpg").write_bytes(images.jpeg_bytes(photo))
        (pics / f"p{seed}.png").write_bytes(images.png_bytes(photo.resize((160, 120))))
    with imgdb.open(root / "db", "w") as col:
        col.ingest([str(pics)])
    return root / "db"


def test_the_readme_example_runs(store_path: Path, tmp_path: Path):
    with imgdb.open(store_path, mode="w") as col:
        query, matches = col.similar(str(store_path.parent / "pics" / "p0.jpg"), k=3)
        assert query.id is not None and Path(str(matches[0].source)).name == "p0.png"
        result = col.find_dupes()
        # Each photo and its half-size PNG are one group; no group mixes two photos.
        assert sorted(sorted(Path(m.sources[0]).name for m in g.members) for g in result.groups) == [
            [f"p{s}.jpg", f"p{s}.png"] for s in range(4)
        ]
        run = col.fit_clusters(k=2, pca=0)
        assert run.run_id is not None and col.clusters(run.run_id)[1]
    with imgdb.open(store_path) as col:
        columns, rows = col.sql("SELECT format, count(*) AS n FROM images GROUP BY 1 ORDER BY 1")
        assert columns == ["format", "n"] and rows == [("JPEG", 4), ("PNG", 4)]
        assert [g.ids for g in col.dupes().groups] == [g.ids for g in result.groups]
        assert col.info()["images"] == 8


def test_a_read_only_collection_refuses_every_write(store_path: Path):
    with imgdb.open(store_path) as col:
        with pytest.raises(ReadOnlyStore):
            col.ingest([str(store_path.parent / "pics")])
        with pytest.raises(ReadOnlyStore):
            col.find_dupes()
        with pytest.raises(ReadOnlyStore):
            col.reject("p0", "p1")
        with pytest.raises(ReadOnlyStore):
            col.fit_clusters(k=2)
        # Computing without saving is a read.
        assert col.fit_clusters(k=2, pca=0, save=False).run_id is None
        assert col.similar(str(store_path.parent / "pics" / "p1.jpg"), k=1)[1]


def test_users_sql_never_runs_on_a_writer(store_path: Path):
    with imgdb.open(store_path, "w") as col, pytest.raises(UsageError, match="read-only"):
        col.sql("SELECT 1")


def test_the_model_is_loaded_once_and_the_default_path_comes_from_the_environment(store_path, monkeypatch):
    monkeypatch.setenv("IMGDB_DB", str(store_path))
    with imgdb.open() as col:
        assert col.path == store_path and repr(col).endswith("mode='r'>")
        assert col.model is col.model and col.model.spec is col.spec
    with pytest.raises(UsageError, match="mode"):
        imgdb.open(store_path, "x")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no imgdb store"):
        imgdb.open(store_path.parent / "missing")


def test_add_refuses_a_folder_or_a_page_before_any_work(store_path: Path, http_server):
    page = "<html><body><img src='/a.jpg'><a href='/list?page=2'>Next</a></body></html>"
    http_server.route("/list", page, content_type="text/html")
    with imgdb.open(store_path, "w") as col:
        before = col.info()["images"]
        with pytest.raises(UsageError, match="folder"):
            col.add_query(str(store_path.parent / "pics"))
        with pytest.raises(UsageError, match="web page"):
            col.add_query(http_server.url("/list"))
        assert col.info()["images"] == before
    assert http_server.count("/list") == 1 and http_server.count("/a.jpg") == 0  # no crawl
