"""imgdb.fetch against a real HTTP server on 127.0.0.1 (plus MockTransport for the odd case)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from imgdb.acquire.fetch import Fetched, Fetcher, FetchPolicy
from imgdb.errors import (
    ConnectFailed,
    FetchError,
    FetchTimeout,
    HTTPStatusError,
    NoAIRefused,
    RobotsDisallowed,
    TooLarge,
    TooManyRedirects,
)
from tests.fetching import FAST, fetch, fetch_many
from tests.server import LocalServer, Response


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------- basics


def test_200_page(http_server: LocalServer) -> None:
    http_server.route("/shop", "<h1>hi</h1>", content_type="text/html; charset=UTF-8")
    url = http_server.url("/shop")
    result = fetch(url)
    assert (result.url, result.final_url, result.status) == (url, url, 200)
    assert result.content == b"<h1>hi</h1>"
    assert result.content_type == "text/html"
    assert result.headers["content-length"] == "11"
    assert result.fetched_at.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - result.fetched_at) < timedelta(seconds=10)


def test_user_agent_names_imgdb_on_every_request(http_server: LocalServer) -> None:
    http_server.route("/a.jpg", b"img")
    fetch(http_server.url("/a.jpg"), kind="image")
    assert http_server.paths() == ["/robots.txt", "/a.jpg"]
    for _method, _path, headers in http_server.requests:
        assert headers["User-Agent"].startswith("imgdb/")


def test_404_is_http_status_error(http_server: LocalServer) -> None:
    with pytest.raises(HTTPStatusError) as info:
        fetch(http_server.url("/missing"))
    assert info.value.reason == "http-404"
    assert info.value.status == 404
    assert http_server.count("/missing") == 1  # 4xx other than 429 is not retried


def test_invalid_urls_raise_fetch_error() -> None:
    for url in ("ftp://example.com/a.jpg", "not a url", "http://", "mailto:x@example.com"):
        with pytest.raises(FetchError) as info:
            fetch(url)
        assert info.value.reason == "fetch"
        assert url in str(info.value)


# ---------------------------------------------------------------- retries


def test_retries_500_then_succeeds(http_server: LocalServer) -> None:
    http_server.sequence("/flaky", [500, 500, Response(body=b"ok")])
    result = fetch(http_server.url("/flaky"))
    assert result.content == b"ok"
    assert http_server.count("/flaky") == 3


def test_gives_up_after_retries(http_server: LocalServer) -> None:
    http_server.route("/down", status=502)
    with pytest.raises(HTTPStatusError) as info:
        fetch(http_server.url("/down"), replace(FAST, retries=3))
    assert info.value.reason == "http-502"
    assert http_server.count("/down") == 4


def test_503_retry_after_is_honoured(http_server: LocalServer) -> None:
    http_server.sequence("/busy", [Response(503, headers={"Retry-After": "1"}), Response(body=b"ok")])
    start = time.monotonic()
    assert fetch(http_server.url("/busy")).content == b"ok"
    assert time.monotonic() - start >= 0.9  # the 0.01 s backoff alone would be far quicker


def test_429_retry_after_is_capped(http_server: LocalServer) -> None:
    http_server.sequence("/rl", [Response(429, headers={"Retry-After": "3600"}), Response(body=b"ok")])
    start = time.monotonic()
    assert fetch(http_server.url("/rl"), replace(FAST, max_retry_after=0.2)).content == b"ok"
    assert 0.15 <= time.monotonic() - start < 2


def test_retry_after_http_date() -> None:
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            when = datetime.now(timezone.utc) + timedelta(seconds=2)
            return httpx.Response(429, headers={"Retry-After": format_datetime(when, usegmt=True)})
        return httpx.Response(200, content=b"ok")

    policy = replace(FAST, respect_robots=False)

    async def go() -> Fetched:
        async with Fetcher(policy, transport=httpx.MockTransport(handler)) as fetcher:
            return await fetcher.get("http://example.test/x")

    assert asyncio.run(go()).content == b"ok"
    # HTTP dates have 1 s resolution, so "in 2 s" means somewhere in (1, 2].
    assert calls[1] - calls[0] >= 0.9


def test_transport_errors_are_mapped_and_retried() -> None:
    attempts = {"n": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise httpx.ReadError("connection reset by peer", request=request)
        if attempts["n"] == 2:
            raise httpx.ReadTimeout("slow", request=request)
        return httpx.Response(200, content=b"ok")

    async def go(h: Any, policy: FetchPolicy) -> Fetched:
        async with Fetcher(policy, transport=httpx.MockTransport(h)) as fetcher:
            return await fetcher.get("http://example.test/x")

    policy = replace(FAST, respect_robots=False, retries=2)
    assert asyncio.run(go(handler, policy)).content == b"ok"
    assert attempts["n"] == 3

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(ConnectFailed, match="Connection refused"):
        asyncio.run(go(refuse, replace(policy, retries=0)))

    def decoding(request: httpx.Request) -> httpx.Response:
        raise httpx.DecodingError("bad gzip", request=request)

    with pytest.raises(FetchError, match="bad gzip"):
        asyncio.run(go(decoding, policy))


# -------------------------------------------------------------- redirects


def test_redirects_are_followed(http_server: LocalServer) -> None:
    http_server.redirect("/old", "/new", status=301)
    http_server.redirect("/new", http_server.url("/final"), status=307)
    http_server.route("/final", b"here")
    result = fetch(http_server.url("/old"))
    assert result.final_url == http_server.url("/final")
    assert result.url == http_server.url("/old")
    assert result.content == b"here"


def test_redirect_loop(http_server: LocalServer) -> None:
    http_server.redirect("/a", "/b")
    http_server.redirect("/b", "/a")
    with pytest.raises(TooManyRedirects) as info:
        fetch(http_server.url("/a"))
    assert info.value.reason == "redirects"
    assert "loop" in str(info.value)


def test_redirect_chain_limit(http_server: LocalServer) -> None:
    for n in range(6):
        http_server.redirect(f"/r{n}", f"/r{n + 1}")
    http_server.route("/r6", b"end")
    policy = replace(FAST, max_redirects=5)
    with pytest.raises(TooManyRedirects):
        fetch(http_server.url("/r0"), policy)  # 6 hops
    assert fetch(http_server.url("/r1"), policy).content == b"end"  # 5 hops


def test_off_site_image_redirect_is_fine_but_checks_target_robots(http_server: LocalServer) -> None:
    with LocalServer() as cdn:
        cdn.route("/img/a.jpg", b"jpeg")
        cdn.route("/robots.txt", "User-agent: *\nDisallow: /private/\n")
        http_server.redirect("/a.jpg", cdn.url("/img/a.jpg"))
        http_server.redirect("/b.jpg", cdn.url("/private/b.jpg"))
        result = fetch(http_server.url("/a.jpg"), kind="image")
        assert result.final_url == cdn.url("/img/a.jpg")
        with pytest.raises(RobotsDisallowed):
            fetch(http_server.url("/b.jpg"), kind="image")


# ---------------------------------------------------------- timeouts, size


def test_slow_response_times_out(http_server: LocalServer) -> None:
    http_server.route("/slow", b"late", delay=1.0)
    start = time.monotonic()
    with pytest.raises(FetchTimeout) as info:
        fetch(http_server.url("/slow"), replace(FAST, timeout=0.3, retries=0))
    assert info.value.reason == "timeout"
    assert time.monotonic() - start < 0.9


def test_too_large_by_content_length(http_server: LocalServer) -> None:
    http_server.route("/big.html", b"x" * 5000)
    http_server.route("/big.jpg", b"x" * 5000)
    http_server.route("/liar.jpg", b"x", headers={"Content-Length": str(10**12)})
    policy = replace(FAST, max_page_bytes=4000, max_bytes=4999)
    with pytest.raises(TooLarge) as info:
        fetch(http_server.url("/big.html"), policy)
    assert info.value.reason == "too-large"
    with pytest.raises(TooLarge):
        fetch(http_server.url("/big.jpg"), policy, kind="image")
    with pytest.raises(TooLarge):  # refused on the header alone, the body never comes
        fetch(http_server.url("/liar.jpg"), policy, kind="image")
    assert len(fetch(http_server.url("/big.jpg"), replace(policy, max_bytes=5000), kind="image").content) == 5000


def test_too_large_streamed_without_length(http_server: LocalServer) -> None:
    http_server.route("/stream.jpg", b"x" * 100_000, chunked=True)
    # A gzip bomb: tiny on the wire, large once decoded.
    http_server.route("/bomb.html", gzip.compress(b"a" * 200_000), headers={"Content-Encoding": "gzip"})
    policy = replace(FAST, max_bytes=50_000, max_page_bytes=50_000)
    with pytest.raises(TooLarge):
        fetch(http_server.url("/stream.jpg"), policy, kind="image")
    with pytest.raises(TooLarge):
        fetch(http_server.url("/bomb.html"), policy)
    small = fetch(http_server.url("/stream.jpg"), replace(policy, max_bytes=100_000), kind="image")
    assert small.content == b"x" * 100_000


def test_connection_refused_is_connect_failed_quickly() -> None:
    url = f"http://127.0.0.1:{closed_port()}/a.jpg"
    start = time.monotonic()
    with pytest.raises(ConnectFailed) as info:
        fetch(url, kind="image")  # robots.txt is tried first: must not read as "robots"
    assert time.monotonic() - start < 2
    assert info.value.reason == "connect"
    assert info.value.url == url
    assert "robots" not in str(info.value)


# ------------------------------------------------------------------ robots


def test_robots_disallow(http_server: LocalServer) -> None:
    http_server.route(
        "/robots.txt",
        "User-agent: imgdb\nDisallow: /private/\n\nUser-agent: *\nDisallow: /\n",
    )
    http_server.route("/private/a.jpg", b"secret")
    http_server.route("/public/a.jpg", b"fine")
    with pytest.raises(RobotsDisallowed) as info:
        fetch(http_server.url("/private/a.jpg"), kind="image")
    assert info.value.reason == "robots"
    assert fetch(http_server.url("/public/a.jpg"), kind="image").content == b"fine"
    assert http_server.count("/private/a.jpg") == 0
    off = replace(FAST, respect_robots=False)
    assert fetch(http_server.url("/private/a.jpg"), off, kind="image").content == b"secret"


def test_allowed_and_robots_fetched_once_per_origin(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", "User-agent: *\nDisallow: /no\n")
    http_server.route("/yes", b"y", delay=0.05)
    urls = [http_server.url(f"/yes?i={i}") for i in range(8)] + [http_server.url("/no")]

    async def go() -> tuple[list[Any], bool, bool]:
        async with Fetcher(FAST) as fetcher:
            results = await asyncio.gather(*(fetcher.get(u) for u in urls), return_exceptions=True)
            return results, await fetcher.allowed(urls[0]), await fetcher.allowed(urls[-1])

    results, yes, no = asyncio.run(go())
    assert all(isinstance(r, Fetched) for r in results[:-1])
    assert isinstance(results[-1], RobotsDisallowed)
    assert (yes, no) == (True, False)
    assert http_server.count("/robots.txt") == 1


def test_robots_status_rules(http_server: LocalServer) -> None:
    http_server.route("/page", b"p")
    # 404 robots.txt: no rules, everything allowed.
    assert fetch(http_server.url("/page")).content == b"p"
    # 5xx robots.txt (after retries): the origin is off limits (RFC 9309).
    http_server.route("/robots.txt", status=503)
    http_server.reset()
    with pytest.raises(RobotsDisallowed):
        fetch(http_server.url("/page"))
    assert http_server.count("/robots.txt") == FAST.retries + 1
    assert http_server.count("/page") == 0


def test_crawl_delay_spaces_requests(http_server: LocalServer) -> None:
    http_server.route("/robots.txt", "User-agent: imgdb\nCrawl-delay: 1\n")
    http_server.route("/p", b"p")
    start = time.monotonic()
    fetch_many([http_server.url("/p?1"), http_server.url("/p?2")])
    assert time.monotonic() - start >= 0.9


def test_x_robots_tag_on_images(http_server: LocalServer) -> None:
    refusing = ["noai", "noimageai", "noindex, nofollow", "imgdb: noai", "IMGDB: noimageai, noarchive"]
    harmless = ["googlebot: noindex", "nofollow", "max-image-preview: large", "otherbot: noai, imgdb: all"]
    for n, value in enumerate(refusing + harmless):
        http_server.route(f"/{n}.jpg", b"img", headers={"X-Robots-Tag": value})
    for n, value in enumerate(refusing):
        with pytest.raises(NoAIRefused) as info:
            fetch(http_server.url(f"/{n}.jpg"), kind="image")
        assert info.value.reason == "x-robots-tag", value
    for n, value in enumerate(harmless, start=len(refusing)):
        assert fetch(http_server.url(f"/{n}.jpg"), kind="image").content == b"img", value
    # A "page" URL that answers with an image is an image (imgdb ingest https://x/a.jpg).
    with pytest.raises(NoAIRefused):
        fetch(http_server.url("/0.jpg"), kind="page")
    http_server.route("/page.html", "<p>hi</p>", headers={"X-Robots-Tag": "noai"})
    assert fetch(http_server.url("/page.html"), kind="page").status == 200
    # The user may explicitly opt out of robots rules.
    assert fetch(http_server.url("/0.jpg"), replace(FAST, respect_robots=False), kind="image").status == 200


# ---------------------------------------------------------- conditional GET


def test_304_on_if_modified_since(http_server: LocalServer) -> None:
    modified = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    http_server.route("/c.jpg", b"jpeg", last_modified=modified, etag='"v1"')
    first = fetch(http_server.url("/c.jpg"), kind="image")
    assert first.status == 200
    last_modified = first.headers["last-modified"]

    again = fetch(http_server.url("/c.jpg"), kind="image", headers={"If-Modified-Since": last_modified})
    assert (again.status, again.content) == (304, b"")
    assert http_server.requests[-1].headers["If-Modified-Since"] == last_modified

    by_etag = fetch(http_server.url("/c.jpg"), kind="image", headers={"If-None-Match": '"v1"'})
    assert by_etag.status == 304
    changed = fetch(http_server.url("/c.jpg"), kind="image", headers={"If-None-Match": '"v0"'})
    assert (changed.status, changed.content) == (200, b"jpeg")


# ------------------------------------------------------------- concurrency


def test_per_host_concurrency_limit(http_server: LocalServer) -> None:
    http_server.route("/slow", b"s", delay=0.15)
    urls = [http_server.url(f"/slow?i={i}") for i in range(8)]
    results = fetch_many(urls, replace(FAST, per_host=2, max_connections=16))
    assert all(isinstance(r, Fetched) for r in results)
    assert http_server.max_in_flight == 2


def test_total_connection_limit() -> None:
    with LocalServer() as a, LocalServer() as b:
        for server in (a, b):
            server.route("/slow", b"s", delay=0.15)
        urls = [s.url(f"/slow?i={i}") for i in range(4) for s in (a, b)]
        policy = replace(FAST, per_host=4, max_connections=3, respect_robots=False)
        start = time.monotonic()
        results = fetch_many(urls, policy)
        assert all(isinstance(r, Fetched) for r in results)
        assert max(a.max_in_flight, b.max_in_flight) <= 3
        # 8 requests, 3 at a time, 0.15 s each: at least 3 rounds (per_host alone: 2).
        assert time.monotonic() - start >= 0.4


def test_ports_out_of_range_raise_fetch_error() -> None:
    """``http://127.0.0.1:99999/`` once reached the socket and died with OverflowError."""
    for url in ("http://127.0.0.1:99999/", "http://127.0.0.1:0/a.jpg", "http://127.0.0.1:65536/a.jpg"):
        with pytest.raises(FetchError, match="port"):
            fetch(url)
