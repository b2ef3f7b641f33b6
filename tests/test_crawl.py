"""imgdb.crawl: image, pagination and link discovery from HTML (no network)."""

from __future__ import annotations

from imgdb.acquire.crawl import ImageLink, parse_page, same_site

PAGE = "https://shop.example/catalog/shoes/index.html"


def urls(html: str, url: str = PAGE) -> list[str]:
    return [image.url for image in parse_page(html, url).images]


# ------------------------------------------------------------------- images


def test_img_src_with_alt_and_title() -> None:
    page = parse_page('<img src="/a.jpg" alt=" Red  shoe " title="Shoe">', PAGE)
    assert page.images == [ImageLink("https://shop.example/a.jpg", PAGE, "Red shoe", "Shoe")]


def test_srcset_picks_largest_width() -> None:
    html = '<img src="s.jpg" srcset="s.jpg 320w, l.jpg 1280w, m.jpg 640w" sizes="50vw">'
    assert urls(html) == ["https://shop.example/catalog/shoes/l.jpg"]


def test_srcset_picks_largest_density_and_keeps_commas_in_urls() -> None:
    html = '<img srcset="/c/w_100,h_100/a.jpg, /c/w_300,h_300/a.jpg 3x, /c/w_200,h_200/a.jpg 2x">'
    assert urls(html) == ["https://shop.example/c/w_300,h_300/a.jpg"]


def test_srcset_without_descriptors_takes_first() -> None:
    assert urls('<img srcset="/one.jpg, /two.jpg">') == ["https://shop.example/one.jpg"]


def test_lazy_attribute_replaces_placeholder_src() -> None:
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"
    html = f"""
      <img src="{gif}" data-src="/lazy1.jpg">
      <img src="/img/blank.gif" data-original="/lazy2.jpg">
      <img src="/spacer.gif" data-lazy-src="/lazy3.jpg">
      <img src="{gif}" data-srcset="/lazy4-small.jpg 400w, /lazy4-big.jpg 1200w">
      <img class="lazyload" data-src="/lazy5.jpg">
    """
    assert urls(html) == [f"https://shop.example/lazy{n}" for n in ("1.jpg", "2.jpg", "3.jpg", "4-big.jpg", "5.jpg")]


def test_placeholders_and_tracking_pixels_alone_are_not_images() -> None:
    html = """
      <img src="data:image/gif;base64,AAAA">
      <img src="/img/spacer.gif">
      <img src="https://tracker.example/px.gif" width="1" height="1">
      <img src="/pixel-art-cat.png">
    """
    assert urls(html) == ["https://shop.example/pixel-art-cat.png"]


def test_picture_sources_pick_largest_with_img_alt() -> None:
    html = """
      <picture>
        <source media="(min-width: 800px)" srcset="/p/large.webp 1600w, /p/medium.webp 800w">
        <source srcset="/p/small.webp 400w">
        <img src="/p/fallback.jpg" alt="A boot" title="Boot">
      </picture>
    """
    page = parse_page(html, PAGE)
    assert page.images == [ImageLink("https://shop.example/p/large.webp", PAGE, "A boot", "Boot")]


def test_meta_og_and_twitter_images() -> None:
    html = """<head>
      <meta property="og:image" content="https://cdn.example/og.jpg">
      <meta property="og:image:url" content="/og-url.jpg">
      <meta name="twitter:image" content="/tw.jpg">
      <meta property="og:title" content="/not-an-image.jpg">
    </head>"""
    assert urls(html) == [
        "https://cdn.example/og.jpg",
        "https://shop.example/og-url.jpg",
        "https://shop.example/tw.jpg",
    ]


def test_inline_background_images() -> None:
    html = """
      <div style="background-image: url('/bg1.jpg')"></div>
      <section style="color: red; background: #fff url(&quot;/bg2.png&quot;) no-repeat"></section>
      <span style="background-image:url(bg3.webp)"></span>
      <div style="background-color: blue"></div>
    """
    assert urls(html) == [
        "https://shop.example/bg1.jpg",
        "https://shop.example/bg2.png",
        "https://shop.example/catalog/shoes/bg3.webp",
    ]


