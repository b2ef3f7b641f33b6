"""Export: a clustering run as folders, contact sheets and an HTML gallery you open from disk.

``export_clusters`` writes, under ``to``::

    index.html                the gallery: every cluster, its size, thumbnails, each image's source
    cluster-000/ ...          one folder per cluster holding its images (copy, hard link or symlink),
                              most typical image first: 00001-<name from the source>-<id prefix>.<ext>
    sheets/000-cluster-0.jpg  a contact sheet per cluster
    thumbs/<id prefix>.jpg    small JPEG thumbnails the page shows (not base64: the page stays light)
    .imgdb-export.json        what this export wrote, so exporting again into the folder replaces it

Exporting again into a folder removes only what an export verifiably wrote, checked by
content whatever the marker says: an image whose name carries an id prefix its bytes hash
to, a sheet or thumbnail by its name and format, the page by its generator tag. Nothing
outside the folder, no symbolic link followed, no folder removed unless emptied that way;
anything else where the export would write stops it with a one-line error, untouched.

``write_gallery`` is the generic part: any list of titled groups of image ids (clusters,
duplicate groups, search results) becomes the same kind of page. Every link in the page is
relative, so the folder can be moved, zipped or opened with file://.
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from imgdb.errors import ImgdbError, UsageError
from imgdb.store import ImageInfo, Store

MODES = ("copy", "hardlink", "symlink")
MARKER = ".imgdb-export.json"
THUMB_SIZE = 200  # px, longest side
SHEET_CELL = 150  # px, contact sheet cell
SHEET_MAX = 48  # images per contact sheet
MAX_PER_GROUP = 100  # thumbnails per group on the page; the folder always holds every image

_EXT = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "MPO": ".jpg",
    "ICO": ".ico",
    "AVIF": ".avif",
    "HEIF": ".heic",
    "JPEG2000": ".jp2",
}
# Names Windows refuses whatever the extension (the export may be copied to a Windows disk).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}


# ---------------------------------------------------------------------------------------
# names


def safe_filename(name: str, *, default: str = "image", max_len: int = 80) -> str:
    """A portable file name from a URL, a path or any text.

    Keeps the last path segment (percent-decoded, query and fragment dropped), folds
    accents to ASCII, turns anything but letters, digits, ``.``, ``_`` and ``-`` into ``-``,
    never starts with a dot (no hidden files, no ``..``), avoids Windows' reserved names,
    and keeps the extension when it has to shorten to ``max_len`` characters.
    """
    text = str(name or "")
    parts = urlsplit(text) if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text) else None
    if parts is not None:
        text = parts.path.rstrip("/") or parts.netloc
    text = unquote(text).replace("\\", "/").rstrip("/")
    text = text.rsplit("/", 1)[-1]
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    text = re.sub(r"-{2,}", "-", text)
    text = re.sub(r"\.{2,}", ".", text).strip(".-_ ")
    if not text:
        text = default
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or len(ext) > 10:
        stem, ext = text, ""
    if stem.split(".")[0].lower() in _RESERVED:
        stem = "_" + stem
    ext = f".{ext}" if ext else ""
    if len(stem) + len(ext) > max_len:
        stem = stem[: max(1, max_len - len(ext))].rstrip(".-_ ") or default
    return stem + ext


def _href(path: str) -> str:
    """A relative link for the page: POSIX separators, percent-encoded."""
    return quote(PurePosixPath(path).as_posix(), safe="/")


# ---------------------------------------------------------------------------------------
# gallery


@dataclass
class GalleryGroup:
    """One titled group of images on the page."""

    title: str
    ids: list[str]
    note: str = ""  # a line under the title
    links: list[tuple[str, str]] = field(default_factory=list)  # (label, relative href) beside the title
    captions: dict[str, str] = field(default_factory=dict)  # image id -> a line under its picture


def extension(fmt: str | None) -> str:
    """File extension for a Pillow format name (the bytes decide, not the source URL)."""
    return _EXT.get((fmt or "").upper(), ".img")


def export_name(rank: int, image_id: str, info: ImageInfo | None) -> str:
    """``00001-<name from the source>-<id prefix>.<ext>``: sorted, readable and unique."""
    stem = safe_filename(info.source if info and info.source else "", default="image", max_len=60)
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return f"{rank:05d}-{stem}-{image_id[:10]}{extension(info.format if info else None)}"


# ---------------------------------------------------------------------------------------
# writing only what is ours

_ENTRY = re.compile(r"^(index\.html|sheets|images|cluster-\d+)$")  # what a marker may list
_IMAGE_NAME = re.compile(r"^\d{5}-[A-Za-z0-9._-]*-([0-9a-f]{10})\.[A-Za-z0-9]+$")  # cluster-*/...
_GALLERY_NAME = re.compile(r"^([0-9a-f]{16})\.[A-Za-z0-9]+$")  # images/...
_SHEET_NAME = re.compile(r"^\d{3}-[A-Za-z0-9._-]+\.(png|jpg)$")  # sheets/... (.png before 0.2)
_THUMB_NAME = re.compile(r"^[0-9a-f]{16}\.jpg$")  # thumbs/...
_GENERATOR = '<meta name="generator" content="imgdb">'
_MARK = b"imgdb export"  # in every sheet and thumbnail we write (a JPEG comment; a PNG text chunk before 0.2)


def _ours(path: Path) -> bool:
    """Whether ``path`` (not followed if a link) is a file an imgdb export wrote, judged by content."""
    name, folder = path.name, path.parent.name
    id_name = _IMAGE_NAME.match(name) or (_GALLERY_NAME.match(name) if folder == "images" else None)
    try:
        if path.is_symlink():  # export symlinks point at the blob named by the image's id
            return id_name is not None and Path(os.readlink(path)).name.startswith(id_name.group(1))
        if not path.is_file():
            return False
        if name == MARKER:
            return True
        if id_name:
            return _sha256(path).startswith(id_name.group(1))
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    if name == "index.html":
        text = head.decode("utf-8", "replace")
        legacy = "<title>imgdb" in text and "figcaption{font-size:11px" in text  # pages before the generator tag
        return text.startswith("<!DOCTYPE html>") and (_GENERATOR in text or legacy)
    if folder == "sheets" and _SHEET_NAME.match(name):
        if name.endswith(".jpg"):
            return head.startswith(b"\xff\xd8\xff") and _MARK in head
        return head.startswith(b"\x89PNG\r\n\x1a\n") and (_MARK in head or _legacy_sheet(head))
    if folder == "thumbs" and _THUMB_NAME.match(name):
        return head.startswith(b"\xff\xd8\xff") and _MARK in head
    return False


def _legacy_sheet(head: bytes) -> bool:
    """A contact sheet written before sheets were marked: a 256-colour PNG of our grid's size."""
    if len(head) < 26 or head[12:16] != b"IHDR":
        return False
    width, height, colour = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), head[25]
    cell, pad, title = SHEET_CELL + 6, 6, 28
    columns, rest = divmod(width - pad, cell)
    return (
        colour == 3 and rest == 0 and 1 <= columns <= 8 and height > title + pad and (height - title - pad) % cell == 0
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _not_ours(path: Path) -> UsageError:
    return UsageError(f"{path} was not written by an imgdb export; choose a new or empty folder")


def _own_dir(path: Path) -> None:
    """A folder of the export: made if missing; never a link to elsewhere, never a file."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise _not_ours(path)
    path.mkdir(exist_ok=True)


def _make_way(path: Path) -> None:
    """Remove what is at ``path`` if an export wrote it; refuse if anything else is there."""
    if os.path.lexists(path):
        if not _ours(path):
            raise _not_ours(path)
        path.unlink()


def _write_file(path: Path, data: bytes) -> None:
    """Write a file of the export, replacing only one an export wrote, never through a link."""
    _make_way(path)
    with _open_new(path) as fh:
        fh.write(data)


def _open_new(path: Path) -> Any:
    """A new file, never through a link, never over an existing one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    return os.fdopen(os.open(path, flags, 0o644), "wb")


@contextmanager
def _writing(out: Path) -> Iterator[None]:
    """A folder we cannot write (permissions, a full disk) is a one-line error."""
    try:
        yield
    except OSError as exc:
        raise UsageError(f"cannot write the export to {out}: {exc.strerror or exc}") from None


def _materialise(store: Store, image_id: str, dst: Path, mode: str) -> None:
    """The image at ``dst``: its checked bytes copied, or a link to its blob."""
    _make_way(dst)
    data = store.read_blob(image_id, verify=True)  # a missing or damaged blob stops the export
    src = store.blob_path(image_id)
    if mode == "copy":
        _write_file(dst, data)
    elif mode == "hardlink":
        try:
            os.link(src, dst)
        except OSError as exc:
            raise UsageError(
                f"cannot hard-link {dst.parent} to the store ({exc.strerror}): the export folder must be on the "
                "store's filesystem; use copy or symlink"
            ) from None
    elif mode == "symlink":
        os.symlink(src.resolve(), dst)
    else:
        raise UsageError(f"unknown export mode {mode!r} (use one of: {', '.join(MODES)})")


def _thumbnail(store: Store, image_id: str, size: int) -> Any:
    """A small RGB Pillow image of a stored image; a grey placeholder if it cannot be decoded."""
    from PIL import Image, ImageDraw

    from imgdb.imaging.decode import decode

    try:
        img = decode(store.read_blob(image_id), target=(size, size)).image
        img.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
        return img
    except (ImgdbError, OSError):
        img = Image.new("RGB", (size, size * 3 // 4), (200, 200, 200))
        ImageDraw.Draw(img).text((8, 8), "cannot decode", fill=(90, 90, 90))
        return img


def _contact_sheet(title: str, thumbs: list[Any], path: Path, total: int) -> None:
    """A grid of thumbnails under a title line; says how many images the group has in all.

    The sheet is as wide as its title needs (up to eight columns' width, then the title is
    cut with an ellipsis); a JPEG at quality 90, as a palette PNG banded smooth photos.
    """
    from PIL import Image, ImageDraw, ImageFont, ImageOps

    cols = max(1, min(8, len(thumbs)))
    rows = max(1, -(-len(thumbs) // cols))
    pad, head = 6, 28
    try:
        font: Any = ImageFont.load_default(size=15)  # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        font = ImageFont.load_default()
    shown = f"{len(thumbs)} of {total}" if len(thumbs) < total else f"{total}"
    text = f"{title}  ({shown} images)"
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widest = 8 * (SHEET_CELL + pad) - pad
    while measure.textlength(text, font=font) > widest and len(title) > 1:
        title = title[:-1]
        text = f"{title.rstrip()}…  ({shown} images)"
    width = max(cols * (SHEET_CELL + pad) + pad, int(measure.textlength(text, font=font)) + 2 * pad)
    sheet = Image.new("RGB", (width, head + rows * (SHEET_CELL + pad) + pad), (250, 250, 250))
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 6), text, fill=(20, 20, 20), font=font)
    for n, thumb in enumerate(thumbs):
        cell = ImageOps.contain(thumb, (SHEET_CELL, SHEET_CELL))
        x = pad + (n % cols) * (SHEET_CELL + pad) + (SHEET_CELL - cell.width) // 2
        y = head + pad + (n // cols) * (SHEET_CELL + pad) + (SHEET_CELL - cell.height) // 2
        sheet.paste(cell, (x, y))
    buffer = io.BytesIO()
    sheet.save(buffer, "JPEG", quality=90, comment=_MARK)
    _write_file(path, buffer.getvalue())


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{padding:16px 24px;background:#222;color:#eee}header h1{margin:0 0 4px;font-size:20px}
header p{margin:2px 0;color:#bbb;font-size:13px}
nav{padding:10px 24px;background:#fff;border-bottom:1px solid #ddd;font-size:13px;line-height:1.9}
nav a{margin-right:12px;white-space:nowrap;color:#0b57d0;text-decoration:none}
section{padding:8px 24px 20px;border-bottom:1px solid #e2e2e2}
section h2{font-size:17px;margin:14px 0 2px}section h2 small{font-weight:normal;color:#666}
.meta{font-size:12px;color:#555;margin:2px 0 8px}.meta a{margin-right:10px}
.grid{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;width:206px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:3px}
figure img{display:block;margin:0 auto;max-width:200px;max-height:200px}
figcaption{font-size:11px;color:#555;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;padding:3px 2px 0}
figcaption a{color:#555}.evidence{white-space:normal;color:#333}.more{font-size:13px;color:#666;margin-top:8px}
"""


def write_gallery(
    store: Store,
    groups: Sequence[GalleryGroup | tuple[str, Sequence[str]]],
    to: Path | str,
    title: str = "imgdb gallery",
    *,
    intro: str = "",
    image_links: dict[str, str] | None = None,
    mode: str = "copy",
    max_per_group: int = MAX_PER_GROUP,
    sheets: bool = True,
) -> Path:
    """Write ``to/index.html`` showing each titled group of image ids; returns its path.

    Thumbnails go to ``to/thumbs``, one contact sheet per group to ``to/sheets`` (when
    ``sheets``). Each thumbnail links to the full image: ``image_links[id]`` (a path relative
    to ``to``) when given, else a copy (``mode``) the gallery writes to ``to/images``.
    ``groups`` are ``GalleryGroup`` objects or plain ``(title, ids)`` pairs.
    At most ``max_per_group`` thumbnails per group are shown, most relevant (first) first.
    """
    if mode not in MODES:
        raise UsageError(f"unknown export mode {mode!r} (use one of: {', '.join(MODES)})")
    out = Path(to)
    with _writing(out):
        return _write_gallery(store, groups, out, title, intro, image_links, mode, max_per_group, sheets)


def _write_gallery(
    store: Store,
    groups: Sequence[GalleryGroup | tuple[str, Sequence[str]]],
    out: Path,
    title: str,
    intro: str,
    image_links: dict[str, str] | None,
    mode: str,
    max_per_group: int,
    sheets: bool,
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    _own_dir(out / "thumbs")
    norm = [g if isinstance(g, GalleryGroup) else GalleryGroup(str(g[0]), list(g[1])) for g in groups]
    all_ids = [i for g in norm for i in g.ids]
    info = store.describe(all_ids)
    links = dict(image_links or {})
    if image_links is None:
        # Full-size copies of what the page shows (not of the groups' hidden tails).
        _own_dir(out / "images")
        shown_ids = [i for g in norm for i in [j for j in g.ids if j in info][:max_per_group]]
        for image_id in dict.fromkeys(shown_ids):
            if image_id in info:
                name = f"images/{image_id[:16]}{extension(info[image_id].format)}"
                _materialise(store, image_id, out / name, mode)
                links[image_id] = name
    if sheets:
        _own_dir(out / "sheets")

    sections: list[str] = []
    toc: list[str] = []
    for n, group in enumerate(norm):
        ids = [i for i in group.ids if i in info]
        shown = ids[:max_per_group]
        thumbs_for_sheet: list[Any] = []
        figures: list[str] = []
        for image_id in shown:
            thumb_rel = f"thumbs/{image_id[:16]}.jpg"
            thumb_path = out / thumb_rel
            need_sheet = sheets and len(thumbs_for_sheet) < SHEET_MAX
            reused = _reuse_thumb(thumb_path) if os.path.lexists(thumb_path) else None
            if reused is not None:
                if need_sheet:
                    thumbs_for_sheet.append(reused)
            else:
                thumb = _thumbnail(store, image_id, THUMB_SIZE)
                buffer = io.BytesIO()
                thumb.save(buffer, "JPEG", quality=80, comment=_MARK)
                _write_file(thumb_path, buffer.getvalue())
                if need_sheet:
                    thumbs_for_sheet.append(thumb)
            figures.append(_figure(info[image_id], thumb_rel, links.get(image_id), group.captions.get(image_id)))
        header_links = list(group.links)
        if sheets and ids:
            sheet_rel = f"sheets/{n:03d}-{safe_filename(group.title, default='group', max_len=40)}.jpg"
            _contact_sheet(group.title, thumbs_for_sheet, out / sheet_rel, len(ids))
            header_links.append(("contact sheet", sheet_rel))
        meta = " ".join(
            f'<a href="{html.escape(_href(href))}">{html.escape(label)}</a>' for label, href in header_links
        )
        note = html.escape(group.note)
        more = (
            f'<p class="more">+ {len(ids) - len(shown)} more images not shown here</p>' if len(ids) > len(shown) else ""
        )
        sections.append(
            f'<section id="g{n}"><h2>{html.escape(group.title)} <small>{len(ids)} images</small></h2>\n'
            f'<p class="meta">{note} {meta}</p>\n<div class="grid">\n'
            + "\n".join(figures)
            + f"\n</div>{more}</section>"
        )
        toc.append(f'<a href="#g{n}">{html.escape(group.title)} ({len(ids)})</a>')

    total = len({i for i in all_ids if i in info})
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">{_GENERATOR}'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>{html.escape(title)}</h1>"
        f"<p>{len(norm)} groups, {total} images. {html.escape(intro)}</p></header>\n"
        f"<nav>{' '.join(toc)}</nav>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    index = out / "index.html"
    _write_file(index, page.encode("utf-8"))
    return index


def _reuse_thumb(path: Path) -> Any:
    """An earlier export's thumbnail as RGB; None when it must be made again (only if ours).

    Reading is harmless, so any regular file there is reused; it is only replaced if an
    export wrote it, and a link is never followed.
    """
    from PIL import Image

    if path.is_symlink() or not path.is_file():
        raise _not_ours(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_SIZE, THUMB_SIZE))
            return im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _figure(info: ImageInfo, thumb_rel: str, full_rel: str | None, extra: str | None = None) -> str:
    img = f'<img src="{html.escape(_href(thumb_rel))}" loading="lazy" alt="{html.escape(info.id[:12])}">'
    if full_rel:
        img = f'<a href="{html.escape(_href(full_rel))}">{img}</a>'
    src = info.source or "(no source)"
    tip = f"{src}\n{info.width}x{info.height} {info.format}, id {info.id}"
    if info.page_url:
        tip += f"\nfound on {info.page_url}"
    if info.places > 1:
        tip += f"\n+ {info.places - 1} more sources"
    label = _short(src)
    if urlsplit(src).scheme in ("http", "https"):
        caption = f'<a href="{html.escape(src)}" rel="noopener noreferrer">{html.escape(label)}</a>'
    else:
        caption = html.escape(label)
    if extra:
        caption += f'<br><span class="evidence">{html.escape(extra)}</span>'
    return f'<figure title="{html.escape(tip)}">{img}<figcaption>{caption}</figcaption></figure>'


def _short(source: str) -> str:
    """host/.../name for URLs, the last two path parts for files."""
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        tail = parts.path.rstrip("/").rsplit("/", 1)[-1]
        return f"{parts.netloc}/…/{tail}" if parts.path.count("/") > 1 else f"{parts.netloc}{parts.path}"
    p = Path(source)
    return "/".join(p.parts[-2:]) if len(p.parts) > 1 else source


# ---------------------------------------------------------------------------------------
# clusters


def _prepare_target(out: Path) -> None:
    """Refuse a non-empty folder we did not write; clear what an earlier export wrote.

    The marker only says where to look: each entry must be a name an export uses, and each
    file under it must be verifiably ours (``_ours``), or nothing at all is removed.
    """
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    if os.path.lexists(marker) and (marker.is_symlink() or not marker.is_file()):
        raise _not_ours(marker)
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise UsageError(f"{out} is not empty and is not an imgdb export: choose a new or empty folder")
    if marker.exists():
        try:
            entries = json.loads(marker.read_text(encoding="utf-8")).get("entries", [])
        except (ValueError, AttributeError, UnicodeDecodeError):
            entries = []
        files: list[Path] = []
        folders: list[Path] = []
        for name in entries if isinstance(entries, list) else []:
            if not isinstance(name, str) or not _ENTRY.match(name):
                raise UsageError(f"{marker} lists {name!r}, which an imgdb export never writes: choose another folder")
            target = out / name
            if not os.path.lexists(target):
                continue
            if target.is_dir() and not target.is_symlink():
                for child in sorted(target.iterdir()):
                    if not _ours(child):
                        raise _not_ours(child)
                    files.append(child)
                folders.append(target)
            elif _ours(target):
                files.append(target)
            else:
                raise _not_ours(target)
        for path in files:
            path.unlink()
        for folder in folders:
            folder.rmdir()
    out.mkdir(parents=True, exist_ok=True)


def _claim(out: Path, entries: list[str], **meta: Any) -> None:
    """Prepare ``out``, recording what this export will write *before* writing it, so an
    interrupted export is still recognised (and cleaned) as ours next time."""
    _prepare_target(out)
    _write_file(out / MARKER, json.dumps({**meta, "entries": entries}, indent=1).encode("utf-8"))


def export_groups(store: Store, groups: Sequence[GalleryGroup], to: Path | str, title: str) -> Path:
    """A gallery of titled groups in a folder of its own (``imgdb dupes --html``)."""
    out = Path(to)
    with _writing(out):
        _claim(out, ["index.html", "images", "sheets"])
    return write_gallery(store, groups, out, title)


def export_clusters(
    store: Store,
    run_id: int,
    to: Path | str,
    mode: str = "copy",
    *,
    top_sites: dict[int, list[tuple[str, int]]] | None = None,
    max_per_group: int = MAX_PER_GROUP,
) -> Path:
    """Write a clustering run as one folder per cluster plus sheets and ``index.html``.

    ``run_id`` names a saved clustering run; ``top_sites`` (cluster -> (site, images))
    goes into each cluster's note. ``mode``: "copy" (independent files),
    "hardlink" (no extra space; same filesystem as the store only) or "symlink" (absolute
    links into the store). Hard links and symlinks share the store's bytes: do not edit
    those files in place. Returns the path of ``index.html``.
    """
    if mode not in MODES:
        raise UsageError(f"unknown export mode {mode!r} (use one of: {', '.join(MODES)})")
    out = Path(to)
    found = store.query("SELECT k, method, n_images, model FROM cluster_runs WHERE id = ?", [run_id])
    if not found:
        raise UsageError(f"no clustering run {run_id} in this store")
    (k, method, n_images, model) = found[0]
    members: dict[int, list[str]] = {}
    for image_id, c in store.query(
        "SELECT image_id, cluster FROM cluster_members WHERE run_id = ? ORDER BY cluster, distance, image_id", [run_id]
    ):
        members.setdefault(int(c), []).append(image_id)
    info = store.describe([i for ids in members.values() for i in ids])
    width = max(3, len(str(max(members, default=0))))
    folders = {c: f"cluster-{c:0{width}d}" for c in members}
    links: dict[str, str] = {}
    groups: list[GalleryGroup] = []
    with _writing(out):
        # thumbs/ is not listed: thumbnails are named by image id, so a re-export reuses them.
        _claim(out, ["index.html", "sheets", *folders.values()], run_id=run_id, mode=mode)
        for c, ids in sorted(members.items()):
            folder = folders[c]
            _own_dir(out / folder)
            for rank, image_id in enumerate(ids, start=1):
                name = export_name(rank, image_id, info.get(image_id))
                _materialise(store, image_id, out / folder / name, mode)
                links.setdefault(image_id, f"{folder}/{name}")
    for c, ids in sorted(members.items()):
        sites = ", ".join(f"{site}: {n}" for site, n in (top_sites or {}).get(c, []))
        note = f"most typical image first; top sites: {sites}" if sites else "most typical image first"
        groups.append(GalleryGroup(f"Cluster {c}", ids, note=note, links=[("folder", folders[c] + "/")]))
    kind = {"copy": "copies", "hardlink": "hard links into the store", "symlink": "symbolic links into the store"}[mode]
    intro = f"Clustering run {run_id}: {method}, k = {k}, {n_images} images, model {model}; files are {kind}."
    return write_gallery(
        store, groups, out, f"imgdb clusters: run {run_id}", intro=intro, image_links=links, max_per_group=max_per_group
    )
