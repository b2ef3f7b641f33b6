"""Turn one HTML page into image URLs, pagination candidates and other page links.

Pure: no I/O. The caller fetches pages (``imgdb.fetch``) and decides what to follow;
this module only reads markup. BeautifulSoup with the stdlib ``html.parser`` keeps us
free of an lxml dependency and is forgiving with broken shop HTML.

Images are collected in one pass over the document so ``ParsedPage.images`` keeps
document order; each kind of discovery is a small ``_from_*`` function.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import parse_qsl, urldefrag, urljoin, urlsplit

from bs4 import BeautifulSoup, Tag

__all__ = ["ImageLink", "ParsedPage", "parse_page", "same_site"]


@dataclass(frozen=True)
class ImageLink:
    """One image URL found on a page."""

    url: str  # absolute http(s) URL, fragment removed
    page_url: str
    alt: str | None = None
    title: str | None = None
    # The element's other candidates (srcset, <source>, src), largest first: tried in
    # turn when ``url`` cannot be fetched. Not part of equality: the image is ``url``.
    fallbacks: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ParsedPage:
    """Everything ``parse_page`` found on one page."""

    url: str
    images: list[ImageLink]  # de-duplicated by url, document order
    next_pages: list[str]  # pagination candidates, best first (absolute, same-site only)
    links: list[str]  # other same-site page links, excluding next_pages and resources
    noai: bool = False  # <meta name="robots|imgdb" content="noai|noimageai">: do not use its images


IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})

# Links to these are not pages worth crawling (for --depth).
_RESOURCE_EXTENSIONS = IMAGE_EXTENSIONS | {
    ".svg", ".ico", ".css", ".js", ".mjs", ".json", ".xml", ".rss", ".atom", ".txt", ".csv",
    ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".rtf",
    ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".dmg", ".exe", ".msi", ".apk", ".iso",
    ".mp3", ".wav", ".ogg", ".flac", ".m4a", ".mp4", ".m4v", ".webm", ".mov", ".avi", ".mkv",
    ".woff", ".woff2", ".ttf", ".otf", ".eot",
}  # fmt: skip

_SKIP_SCHEMES = ("data:", "javascript:", "mailto:", "blob:", "tel:", "about:")

# Attributes lazy-loading scripts copy into src/srcset once the image scrolls into view.
_LAZY_SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "data-original-set")
_LAZY_SRC_ATTRS = (
    "data-src", "data-original", "data-lazy-src", "data-lazy", "data-url", "data-hi-res-src",
    "data-hires", "data-full-src", "data-large-src", "data-zoom-image", "data-echo", "data-img",
)  # fmt: skip

# Spacer / placeholder files that lazy loaders put in src (the real image is elsewhere).
_PLACEHOLDER_NAME = re.compile(
    r"(?:^|/)(?:[\w.-]*[-_.])?"
    r"(?:blank|spacer|pixel|placeholder|transparent|empty|lazy|lazyload|loading|loader|1x1|grey|gray)"
    r"(?:[-_.]?\d+(?:x\d+)?)?\.(?:gif|png|svg|webp)$",
    re.I,
)

# <meta name=...> values whose content speaks to us, and the directives that refuse AI use.
_META_ROBOTS_NAMES = frozenset({"robots", "imgdb"})
_NOAI_DIRECTIVES = frozenset({"noai", "noimageai"})

_META_IMAGE_KEYS = frozenset({"og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src"})

# A CSS declaration that can carry a background image, and the url(...) inside it.
_CSS_BACKGROUND = re.compile(r"background(?:-image)?\s*:([^;]*)", re.I)
_CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""", re.I | re.S)

# Anchor text / aria-label / title meaning "next page". Anchored on both ends so that
# "read more" or "next-day delivery" do not count: we would rather miss a pager.
_NEXT_TEXT = re.compile(
    r"^(?:(?:next|older)(?:\s+(?:page|posts|entries|results))?"
    r"|(?:load\s+|show\s+)?more(?:\s+(?:results|products|items|posts))?)\s*[›»→>]?$"
    r"|^[›»→]$",
    re.I,
)
# Class tokens like "next", "pagination-next", "pager__next", "next-page", "nextpostslink";
# not "next-day-delivery".
_NEXT_CLASS = re.compile(r"^(?:.*[-_])?next(?:[-_]?(?:page|link|posts?|postslink))?$", re.I)

