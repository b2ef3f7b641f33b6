"""``imgdb serve`` in a real browser: Playwright drives Debian's Chromium against the app
served by uvicorn on 127.0.0.1. Each page is saved as a screenshot under
tests/artifacts/serve/ (look at them); with IMGDB_README_SCREENSHOTS=1 the collection page
and the duplicates review also go to docs/screenshots/ (JPEG) for the README."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from imgdb.imaging.model import Model
from imgdb.serve import Library, create_app
from tests import images
from tests.test_serve import DUPE_SEEDS, SCRIPT_ALT, build_store

CHROMIUM = Path("/usr/bin/chromium")  # Debian's; Playwright's own download cannot work here
ARTIFACTS = Path(__file__).parent / "artifacts" / "serve"
README_SHOTS = Path(__file__).parent.parent / "docs" / "screenshots"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (`make test` installs it)"),
]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory, family_db: Path, model: Model) -> Iterator[str]:
    import uvicorn

    db = build_store(tmp_path_factory.mktemp("serve-browser"), family_db, model)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    library = Library(db)
    library.warm()
    server = uvicorn.Server(uvicorn.Config(create_app(library), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(app_url: str) -> Iterator[Any]:  # after the store is built: ingest runs its own event loop
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda msg: errors.append(f"{msg.text} {msg.location}") if msg.type == "error" else None)
    yield tab
    context.close()
    assert not errors, errors  # no script error and no CSP violation on any page


def images_loaded(page: Any) -> None:
    """Every image on the page loaded (thumbnails are made on first request)."""
    page.wait_for_load_state("networkidle")
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")


def shot(page: Any, name: str, *, readme: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=False)
    if readme and os.environ.get("IMGDB_README_SCREENSHOTS"):
        README_SHOTS.mkdir(parents=True, exist_ok=True)  # JPEG: a quarter of the PNG's bytes in the repository
        page.screenshot(path=str(README_SHOTS / f"{name}.jpg"), type="jpeg", quality=80)


def test_collection_then_an_image_with_its_variants_first(page: Any, app_url: str) -> None:
    page.goto(app_url + "/")
    cards = page.locator("#grid figure.card")
    total = images.FAMILIES * images.FAMILY_MEMBERS + 5 * len(DUPE_SEEDS) + 1  # families, renditions, the shoe
    assert page.inner_text("p.count").startswith(f"{total} images")
    assert cards.count() == total
    images_loaded(page)
    shot(page, "collection", readme=True)

    page.fill("input[name=where]", "source LIKE '%photo-7/original.jpg'")
    page.click("form.filters button[type=submit]")
    assert page.locator("#grid figure.card").count() == 1
    page.click("#grid figure.card a")
    page.wait_for_selector("#neighbours figure.card")
    assert "photo-7/original.jpg" in page.inner_text("table.sources")
    first = [page.locator("#neighbours figure.card .src").nth(n).get_attribute("title") for n in range(4)]
    assert all("/photo-7/" in (src or "") for src in first), first  # its four renditions lead
    images_loaded(page)
    shot(page, "image")


def test_upload_an_image_as_a_query(page: Any, app_url: str, tmp_path: Path) -> None:
    query = tmp_path / "query.jpg"
    query.write_bytes(images.jpeg_bytes(images.family(5, 4).resize((240, 180)), quality=75))
    page.goto(app_url + "/search")
    with page.expect_navigation():
        page.set_input_files("input[name=file]", str(query))  # choosing a file searches at once
    page.wait_for_selector("#results figure.card")
    assert "query.jpg" in page.inner_text("h2")
    top = [
        page.locator("#results figure.card .src").nth(n).get_attribute("title") for n in range(images.FAMILY_MEMBERS)
    ]
    assert all("/family-5/" in (src or "") for src in top), top
    shot(page, "search")


def test_open_a_cluster(page: Any, app_url: str) -> None:
    page.goto(app_url + "/clusters")
    rows = page.locator("table.clusters tbody tr")
    assert rows.count() == 6
    images_loaded(page)
    shot(page, "clusters")
    size = int(rows.first.locator("td").nth(1).inner_text())
    rows.first.locator("a").first.click()
    page.wait_for_selector("#members figure.card")
    assert page.locator("#members figure.card").count() == size
    assert f"{size} images" in page.inner_text("h1")
    shot(page, "cluster")


def test_the_map_of_a_run_leads_to_images_and_clusters(page: Any, app_url: str) -> None:
    page.goto(app_url + "/clusters")
    page.click("#map-link")
    page.wait_for_selector("svg#map a.mapthumb")
    page.wait_for_load_state("networkidle")
    loaded = page.evaluate(
        "Promise.all(Array.from(document.querySelectorAll('svg#map image')).map(i => "
        "fetch(i.getAttribute('href')).then(r => r.ok && r.headers.get('content-type') === 'image/webp')))"
    )
    assert loaded and all(loaded)
    shot(page, "clustermap")
    thumb = page.locator("svg#map a.mapthumb").first
    target = thumb.get_attribute("href")
    thumb.click()
    page.wait_for_selector("#neighbours figure.card")
    assert page.url.endswith(str(target))
    page.go_back()
    page.locator("svg#map a.maplabel").first.click()
    page.wait_for_selector("#members figure.card")
    assert "cluster" in page.inner_text("h1")


def test_reject_a_duplicate_pair_and_it_stays_gone(page: Any, app_url: str) -> None:
    page.goto(app_url + "/dupes")
    buttons = page.locator("button.reject")
    before = buttons.count()
    assert before > 0
    images_loaded(page)
    shot(page, "dupes", readme=True)
    form = page.locator("form[action='/dupes/reject']").first
    pair = (form.locator("input[name=a]").get_attribute("value"), form.locator("input[name=b]").get_attribute("value"))
    with page.expect_navigation():
        form.locator("button").click()
    page.reload()
    remaining = {
        (f.locator("input[name=a]").get_attribute("value"), f.locator("input[name=b]").get_attribute("value"))
        for f in page.locator("form[action='/dupes/reject']").all()
    }
    assert pair not in remaining and len(remaining) == before - 1
    shot(page, "dupes-after-reject")


def test_run_a_sql_query(page: Any, app_url: str) -> None:
    page.goto(app_url + "/sql")
    page.fill("textarea[name=q]", "SELECT format, count(*) AS n FROM images GROUP BY 1 ORDER BY 2 DESC")
    page.click("form.sql button")
    page.wait_for_selector("#sql-result")
    assert page.locator("#sql-result thead th").all_inner_texts() == ["format", "n"]
    assert page.locator("#sql-result tbody tr").first.locator("td").first.inner_text() == "JPEG"
    shot(page, "sql")


def test_a_script_in_alt_text_is_shown_as_text(page: Any, app_url: str) -> None:
    page.goto(app_url + "/")
    page.fill("input[name=where]", "alt LIKE '%script%'")
    page.click("form.filters button[type=submit]")
    page.click("#grid figure.card a")
    page.wait_for_selector("table.sources")
    assert page.inner_text("td.alt") == SCRIPT_ALT
    assert page.evaluate("window.pwned") is None  # never ran
    shot(page, "script-alt")


def test_drop_an_image_anywhere_to_search(page: Any, app_url: str) -> None:
    import base64

    dropped = base64.b64encode(images.jpeg_bytes(images.family(2, 5).resize((200, 150)))).decode()
    page.goto(app_url + "/clusters")
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "dropped.jpg", { type: "image/jpeg" }));
            return transfer;
        }""",
        dropped,
    )
    with page.expect_navigation():
        page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#results figure.card")
    assert "dropped.jpg" in page.inner_text("h2")
    top = [
        page.locator("#results figure.card .src").nth(n).get_attribute("title") for n in range(images.FAMILY_MEMBERS)
    ]
    assert all("/family-2/" in (src or "") for src in top), top
