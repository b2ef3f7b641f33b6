"""The app's pages. Each one parses the request, makes ``Collection`` calls and renders a
template; nothing here reads the store's files or writes SQL that a user's text reaches
except through the ``where`` and ``sql`` methods the CLI uses."""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from imgdb.collection import Collection
from imgdb.dedup.grouping import KEEP_POLICIES
from imgdb.errors import DecodeError, ImgdbError, StoreBusy, UsageError

PAGE_SIZE = 60
NEIGHBOURS = 12
GROUPS_PER_PAGE = 20
SQL_MAX_ROWS = 500
SQL_TIMEOUT = 10.0  # seconds a statement from the SQL box may run
THUMB_SIZE = 256
#: An uploaded query image: at most this many bytes and pixels (then ``imaging.decode``'s own guards).
UPLOAD_MAX_BYTES = 20 * 2**20
UPLOAD_MAX_PIXELS = 40_000_000

_ID = re.compile(r"[0-9a-f]{64}")
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}


@lru_cache(maxsize=1)
def _templates() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from imgdb.serve.app import HERE

    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
    env.filters["short"] = _short
    env.filters["caption"] = _caption
    env.filters["kib"] = lambda n: f"{(n or 0) / 1024:,.0f} KiB"
    env.globals["web_link"] = _web_link
    return env


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    library = request.app.state.library
    html = _templates().get_template(name).render(request=request, store=str(library.path), **context)
    return HTMLResponse(html, status_code=status)


