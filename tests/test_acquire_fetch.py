"""acquire/fetch.py against hostile servers: trickles, hang-ups, dead hosts, huge Retry-After, robots.txt.

Every server here is a real ``LocalServer`` on 127.0.0.1 (tests/server.py); dead hosts
are names under ``.invalid``, which never resolve (RFC 6761).
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from imgdb.acquire import fetch as fetch_module
from imgdb.acquire.fetch import FetchPolicy
from imgdb.errors import FetchError, FetchTimeout, HTTPStatusError, RobotsDisallowed
from tests.fetching import FAST, fetch, fetch_many
from tests.server import LocalServer, Response


def reasons(results: list[Any]) -> Counter[str]:
    return Counter(r.reason if isinstance(r, FetchError) else "ok" for r in results)


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts name lookups per host (asyncio resolves through socket.getaddrinfo)."""
    seen: Counter[str] = Counter()
    real = socket.getaddrinfo

    def counting(host: Any, *args: Any, **kwargs: Any) -> Any:
        seen[host.decode() if isinstance(host, bytes) else str(host)] += 1
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    return seen


# ---------------------------------------------------------------- deadlines


def test_trickled_image_ends_at_the_total_deadline(http_server: LocalServer) -> None:
    # 600 bytes, one per 50 ms: every read is quick, the whole answer would take 30 s.
    http_server.route("/drip.jpg", b"x" * 600, trickle=0.05)
    start = time.monotonic()
    with pytest.raises(FetchTimeout) as info:
        fetch(http_server.url("/drip.jpg"), replace(FAST, timeout=0.5), kind="image")
    assert time.monotonic() - start < 10
    assert info.value.reason == "timeout"
    assert http_server.count("/drip.jpg") == 1  # an answer slower than the deadline is not asked for again


def test_trickled_page_and_robots_end_too(http_server: LocalServer) -> None:
    http_server.route("/slow-page", "<p>" + "x" * 600, trickle=0.05)
    with pytest.raises(FetchTimeout):
        fetch(http_server.url("/slow-page"), replace(FAST, timeout=0.5))
    with LocalServer() as other:
        other.route("/robots.txt", "User-agent: *\n" + "#" * 600, trickle=0.05)
        other.route("/a.jpg", b"img")
        start = time.monotonic()
        results = fetch_many([other.url(f"/a.jpg?{i}") for i in range(5)], replace(FAST, timeout=0.5), kind="image")
        assert time.monotonic() - start < 10
        assert reasons(results) == {"timeout": 5}
        assert other.count("/robots.txt") == 1  # the failure is remembered for the origin
        assert other.count("/a.jpg") == 0


