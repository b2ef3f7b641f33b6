"""Export: cluster folders, contact sheets and a gallery whose every local link exists."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

import imgdb
from imgdb import clustering
from imgdb.errors import UsageError
from imgdb.export import MARKER, MODES, GalleryGroup, export_clusters, safe_filename, write_gallery
from imgdb.store import SourceRow, Store
from tests import images

SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
NASTY_URL = "https://shop.example/a/..%2F..%2Fetc/<script>alert(1)<%2Fscript> Ünïcødé photo?.jpg?w=100&h=1#frag"


class Links(HTMLParser):
    """Collects every href and src of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


def local_links(index: Path) -> list[Path]:
    """Every link of the page that is not to a web source, checked to be relative, as paths."""
    parser = Links()
    parser.feed(index.read_text(encoding="utf-8"))
    paths = []
    for link in parser.links:
        parts = urlsplit(link)
        if parts.scheme in ("http", "https"):
            continue  # an image's original source on the web
        if link.startswith("#"):
            continue  # the table of contents
        assert not parts.scheme and not link.startswith("/"), f"not a relative link: {link}"
        paths.append(index.parent / unquote(parts.path))
    return paths


def fitted(db: Path, k: int) -> int:
    with Store.open(db, write=True) as store:
        return clustering.fit(store, k=k).run_id  # type: ignore[return-value]


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("https://shop.example/img/Red%20Apple.JPG?size=large#x", "Red-Apple.JPG"),
        ("/home/me/Pictures/holiday/beach 01.jpeg", "beach-01.jpeg"),
        ("C:\\Users\\me\\Été à Paris.png", "Ete-a-Paris.png"),
        ("https://shop.example/", "shop.example"),
        ("../../etc/passwd", "passwd"),
        ("https://x.example/..%2F..%2F.bashrc", "bashrc"),
        ("...", "image"),
        ("", "image"),
        ("CON.jpg", "_CON.jpg"),
        ("nul", "_nul"),
        ("产品图片.webp", "webp"),
        ("a" * 300 + ".jpeg", "a" * 75 + ".jpeg"),
    ],
)
def test_safe_filename(name, expected):
    out = safe_filename(name)
    assert out == expected
    assert SAFE.match(out) and not out.startswith(".") and len(out) <= 80


def test_safe_filename_of_hostile_url():
    out = safe_filename(NASTY_URL)
    assert SAFE.match(out) and "/" not in out and ".." not in out and len(out) <= 80


# ---------------------------------------------------------------------------- clusters


def test_export_writes_one_folder_per_cluster_sheets_and_gallery(family_db, tmp_path):
    shutil.copytree(family_db, tmp_path / "db")  # this test adds a source: not to the shared store
    family_db = tmp_path / "db"
    run_id = fitted(family_db, 6)
    with Store.open(family_db, write=True) as store:
        some_image = store.query(
            "SELECT image_id FROM cluster_members WHERE run_id = ? ORDER BY image_id LIMIT 1", [run_id]
        )[0][0]
        store.add_sources([(some_image, SourceRow(NASTY_URL, "url", page_url="https://shop.example/list"))], None)
    with Store.open(family_db) as store:
        index = export_clusters(store, run_id, tmp_path / "out")
        members = store.query("SELECT image_id, cluster FROM cluster_members WHERE run_id = ?", [run_id])
    out = tmp_path / "out"
    assert index == out / "index.html"
    folders = sorted(p.name for p in out.iterdir() if p.name.startswith("cluster-"))
    assert folders == [f"cluster-{c:03d}" for c in range(6)]
    # Each folder holds exactly its cluster's images, byte for byte, under safe names.
    exported: dict[str, str] = {}
    for folder in folders:
        files = sorted((out / folder).iterdir())
        assert len(files) == images.FAMILY_MEMBERS
        for f in files:
            assert SAFE.match(f.name) and f.suffix == ".jpg"
            exported[hashlib.sha256(f.read_bytes()).hexdigest()] = folder
    assert exported == {image_id: f"cluster-{c:03d}" for image_id, c in members}
    # A contact sheet per cluster.
    sheets = sorted((out / "sheets").iterdir())
    assert len(sheets) == 6
    with Image.open(sheets[0]) as im:
        assert im.format == "JPEG" and im.width > 300  # full colour: a palette PNG banded photos
    # The page: relative links only, every one to a file that exists; sizes and sources shown.
    links = local_links(index)
    assert links and all(p.exists() for p in links), [p for p in links if not p.exists()]
    assert {p.parent.name for p in links} >= {"thumbs", "sheets", *folders}
    page = index.read_text(encoding="utf-8")
    assert page.count("<section") == 6 and page.count(f"{images.FAMILY_MEMBERS} images</small>") == 6
    assert "member-0.jpg" in page  # each image's source (file path) is shown
    assert "<script>" not in page and "&lt;script&gt;" in page  # hostile source text is escaped
    for thumb in (out / "thumbs").iterdir():
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= 200