def test_relative_root_relative_and_protocol_relative_urls() -> None:
    html = '<img src="rel.jpg"><img src="/root.jpg"><img src="//cdn.example/proto.jpg">'
    assert urls(html) == [
        "https://shop.example/catalog/shoes/rel.jpg",
        "https://shop.example/root.jpg",
        "https://cdn.example/proto.jpg",
    ]


def test_base_href_is_honoured() -> None:
    html = '<head><base href="https://static.example/assets/"></head><img src="x.jpg"><a href="p2">n</a>'
    page = parse_page(html, PAGE)
    assert [i.url for i in page.images] == ["https://static.example/assets/x.jpg"]
    assert page.links == []  # p2 resolves off-site through <base>


def test_anchor_to_image_file_counts_as_image() -> None:
    html = """
      <a href="/full/boot.JPG" title="Full size"><img src="/thumb/boot.jpg" alt="Boot"></a>
      <a href="/photos/x.jpeg?v=2#zoom">zoom</a>
      <a href="/product/boot">not an image</a>
    """
    page = parse_page(html, PAGE)
    assert page.images == [
        ImageLink("https://shop.example/full/boot.JPG", PAGE, "Boot", "Full size"),
        ImageLink("https://shop.example/thumb/boot.jpg", PAGE, "Boot", None),
        ImageLink("https://shop.example/photos/x.jpeg?v=2", PAGE),
    ]
    assert page.links == ["https://shop.example/product/boot"]


def test_skips_non_http_schemes_and_removes_fragments() -> None:
    html = """
      <img src="javascript:void(0)"><img src="blob:https://shop.example/1">
      <a href="mailto:a@b.c">m</a><img src="/a.jpg#frag">
    """
    page = parse_page(html, PAGE)
    assert [i.url for i in page.images] == ["https://shop.example/a.jpg"]
    assert page.links == []


def test_images_deduplicated_in_document_order() -> None:
    html = """
      <img src="/b.jpg"><meta property="og:image" content="/a.jpg">
      <img src="/a.jpg" alt="later alt"><img src="/b.jpg#x"><a href="/b.jpg">b</a>
    """
    page = parse_page(html, PAGE)
    assert [i.url for i in page.images] == ["https://shop.example/b.jpg", "https://shop.example/a.jpg"]
    assert page.images[1].alt == "later alt"  # a duplicate may fill in a missing alt


def test_bytes_input() -> None:
    html = '<meta charset="utf-8"><img src="/é.jpg" alt="café">'.encode()
    page = parse_page(html, PAGE)
    assert page.images[0].alt == "café"


# --------------------------------------------------------------- pagination


def test_next_by_rel_link_and_anchor_first() -> None:
    html = """<head><link rel="next" href="/catalog/shoes/2"></head>
      <a href="/catalog/shoes/9">Next</a>
      <a rel="nofollow next" href="/catalog/shoes/3">3</a>"""
    page = parse_page(html, PAGE)
    assert page.next_pages == [
        "https://shop.example/catalog/shoes/2",
        "https://shop.example/catalog/shoes/3",
        "https://shop.example/catalog/shoes/9",
    ]


def test_next_by_text_aria_label_and_class() -> None:
    html = """
      <a href="/c?x=1">Next page &raquo;</a>
      <a href="/c?x=2" aria-label="Next"><svg></svg></a>
      <a href="/c?x=3">›</a>
      <ul class="pager"><li class="next"><a href="/c?x=4">4</a></li></ul>
      <a href="/c?x=5">Read more</a>
      <a href="/c?x=6" class="next-day-delivery">Shipping</a>
      <a href="/c?x=7" rel="prev">Previous</a>
    """
    page = parse_page(html, "https://shop.example/c")
    assert page.next_pages == [f"https://shop.example/c?x={n}" for n in (1, 2, 3, 4)]
    assert "https://shop.example/c?x=5" in page.links


def test_next_by_path_page_number() -> None:
    html = '<a href="/blog/page/2/">2</a><a href="/blog/page/4/">4</a><a href="/blog/page/3/">3</a>'
    assert parse_page(html, "https://ex.org/blog/page/2/").next_pages == ["https://ex.org/blog/page/3/"]
    assert parse_page(html, "https://ex.org/blog/").next_pages == ["https://ex.org/blog/page/2/"]


