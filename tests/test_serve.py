"""``imgdb serve``: the web app over a real store, through Starlette's test client (in
process, real DuckDB and LanceDB), and once with a real ingest in another process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import imgdb
from imgdb.acquire.ingest import ingest
from imgdb.imaging.model import Model
from imgdb.serve import Library, create_app, routes
from imgdb.store import Store
from tests import images
from tests.server import LocalServer

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx is what imgdb has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

SCRIPT_ALT = "<script>window.pwned = 1</script> red shoe"
# Two photographs, each stored as five renditions: the duplicate groups the review shows.
DUPE_SEEDS = (7, 8)


def build_store(root: Path, family_db: Path, model: Model) -> Path:
    """The shared family store plus two photos' renditions (dupes), one web image whose alt
    text is a script, a dupes run and a clustering run."""
    db = root / "db"
    shutil.copytree(family_db, db)
    pics = root / "dupes"
    for seed in DUPE_SEEDS:
        for name, data in images.variants(images.photo(seed)).items():
            (pics / f"photo-{seed}").mkdir(parents=True, exist_ok=True)
            (pics / f"photo-{seed}" / f"{name}.jpg").write_bytes(data)
    with LocalServer() as web:
        web.route("/shop/", f'<html><body><img src="/shoe.jpg" alt="{SCRIPT_ALT.replace(chr(34), "")}"></body></html>')
        web.route("/shop/".replace("/shop/", "/shoe.jpg"), images.jpeg_bytes(images.photo(99)))
        with Store.open(db, write=True) as store:
            ingest(store, [str(pics), web.url("/shop/")], model)
    with imgdb.open(db, "w") as collection:
        collection.find_dupes()
        collection.fit_clusters(k=6)
    return db


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, family_db: Path, model: Model) -> Path:
    return build_store(tmp_path_factory.mktemp("serve"), family_db, model)


@pytest.fixture
def client(store_dir: Path) -> Iterator[TestClient]:
    library = Library(store_dir)
    with TestClient(create_app(library), base_url="http://127.0.0.1") as test_client:
        yield test_client


def ids_in(html: str, container: str) -> list[str]:
    """Image ids of the cards inside the element with id ``container``, in page order."""
    part = html.split(f'id="{container}"', 1)[1].split("</section>", 1)[0]
    return re.findall(r'data-id="([0-9a-f]{64})"', part)


def image_id_of(store_dir: Path, source_suffix: str) -> str:
    with imgdb.open(store_dir) as collection:
        _, rows = collection.sql(f"SELECT image_id FROM sources WHERE source LIKE '%{source_suffix}'")
    return str(rows[0][0])


def test_collection_page_pages_and_filters(
    client: TestClient, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with imgdb.open(store_dir) as collection:
        total = collection.info()["images"]
    page = client.get("/")
    assert page.status_code == 200
    assert f"{total:,} images" in page.text
    assert len(ids_in(page.text, "grid")) == min(total, routes.PAGE_SIZE)

    monkeypatch.setattr(routes, "PAGE_SIZE", 20)
    seen = [i for n in (1, 2, 3) for i in ids_in(client.get(f"/?page={n}").text, "grid")]
    assert len(seen) == total and len(set(seen)) == total  # every image once across the pages

    web_only = client.get("/", params={"site": "127.0.0.1:" + "x"})  # a site with no images
    assert "0 images" in web_only.text
    wide = client.get("/", params={"min_width": 600, "format": "JPEG"}).text
    assert "--where <code>format = &#39;JPEG&#39; AND width &gt;= 600</code>" in wide
    assert 0 < len(ids_in(wide, "grid")) < total

    cluster = client.get("/", params={"cluster": 0, "where": "height > 10"}).text
    assert "id IN (SELECT image_id FROM clusters WHERE cluster = 0) AND (height &gt; 10)" in cluster
    assert ids_in(cluster, "grid")

    bad = client.get("/", params={"where": "no_such_column = 1"})
    assert bad.status_code == 200 and 'class="error"' in bad.text and "Traceback" not in bad.text


def test_image_page_shows_sources_and_its_family_first(client: TestClient, store_dir: Path) -> None:
    image_id = image_id_of(store_dir, "family-2/member-3.jpg")
    page = client.get(f"/image/{image_id}")
    assert page.status_code == 200
    assert "family-2/member-3.jpg" in page.text
    neighbours = ids_in(page.text, "neighbours")
    assert len(neighbours) == routes.NEIGHBOURS and image_id not in neighbours
    family = {image_id_of(store_dir, f"family-2/member-{m}.jpg") for m in range(images.FAMILY_MEMBERS)} - {image_id}
    assert set(neighbours[: len(family)]) == family  # its six siblings come first
    assert re.search(r'class="sim">0\.\d{3}<', page.text)

    assert client.get("/image/" + "0" * 64).status_code == 404
    assert client.get("/image/..%2f..%2fetc%2fpasswd").status_code == 404


def test_thumbnails_and_blobs_are_served_by_id_only(client: TestClient, store_dir: Path) -> None:
    image_id = image_id_of(store_dir, "family-0/member-0.jpg")
    first = client.get(f"/thumb/{image_id}")
    assert first.status_code == 200 and first.headers["content-type"] == "image/webp"
    assert first.content[:4] == b"RIFF" and first.content[8:12] == b"WEBP"
    cached = store_dir / "thumbs" / str(routes.THUMB_SIZE) / image_id[:2] / f"{image_id}.webp"
    assert cached.read_bytes() == first.content  # made once, kept in the store
    assert client.get(f"/thumb/{image_id}").content == first.content

    full = client.get(f"/blob/{image_id}")
    assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
    assert hashlib.sha256(full.content).hexdigest() == image_id
    for bad in ("abc", "../../imgdb.duckdb", "%2e%2e%2fimgdb.duckdb", image_id.upper(), "f" * 64):
        assert client.get(f"/blob/{bad}").status_code == 404
        assert client.get(f"/thumb/{bad}").status_code == 404


def test_upload_search_finds_the_family_and_refuses_bad_uploads(
    client: TestClient, store_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    query = images.jpeg_bytes(images.family(4, 2).resize((200, 150)), quality=70)  # not stored as such
    found = client.post("/search", files={"file": ("query.jpg", query, "image/jpeg")})
    assert found.status_code == 200
    family = {image_id_of(store_dir, f"family-4/member-{m}.jpg") for m in range(images.FAMILY_MEMBERS)}
    assert set(ids_in(found.text, "results")[: images.FAMILY_MEMBERS]) == family
    with imgdb.open(store_dir) as collection:
        assert hashlib.sha256(query).hexdigest() not in {i.id for i in collection.images(limit=1000)[1]}

    by_id = client.post("/search", data={"url": next(iter(family))})
    assert by_id.status_code == 200 and len(set(ids_in(by_id.text, "results")[:6]) & family) == 6

    not_image = client.post("/search", files={"file": ("x.jpg", b"<html><body>hi</body></html>", "image/jpeg")})
    assert not_image.status_code == 400 and "not an image" in not_image.text
    path = client.post("/search", data={"url": str(store_dir / "imgdb.duckdb")})
    assert path.status_code == 400 and "http(s) URL" in path.text  # a path never reaches the file system
    unknown = client.post("/search", data={"url": "ab" * 32})
    assert unknown.status_code == 400 and "no image" in unknown.text
    chunked = client.post(
        "/search", content=iter([b"--x\r\n", b"\0" * 1000]), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert chunked.status_code == 411

    monkeypatch.setattr(routes, "UPLOAD_MAX_PIXELS", 100 * 100)
    many_pixels = client.post("/search", files={"file": ("big.png", images.png_bytes(images.photo(1)), "image/png")})
    assert many_pixels.status_code == 400 and "pixel upload cap" in many_pixels.text
    monkeypatch.setattr(routes, "UPLOAD_MAX_BYTES", 1000)
    too_big = client.post("/search", files={"file": ("q.jpg", query, "image/jpeg")})
    assert too_big.status_code == 413 and "upload cap" in too_big.text


def test_clusters_and_a_cluster(client: TestClient, store_dir: Path) -> None:
    with imgdb.open(store_dir) as collection:
        run_id, clusters = collection.clusters()
    page = client.get("/clusters")
    assert page.status_code == 200
    for c in clusters:
        assert f'href="/clusters/{run_id}/{c.cluster}"' in page.text
        assert f'src="/thumb/{c.medoid}"' in page.text
    biggest = clusters[0]
    members = client.get(f"/clusters/{run_id}/{biggest.cluster}")
    assert members.status_code == 200
    assert f"{biggest.size} images" in members.text
    assert len(ids_in(members.text, "members")) == biggest.size
    assert client.get(f"/clusters/{run_id}/99").status_code == 404


def test_cluster_map_places_every_image_and_shows_thumbnails(client: TestClient, store_dir: Path) -> None:
    with imgdb.open(store_dir) as collection:
        run = collection.cluster_run()
        (total,) = collection.sql("SELECT count(*) FROM images")[1][0]
    page = client.get(f"/clusters/{run.run_id}/map")
    assert page.status_code == 200
    assert f'href="/clusters/{run.run_id}/map"' in client.get("/clusters").text
    dots = re.findall(r'<path class="dots" data-cluster="(\d+)"[^>]* d="([^"]+)"', page.text)
    assert sorted(int(c) for c, _ in dots) == list(range(run.k))
    assert sum(d.count("M") for _, d in dots) == total  # a small store: every image is drawn
    cluster_of = dict(zip(run.ids, run.labels.tolist()))
    thumbs = re.findall(r'<a href="/image/([0-9a-f]{64})" class="mapthumb" data-cluster="(\d+)"', page.text)
    assert len(thumbs) >= run.k and len({i for i, _ in thumbs}) == len(thumbs)
    assert all(cluster_of[i] == int(c) for i, c in thumbs)
    corners = re.findall(r'<image href="/thumb/[0-9a-f]{64}" x="([\d.]+)" y="([\d.]+)"', page.text)
    assert len(set(corners)) == len(thumbs)  # one thumbnail a cell: none covers another
    for c in range(run.k):
        assert f'href="/clusters/{run.run_id}/{c}" class="maplabel"' in page.text
    assert client.get("/clusters/99/map").status_code == 404


def test_the_map_keeps_clusters_apart(store_dir: Path) -> None:
    with imgdb.open(store_dir) as collection:
        run = collection.cluster_run()
    assert run.map_xy is not None and run.map_labels is not None and len(run.map_ids) == len(run.ids)
    xy, labels = run.map_xy.astype(float), run.map_labels
    within = np.mean([np.linalg.norm(xy[labels == c] - xy[labels == c].mean(0), axis=1).mean() for c in range(run.k)])
    means = np.stack([xy[labels == c].mean(0) for c in range(run.k)])
    between = np.mean([np.linalg.norm(a - b) for n, a in enumerate(means) for b in means[n + 1 :]])
    assert between > 2 * within


def test_dupes_review_rejects_a_pair_like_the_cli(client: TestClient, store_dir: Path) -> None:
    from imgdb.cli.app import app as cli

    page = client.get("/dupes")
    assert page.status_code == 200
    forms = re.findall(
        r'name="a" value="([0-9a-f]{64})"><input type="hidden" name="b" value="([0-9a-f]{64})"', page.text
    )
    assert forms, "the review has 'not a duplicate' buttons"
    a, b = forms[0]
    refused = client.post("/dupes/reject", data={"a": a, "b": b}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    with imgdb.open(store_dir) as collection:
        assert (min(a, b), max(a, b)) not in collection.rejects()

    done = client.post("/dupes/reject", data={"a": a, "b": b, "back": "/dupes?page=1"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/dupes?page=1"
    with imgdb.open(store_dir) as collection:
        assert (min(a, b), max(a, b)) in collection.rejects()  # what `imgdb dupes reject` records
    after = client.get("/dupes").text
    assert (a, b) not in re.findall(
        r'name="a" value="([0-9a-f]{64})"><input type="hidden" name="b" value="([0-9a-f]{64})"', after
    )
    elsewhere = client.post("/dupes/reject", data={"a": a, "b": b, "back": "//evil.example/"}, follow_redirects=False)
    assert elsewhere.headers["location"] == "/dupes"

    # "Find duplicates again, keeping the smallest": `imgdb dupes --keep smallest`, in the background.
    started = client.post("/dupes/run", data={"keep": "smallest"}, follow_redirects=False)
    assert started.status_code == 303
    deadline = time.monotonic() + 120
    while "finding duplicates" in (page := client.get("/dupes").text):
        assert time.monotonic() < deadline, "the dupes run did not finish"
        time.sleep(0.2)
    assert "kept member: the smallest" in page and "the dupes run failed" not in page
    shown = CliRunner().invoke(cli, ["dupes", "show", "--db", str(store_dir), "--json"])
    assert shown.exit_code == 0, shown.output
    saved = json.loads(shown.output)
    assert saved["groups"], "the new run still groups the other renditions"
    for group in saved["groups"]:
        members = {m["image_id"]: m for m in group["members"]}
        assert not {a, b} <= set(members)  # the rejected pair is kept apart
        kept = members[group["keep_id"]]
        assert kept["bytes"] == min(m["bytes"] for m in members.values())
    assert client.post("/dupes/run", data={"keep": "prettiest"}).status_code == 400


def test_sql_box_is_read_only(client: TestClient, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = client.get("/sql", params={"q": "SELECT format, count(*) AS n FROM images GROUP BY 1 ORDER BY 1"})
    assert ok.status_code == 200 and "<th>format</th><th>n</th>" in ok.text and "<td>JPEG</td>" in ok.text
    for statement, message in [
        ("DELETE FROM images", "read-only"),
        ("SELECT 1; SELECT 2", "exactly one SQL statement"),
        (f"COPY images TO '{store_dir.parent / 'out.csv'}'", "SQL error"),
        ("SELECT * FROM read_csv('/etc/passwd')", "SQL error"),
    ]:
        page = client.get("/sql", params={"q": statement})
        assert page.status_code == 200 and 'class="error"' in page.text, statement
        assert message.lower() in page.text.lower(), (statement, page.text[-600:])
    assert not (store_dir.parent / "out.csv").exists()

    monkeypatch.setattr(routes, "SQL_TIMEOUT", 0.3)
    runaway = client.get("/sql", params={"q": "SELECT count(*) FROM range(1000000000000) a, range(10) b"})
    assert "ran for over 0.3 s and was stopped" in runaway.text
    assert "<td>JPEG</td>" in client.get("/sql", params={"q": "SELECT DISTINCT format FROM images"}).text
    with imgdb.open(store_dir) as collection:
        assert collection.info()["images"] > 0


def test_text_from_the_web_is_escaped_and_scripts_cannot_run(client: TestClient, store_dir: Path) -> None:
    image_id = image_id_of(store_dir, "/shoe.jpg")
    page = client.get(f"/image/{image_id}")
    assert "<script>window.pwned" not in page.text
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt; red shoe" in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    sql = client.get("/sql", params={"q": "SELECT alt FROM sources WHERE alt IS NOT NULL"}).text
    assert "<script>window.pwned" not in sql and "&lt;script&gt;" in sql


def test_dns_rebinding_and_cross_site_posts_are_refused(client: TestClient) -> None:
    assert client.get("/", headers={"host": "evil.example"}).status_code == 400
    upload = {"file": ("q.jpg", images.jpeg_bytes(images.family(0, 0)), "image/jpeg")}
    assert client.post("/search", files=upload, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert client.post("/search", files=upload, headers={"origin": "http://127.0.0.1"}).status_code == 200


def test_serve_command_warns_off_loopback(monkeypatch: pytest.MonkeyPatch, store_dir: Path) -> None:
    import imgdb.serve
    from imgdb.cli.app import app as cli

    calls: list[dict[str, object]] = []
    monkeypatch.setattr(imgdb.serve, "run", lambda db, **kw: calls.append({"db": db, **kw}))
    quiet = CliRunner().invoke(cli, ["serve", "--db", str(store_dir), "--port", "8123"])
    assert quiet.exit_code == 0 and "warning" not in quiet.output
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8123
    loud = CliRunner().invoke(cli, ["serve", "--db", str(store_dir), "--host", "0.0.0.0"])
    assert loud.exit_code == 0 and "warning: listening on 0.0.0.0" in loud.output
    monkeypatch.undo()
    missing = CliRunner().invoke(cli, ["serve", "--db", str(store_dir.parent / "nothing")])
    assert missing.exit_code == 1 and "no imgdb store" in missing.output and "Traceback" not in missing.output


def test_reads_go_on_during_an_ingest_in_another_process(tmp_path: Path, family_db: Path) -> None:
    db = tmp_path / "db"
    shutil.copytree(family_db, db)
    new = tmp_path / "new"
    for seed in range(30):
        (new / f"{seed}.jpg").parent.mkdir(exist_ok=True)
        (new / f"{seed}.jpg").write_bytes(images.jpeg_bytes(images.photo(100 + seed, (320, 240))))
    before = images.FAMILIES * images.FAMILY_MEMBERS
    library = Library(db)
    with TestClient(create_app(library), base_url="http://127.0.0.1") as client:
        assert f"{before:,} images" in client.get("/").text
        env = {**os.environ, "IMGDB_THREADS": "1"}
        writer = subprocess.Popen(
            [sys.executable, "-m", "imgdb.cli", "ingest", str(new), "--db", str(db), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        answered = 0
        while writer.poll() is None:  # the app answers while the ingest runs, and never blocks it
            page = client.get("/")
            assert page.status_code == 200, page.text[-300:]
            answered += 1
            time.sleep(0.05)
        _, err = writer.communicate()
        assert writer.returncode == 0, err.decode()
        assert answered > 0
        after = client.get("/").text
        assert f"{before + 30:,} images" in after  # committed images show up without a restart
        newest = ids_in(after, "grid")[0]
        assert client.get(f"/image/{newest}").status_code == 200  # and their vectors are searchable
        assert len(ids_in(client.get(f"/image/{newest}").text, "neighbours")) == routes.NEIGHBOURS


def test_a_reader_searches_through_pylance_like_lancedb(store_dir: Path) -> None:
    """Readers search through pylance (a third of lancedb's import time): same answers."""
    with Store.open(store_dir) as store:
        key = store.main_model()
        assert key is not None
        ids = sorted(store.image_ids())[:8]
        vectors = store.get_vectors(key, ids)
        assert store._dataset(key) is not None and set(vectors) == set(ids)
        through_lance = [store.nearest(key, vectors[i], 10, nprobes=50, refine_factor=10) for i in ids]
        assert "lancedb" not in sys.modules or store._lance is None  # the reader never connected lancedb
    with Store.open(store_dir) as store:
        store._dataset = lambda model_key: None  # type: ignore[method-assign]
        assert store.get_vectors(key, ids).keys() == vectors.keys()
        through_lancedb = [store.nearest(key, vectors[i], 10, nprobes=50, refine_factor=10) for i in ids]
    for a, b in zip(through_lance, through_lancedb):
        assert [i for i, _ in a] == [i for i, _ in b]
        assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) < 1e-5
