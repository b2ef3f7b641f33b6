"""The demo shop's pages: :func:`build_site` writes a small web shop to a folder.

Every file of the site (HTML, CSS, robots.txt and all product pictures) is generated
from a seed; see :mod:`imgdb.demo.pictures`. The site exercises what a real shop throws
at a crawler:

* three paginated listing pages (``products/``, ``products/page/2/``, ...) with
  ``<link rel="next">``, a visible "Next »" anchor and numbered page links;
* thumbnails as plain ``src``, ``srcset`` with ``1x/2x`` or ``w`` descriptors, and lazy
  ``data-src`` with a ``data:`` placeholder;
* product pages with the main picture in ``<picture>`` (WebP ``<source>`` + JPEG
  ``<img>``), ``og:image``, a few PNG galleries;
* near-duplicates: a product's main picture re-encoded / resized / cropped and shown
  on another product's page;
* exactly one broken image (an HTML "not found" page saved as ``.jpg``);
* ``robots.txt`` disallowing ``/private/``, with a ``/private/`` image referenced from a
  listing page (must not be fetched), and links to an off-site host (must not be followed);
* relative, root-relative, protocol-relative and absolute URLs.

Protocol-relative and absolute URLs need the server's host, which is unknown until
it binds a port, so HTML files contain :data:`HOST_TOKEN`, which
:func:`imgdb.demo.server.serve` replaces with ``127.0.0.1:PORT`` when it sends a page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from imgdb.demo.pictures import encode, render

#: Placeholder for "host:port" in generated HTML; replaced by :func:`imgdb.demo.server.serve`.
HOST_TOKEN = "{{host}}"

#: Where off-site links point; ``.invalid`` can never resolve (RFC 2606).
OFFSITE_URL = "https://example.invalid/"

MAIN_SIZE = (800, 600)
THUMB_SIZE = (300, 225)
GALLERY_SIZE = (480, 360)

# A 1x1 transparent GIF: the usual lazy-loading placeholder, inline so it is never fetched.
_PLACEHOLDER = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"

_COLOURS: dict[str, tuple[int, int, int]] = {
    "Teal": (0, 128, 128),
    "Coral": (240, 110, 90),
    "Mustard": (215, 170, 30),
    "Navy": (25, 40, 110),
    "Sage": (140, 170, 120),
    "Plum": (120, 50, 110),
    "Crimson": (190, 20, 50),
    "Ivory": (240, 232, 205),
    "Olive": (110, 120, 30),
    "Amber": (245, 140, 0),
    "Indigo": (70, 40, 170),
    "Rose": (230, 130, 160),
    "Charcoal": (55, 55, 60),
    "Cobalt": (0, 80, 200),
    "Mint": (150, 225, 190),
    "Rust": (170, 70, 30),
}
_PATTERNS = ("plain", "plain", "striped", "dotted", "checked")
# category -> singular noun used in names
_CATEGORIES: dict[str, str] = {
    "Mugs": "Mug",
    "Scarves": "Scarf",
    "Lamps": "Lamp",
    "Planters": "Planter",
    "Bags": "Tote",
    "Clocks": "Clock",
}


@dataclass
class SiteInfo:
    """What :func:`build_site` produced; all paths are relative to the site root, with "/"."""

    root: Path
    listing_url: str  #: first listing page, e.g. "products/"
    pages: int  #: number of listing pages
    products: int
    #: Distinct image URLs a correct crawler fetches *and decodes* from the listing pages
    #: and the product pages they link to (depth 1): every ``src``/``srcset``/``data-src``
    #: candidate, ``<source>``, ``og:image`` and gallery link; excluding ``data:`` URIs,
    #: robots-disallowed ``/private/`` images, off-site URLs and the broken image.
    expected_images: int
    #: Deliberate near-duplicates across pages: [original main.jpg, variant, ...].
    near_duplicate_groups: list[list[str]]
    broken_images: list[str]  #: referenced, served with an image type, not decodable
    image_paths: list[str] = field(default_factory=list)  #: the ``expected_images`` files
    private_images: list[str] = field(default_factory=list)  #: referenced, robots-disallowed
    #: Every rendition of each generated picture (thumbnails, WebP, variants), keyed by
    #: picture id: a crawler that keeps every rendition sees each group as duplicates too.
    renditions: dict[str, list[str]] = field(default_factory=dict)
    product_pages: list[str] = field(default_factory=list)
    listing_pages: list[str] = field(default_factory=list)
    offsite_url: str = OFFSITE_URL
    total_bytes: int = 0


@dataclass
class _Product:
    index: int
    name: str
    slug: str
    category: str
    colour: str
    pattern: str
    price: str
    seed: int
    extras: list[str] = field(default_factory=list)  # extra HTML sections for the page


def _render(p: _Product, view: str, size: tuple[int, int]) -> Image.Image:
    return render(p.category, _COLOURS[p.colour], p.pattern, seed=p.seed, view=view, size=size)


_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header,footer{background:#1f3b4d;color:#fff;padding:.8em 1.5em}header a,footer a{color:#cde}
main{padding:1em 1.5em}.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:1em}
.card{background:#fff;border-radius:6px;padding:.5em;box-shadow:0 1px 3px #0002}.card img{width:100%;height:auto}
.pager a{margin:0 .3em}.gallery img{width:240px;height:auto;margin:.3em}.price{font-weight:bold;color:#a33}
"""


