"""`similar` and `sql` on real stores: own variants first, filters, ANN recall, read-only SQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import imgdb
import imgdb.config
from imgdb.acquire.ingest import ingest
from imgdb.cli import app
from imgdb.errors import UsageError
from imgdb.imaging.model import Model, ModelSpec
from imgdb.search import search
from imgdb.store import Store
from tests import images
from tests.fakes import FakeSpec, new_image

runner = CliRunner()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    """Six photos, each with three near-copies, plus the variants' original sizes."""
    root = tmp_path_factory.mktemp("similar")
    pics = root / "pics"
    pics.mkdir()
    for seed in range(6):
        photo = images.photo(200 + seed, (480, 360))
        (pics / f"p{seed}.jpg").write_bytes(images.jpeg_bytes(photo, quality=92))
        small = photo.resize((240, 180), Image.Resampling.LANCZOS)
        (pics / f"p{seed}-small.jpg").write_bytes(images.jpeg_bytes(small, quality=60))
        (pics / f"p{seed}.png").write_bytes(images.png_bytes(photo.crop((12, 9, 468, 351))))
    with Store.open(root / "db", write=True) as store:
        ingest(store, [str(pics)], Model(ModelSpec.load()))
    return root


def test_a_stored_image_finds_its_own_variants_first_and_not_itself(collection):
    with imgdb.open(collection / "db") as col:
        for seed in range(6):
            path = collection / "pics" / f"p{seed}.jpg"
            query, matches = col.similar(str(path), k=5)
            assert query.id is not None  # the file is in the store: its stored vector is used
            assert all(m.id != query.id for m in matches)
            top2 = {Path(str(m.source)).name for m in matches[:2]}
            assert top2 == {f"p{seed}-small.jpg", f"p{seed}.png"}, [m.source for m in matches]
            assert matches[0].similarity >= matches[1].similarity >= matches[4].similarity


def test_a_new_file_is_embedded_but_not_stored(collection, tmp_path):
    photo = images.photo(203, (480, 360)).rotate(3)
    query_file = tmp_path / "query.webp"
    query_file.write_bytes(images.webp_bytes(photo))
    with imgdb.open(collection / "db") as col:
        before = len(col.store.image_ids())
        query, matches = col.similar(str(query_file), k=3)
        assert query.id is None
        assert Path(str(matches[0].source)).name.startswith("p3")
        assert len(col.store.image_ids()) == before


def test_where_filters_on_metadata(collection):
    with imgdb.open(collection / "db") as col:
        _, matches = col.similar(str(collection / "pics" / "p1.jpg"), k=20, where="format = 'PNG'")
        assert matches and all(m.format == "PNG" for m in matches)
        assert len(matches) == 6
        _, none = col.similar(str(collection / "pics" / "p1.jpg"), where="width > 10000")
        assert none == []
        with pytest.raises(UsageError, match="bad --where"):
            col.similar(str(collection / "pics" / "p1.jpg"), where="no_such_column = 1")


def test_id_prefix_and_unknown_query(collection):
    with imgdb.open(collection / "db") as col:
        some_id = sorted(col.store.image_ids())[0]
        query, matches = col.similar(some_id[:10], k=3)
        assert query.id == some_id and len(matches) == 3
        with pytest.raises(UsageError, match="not a stored image id"):
            col.similar("no-such-thing.jpg")


def test_cli_similar_and_sql_json_parse(collection):
    db = str(collection / "db")
    result = runner.invoke(app, ["similar", str(collection / "pics" / "p0.jpg"), "--db", db, "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["rank"] for d in data] == [1, 2, 3] and len(data[0]["id"]) == 64
    csv_out = runner.invoke(app, ["similar", str(collection / "pics" / "p0.jpg"), "--db", db, "-k", "2", "--csv"])
    assert csv_out.stdout.splitlines()[0].startswith("rank,similarity,id")
    result = runner.invoke(
        app, ["sql", "SELECT format, count(*) AS n FROM images GROUP BY 1 ORDER BY 1", "--db", db, "--json"]
    )
    assert json.loads(result.stdout) == [{"format": "JPEG", "n": 12}, {"format": "PNG", "n": 6}]
    table = runner.invoke(app, ["similar", str(collection / "pics" / "p0.jpg"), "--db", db])
    assert table.exit_code == 0 and "similarity" in table.stdout


def test_sql_is_read_only_and_errors_are_one_line(collection):
    with imgdb.open(collection / "db") as col:
        columns, rows = col.sql("SELECT count(DISTINCT site) AS sites, count(*) AS n FROM image_sources")
        assert columns == ["sites", "n"] and rows[0][1] == 18
        with pytest.raises(UsageError, match="read-only"):
            col.sql("DELETE FROM images")
        with pytest.raises(UsageError, match="SQL error"):
            col.sql("SELEC nonsense")
        assert len(col.store.image_ids()) == 18


def test_ann_index_keeps_recall_against_exact_search(tmp_path, monkeypatch):
    """Past the switch size an IVF_RQ index answers, re-ranked; recall@10 stays >= 0.95."""
    monkeypatch.setattr(imgdb.config, "EXACT_MAX_ROWS", 1500)
    spec = FakeSpec(dim=64)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 64))
    vecs = (centres[rng.integers(0, 40, 3000)] + 0.6 * rng.normal(size=(3000, 64))).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with Store.open(tmp_path / "db", write=True) as store:
        store.register_model(spec)
        batch = [new_image(i) for i in range(3000)]
        store.add_images(batch, spec.key, vecs, run_id=None)
        store.maintain_vectors(spec.key, 3000)
        indexed = {
            (index.index_type, column) for index in store.vectors(spec.key).list_indices() for column in index.columns
        }
        assert ("IvfRq", "vector") in indexed
        assert ("BTree", "id") in indexed  # the query image's own vector is a lookup
        ids = np.array([im.id for im in batch])
        assert np.allclose(store.get_vectors(spec.key, [ids[7]])[ids[7]], vecs[7])
        recalls = []
        for q in range(0, 3000, 150):
            exact = set(ids[np.argsort(-(vecs @ vecs[q]))[:10]])
            got = {i for i, _ in search(store, spec.key, vecs[q], k=10)}
            recalls.append(len(exact & got) / 10)
        assert np.mean(recalls) >= 0.95, recalls


