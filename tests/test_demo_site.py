"""The generated demo shop: what build_site promises, and what serve() sends."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from PIL import Image

from imgdb.demo import HOST_TOKEN, SiteInfo, build_site, serve


class _Refs(HTMLParser):
    """Collects links, image URLs (every candidate a crawler could pick) and rel=next."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []
        self.next: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
            if a.get("rel") == "next":
                self.next.append(a["href"])
        if tag == "link" and a.get("rel") == "next":
            self.next.append(a["href"])
        if tag == "meta" and a.get("property") == "og:image":
            self.images.append(a["content"])
        if tag in ("img", "source"):
            for key in ("src", "data-src"):
                if a.get(key):
                    self.images.append(a[key])
            for key in ("srcset", "data-srcset"):
                for cand in (a.get(key) or "").split(","):
                    if cand.strip():
                        self.images.append(cand.split()[0])


def _parse(html: str) -> _Refs:
    p = _Refs()
    p.feed(html)
    return p


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> SiteInfo:
    return build_site(tmp_path_factory.mktemp("shop"))


def test_build_site_summary(site):
    info = site
    assert info.listing_url == "products/"
    assert info.pages == 3 and info.products == 24
    assert info.listing_pages == ["products/index.html", "products/page/2/index.html", "products/page/3/index.html"]
    assert len(info.product_pages) == 24
    assert info.expected_images == len(info.image_paths) == len(set(info.image_paths))
    assert len(info.broken_images) == 1 and info.broken_images[0] not in info.image_paths
    assert info.private_images == ["private/preview.jpg"]
    assert len(info.near_duplicate_groups) >= 3
    assert info.total_bytes < 5_000_000
    on_disk = sum(f.stat().st_size for f in info.root.rglob("*") if f.is_file())
    assert on_disk == info.total_bytes
    assert (info.root / "robots.txt").read_text().splitlines() == ["User-agent: *", "Disallow: /private/"]


def test_every_expected_image_decodes_and_the_broken_one_does_not(site):
    info = site
    sizes = {}
    for rel in info.image_paths + info.private_images:
        with Image.open(info.root / rel) as im:
            im.load()
            sizes[rel] = im.size
    assert all(sizes[f"products/{s}/main.jpg"] == (800, 600) for s in info.renditions if ":" not in s)
    assert any(rel.endswith(".png") for rel in info.image_paths)
    with pytest.raises(Image.UnidentifiedImageError):
        Image.open(info.root / info.broken_images[0])


def _small(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((64, 48)), dtype=np.float32)


def test_near_duplicates_are_closer_than_distinct_products(site):
    info = site
    mains = {s: _small(info.root / f"products/{s}/main.jpg") for s in info.renditions if ":" not in s}
    keys = list(mains)
    distinct = min(np.abs(mains[a] - mains[b]).mean() for i, a in enumerate(keys) for b in keys[i + 1 :])
    for group in info.near_duplicate_groups:
        first = _small(info.root / group[0])
        for other in group[1:]:
            assert np.abs(_small(info.root / other) - first).mean() < 0.5 * distinct


def test_build_is_deterministic_per_seed(tmp_path):
    def digest(root: Path) -> dict[str, str]:
        return {
            str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*"))
            if f.is_file()
        }

    a = build_site(tmp_path / "a", products=8, per_page=4, seed=5)
    b = build_site(tmp_path / "b", products=8, per_page=4, seed=5)
    c = build_site(tmp_path / "c", products=8, per_page=4, seed=6)
    assert a.pages == 2
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert a.near_duplicate_groups == b.near_duplicate_groups
    assert a.product_pages != c.product_pages or digest(tmp_path / "a") != digest(tmp_path / "c")


def test_serve_listing_and_images(site):
    info = site
    with serve(info.root) as base:
        assert base.startswith("http://127.0.0.1:") and base.endswith("/")
        status, ctype, body = _get(urljoin(base, info.listing_url))
        assert status == 200 and ctype.startswith("text/html")
        html = body.decode()
        assert HOST_TOKEN not in html and "Next »" in html and 'rel="next"' in html

        status, ctype, body = _get(urljoin(base, info.image_paths[0]))
        assert status == 200 and ctype == "image/jpeg"
        Image.open(io.BytesIO(body)).load()

        webp = next(p for p in info.image_paths if p.endswith(".webp"))
        status, ctype, body = _get(urljoin(base, webp))
        assert status == 200 and ctype == "image/webp"
        assert Image.open(io.BytesIO(body)).format == "WEBP"

        status, ctype, _ = _get(urljoin(base, "robots.txt"))
        assert status == 200 and ctype.startswith("text/plain")
        assert _get(urljoin(base, "nope.jpg"))[0] == 404
        assert _get(urljoin(base, "products/page/"))[0] == 404  # no directory listings
    with pytest.raises(OSError):
        urllib.request.urlopen(base, timeout=2)  # the server is gone


def test_crawl_over_http_finds_exactly_the_expected_images(site):
    """A tiny polite crawler: listing pages via rel=next, product pages at depth 1."""
    info = site
    with serve(info.root) as base:
        host = urlsplit(base).netloc
        listing, queue, seen_pages = [], [urljoin(base, info.listing_url)], set()
        images: set[str] = set()
        product_urls: set[str] = set()
        while queue:
            url = queue.pop(0)
            if url in seen_pages:
                continue
            seen_pages.add(url)
            refs = _parse(_get(url)[2].decode())
            listing.append(url)
            images.update(urljoin(url, u) for u in refs.images)
            queue.extend(urljoin(url, u) for u in refs.next)
            for link in refs.links:
                target = urljoin(url, link)
                if urlsplit(target).netloc == host and "/page/" not in target and target.count("/") == 5:
                    product_urls.add(target)  # http://host/products/<slug>/
        assert len(listing) == info.pages
        assert len(product_urls) == info.products
        for url in sorted(product_urls):
            status, ctype, body = _get(url)
            assert status == 200 and ctype.startswith("text/html")
            images.update(urljoin(url, u) for u in _parse(body.decode()).images)

        on_site = {u for u in images if urlsplit(u).scheme == "http" and urlsplit(u).netloc == host}
        assert all(u.startswith("data:") for u in images - on_site)  # only placeholders left
        paths = {urlsplit(u).path.lstrip("/") for u in on_site}
        assert set(info.private_images) <= paths  # referenced, but robots.txt forbids fetching
        assert set(info.broken_images) <= paths
        fetchable = paths - set(info.private_images) - set(info.broken_images)
        assert sorted(fetchable) == info.image_paths

        for rel in info.broken_images:
            status, ctype, body = _get(urljoin(base, rel))
            assert status == 200 and ctype == "image/jpeg" and body.lstrip().startswith(b"<!DOCTYPE html>")