def test_next_by_query_page_number() -> None:
    html = """
      <a href="/list?cat=shoes&page=1">1</a>
      <a href="/list?cat=boots&page=3">other category</a>
      <a href="/list?page=3&cat=shoes">3</a>
      <a href="/list?cat=shoes&p=9">9</a>
    """
    page = parse_page(html, "https://ex.org/list?cat=shoes&page=2")
    assert page.next_pages == ["https://ex.org/list?page=3&cat=shoes"]
    first = parse_page('<a href="/list?cat=shoes&p=2">2</a>', "https://ex.org/list?cat=shoes")
    assert first.next_pages == ["https://ex.org/list?cat=shoes&p=2"]


def test_next_by_short_path_pattern() -> None:
    html = '<a href="/shop/p3">3</a><a href="/shop/p2">2</a>'
    assert parse_page(html, "https://ex.org/shop").next_pages == ["https://ex.org/shop/p2"]


def test_next_pages_exclude_own_url_and_off_site() -> None:
    html = """
      <link rel="next" href="https://elsewhere.example/page/2">
      <a href="#top">Next</a>
      <a href="https://www.ex.org/blog/page/2/">Next</a>
    """
    page = parse_page(html, "https://ex.org/blog/")
    assert page.next_pages == ["https://www.ex.org/blog/page/2/"]


# -------------------------------------------------------------------- links


def test_links_same_site_deduplicated_without_resources_or_next() -> None:
    html = """
      <a href="/about">About</a> <a href="/about#team">Team</a>
      <a href="https://other.example/x">off-site</a>
      <a href="//cdn.shop.example/y">subdomain is another site</a>
      <a href="http://www.shop.example/contact">contact</a>
      <a href="/manual.pdf">pdf</a> <a href="/style.css">css</a> <a href="/logo.svg">svg</a>
      <a href="/catalog/shoes/page/2">Next</a>
      <a href="">self</a>
    """
    page = parse_page(html, PAGE)
    assert page.links == ["https://shop.example/about", "http://www.shop.example/contact"]
    assert page.next_pages == ["https://shop.example/catalog/shoes/page/2"]


def test_same_site() -> None:
    assert same_site("http://example.com/a", "https://www.example.com/b")
    assert same_site("http://EXAMPLE.com:80/", "https://example.com:443/")
    assert same_site("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b")
    assert not same_site("http://127.0.0.1:8000/", "http://127.0.0.1:8001/")
    assert not same_site("https://cdn.example.com/", "https://example.com/")
    assert not same_site("mailto:x@example.com", "https://example.com/")


# ------------------------------------------------------------ fallbacks, noai


def test_other_candidates_are_kept_as_fallbacks_largest_first() -> None:
    html = (
        '<img src="/s.jpg" srcset="/s.jpg 320w, /l.jpg 1280w, /m.jpg 640w">'
        '<picture><source srcset="/p-big.webp 2x"><img src="/p.jpg"></picture>'
        '<img src="/only.jpg">'
    )
    images = parse_page(html, PAGE).images
    base = "https://shop.example"
    assert [(i.url, i.fallbacks) for i in images] == [
        (f"{base}/l.jpg", (f"{base}/m.jpg", f"{base}/s.jpg")),
        (f"{base}/p-big.webp", (f"{base}/p.jpg",)),
        (f"{base}/only.jpg", ()),
    ]


def test_meta_robots_noai_marks_the_page() -> None:
    for meta in (
        '<meta name="robots" content="noai">',
        '<meta name="ROBOTS" content="noindex, noimageai">',
        '<meta name="imgdb" content="noai">',
    ):
        assert parse_page(meta + '<img src="/a.jpg">', PAGE).noai, meta
    for meta in ('<meta name="googlebot" content="noai">', '<meta name="robots" content="noindex">', ""):
        assert not parse_page(meta + '<img src="/a.jpg">', PAGE).noai, meta


def test_urls_urlsplit_refuses_are_skipped_not_fatal() -> None:
    """A page holding ``http://[::1`` once killed the whole crawl with ValueError."""
    html = """
      <img src="http://[::1/a.png"><img src="http://127.0.0.1:99999/b.png"><img src="/ok.jpg">
      <a href="http://[::1/next">x</a><a href="http://[bad/c.jpg">y</a>
    """
    page = parse_page(html, PAGE)
    assert [i.url for i in page.images] == ["https://shop.example/ok.jpg"]
    assert page.links == []