def test_hardlink_and_symlink_modes(family_db, tmp_path):
    run_id = fitted(family_db, 6)
    with Store.open(family_db) as store:
        export_clusters(store, run_id, tmp_path / "hard", mode="hardlink")
        export_clusters(store, run_id, tmp_path / "soft", mode="symlink")
        for mode in ("hard", "soft"):
            files = list((tmp_path / mode).glob("cluster-*/*"))
            assert len(files) == 6 * images.FAMILY_MEMBERS
            for f in files:
                image_id = f.stem.rsplit("-", 1)[1]
                blob = next(
                    store.blob_path(i)
                    for (i,) in store.query("SELECT id FROM images WHERE id LIKE ?", [image_id + "%"])
                )
                if mode == "hard":
                    assert not f.is_symlink() and os.stat(f).st_ino == os.stat(blob).st_ino
                else:
                    assert f.is_symlink() and f.resolve() == blob.resolve()
        assert all(p.exists() for p in local_links(tmp_path / "soft" / "index.html"))
        with pytest.raises(UsageError, match="mode"):
            export_clusters(store, run_id, tmp_path / "x", mode="move")


def test_reexport_replaces_an_earlier_export_but_never_a_foreign_folder(family_db, tmp_path):
    six, three = fitted(family_db, 6), fitted(family_db, 3)
    out = tmp_path / "out"
    with Store.open(family_db) as store:
        export_clusters(store, six, out)
        export_clusters(store, three, out)  # same folder: the earlier export is replaced
        assert sorted(p.name for p in out.glob("cluster-*")) == ["cluster-000", "cluster-001", "cluster-002"]
        assert len(list((out / "sheets").iterdir())) == 3
        assert all(p.exists() for p in local_links(out / "index.html"))
        assert "run " + str(three) in (out / "index.html").read_text()
    with imgdb.open(family_db) as images:
        images.export_clusters(tmp_path / "latest")  # the latest run
        assert "run " + str(three) in (tmp_path / "latest" / "index.html").read_text()
    with Store.open(family_db) as store:
        foreign = tmp_path / "mine"
        foreign.mkdir()
        (foreign / "notes.txt").write_text("keep me")
        with pytest.raises(UsageError, match="not empty"):
            export_clusters(store, six, foreign)
        assert (foreign / "notes.txt").read_text() == "keep me"
    with imgdb.open(family_db) as images, pytest.raises(UsageError, match="no clustering run 12345"):
        images.export_clusters(tmp_path / "none", run=12345)


# ---------------------------------------------------------------------------- generic gallery


def test_gallery_of_any_titled_groups(family_db, tmp_path):
    """What dedup will do: groups of ids with titles, no cluster run involved."""
    with Store.open(family_db) as store:
        ids = sorted(i for (i,) in store.query("SELECT id FROM images"))
        groups: list[GalleryGroup | tuple[str, list[str]]] = [
            ("Duplicates <A> & co", ids[:3]),
            GalleryGroup("Group B", ids[3:5], note="two near-copies"),
            ("Empty", []),
            ("Unknown ids are skipped", ["f" * 64]),
        ]
        index = write_gallery(store, groups, tmp_path / "g", "Near-duplicates", max_per_group=2)
    page = index.read_text(encoding="utf-8")
    assert "Duplicates &lt;A&gt; &amp; co" in page and "two near-copies" in page
    assert "+ 1 more images not shown here" in page
    links = local_links(index)
    assert all(p.exists() for p in links)
    # Without image_links the gallery copies the full images it shows into images/.
    shown = ids[:2] + ids[3:5]
    assert sorted(p.name for p in (tmp_path / "g" / "images").iterdir()) == sorted(i[:16] + ".jpg" for i in shown)
    assert len(list((tmp_path / "g" / "sheets").iterdir())) == 2  # groups with images only


