"""Web ingest against hostile sites on a real 127.0.0.1 server: trickles, dead hosts, huge
sites, noai pages, off-site redirects, srcset candidates that fail."""

from __future__ import annotations

import threading
import time
from typing import Any

from imgdb.acquire.fetch import FetchPolicy
from imgdb.acquire.ingest import IngestOptions, IngestSummary, ingest
from imgdb.store import Store
from tests import images
from tests.server import LocalServer


def options(**kw: Any) -> IngestOptions:
    policy = kw.pop("policy", None) or FetchPolicy(timeout=2.0, retries=2, backoff=0.01, max_retry_after=0.1)
    return IngestOptions(**{"fetch_policy": policy, **kw})


def jpeg(seed: int) -> bytes:
    return images.jpeg_bytes(images.photo(seed, (96, 72)))


def image_requests(server: LocalServer) -> int:
    return sum(1 for p in server.paths() if p.split("?")[0].endswith(".jpg"))


# ------------------------------------------------------------------ trickles


def test_finished_downloads_are_stored_while_one_trickles(tmp_path, http_server, model):
    for i in range(3):
        http_server.route(f"/img/{i}.jpg", jpeg(200 + i))
    http_server.route("/img/drip.jpg", jpeg(210), trickle=0.05)  # thousands of bytes: minutes
    http_server.route("/", "".join(f'<img src="/img/{i}.jpg">' for i in range(3)) + '<img src="/img/drip.jpg">')
    policy = FetchPolicy(timeout=6.0, retries=0)
    result: list[IngestSummary] = []
    with Store.open(tmp_path / "db", write=True) as store:
        worker = threading.Thread(
            target=lambda: result.append(ingest(store, [http_server.url("/")], model, options(policy=policy))),
            daemon=True,  # a regression must fail the test, not hold the interpreter at exit
        )
        worker.start()
        deadline = time.monotonic() + 5
        stored = 0
        while time.monotonic() < deadline and stored < 3:
            time.sleep(0.2)
            stored = len(store.image_ids())
        still_running = worker.is_alive()
        worker.join(30)
        assert not worker.is_alive()  # the trickle ends at the deadline
        assert stored == 3 and still_running  # stored while the run was still waiting on the trickle
        assert result[0].new == 3
        assert dict(result[0].failed) == {"timeout": 1}


# ---------------------------------------------------------------- dead hosts


def test_page_of_images_on_an_unresolvable_host_adds_little(tmp_path, http_server, model):
    imgs = "".join(f'<img src="http://img.example.invalid/{i}.jpg">' for i in range(400))
    http_server.route("/", imgs + '<img src="/ok.jpg">')
    http_server.route("/ok.jpg", jpeg(220))
    with Store.open(tmp_path / "db", write=True) as store:
        start = time.monotonic()
        summary = ingest(store, [http_server.url("/")], model, options(policy=FetchPolicy(timeout=5.0)))
        assert time.monotonic() - start < 5  # default retries and backoff
        assert summary.new == 1
        assert sum(summary.failed.values()) == 400
        assert set(summary.failed) <= {"connect", "host-down"}
        assert summary.failed["host-down"] >= 390


def test_rerun_does_not_retry_last_runs_connect_failures(tmp_path, http_server, model):
    with LocalServer() as dead:
        for i in range(3):
            dead.route(f"/{i}.jpg", hang_up=True)
        http_server.route("/", "".join(f'<img src="{dead.url(f"/{i}.jpg")}">' for i in range(3)) + '<img src="/a.jpg">')
        http_server.route("/a.jpg", jpeg(221))
        url = http_server.url("/")
        with Store.open(tmp_path / "db", write=True) as store:
            first = ingest(store, [url], model, options())
            assert first.new == 1 and set(first.failed) <= {"connect", "host-down"}
            assert image_requests(dead) > 0

            dead.reset()
            again = ingest(store, [url], model, options())
            assert image_requests(dead) == 0
            assert dict(again.failed) == {"not-retried": 3}

            for opts in (options(retry_failed=True), options(refresh=True)):
                dead.reset()
                retried = ingest(store, [url], model, opts)
                assert image_requests(dead) > 0
                assert set(retried.failed) <= {"connect", "host-down"}


# ----------------------------------------------------------------- big sites


def big_site(server: LocalServer, products: int) -> None:
    links = "".join(f'<a href="/item/{i}">product {i}</a>' for i in range(products))
    server.route("/", '<img src="/img/l0.jpg"><img src="/img/l1.jpg">' + links)
    for i in range(2):
        server.route(f"/img/l{i}.jpg", jpeg(230 + i))
    for i in range(products):
        server.route(f"/item/{i}", f'<img src="/img/p{i}.jpg">')
        server.route(f"/img/p{i}.jpg", jpeg(300 + i % 20))