# Page number in a path (/page/3/, /page-3, /p3, /page3.html) or a query parameter.
_PATH_PAGE = re.compile(r"/(?:page|pg|p|seite|pagina)[/-]?(\d{1,5})(?=/|$|\.[A-Za-z0-9]+$)", re.I)
_PAGE_PARAMS = frozenset(
    {"page", "p", "pg", "paged", "pagenum", "page_num", "pageno", "page_no", "pagenumber", "pn",
     "seite", "pagina"}
)  # fmt: skip


class _Candidate(NamedTuple):
    """One srcset-style candidate: a raw URL plus its width or density descriptor."""

    url: str
    width: int | None = None
    density: float | None = None


# ---------------------------------------------------------------------------- public


def parse_page(html: str | bytes, url: str) -> ParsedPage:
    """Parse one HTML page fetched from ``url``."""
    page_url = urldefrag(url)[0]
    soup = BeautifulSoup(html, "html.parser")
    base = _base_url(soup, page_url)

    images: dict[str, ImageLink] = {}
    for tag in soup.find_all(True):
        for raw, alt, title, others in _images_of(tag):
            resolved = _resolve(raw, base)
            if resolved:
                fallbacks = tuple(u for u in _unique(_resolve(o, base) for o in others) if u != resolved)
                _add_image(images, ImageLink(resolved, page_url, alt, title, fallbacks))

    next_pages = _unique(u for u in _next_pages(soup, base, page_url) if _is_page_link(u, page_url))
    taken = set(next_pages) | {page_url}
    links = [
        u
        for u in _unique(_resolve(a.get("href"), base) for a in soup.find_all(["a", "area"], href=True))
        if u and u not in taken and _is_page_link(u, page_url) and not _is_resource(u)
    ]
    return ParsedPage(page_url, list(images.values()), next_pages, links, _says_noai(soup))


def same_site(a: str, b: str) -> bool:
    """True if both URLs are on the same host and port, ignoring scheme and ``www.``."""
    key_a, key_b = _site_key(a), _site_key(b)
    return key_a is not None and key_a == key_b


def _says_noai(soup: BeautifulSoup) -> bool:
    """True if a ``<meta name="robots">`` (or ``name="imgdb"``) refuses AI use of the page."""
    for meta in soup.find_all("meta"):
        if _attr(meta, "name").strip().lower() in _META_ROBOTS_NAMES:
            directives = {d.strip().lower() for d in _attr(meta, "content").replace(",", " ").split()}
            if directives & _NOAI_DIRECTIVES:
                return True
    return False


# ----------------------------------------------------------------- image discovery

# (raw url, alt, title, the element's other candidate urls, best first)
_Found = tuple[str, str | None, str | None, tuple[str, ...]]


def _images_of(tag: Tag) -> Iterator[_Found]:
    """(raw url, alt, title, fallbacks) for every image ``tag`` itself contributes."""
    name = tag.name
    if name == "img" and tag.find_parent("picture") is None:
        yield from _from_img(tag)
    elif name == "picture":
        yield from _from_picture(tag)
    elif name == "meta":
        yield from _with_no_fallbacks(_from_meta(tag))
    elif name == "link":
        yield from _with_no_fallbacks(_from_link(tag))
    elif name in ("a", "area"):
        yield from _with_no_fallbacks(_from_anchor(tag))
    if tag.get("style"):
        yield from _with_no_fallbacks(_from_style(tag))


def _with_no_fallbacks(found: Iterator[tuple[str, str | None, str | None]]) -> Iterator[_Found]:
    for raw, alt, title in found:
        yield raw, alt, title, ()


def _from_img(img: Tag) -> Iterator[_Found]:
    """The best URL of an ``<img>``: largest srcset candidate, lazy attributes first."""
    candidates = _img_candidates(img)
    best = _largest(candidates)
    if best:
        yield best.url, _text_attr(img, "alt"), _text_attr(img, "title"), _others(candidates, best)