# ---------------------------------------------------------------------------- a folder that is not ours


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links not followed): its bytes, or where it points."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes()
    return found


def _user_png() -> bytes:
    return images.png_bytes(images.photo(4242, (40, 30)))


@pytest.mark.parametrize(
    "crafted",
    [
        "lists-a-user-folder",  # the marker names Documents: the reported rmtree
        "lists-outside",  # ../outside and an absolute path
        "cluster-folder-is-a-link-out",  # cluster-000 -> outside
        "user-files-in-sheets",  # a real PNG with a sheet-like name, and notes
        "user-index",  # the user's own index.html
        "marker-is-a-link-out",  # .imgdb-export.json -> a file outside
        "thumb-is-a-link-out",  # thumbs/<id>.jpg -> a file outside, written through before
    ],
)
def test_a_crafted_marker_never_costs_the_user_a_file(family_db, tmp_path, crafted):
    run_id = fitted(family_db, 3)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (outside / "photo.png").write_bytes(_user_png())
    out = tmp_path / "out"
    out.mkdir()
    (out / "Documents").mkdir()
    (out / "Documents" / "thesis.txt").write_text("years of work")
    entries = ["index.html", "sheets", "cluster-000"]
    if crafted == "lists-a-user-folder":
        entries.append("Documents")
    elif crafted == "lists-outside":
        entries += ["../outside", str(outside)]
    elif crafted == "cluster-folder-is-a-link-out":
        (out / "cluster-000").symlink_to(outside, target_is_directory=True)
    elif crafted == "user-files-in-sheets":
        (out / "sheets").mkdir()
        (out / "sheets" / "000-holiday.png").write_bytes(_user_png())
        (out / "sheets" / "notes.txt").write_text("mine")
    elif crafted == "user-index":
        (out / "index.html").write_text("<!DOCTYPE html><title>my site</title>")
    elif crafted == "thumb-is-a-link-out":
        with Store.open(family_db) as store:
            first = store.query("SELECT image_id FROM cluster_members WHERE run_id = ? LIMIT 1", [run_id])[0][0]
        (out / "thumbs").mkdir()
        (out / "thumbs" / f"{first[:16]}.jpg").symlink_to(outside / "photo.png")
    marker = {"entries": entries}
    if crafted == "marker-is-a-link-out":
        (outside / "settings.json").write_text(json.dumps(marker))
        (out / MARKER).symlink_to(outside / "settings.json")
    else:
        (out / MARKER).write_text(json.dumps(marker))
    before_out, before_outside = _snapshot(out), _snapshot(outside)
    refused = None
    with Store.open(family_db) as store:
        try:
            export_clusters(store, run_id, out)
        except UsageError as exc:
            refused = str(exc)
    assert _snapshot(outside) == before_outside
    after = _snapshot(out)
    mine = {k for k in before_out if k != MARKER}  # the marker is the export's own, whoever wrote it
    assert {k: after.get(k) for k in mine} == {k: before_out[k] for k in mine}  # nothing of the user's changed
    assert refused is not None and "imgdb" in refused  # and the user is told why nothing was exported


def test_reexport_still_replaces_what_the_export_wrote_in_every_mode(family_db, tmp_path):
    six, three = fitted(family_db, 6), fitted(family_db, 3)
    for mode in MODES:
        out = tmp_path / mode
        with Store.open(family_db) as store:
            export_clusters(store, six, out, mode)
            (out / "README.txt").write_text("the user's note beside the export")
            export_clusters(store, three, out, mode)
        assert sorted(p.name for p in out.glob("cluster-*")) == ["cluster-000", "cluster-001", "cluster-002"]
        assert (out / "README.txt").read_text() == "the user's note beside the export"
        assert all(p.exists() for p in local_links(out / "index.html"))


def test_a_contact_sheet_is_as_wide_as_its_title(tmp_path):
    from PIL import Image

    from imgdb.export import _contact_sheet

    title = "cluster 7 · shop.example (12), another-shop.example (3)"
    _contact_sheet(title, [images.photo(5, (96, 72))], tmp_path / "sheet.jpg", 1)
    with Image.open(tmp_path / "sheet.jpg") as im:
        assert im.format == "JPEG" and im.width > 400  # one cell is 162 px; the title needs more