def test_cli_dupes_json_csv_reject_and_sql_views(collection):
    db = str(collection / "db")
    result = runner.invoke(app, ["dupes", "--db", db, "--json"])
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)["groups"]
    by_name = [sorted(Path(m["sources"][0]).name for m in g["members"]) for g in groups]
    for seed in range(6):
        assert [f"p{seed}-small.jpg", f"p{seed}.jpg", f"p{seed}.png"] in by_name
    keep_of_p0 = next(g for g in groups if any(Path(m["sources"][0]).name == "p0.jpg" for m in g["members"]))
    small = next(m["image_id"] for m in keep_of_p0["members"] if m["sources"][0].endswith("p0-small.jpg"))
    assert keep_of_p0["keep_id"] != small  # "largest" keeps a full-size copy
    rejected = runner.invoke(app, ["dupes", "reject", str(collection / "pics" / "p0.jpg"), small[:10], "--db", db])
    assert rejected.exit_code == 0, rejected.output
    again = json.loads(runner.invoke(app, ["dupes", "--db", db, "--json"]).stdout)["groups"]
    together = [
        g for g in again if {m["image_id"] for m in g["members"]} >= {small, keep_of_p0["members"][0]["image_id"]}
    ]
    assert not any(
        small in {m["image_id"] for m in g["members"]} and any(m["sources"][0].endswith("p0.jpg") for m in g["members"])
        for g in together
    )
    csv_out = runner.invoke(app, ["dupes", "--db", db, "--csv"])
    assert csv_out.stdout.startswith("group,keep,image_id,kind,stages,phash_distance")
    views = json.loads(
        runner.invoke(app, ["sql", "SELECT count(DISTINCT group_id) AS n FROM dupes", "--db", db, "--json"]).stdout
    )
    assert views[0]["n"] == len(again)
    bad = runner.invoke(app, ["dupes", "--db", db, "--method", "nonsense"])
    assert bad.exit_code == 1


def test_cli_clusters_fit_show_export(collection, tmp_path):
    db = str(collection / "db")
    fit = runner.invoke(
        app, ["clusters", "fit", "--db", db, "--k-range", "2..8", "--plots", str(tmp_path / "plots"), "--json"]
    )
    assert fit.exit_code == 0, fit.output
    run = json.loads(fit.stdout)
    assert run["k"] == 6 and sorted(run["sizes"]) == [3] * 6  # each photo with its two copies
    assert all(Path(p).exists() for p in run["plots"])
    shown = json.loads(runner.invoke(app, ["clusters", "show", str(run["run_id"]), "--db", db, "--json"]).stdout)
    assert [c["size"] for c in shown["clusters"]] == [3] * 6
    compare = runner.invoke(app, ["clusters", "fit", "--db", db, "--compare", "--k-range", "2..8"])
    assert compare.exit_code == 0 and "winner" in compare.stdout
    exported = runner.invoke(app, ["clusters", "export", "--db", db, "--to", str(tmp_path / "out")])
    assert exported.exit_code == 0, exported.output
    assert len([p for p in (tmp_path / "out").iterdir() if p.name.startswith("cluster-")]) == 6
    members = json.loads(runner.invoke(app, ["sql", "SELECT count(*) AS n FROM clusters", "--db", db, "--json"]).stdout)
    assert members == [{"n": 18}]
    bad = runner.invoke(app, ["clusters", "fit", "--db", db, "--k-range", "9..2"])
    assert bad.exit_code != 0
    html = runner.invoke(app, ["dupes", "--db", db, "--html", str(tmp_path / "dupes")])
    assert html.exit_code == 0 and (tmp_path / "dupes" / "index.html").exists()


def test_sql_refuses_several_statements_and_file_access(collection, tmp_path):
    target = tmp_path / "leak.csv"
    with imgdb.open(collection / "db") as col:
        with pytest.raises(UsageError, match="exactly one"):
            col.sql("SELECT 1; SELECT 2")
        with pytest.raises(UsageError):
            col.sql(f"COPY (SELECT * FROM images) TO '{target}'")
        with pytest.raises(UsageError):
            col.similar(str(collection / "pics" / "p1.jpg"), where=f"true; COPY (SELECT 1) TO '{target}'")
    assert not target.exists()


def test_dupes_html_never_writes_into_a_foreign_folder(collection, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "index.html").write_text("my own page")
    result = runner.invoke(app, ["dupes", "--db", str(collection / "db"), "--html", str(mine)])
    assert result.exit_code == 1
    assert (mine / "index.html").read_text() == "my own page"