def _from_picture(picture: Tag) -> Iterator[_Found]:
    """One image per ``<picture>``: the largest of its sources and its fallback ``<img>``.

    The sources are usually the same picture in other sizes or formats, so taking one
    avoids downloading near-duplicates.
    """
    candidates: list[_Candidate] = []
    for source in picture.find_all("source"):
        candidates += _parse_srcset(_first_attr(source, (*_LAZY_SRCSET_ATTRS, "srcset")) or "")
    img = picture.find("img")
    if isinstance(img, Tag):
        candidates += _img_candidates(img)
    best = _largest(candidates)
    if best:
        alt = _text_attr(img, "alt") if isinstance(img, Tag) else None
        title = _text_attr(img, "title") if isinstance(img, Tag) else None
        yield best.url, alt, title, _others(candidates, best)


def _from_meta(meta: Tag) -> Iterator[tuple[str, str | None, str | None]]:
    """``<meta property="og:image" content=...>`` and the twitter:image variants."""
    key = (_attr(meta, "property") or _attr(meta, "name")).strip().lower()
    content = _attr(meta, "content")
    if key in _META_IMAGE_KEYS and content:
        yield content, None, None


def _from_link(link: Tag) -> Iterator[tuple[str, str | None, str | None]]:
    """``<link rel="image_src" href=...>``, the pre-og:image way to name a page's image."""
    if "image_src" in _rels(link) and _attr(link, "href"):
        yield _attr(link, "href"), None, None


def _from_style(tag: Tag) -> Iterator[tuple[str, str | None, str | None]]:
    """``style="background-image: url(...)"`` (or ``background: ... url(...)``) on any tag."""
    for declaration in _CSS_BACKGROUND.finditer(_attr(tag, "style")):
        for match in _CSS_URL.finditer(declaration.group(1)):
            yield match.group(2), None, _text_attr(tag, "title")


def _from_anchor(a: Tag) -> Iterator[tuple[str, str | None, str | None]]:
    """``<a href="big.jpg">``: "click for full size" links count as images."""
    href = _attr(a, "href")
    if not href or not _has_image_extension(href):
        return
    inner = a.find("img")
    alt = _text_attr(inner, "alt") if isinstance(inner, Tag) else None
    title = _text_attr(a, "title") or (_text_attr(inner, "title") if isinstance(inner, Tag) else None)
    yield href, alt, title


def _img_candidates(img: Tag) -> list[_Candidate]:
    """Candidates for an ``<img>``, preferring what a lazy loader would swap in.

    A lazy attribute names the image the browser ends up showing, whatever sits in
    ``src`` (a data: URI, a 1x1 gif, or a blurry low-quality preview), so it wins.
    Without one, a placeholder ``src`` alone is not an image worth fetching.
    """
    lazy_srcset = _first_attr(img, _LAZY_SRCSET_ATTRS)
    lazy_src = _first_attr(img, _LAZY_SRC_ATTRS)
    if lazy_srcset or lazy_src:
        candidates = _parse_srcset(lazy_srcset or "")
        if lazy_src and _looks_like_url(lazy_src):
            candidates.append(_Candidate(lazy_src))
        if candidates:
            return candidates
    candidates = _parse_srcset(_attr(img, "srcset"))
    src = _attr(img, "src").strip()
    if src and not _is_placeholder(src) and not _is_tracking_pixel(img):
        # Per the HTML spec, src acts as the 1x candidate next to srcset.
        candidates.append(_Candidate(src))
    return candidates


def _parse_srcset(value: str) -> list[_Candidate]:
    """Parse a srcset attribute: ``"a.jpg 300w, b.jpg 600w"`` or ``"a.jpg 1x, b.jpg 2x"``.

    Splits on whitespace first, as the HTML spec does, so commas inside URLs
    (Cloudinary ``w_100,h_80`` or data: URIs) do not break candidates apart.
    """
    candidates: list[_Candidate] = []
    pos, n = 0, len(value)
    while pos < n:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            start = pos
            while pos < n and value[pos] != ",":
                pos += 1
            descriptor = value[start:pos].strip().lower()
        if not url or _is_placeholder(url):
            continue
        width = density = None
        if re.fullmatch(r"\d+w", descriptor):
            width = int(descriptor[:-1])
        elif re.fullmatch(r"\d*\.?\d+x", descriptor):
            density = float(descriptor[:-1])
        candidates.append(_Candidate(url, width, density))
    return candidates