def _short(text: str | None, width: int = 60) -> str:
    """A source for a caption: a URL without its scheme, a path's last parts; middle cut."""
    if not text:
        return ""
    text = text.split("://", 1)[-1]
    # The end of a URL or path (the file name) says the most: keep two thirds of it.
    return text if len(text) <= width else text[: width // 3 - 1] + "…" + text[-(width - width // 3) :]


def _caption(source: str | None) -> str:
    """A source in a few words for a card: a URL's host and file name, a path's last folder and file."""
    if not source:
        return ""
    if urlsplit(source).scheme in ("http", "https"):
        parts = urlsplit(source)
        name = parts.path.rstrip("/").rsplit("/", 1)[-1]
        return f"{parts.netloc}/…/{name}" if parts.path.count("/") > 1 else f"{parts.netloc}{parts.path}"
    return "/".join(source.rstrip("/").split("/")[-2:])


def _web_link(text: str | None) -> str | None:
    """``text`` if it is an http(s) URL a page may link to, else None (shown as text)."""
    if text and urlsplit(text).scheme in ("http", "https"):
        return text
    return None


def _images(request: Request) -> Collection:
    return request.app.state.library.reader


def _image_id(value: str) -> str:
    """A full sha256 id from the URL, or 404: no other text names a file."""
    if not _ID.fullmatch(value):
        raise HTTPException(404, "no such image")
    return value


def _int(value: str | None, default: int, low: int = 0, high: int = 10**9) -> int:
    try:
        return min(high, max(low, int(value))) if value not in (None, "") else default
    except ValueError:
        return default


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- the collection -----------------------------------------------------------------


def filter_predicate(params: dict[str, str]) -> str | None:
    """The ``--where`` predicate the filter form stands for: its fields and the free text, ANDed."""
    parts = []
    if site := params.get("site", "").strip():
        parts.append("kind = 'file'" if site == "(files)" else f"site = {_quote(site)}")
    if fmt := params.get("format", "").strip():
        parts.append(f"format = {_quote(fmt)}")
    if (width := _int(params.get("min_width"), 0)) > 0:
        parts.append(f"width >= {width}")
    if (height := _int(params.get("min_height"), 0)) > 0:
        parts.append(f"height >= {height}")
    if (cluster := params.get("cluster", "").strip()).isdigit():
        parts.append(f"id IN (SELECT image_id FROM clusters WHERE cluster = {int(cluster)})")
    if where := params.get("where", "").strip():
        parts.append(f"({where})" if parts else where)
    return " AND ".join(parts) or None


def collection_page(request: Request) -> HTMLResponse:
    images = _images(request)
    params = dict(request.query_params)
    page = _int(params.get("page"), 1, 1)
    where = filter_predicate(params)
    error = None
    try:
        total, shown = images.images(where=where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    except UsageError as exc:
        total, shown, error = 0, [], str(exc)
    sites, formats, clusters = request.app.state.library.facets()
    pages = max(1, -(-total // PAGE_SIZE))
    keep = {k: v for k, v in params.items() if k != "page" and v}
    return render(
        request,
        "collection.html",
        images=shown,
        total=total,
        page=page,
        pages=pages,
        params=params,
        where=where,
        error=error,
        sites=sites,
        formats=formats,
        clusters=clusters,
        page_link=lambda n: "?" + urlencode({**keep, "page": n}),
    )


def image_page(request: Request) -> HTMLResponse:
    images = _images(request)
    image_id = _image_id(request.path_params["image_id"])
    info, sources = images.image(image_id)
    where = request.query_params.get("where", "").strip() or None
    error = None
    try:
        _, neighbours = images.similar(image_id, k=_int(request.query_params.get("k"), NEIGHBOURS, 1, 200), where=where)
    except UsageError as exc:
        neighbours, error = [], str(exc)
    return render(
        request, "image.html", image=info, sources=sources, neighbours=neighbours, where=where or "", error=error
    )


async def thumbnail(request: Request) -> Response:
    image_id = _image_id(request.path_params["image_id"])
    images = _images(request)
    try:
        # A cached one is a small file read, quicker than a hop to the thread pool.
        data = images.thumbnail(image_id, THUMB_SIZE, make=False)
        if data is None:
            data = await run_in_threadpool(images.thumbnail, image_id, THUMB_SIZE)
    except DecodeError:
        raise HTTPException(404, "this image cannot be decoded") from None
    except ImgdbError:
        raise HTTPException(404, "no such image") from None
    return Response(data, media_type="image/webp", headers={"cache-control": "public, max-age=31536000, immutable"})


def blob(request: Request) -> Response:
    image_id = _image_id(request.path_params["image_id"])
    try:
        info, data = _images(request).image_bytes(image_id)
    except ImgdbError as exc:  # unknown id, or its bytes are missing or damaged in the store
        raise HTTPException(404, str(exc)) from None
    return Response(
        data,
        media_type=_MIME.get(info.format, "application/octet-stream"),
        headers={"cache-control": "public, max-age=31536000, immutable", "content-disposition": "inline"},
    )


# -- search -------------------------------------------------------------------------


def search_page(request: Request) -> HTMLResponse:
    return render(request, "search.html", matches=None, label="", error=None, url="")


async def search_upload(request: Request) -> HTMLResponse:
    if "content-length" not in request.headers:  # a chunked body could be of any size
        return render(request, "search.html", 411, matches=None, label="", url="", error="send the upload's length")
    length = _int(request.headers.get("content-length"), 0)
    if length > UPLOAD_MAX_BYTES + 65536:
        return render(request, "search.html", 413, matches=None, label="", url="", error=_too_big())
    async with request.form(max_files=1, max_fields=4) as form:
        upload, url = form.get("file"), str(form.get("url") or "").strip()
        data = await upload.read(UPLOAD_MAX_BYTES + 1) if isinstance(upload, UploadFile) else b""
        label = (upload.filename or "upload") if isinstance(upload, UploadFile) else ""
    if len(data) > UPLOAD_MAX_BYTES:
        return render(request, "search.html", 413, matches=None, label=label, url=url, error=_too_big())
    query: str | bytes
    if data:
        query = data
    elif url and (_ID.fullmatch(url.lower()) or urlsplit(url).scheme in ("http", "https")):
        query, label = url, url  # an image URL (fetched politely) or a stored id, never a path
    elif url:
        return render(
            request,
            "search.html",
            400,
            matches=None,
            label=url,
            url=url,
            error="give an image file, an http(s) URL or an image id",
        )
    else:
        return render(request, "search.html", 400, matches=None, label="", url="", error="give an image file or URL")
    try:
        if isinstance(query, bytes):
            _check_pixels(query)
        elif _ID.fullmatch(query.lower()):
            query = _images(request).image(query.lower())[0].id  # stored, or "no image": never read as a file
        _, matches = await run_in_threadpool(_images(request).similar, query, k=NEIGHBOURS * 2)
    except ImgdbError as exc:
        return render(request, "search.html", 400, matches=None, label=label, url=url, error=str(exc))
    return render(request, "search.html", matches=matches, label=label, url=url, error=None)


def _too_big() -> str:
    return f"the image is over the {UPLOAD_MAX_BYTES // 2**20} MiB upload cap"


def _check_pixels(data: bytes) -> None:
    """Refuse an upload with too many pixels from its header, before decoding anything."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except Exception:  # not an image Pillow knows: ``decode`` says why, in its words
        return
    if width * height > UPLOAD_MAX_PIXELS:
        raise DecodeError("bomb", f"{width}x{height} is over the {UPLOAD_MAX_PIXELS:,}-pixel upload cap")


# -- clusters -----------------------------------------------------------------------


def clusters_page(request: Request) -> HTMLResponse:
    images = _images(request)
    _, runs = images.sql(
        "SELECT id, created_at, method, k, n_images, silhouette FROM cluster_runs ORDER BY id DESC LIMIT 100"
    )
    if not runs:
        return render(request, "clusters.html", runs=[], run=None, clusters=[], samples={})
    run_id = _int(request.query_params.get("run"), runs[0][0], 1)
    run_id, clusters = images.clusters(run_id)
    _, rows = images.sql(
        "SELECT cluster, image_id FROM (SELECT cluster, image_id, row_number() OVER "
        f"(PARTITION BY cluster ORDER BY distance, image_id) AS r FROM cluster_members WHERE run_id = {int(run_id)}) "
        "WHERE r <= 7 ORDER BY cluster, r"
    )
    samples: dict[int, list[str]] = {}
    for cluster, image_id in rows:
        samples.setdefault(int(cluster), []).append(image_id)
    for c in clusters:  # the medoid leads its cluster's row; the sample is the rest
        samples[c.cluster] = [i for i in samples.get(c.cluster, []) if i != c.medoid][:6]
    return render(request, "clusters.html", runs=runs, run=run_id, clusters=clusters, samples=samples)


def cluster_page(request: Request) -> HTMLResponse:
    images = _images(request)
    run_id, cluster = int(request.path_params["run"]), int(request.path_params["cluster"])
    run_id, clusters = images.clusters(run_id)
    summary = next((c for c in clusters if c.cluster == cluster), None)
    if summary is None:
        raise HTTPException(404, f"run {run_id} has no cluster {cluster}")
    page = _int(request.query_params.get("page"), 1, 1)
    where = f"id IN (SELECT image_id FROM clusters_all WHERE run_id = {run_id} AND cluster = {cluster})"
    total, shown = images.images(where=where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render(
        request,
        "cluster.html",
        run=run_id,
        cluster=summary,
        images=shown,
        total=total,
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        where=where,
        page_link=lambda n: "?" + urlencode({"page": n}),
    )


def cluster_map_page(request: Request) -> HTMLResponse:
    from imgdb.serve import clustermap

    library = request.app.state.library
    run_id = int(request.path_params["run"])
    drawn = library.maps.get(run_id)
    if drawn is None:
        try:
            run = _images(request).cluster_run(run_id)
        except UsageError as exc:
            raise HTTPException(404, str(exc)) from None
        drawn = library.maps[run_id] = clustermap.layout(run)
    return render(request, "clustermap.html", map=drawn)


# -- duplicates ---------------------------------------------------------------------


def dupes_page(request: Request) -> HTMLResponse:
    from imgdb.dedup.results import evidence_line

    images = _images(request)
    library = request.app.state.library
    run = request.query_params.get("run")
    try:
        result = images.dupes(_int(run, 0, 1) if run else None)
    except UsageError as exc:
        return render(
            request, "dupes.html", result=None, groups=[], job=library.job, error=str(exc), keeps=KEEP_POLICIES
        )
    rejects = images.rejects()
    groups = []
    for g in result.groups:
        others = [m for m in g.members[1:] if _pair(g.keep_id, m.image_id) not in rejects]
        if not others and not (g.stage == "exact" and g.copies > 1):
            continue  # every member was ruled "not a duplicate" of the kept one
        members = [(g.members[0], "kept", None)] + [
            (m, evidence_line(result.pair(g.keep_id, m.image_id), m.kind or "duplicate"), g.keep_id) for m in others
        ]
        groups.append((g, members))
    recolours = []
    if not result.params.get("recolours"):
        recolours = [p for p in result.recolours if (p.a, p.b) not in rejects]
    page = _int(request.query_params.get("page"), 1, 1)
    pages = max(1, -(-len(groups) // GROUPS_PER_PAGE))
    shown = groups[(page - 1) * GROUPS_PER_PAGE : page * GROUPS_PER_PAGE]
    described = images.store.describe(sorted({i for p in recolours for i in (p.a, p.b)}))
    return render(
        request,
        "dupes.html",
        result=result,
        groups=shown,
        total=len(groups),
        page=page,
        pages=pages,
        recolours=[(p, described.get(p.a), described.get(p.b), evidence_line(p, "recolour")) for p in recolours],
        job=library.job,
        error=None,
        keeps=KEEP_POLICIES,
        page_link=lambda n: "?" + urlencode({**({"run": run} if run else {}), "page": n}),
    )


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


async def dupes_reject(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=4) as form:
        a, b = _image_id(str(form.get("a", ""))), _image_id(str(form.get("b", "")))
        back = str(form.get("back", ""))
    library = request.app.state.library

    def decide() -> None:
        with library.writer() as images:
            images.reject(a, b)

    await run_in_threadpool(decide)
    # Only a path of this app: never an absolute URL from the form.
    target = back if back.startswith("/dupes") and not back.startswith("//") else "/dupes"
    return RedirectResponse(target, status_code=303)


async def dupes_run(request: Request) -> Response:
    async with request.form(max_files=0, max_fields=2) as form:
        keep = str(form.get("keep", "largest"))
    if keep not in KEEP_POLICIES:
        raise HTTPException(400, f"keep must be one of {', '.join(KEEP_POLICIES)}")
    request.app.state.library.run_dupes(keep)
    return RedirectResponse("/dupes", status_code=303)


# -- SQL ----------------------------------------------------------------------------


def sql_page(request: Request) -> HTMLResponse:
    query = request.query_params.get("q", "").strip()
    columns: list[str] = []
    rows: list[tuple[Any, ...]] = []
    error = None
    if query:
        images = _images(request)
        # The app has one reader connection: a runaway statement must not hold it for long.
        timer = threading.Timer(SQL_TIMEOUT, images.store.interrupt)
        timer.start()
        try:
            columns, rows = images.sql(query)
        except UsageError as exc:
            error = str(exc)
            if "interrupt" in error.lower():
                error = f"the statement ran for over {SQL_TIMEOUT:g} s and was stopped"
        finally:
            timer.cancel()
    return render(
        request,
        "sql.html",
        query=query,
        columns=columns,
        rows=rows[:SQL_MAX_ROWS],
        total=len(rows),
        error=error,
        limit=SQL_MAX_ROWS,
        is_id=lambda v: isinstance(v, str) and _ID.fullmatch(v) is not None,
    )


# -- errors -------------------------------------------------------------------------


async def _imgdb_error(request: Request, exc: Exception) -> Response:
    status = 503 if isinstance(exc, StoreBusy) else 404 if "no image" in str(exc) else 400
    return render(request, "error.html", status, message=str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith(("/thumb/", "/blob/", "/static/")):
        return Response(exc.detail, status_code=exc.status_code, media_type="text/plain")
    return render(request, "error.html", exc.status_code, message=exc.detail)


EXCEPTION_HANDLERS: dict[Any, Any] = {ImgdbError: _imgdb_error, HTTPException: _http_error}

ROUTES = [
    Route("/", collection_page),
    Route("/image/{image_id}", image_page),
    Route("/thumb/{image_id}", thumbnail),
    Route("/blob/{image_id}", blob),
    Route("/search", search_page, methods=["GET"]),
    Route("/search", search_upload, methods=["POST"]),
    Route("/clusters", clusters_page),
    Route("/clusters/{run:int}/map", cluster_map_page),
    Route("/clusters/{run:int}/{cluster:int}", cluster_page),
    Route("/dupes", dupes_page),
    Route("/dupes/reject", dupes_reject, methods=["POST"]),
    Route("/dupes/run", dupes_run, methods=["POST"]),
    Route("/sql", sql_page),
]
