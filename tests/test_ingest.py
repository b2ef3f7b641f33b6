"""Ingest end to end: folders and a fixture shop on a real 127.0.0.1 server, into real stores."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from imgdb.acquire.fetch import FetchPolicy
from imgdb.acquire.ingest import IngestOptions, ingest
from imgdb.errors import ConnectFailed, UsageError
from imgdb.imaging.model import Model, ModelSpec
from imgdb.store import Store
from tests import images
from tests.server import Response


def fast_policy(**kw) -> FetchPolicy:
    return FetchPolicy(**{"timeout": 0.5, "retries": 2, "backoff": 0.01, "max_retry_after": 0.1, **kw})


def assert_stores_agree(store: Store, model: Model) -> None:
    ids = store.image_ids()
    assert store.vector_ids(model.spec.key) == ids
    assert store.vectors(model.spec.key).count_rows() == len(ids)  # no duplicate rows
    for image_id in ids:
        assert hashlib.sha256(store.read_blob(image_id)).hexdigest() == image_id


# ---------------------------------------------------------------------------- folders


def make_folder(root: Path) -> dict[str, bytes]:
    files = {
        "a/photo1.jpg": images.jpeg_bytes(images.photo(1, (320, 240))),
        "a/photo2.png": images.png_bytes(images.photo(2, (320, 240))),
        "a/deeper/photo3.webp": images.webp_bytes(images.photo(3, (320, 240))),
        "b/copy-of-photo1.jpg": images.jpeg_bytes(images.photo(1, (320, 240))),
        "b/rotated.jpg": images.exif_rotated_jpeg_bytes(images.photo(4, (320, 240))),
        "b/cmyk.jpg": images.cmyk_jpeg_bytes(images.photo(5, (320, 240))),
        "b/anim.gif": images.gif_bytes(images.photo(6, (160, 120))),
        "b/scan.tif": images.tiff_bytes(images.photo(7, (160, 120))),
        "b/old.bmp": images.bmp_bytes(images.photo(8, (160, 120))),
        "bad/truncated.jpg": images.truncated_jpeg_bytes(images.photo(9, (320, 240))),
        "bad/page.jpg": images.html_as_image_bytes(),
        "bad/empty.png": b"",
        "bad/bomb.png": images.pixel_bomb_png_bytes(),
        "notes.txt": b"not an image, and not picked up by the walk",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_folder_ingest_stores_every_image_and_records_failures(tmp_path, model):
    make_folder(tmp_path / "pics")
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [str(tmp_path / "pics")], model)
        assert summary.images_found == 13
        assert summary.new == 8 and summary.already_stored == 1
        assert dict(summary.failed) == {"truncated": 1, "not-image": 1, "empty": 1, "bomb": 1}
        assert_stores_agree(store, model)
        formats = dict(store.query("SELECT format, count(*) FROM images GROUP BY 1"))
        assert formats == {"JPEG": 3, "PNG": 1, "WEBP": 1, "GIF": 1, "TIFF": 1, "BMP": 1}
        # The same bytes at two paths: one image, two sources.
        dup = store.query("SELECT image_id, count(*) FROM sources GROUP BY 1 HAVING count(*) > 1")
        assert len(dup) == 1 and dup[0][1] == 2
        assert store.query(
            "SELECT width, height FROM images i JOIN sources s ON s.image_id = i.id WHERE s.source LIKE '%rotated.jpg'"
        ) == [(320, 240)]
        reasons = store.query("SELECT reason, count(*) FROM failures GROUP BY 1 ORDER BY 1")
        assert reasons == [("bomb", 1), ("empty", 1), ("not-image", 1), ("truncated", 1)]
        runs = store.query("SELECT command, status FROM runs")
        assert runs == [("ingest", "done")]


def test_folder_rerun_adds_nothing(tmp_path, model):
    make_folder(tmp_path / "pics")
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        before = store.info()
        again = ingest(store, [str(tmp_path / "pics")], model)
        assert again.new == 0 and again.already_stored == 9
        after = store.info()
        assert (after["images"], after["sources"]) == (before["images"], before["sources"])
        assert_stores_agree(store, model)


def test_same_image_twice_gives_the_identical_vector(tmp_path, model):
    data = images.jpeg_bytes(images.photo(11))
    (tmp_path / "one.jpg").write_bytes(data)
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "one.jpg")], model)
        image_id = hashlib.sha256(data).hexdigest()
        stored = store.get_vectors(model.spec.key, [image_id])[image_id]
    from imgdb.imaging.decode import decode

    fresh = model.embed_images([decode(data, target=model.spec.decode_target).image])[0]
    assert np.array_equal(stored, fresh)


def test_missing_folder_is_a_usage_error(tmp_path, model):
    with Store.open(tmp_path / "db", write=True) as store:
        with pytest.raises(UsageError, match="no such file"):
            ingest(store, [str(tmp_path / "nope")], model)
        assert store.image_ids() == set()


# ---------------------------------------------------------------------------- the web

MODIFIED = datetime(2026, 1, 1, tzinfo=timezone.utc)


def listing(n: int, body: str, next_href: str | None) -> str:
    nav = f'<a class="next" href="{next_href}">Next »</a>' if next_href else ""
    return f"<html><head><title>Shop page {n}</title></head><body>{body}{nav}</body></html>"


def build_shop(server) -> dict[str, bytes]:
    """Three listing pages, product pages, every awkward case the crawler must survive."""
    host = server.url("/").split("//")[1].rstrip("/")
    pics = {f"/img/p{i}.jpg": images.jpeg_bytes(images.photo(100 + i, (320, 240))) for i in range(8)}
    pics["/img/p0-small.jpg"] = images.jpeg_bytes(images.photo(100, (160, 120)))
    pics["/img/detail1.png"] = images.png_bytes(images.photo(120, (320, 240)))
    pics["/img/flaky.webp"] = images.webp_bytes(images.photo(121, (320, 240)))
    for path, data in pics.items():
        if path != "/img/flaky.webp":
            server.route(path, data, last_modified=MODIFIED)
    server.sequence("/img/flaky.webp", [500, Response(body=pics["/img/flaky.webp"], content_type="image/webp")])
    server.route("/img/missing.jpg", status=404)
    server.redirect("/img/loop.jpg", "/img/loop2.jpg")
    server.redirect("/img/loop2.jpg", "/img/loop.jpg")
    server.route("/img/slow.jpg", pics["/img/p1.jpg"], delay=2.0)
    server.route("/img/html.jpg", images.html_as_image_bytes(), content_type="image/jpeg")
    server.route("/img/truncated.jpg", images.truncated_jpeg_bytes(images.photo(122, (320, 240))))
    server.route("/img/bomb.png", images.pixel_bomb_png_bytes())
    server.route("/img/huge.jpg", b"\xff\xd8" + b"\0" * 300_000)
    server.route("/private/secret.jpg", images.jpeg_bytes(images.photo(123, (64, 64))))
    server.route("/robots.txt", "User-agent: *\nDisallow: /private/\n", content_type="text/plain")

    page1 = (
        '<img src="/img/p0.jpg" alt="first">'
        '<img src="data:image/gif;base64,R0lGOD" data-src="../img/p1.jpg" loading="lazy">'
        '<img src="/img/p0-small.jpg" srcset="/img/p0-small.jpg 160w, /img/p2.jpg 320w">'
        f'<img src="//{host}/img/p3.jpg">'
        '<a href="/product/1/">Product 1</a> <a href="https://example.invalid/away">elsewhere</a>'
        '<img src="/private/secret.jpg">'
    )
    page2 = (
        '<picture><source srcset="/img/p4.jpg"><img src="/img/p4.jpg"></picture>'
        "<div style=\"background-image: url('/img/p5.jpg')\"></div>"
        '<img src="/img/missing.jpg"><img src="/img/loop.jpg"><img src="/img/slow.jpg">'
        '<a href="/product/2/">Product 2</a>'
    )
    page3 = (
        '<img src="/img/html.jpg"><img src="/img/truncated.jpg"><img src="/img/bomb.png">'
        '<img src="/img/huge.jpg"><img src="/img/p0.jpg">'
    )
    server.route("/shop/", listing(1, page1, "/shop/page/2/"), last_modified=MODIFIED)
    server.route("/shop/page/2/", listing(2, page2, "/shop/page/3/"), last_modified=MODIFIED)
    server.route("/shop/page/3/", listing(3, page3, None), last_modified=MODIFIED)
    server.route(
        "/product/1/",
        '<meta property="og:image" content="/img/p6.jpg"><img src="/img/detail1.png">',
        last_modified=MODIFIED,
    )
    server.route(
        "/product/2/", '<img src="/img/p7.jpg" title="seven"><img src="/img/flaky.webp">', last_modified=MODIFIED
    )
    return pics


def shop_options(**kw) -> IngestOptions:
    return IngestOptions(**{"depth": 1, "fetch_policy": fast_policy(max_bytes=200_000), **kw})


def test_web_ingest_crawls_pagination_and_product_pages(tmp_path, http_server, model):
    build_shop(http_server)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/shop/")], model, shop_options())
        assert summary.pages == 5 and summary.pages_failed == 0
        assert dict(summary.failed) == {
            "robots": 1,
            "http-404": 1,
            "redirects": 1,
            "timeout": 1,
            "not-image": 1,
            "truncated": 1,
            "bomb": 1,
            "too-large": 1,
        }
        # p0..p7, p0-small is replaced by the larger srcset candidate, detail1, flaky (after a retry).
        assert summary.new == 10
        assert_stores_agree(store, model)
        assert http_server.count("/private/secret.jpg") == 0
        assert http_server.count("/img/p0-small.jpg") == 0
        assert http_server.count("/img/flaky.webp") == 2
        assert not any("example.invalid" in p for p in http_server.paths())
        p0 = store.query(
            "SELECT page_url, alt, site, http_status, content_type FROM sources WHERE source LIKE '%/img/p0.jpg'"
        )
        assert p0 == [(http_server.url("/shop/"), "first", p0[0][2], 200, "image/jpeg")]
        assert store.query("SELECT title FROM sources WHERE source LIKE '%p7.jpg'") == [("seven",)]
        pages = dict(store.query("SELECT url, images_found FROM pages"))
        assert pages[http_server.url("/shop/page/3/")] == 5
        agents = {h["User-Agent"] for _m, _p, h in http_server.requests}
        assert all("imgdb" in a for a in agents)


def test_web_rerun_adds_nothing_and_downloads_nothing_again(tmp_path, http_server, model):
    build_shop(http_server)
    url = http_server.url("/shop/")
    with Store.open(tmp_path / "db", write=True) as store:
        first = ingest(store, [url], model, shop_options())
        images_before = store.info()["images"]
        http_server.reset()
        again = ingest(store, [url], model, shop_options())
        # Stored images are not fetched again; only what failed last time is retried.
        assert again.new == 0 and again.downloaded == 3  # html.jpg, truncated.jpg, bomb.png
        assert again.already_stored == first.new
        assert store.info()["images"] == images_before
        assert http_server.count("/img/p0.jpg") == 0
        # Pages are revalidated, not re-downloaded: the server answered 304.
        listing_requests = [h for _m, p, h in http_server.requests if p == "/shop/"]
        assert listing_requests and "If-Modified-Since" in listing_requests[0]
        assert_stores_agree(store, model)


def test_max_images_caps_the_run(tmp_path, http_server, model):
    build_shop(http_server)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/shop/")], model, shop_options(max_images=3, depth=0))
        assert summary.images_found == 3 and summary.new == 3


def test_pages_option_limits_pagination(tmp_path, http_server, model):
    build_shop(http_server)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/shop/")], model, shop_options(pages=2, depth=0))
        assert summary.pages == 2
        assert http_server.count("/shop/page/3/") == 0


def test_an_image_url_is_ingested_directly(tmp_path, http_server, model):
    http_server.route("/one.png", images.png_bytes(images.photo(5, (160, 120))))
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/one.png")], model, shop_options())
        assert summary.new == 1


def test_unreachable_start_page_is_an_error_and_stores_nothing(tmp_path, model):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with Store.open(tmp_path / "db", write=True) as store:
        with pytest.raises(ConnectFailed):
            ingest(store, [f"http://127.0.0.1:{port}/"], model, shop_options())
        assert store.image_ids() == set()
        assert store.query("SELECT status FROM runs") == [("failed",)]


def test_vectors_are_kept_per_model(tmp_path, model):
    """A second model (here: the same weights under another name) gets its own vectors."""
    import json
    import shutil

    spec = model.spec
    shutil.copy(spec.path, tmp_path / "other.onnx")
    raw = json.loads(spec.path.with_suffix(".json").read_text())
    raw.update(name="other", file="other.onnx")
    (tmp_path / "other.json").write_text(json.dumps(raw))
    other = Model(ModelSpec.load(tmp_path / "other.onnx"))
    (tmp_path / "pics").mkdir()
    for seed in range(3):
        (tmp_path / "pics" / f"{seed}.png").write_bytes(images.png_bytes(images.photo(seed, (96, 72))))
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        again = ingest(store, [str(tmp_path / "pics")], other)
        assert again.new == 0 and again.already_stored == 3
        models = {m["name"]: m["vectors"] for m in store.info()["models"]}
        assert models == {"efficientnet-lite0": 3, "other": 3}
        assert store.vector_ids(other.spec.key) == store.vector_ids(model.spec.key) == store.image_ids()