def _largest(candidates: list[_Candidate]) -> _Candidate | None:
    """Largest by ``w`` descriptor, else by ``x`` density (default 1x); ties keep the first."""
    if not candidates:
        return None
    with_width = [c for c in candidates if c.width is not None]
    if with_width:
        return max(with_width, key=lambda c: c.width or 0)
    return max(candidates, key=lambda c: c.density if c.density is not None else 1.0)


def _others(candidates: list[_Candidate], best: _Candidate) -> tuple[str, ...]:
    """The candidates other than ``best``, largest first (width, then density; else document order)."""
    rest = [c for c in candidates if c.url != best.url]

    def size(c: _Candidate) -> tuple[int, float]:
        return (c.width or 0, 1.0 if c.density is None else c.density)

    ranked = sorted(rest, key=size, reverse=True)  # stable: equal sizes keep document order
    return tuple(dict.fromkeys(c.url for c in ranked))


def _add_image(images: dict[str, ImageLink], link: ImageLink) -> None:
    """Insert keeping the first position; a later duplicate may only fill in alt/title."""
    old = images.get(link.url)
    if old is None:
        images[link.url] = link
    elif (old.alt is None and link.alt) or (old.title is None and link.title) or (link.fallbacks and not old.fallbacks):
        images[link.url] = ImageLink(
            link.url, old.page_url, old.alt or link.alt, old.title or link.title, old.fallbacks or link.fallbacks
        )


def _is_placeholder(src: str) -> bool:
    """A data:/blob: URI or a spacer file that only holds the place of the real image."""
    lowered = src.strip().lower()
    if not lowered or lowered.startswith(("data:", "blob:", "about:")):
        return True
    return bool(_PLACEHOLDER_NAME.search(_path_of(lowered)))


def _path_of(url: str) -> str:
    """The URL's path; "" for one ``urlsplit`` refuses (a page may hold ``http://[::1``)."""
    try:
        return urlsplit(url).path
    except ValueError:
        return ""


def _is_tracking_pixel(img: Tag) -> bool:
    """``width="1" height="1"``: analytics beacons, never content."""
    return _int_attr(img, "width") in (0, 1) and _int_attr(img, "height") in (0, 1)