def _page(title: str, body: str, *, head: str = "", description: str = "") -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)} · Pixel &amp; Pine Home Goods</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="description" content="{escape(description or title)}">
<link rel="stylesheet" href="/assets/style.css">
{head}</head>
<body>
<header><a href="/">Pixel &amp; Pine</a> · <a href="/products/">All products</a></header>
<main>
{body}
</main>
<footer>
<p>Demo shop generated by imgdb — every picture is synthetic.
Visit our <a href="{OFFSITE_URL}">partner shop</a> or the <a href="//example.invalid/catalog/">wholesale catalogue</a>.
<a href="/private/">Staff area</a></p>
</footer>
</body>
</html>
"""


def _thumb_style(p: _Product) -> int:
    """0 plain src, 1 srcset 1x/2x, 2 srcset w descriptors, 3 lazy data-src: cycled over products."""
    return p.index % 4


def _thumb_html(p: _Product, prefix: str) -> str:
    """A listing thumbnail in one of four real-world markups."""
    style = _thumb_style(p)
    alt = escape(p.name)
    rel = f"{prefix}{p.slug}/"
    if style == 0:  # plain relative src
        return f'<img src="{rel}thumb.jpg" alt="{alt}" width="300" height="225">'
    if style == 1:  # density descriptors
        return f'<img src="{rel}thumb.jpg" srcset="{rel}thumb.jpg 1x, {rel}thumb@2x.jpg 2x" alt="{alt}">'
    if style == 2:  # width descriptors, root-relative
        root = f"/products/{p.slug}/"
        return (
            f'<img src="{root}thumb.jpg" srcset="{root}thumb.jpg 300w, {root}thumb@2x.jpg 600w" '
            f'sizes="(max-width: 600px) 50vw, 300px" alt="{alt}">'
        )
    # lazy: inline placeholder, real URLs in data-* attributes
    root = f"/products/{p.slug}/"
    return (
        f'<img class="lazy" loading="lazy" src="{_PLACEHOLDER}" data-src="{root}thumb.jpg" '
        f'data-srcset="{root}thumb.jpg 1x, {root}thumb@2x.jpg 2x" alt="{alt}">'
    )


def _listing_html(items: list[_Product], page: int, pages: int) -> str:
    """Listing page `page` (1-based); page 1 is products/, page n is products/page/n/."""
    prefix = "" if page == 1 else "../../"  # relative path from this page back to products/

    def url(n: int) -> str:
        return "/products/" if n == 1 else f"/products/page/{n}/"

    head = ""
    if page > 1:
        head += f'<link rel="prev" href="{url(page - 1)}">\n'
    if page < pages:
        head += f'<link rel="next" href="{url(page + 1)}">\n'
    cards = []
    for i, p in enumerate(items):
        href = f"{prefix}{p.slug}/" if i % 2 == 0 else f"/products/{p.slug}/"
        cards.append(
            f'<div class="card"><a href="{href}">{_thumb_html(p, prefix)}</a>\n'
            f'<h3><a href="{href}">{escape(p.name)}</a></h3><p>{escape(p.category)} · '
            f'<span class="price">{p.price}</span></p></div>'
        )
    numbers = " ".join(
        f"<strong>{n}</strong>" if n == page else f'<a href="{url(n)}">{n}</a>' for n in range(1, pages + 1)
    )
    nav = '<nav class="pager">'
    if page > 1:
        nav += f'<a href="{url(page - 1)}" rel="prev">« Previous</a> '
    nav += numbers
    if page < pages:
        # Relative on purpose: "page/2/" from page 1, "../3/" from page 2.
        nxt = "page/2/" if page == 1 else f"../{page + 1}/"
        nav += f' <a href="{nxt}" rel="next">Next »</a>'
    nav += "</nav>"
    promo = ""
    if page == 1:
        # robots.txt disallows /private/: a polite crawler must not fetch this picture.
        promo = (
            "<aside><p>Coming soon — staff preview:</p>"
            '<img src="/private/preview.jpg" alt="Upcoming collection" width="400"></aside>\n'
        )
    body = (
        f'<h1>All products — page {page} of {pages}</h1>\n{promo}<div class="grid">\n'
        + "\n".join(cards)
        + f"\n</div>\n{nav}"
    )
    return _page(f"Products, page {page}", body, head=head, description="Home goods: mugs, scarves, lamps and more.")


def _product_html(p: _Product) -> str:
    img_abs = f"http://{HOST_TOKEN}/products/{p.slug}/main.jpg"
    head = (
        f'<meta property="og:title" content="{escape(p.name)}">\n'
        f'<meta property="og:type" content="product">\n'
        f'<meta property="og:image" content="{img_abs}">\n'
        f'<link rel="canonical" href="/products/{p.slug}/">\n'
    )
    picture = (
        f'<picture>\n<source type="image/webp" srcset="//{HOST_TOKEN}/products/{p.slug}/main.webp">\n'
        f'<img src="main.jpg" alt="{escape(p.name)}" width="800" height="600">\n</picture>'
    )
    body = (
        f'<p><a href="../">« Back to all products</a></p>\n<h1>{escape(p.name)}</h1>\n{picture}\n'
        f'<p class="price">{p.price}</p>\n<p>A {p.pattern if p.pattern != "plain" else "classic"} '
        f"{p.colour.lower()} piece from our {p.category.lower()} range. "
        f'<a href="{OFFSITE_URL}reviews/{p.slug}">Read reviews</a></p>\n' + "\n".join(p.extras)
    )
    return _page(p.name, body, head=head, description=f"{p.name} — {p.category}")


def _slug(name: str) -> str:
    return "-".join(name.lower().split())


def _make_products(n: int, rng: np.random.Generator) -> list[_Product]:
    combos = [(c, cat) for c in _COLOURS for cat in _CATEGORIES]
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} products")
    order = rng.permutation(len(combos))[:n]
    products = []
    for i, k in enumerate(order):
        colour, cat = combos[int(k)]
        pattern = _PATTERNS[int(rng.integers(0, len(_PATTERNS)))]
        noun = _CATEGORIES[cat]
        name = f"{colour} {noun}" if pattern == "plain" else f"{pattern.title()} {colour} {noun}"
        price = f"€{int(rng.integers(9, 90))}.{int(rng.choice([0, 50, 90])):02d}"
        products.append(_Product(i, name, _slug(name), cat, colour, pattern, price, int(rng.integers(0, 2**31))))
    return products


def build_site(root: Path, *, products: int = 24, per_page: int = 8, seed: int = 0) -> SiteInfo:
    """Generate the demo shop under `root` (created if needed) and describe it.

    `products` is 8 to 96 (one per colour and category), `per_page` of them per listing
    page. The same arguments always write the same bytes.
    """
    if products < 8:
        raise ValueError("need at least 8 products (near-duplicates, gallery and broken image use 7)")
    root = Path(root)
    rng = np.random.default_rng([seed, 0xD3])
    items = _make_products(products, rng)
    pages = math.ceil(products / per_page)
    files: dict[str, bytes] = {}
    renditions: dict[str, list[str]] = {}
    fetchable: set[str] = set()  # image paths referenced from crawlable pages (before the broken one)

    mains: dict[str, Image.Image] = {}
    for p in items:
        img = _render(p, "main", MAIN_SIZE)
        mains[p.slug] = img
        d = f"products/{p.slug}/"
        files[d + "main.jpg"] = encode(img, "JPEG", quality=82, optimize=True)
        files[d + "main.webp"] = encode(img, "WEBP", quality=72, method=2)
        files[d + "thumb.jpg"] = encode(img.resize(THUMB_SIZE, Image.Resampling.BILINEAR), "JPEG", quality=80)
        renditions[p.slug] = [d + "main.jpg", d + "main.webp", d + "thumb.jpg"]
        if _thumb_style(p) != 0:  # only srcset markups reference a 2x thumbnail
            files[d + "thumb@2x.jpg"] = encode(
                img.resize((THUMB_SIZE[0] * 2, THUMB_SIZE[1] * 2), Image.Resampling.BILINEAR), "JPEG", quality=80
            )
            renditions[p.slug].append(d + "thumb@2x.jpg")
        fetchable.update(renditions[p.slug])

    # Roles for the special features, picked by seed among distinct products.
    pick = [int(i) for i in rng.permutation(products)[:7]]
    sale_src, sale_on, small_src, small_on, crop_src, crop_on, broken_on = (items[i] for i in pick)
    gallery_on = [items[i] for i in rng.permutation(products)[:2]]

    groups: list[list[str]] = []

    def add_variant(src: _Product, on: _Product, path: str, data: bytes, html: str) -> None:
        files[path] = data
        renditions[src.slug].append(path)
        fetchable.add(path)
        groups.append([f"products/{src.slug}/main.jpg", path])
        on.extras.append(html)

    img = mains[sale_src.slug]
    # Root-relative path into a shared media folder, like a CMS upload.
    add_variant(
        sale_src,
        sale_on,
        f"media/sale/{sale_src.slug}-sale.jpg",
        encode(img, "JPEG", quality=40),
        f'<section><h2>On sale this week</h2><a href="/products/{sale_src.slug}/">'
        f'<img src="/media/sale/{sale_src.slug}-sale.jpg" alt="{escape(sale_src.name)} on sale"></a></section>',
    )
    img = mains[small_src.slug]
    add_variant(
        small_src,
        small_on,
        f"products/{small_on.slug}/also-{small_src.slug}.jpg",
        encode(img.resize((560, 420), Image.Resampling.LANCZOS), "JPEG", quality=85),
        f'<section><h2>Also in another colour</h2><a href="../{small_src.slug}/">'
        f'<img src="also-{small_src.slug}.jpg" alt="{escape(small_src.name)}"></a></section>',
    )
    img = mains[crop_src.slug]
    w, h = img.size
    add_variant(
        crop_src,
        crop_on,
        f"products/{crop_on.slug}/bundle-{crop_src.slug}.jpg",
        encode(img.crop((24, 18, w - 16, h - 12)), "JPEG", quality=80),
        f'<section><h2>Complete the look</h2><a href="../{crop_src.slug}/">'
        f'<img src="../{crop_on.slug}/bundle-{crop_src.slug}.jpg" alt="{escape(crop_src.name)}"></a></section>',
    )

    for p in gallery_on:
        links = []
        for view in ("context", "detail"):
            path = f"products/{p.slug}/view-{view}.png"
            files[path] = encode(_render(p, view, GALLERY_SIZE), "PNG", compress_level=3)
            renditions[f"{p.slug}:{view}"] = [path]
            fetchable.add(path)
            links.append(
                f'<a href="view-{view}.png"><img src="view-{view}.png" alt="{escape(p.name)}, {view} view"></a>'
            )
        p.extras.append('<section class="gallery"><h2>More views</h2>\n' + "\n".join(links) + "</section>")

    # The one broken image: a CMS "not found" page saved under an image name.
    broken = f"products/{broken_on.slug}/size-chart.jpg"
    files[broken] = (
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        b"<body><h1>Not Found</h1><p>The file size-chart.jpg is no longer available.</p></body></html>\n"
    )
    broken_on.extras.append('<section><h2>Size chart</h2><img src="size-chart.jpg" alt="Size chart"></section>')

    # Private area: disallowed by robots.txt; its picture is referenced from page 1.
    prng = np.random.default_rng([seed, 0x9F])
    staff = _Product(
        -1, "Staff Preview", "staff-preview", "Lamps", "Indigo", "striped", "", int(prng.integers(0, 2**31))
    )
    files["private/preview.jpg"] = encode(_render(staff, "main", (400, 300)), "JPEG", quality=80)
    files["private/index.html"] = _page(
        "Staff area", '<h1>Staff area</h1><img src="preview.jpg" alt="Upcoming collection">'
    ).encode()

    listing_pages = []
    for n in range(1, pages + 1):
        path = "products/index.html" if n == 1 else f"products/page/{n}/index.html"
        files[path] = _listing_html(items[(n - 1) * per_page : n * per_page], n, pages).encode()
        listing_pages.append(path)
    for p in items:
        files[f"products/{p.slug}/index.html"] = _product_html(p).encode()

    files["index.html"] = _page(
        "Welcome", '<h1>Pixel &amp; Pine Home Goods</h1>\n<p><a href="/products/">Browse all products »</a></p>'
    ).encode()
    files["assets/style.css"] = _CSS.encode()
    files["robots.txt"] = b"User-agent: *\nDisallow: /private/\n"

    for rel, data in files.items():
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)

    image_paths = sorted(fetchable)
    return SiteInfo(
        root=root,
        listing_url="products/",
        pages=pages,
        products=products,
        expected_images=len(image_paths),
        near_duplicate_groups=groups,
        broken_images=[broken],
        image_paths=image_paths,
        private_images=["private/preview.jpg"],
        renditions=renditions,
        product_pages=[f"products/{p.slug}/index.html" for p in items],
        listing_pages=listing_pages,
        total_bytes=sum(len(b) for b in files.values()),
    )