def test_max_images_stops_the_crawl(tmp_path, http_server, model):
    big_site(http_server, 300)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/")], model, options(depth=1, max_images=5))
    assert summary.images_found == 5
    product_pages = sum(1 for p in http_server.paths() if p.startswith("/item/"))
    assert product_pages <= 3 + FetchPolicy().per_host  # the three it needed, plus those in flight


def test_max_pages_bounds_each_depth_level(tmp_path, http_server, model):
    big_site(http_server, 30)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/")], model, options(depth=1, max_pages=10))
    assert sum(1 for p in http_server.paths() if p.startswith("/item/")) == 10
    assert summary.pages == 11
    assert IngestOptions().max_pages > 0  # bounded by default


# -------------------------------------------------------------------- srcset


def test_failed_srcset_candidate_falls_back_to_src(tmp_path, http_server, model):
    http_server.route("/img/a.jpg", jpeg(240))
    http_server.route("/img/gone-800.jpg", status=404)
    http_server.route(
        "/",
        '<img src="/img/a.jpg" srcset="http://cdn.example.invalid/a-1600.jpg 1600w, /img/a.jpg 400w">'
        '<img src="/img/a.jpg" srcset="/img/gone-800.jpg 800w">'
        '<img src="/img/none.jpg" srcset="http://cdn.example.invalid/b-1600.jpg 1600w">',
    )
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, [http_server.url("/")], model, options())
        assert summary.new == 1
        # Only the <img> whose every candidate failed is a failure.
        assert sum(summary.failed.values()) == 1
        sources = {s for (s,) in store.query("SELECT source FROM sources")}
        assert sources == {http_server.url("/img/a.jpg")}
        failed = store.query("SELECT source FROM failures")
        assert failed == [("http://cdn.example.invalid/b-1600.jpg",)]


# ---------------------------------------------------------------- politeness


def test_images_of_noai_pages_are_not_ingested(tmp_path, http_server, model):
    for i in range(4):
        http_server.route(f"/img/{i}.jpg", jpeg(250 + i))
    http_server.route("/header", '<img src="/img/0.jpg">', headers={"X-Robots-Tag": "noai"})
    http_server.route("/header-agent", '<img src="/img/1.jpg">', headers={"X-Robots-Tag": "imgdb: noimageai"})
    http_server.route("/meta", '<meta name="robots" content="noindex, noai"><img src="/img/2.jpg">')
    http_server.route("/fine", '<meta name="robots" content="nofollow"><img src="/img/3.jpg">')
    targets = [http_server.url(p) for p in ("/header", "/header-agent", "/meta", "/fine")]
    with Store.open(tmp_path / "db", write=True) as store:
        summary = ingest(store, targets, model, options())
        assert summary.new == 1
        assert dict(summary.failed) == {"x-robots-tag": 3}
        assert [http_server.count(f"/img/{i}.jpg") for i in range(4)] == [0, 0, 0, 1]
    with Store.open(tmp_path / "db2", write=True) as store:
        assert ingest(store, targets, model, options(respect_robots=False)).new == 4


def test_start_page_redirecting_off_site_keeps_the_crawl_on_the_named_site(tmp_path, http_server, model):
    with LocalServer() as elsewhere:
        elsewhere.route(
            "/list",
            '<img src="/img/a.jpg"><a rel="next" href="/list?page=2">next</a><a href="/p/1">product</a>',
        )
        elsewhere.route("/list?page=2", '<img src="/img/b.jpg">')
        elsewhere.route("/p/1", '<img src="/img/c.jpg">')
        for name, seed in (("a", 260), ("b", 261), ("c", 262)):
            elsewhere.route(f"/img/{name}.jpg", jpeg(seed))
        http_server.redirect("/shop", elsewhere.url("/list"))
        with Store.open(tmp_path / "db", write=True) as store:
            summary = ingest(store, [http_server.url("/shop")], model, options(depth=1, pages=3))
        assert summary.new == 1  # the page the user's URL led to
        assert elsewhere.count("/list?page=2") == 0
        assert elsewhere.count("/p/1") == 0


def test_empty_target_is_refused(tmp_path, model):
    import pytest

    from imgdb.errors import UsageError

    with Store.open(tmp_path / "db", write=True) as store:
        with pytest.raises(UsageError, match="empty"):
            ingest(store, [""], model)
        with pytest.raises(UsageError, match="empty"):
            ingest(store, ["  "], model)
        assert store.query("SELECT count(*) FROM runs") == [(0,)]


def test_empty_target_on_the_command_line_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from imgdb.cli.app import app

    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "a.png").write_bytes(images.png_bytes(images.photo(1, (64, 48))))
    monkeypatch.chdir(tmp_path / "here")
    result = CliRunner().invoke(app, ["ingest", "", "--db", str(tmp_path / "db")])
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1
    assert "empty" in result.output
    assert not (tmp_path / "db" / "blobs").exists()