def test_similar_on_a_trickling_url_ends(
    http_server: LocalServer, family_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`imgdb similar URL` fetches with a default ``Fetcher()``: its deadline must hold there."""
    import imgdb

    http_server.route("/drip.jpg", b"x" * 600, trickle=0.05)
    defaults = fetch_module.FetchPolicy

    def short_default(*args: Any, **kwargs: Any) -> FetchPolicy:
        return defaults(*args, **{"timeout": 0.5, **kwargs})

    monkeypatch.setattr(fetch_module, "FetchPolicy", short_default)
    start = time.monotonic()
    with imgdb.open(family_db) as images, pytest.raises(FetchTimeout):
        images.similar(http_server.url("/drip.jpg"))
    assert time.monotonic() - start < 10


def test_huge_retry_after_gives_up_at_once(http_server: LocalServer) -> None:
    http_server.route("/busy.jpg", status=503, headers={"Retry-After": "100000"})
    start = time.monotonic()
    with pytest.raises(HTTPStatusError) as info:
        fetch(http_server.url("/busy.jpg"), replace(FAST, retries=3, max_retry_after=60.0), kind="image")
    assert info.value.reason == "http-503"
    assert http_server.count("/busy.jpg") == 1  # a 60 s wait is over the per-URL retry budget
    assert time.monotonic() - start < 5


def test_retry_waits_per_url_are_capped_in_total(http_server: LocalServer) -> None:
    http_server.route("/rl.jpg", status=429, headers={"Retry-After": "0.4"})
    with pytest.raises(HTTPStatusError):
        fetch(http_server.url("/rl.jpg"), replace(FAST, retries=5, max_retry_total=1.0), kind="image")
    assert http_server.count("/rl.jpg") == 3  # waits 0.4 + 0.4; a third would pass 1.0 s


# ---------------------------------------------------------------- dead hosts


def test_unresolvable_host_is_looked_up_once_and_not_retried(lookups: Counter[str]) -> None:
    urls = [f"http://img.example.invalid/{i}.jpg" for i in range(20)]
    start = time.monotonic()
    results = fetch_many(urls, replace(FAST, retries=3, backoff=0.5), kind="image")
    assert time.monotonic() - start < 5
    assert sum(reasons(results).values()) == 20
    assert set(reasons(results)) <= {"connect", "host-down"}
    assert reasons(results)["host-down"] >= 19
    assert lookups["img.example.invalid"] == 1
    assert not any("disallow" in str(r) for r in results)


def test_unresolvable_host_without_robots_is_looked_up_once(lookups: Counter[str]) -> None:
    urls = [f"http://cdn.example.invalid/{i}.jpg" for i in range(20)]
    results = fetch_many(urls, replace(FAST, retries=3, backoff=0.5, respect_robots=False), kind="image")
    assert set(reasons(results)) <= {"connect", "host-down"}
    assert lookups["cdn.example.invalid"] <= FAST.per_host  # those already in flight, no retries


def test_host_that_keeps_hanging_up_is_skipped_for_the_run(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", "User-agent: *\nAllow: /\n")
    for i in range(30):
        http_server.route(f"/{i}.jpg", hang_up=True)
    urls = [http_server.url(f"/{i}.jpg") for i in range(30)]
    results = fetch_many(urls, replace(FAST, retries=2, per_host=2), kind="image")
    assert set(reasons(results)) <= {"connect", "host-down"}
    assert reasons(results)["host-down"] >= 20
    image_requests = sum(1 for p in http_server.paths() if p.endswith(".jpg"))
    assert image_requests <= FetchPolicy().host_down_after + 2  # not 30 x 3


def test_robots_connect_failure_is_remembered_per_origin(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", hang_up=True)
    http_server.route("/a.jpg", b"img")
    results = fetch_many([http_server.url(f"/a.jpg?{i}") for i in range(10)], kind="image")
    assert set(reasons(results)) <= {"connect", "host-down"}
    assert http_server.count("/robots.txt") == FAST.retries + 1  # once, with its retries
    assert http_server.count("/a.jpg") == 0


# ------------------------------------------------------------------ robots


def test_robots_wildcards_and_end_anchor(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", "User-agent: *\nDisallow: /*.jpg$\n")
    for path in ("/img/a.jpg", "/img/a.png", "/img/b.jpg"):
        http_server.route(path, b"img")
    with pytest.raises(RobotsDisallowed):
        fetch(http_server.url("/img/a.jpg"), kind="image")
    assert fetch(http_server.url("/img/a.png"), kind="image").content == b"img"
    assert fetch(http_server.url("/img/b.jpg?size=2"), kind="image").content == b"img"  # $ anchors the end
    assert http_server.count("/img/a.jpg") == 0


def test_robots_longest_match_wins(http_server: LocalServer) -> None:
    http_server.route(
        "/robots.txt", "User-agent: imgdb\nDisallow: /shop/\nAllow: /shop/public/\nDisallow: /shop/public/raw/\n"
    )
    for path in ("/shop/a.jpg", "/shop/public/a.jpg", "/shop/public/raw/a.jpg"):
        http_server.route(path, b"img")
    assert fetch(http_server.url("/shop/public/a.jpg"), kind="image").content == b"img"
    for path in ("/shop/a.jpg", "/shop/public/raw/a.jpg"):
        with pytest.raises(RobotsDisallowed):
            fetch(http_server.url(path), kind="image")


def test_crawl_delay_in_a_wildcard_group_is_honoured(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", "User-agent: *\nCrawl-delay: 0.5\nDisallow: /*?nope\n")
    http_server.route("/p", b"p")
    start = time.monotonic()
    results = fetch_many([http_server.url(f"/p?{i}") for i in range(3)])
    assert reasons(results) == {"ok": 3}
    assert time.monotonic() - start >= 0.9  # three requests, 0.5 s apart


def test_robots_500_is_unavailable_not_disallowed(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", status=500)
    http_server.route("/a.jpg", b"img")
    with pytest.raises(RobotsDisallowed) as info:
        fetch(http_server.url("/a.jpg"), kind="image")
    assert "robots.txt unavailable" in str(info.value)
    assert "disallow" not in str(info.value)
    assert info.value.reason == "robots-unavailable"
    assert http_server.count("/a.jpg") == 0


def test_a_single_hang_up_is_retried(http_server: LocalServer) -> None:
    """A hang-up is a transient failure like any other: the retry gets the answer."""
    http_server.sequence("/flaky.jpg", [Response(hang_up=True), Response(body=b"ok")])
    assert fetch(http_server.url("/flaky.jpg"), kind="image").content == b"ok"
    assert http_server.count("/flaky.jpg") == 2