def _has_image_extension(url: str) -> bool:
    path = _path_of(url.strip()).lower()
    return any(path.endswith(ext) for ext in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------------- pagination


def _next_pages(soup: BeautifulSoup, base: str, page_url: str) -> Iterator[str]:
    """Pagination candidates, best evidence first (duplicates are removed by the caller)."""
    yield from _next_by_rel(soup, base)
    yield from _next_by_label(soup, base)
    yield from _next_by_url_pattern(soup, base, page_url)


def _next_by_rel(soup: BeautifulSoup, base: str) -> Iterator[str]:
    """``<link rel="next">`` and ``<a rel="next">``: the page says so explicitly."""
    for tag in soup.find_all(["link", "a"], href=True):
        if "next" in _rels(tag):
            url = _resolve(tag["href"], base)
            if url:
                yield url


def _next_by_label(soup: BeautifulSoup, base: str) -> Iterator[str]:
    """Anchors whose text, aria-label, title or class (or their ``<li>``'s class) says next."""
    for a in soup.find_all("a", href=True):
        if "prev" in _rels(a) or "previous" in _rels(a):
            continue
        labels = (a.get_text(" ", strip=True), _attr(a, "aria-label"), _attr(a, "title"))
        says_next = any(_NEXT_TEXT.match(" ".join(label.split())) for label in labels if label)
        if not says_next:
            classes = list(_classes(a))
            if isinstance(a.parent, Tag) and a.parent.name == "li":  # <li class="next"><a>
                classes += _classes(a.parent)
            says_next = any(_NEXT_CLASS.match(c) for c in classes)
        if says_next:
            url = _resolve(a["href"], base)
            if url:
                yield url


def _next_by_url_pattern(soup: BeautifulSoup, base: str, page_url: str) -> Iterator[str]:
    """Links that look like this URL with its page number plus one (1 when absent)."""
    for a in soup.find_all("a", href=True):
        url = _resolve(a["href"], base)
        if url and _is_next_number(page_url, url):
            yield url


def _is_next_number(current: str, link: str) -> bool:
    """True if ``link`` is ``current`` with the page number (path or query) incremented."""
    if not same_site(current, link):
        return False
    cur, nxt = urlsplit(current), urlsplit(link)
    cur_query, nxt_query = _query_pairs(cur.query), _query_pairs(nxt.query)

    # Query parameter: ?page=N, ?p=N, &paged=N ... everything else unchanged.
    if _same_path(cur.path, nxt.path):
        for key, value in nxt_query:
            if key.lower() in _PAGE_PARAMS and value.isdigit():
                current_number = _query_number(cur_query, key)
                rest_cur = sorted(p for p in cur_query if p[0] != key)
                rest_nxt = sorted(p for p in nxt_query if p[0] != key)
                if int(value) == current_number + 1 and rest_cur == rest_nxt:
                    return True

    # Path: /page/N/, /page-N, /pN, /pageN.html ... query unchanged.
    match = _last_match(_PATH_PAGE, nxt.path)
    if match and sorted(cur_query) == sorted(nxt_query):
        nxt_stem = nxt.path[: match.start()] + nxt.path[match.end() :]
        cur_match = _last_match(_PATH_PAGE, cur.path)
        if cur_match:
            current_number = int(cur_match.group(1))
            cur_stem = cur.path[: cur_match.start()] + cur.path[cur_match.end() :]
        else:
            current_number, cur_stem = 1, cur.path
        if int(match.group(1)) == current_number + 1 and _same_path(cur_stem, nxt_stem):
            return True
    return False


def _query_number(pairs: list[tuple[str, str]], key: str) -> int:
    for k, v in pairs:
        if k == key and v.isdigit():
            return int(v)
    return 1


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    matches = list(pattern.finditer(text))
    return matches[-1] if matches else None


def _same_path(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


# --------------------------------------------------------------------- URL helpers


def _base_url(soup: BeautifulSoup, page_url: str) -> str:
    """The page URL, or the first ``<base href>`` resolved against it."""
    base = soup.find("base", href=True)
    if isinstance(base, Tag):
        resolved = _resolve(base["href"], page_url)
        if resolved:
            return resolved
    return page_url


def _resolve(raw: object, base: str) -> str | None:
    """Absolute http(s) URL without fragment, or None for data:/javascript:/... and junk."""
    if not isinstance(raw, str):
        return None
    # Browsers drop tabs/newlines anywhere in a URL and trim surrounding spaces.
    value = re.sub(r"[\t\n\r]", "", raw).strip()
    if not value or value.lower().startswith(_SKIP_SCHEMES):
        return None
    try:
        absolute = urldefrag(urljoin(base, value))[0]
        parts = urlsplit(absolute)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return None
    return absolute.replace(" ", "%20")


def _site_key(url: str) -> tuple[str, int | None] | None:
    """(host without www., explicit non-default port) or None if not an http(s) URL."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    if port == {"http": 80, "https": 443}.get(parts.scheme):
        port = None
    return host.removeprefix("www."), port


def _is_page_link(url: str, page_url: str) -> bool:
    return url != page_url and same_site(url, page_url)


def _is_resource(url: str) -> bool:
    path = _path_of(url).lower()
    dot = path.rfind(".")
    return dot > path.rfind("/") and path[dot:] in _RESOURCE_EXTENSIONS


def _looks_like_url(value: str) -> bool:
    """Filters JSON blobs and the like that some themes store in data-* attributes."""
    value = value.strip()
    return bool(value) and not value.startswith(("{", "[")) and " " not in value


def _unique(items: Iterator[str | None] | list[str | None]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return list(seen)


# --------------------------------------------------------------------- tag helpers


def _attr(tag: Tag, name: str) -> str:
    """An attribute as text: '' when missing, multi-valued ones (class, rel) joined by spaces."""
    value = tag.get(name)
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(value)


def _rels(tag: Tag) -> set[str]:
    return {v.lower() for v in _attr(tag, "rel").split()}


def _classes(tag: Tag) -> list[str]:
    return _attr(tag, "class").split()


def _first_attr(tag: Tag, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = tag.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _text_attr(tag: Tag | None, name: str) -> str | None:
    if tag is None:
        return None
    value = " ".join(_attr(tag, name).split())
    return value or None


def _int_attr(tag: Tag, name: str) -> int | None:
    value = _attr(tag, name).strip().removesuffix("px")
    return int(value) if value.isdigit() else None
