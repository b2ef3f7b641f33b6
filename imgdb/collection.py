"""The public API: a ``Collection`` is one store, opened for reading or writing, and its model.

    import imgdb

    with imgdb.open("shop-images", mode="w") as images:
        images.ingest(["https://shop.example/products/"])
        result = images.find_dupes()
        run = images.fit_clusters(k="auto")
    with imgdb.open("shop-images") as images:
        query, matches = images.similar("photo.jpg", k=5)
        columns, rows = images.sql("SELECT format, count(*) FROM images GROUP BY 1")

Verbs do work (``ingest``, ``find_dupes``, ``fit_clusters``, ``reject``); nouns read what
is saved (``dupes``, ``clusters``, ``info``). Every CLI command calls these methods and
nothing below them. A collection opened with ``mode="r"`` does not write: the methods that
would raise ``ReadOnlyStore`` (the one exception: a store made by an older imgdb is
migrated once when first opened). Users' SQL (``sql`` and ``where=``) only ever runs on a
read-only connection. The model (``model=``: an ONNX file with its JSON spec, or None for
the bundled one) is loaded on first use and kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload
from urllib.parse import urlsplit

from imgdb.config import default_store_path
from imgdb.errors import UsageError
from imgdb.store import Store

if TYPE_CHECKING:
    import numpy as np

    from imgdb.acquire.ingest import IngestOptions, IngestSummary
    from imgdb.clustering import ClusterRun, ClusterSummary, CompareResult
    from imgdb.dedup import DupeResult
    from imgdb.export.dataset import DatasetExport
    from imgdb.imaging.model import Model, ModelSpec
    from imgdb.progress import Progress
    from imgdb.search import Match, Query
    from imgdb.store import ImageInfo
    from imgdb.store.verify import VerifyReport

Mode = Literal["r", "w"]


class Collection:
    """One store and the model its vectors come from; ``imgdb.open`` makes one."""

    def __init__(self, path: str | Path | None = None, mode: Mode = "r", *, model: str | Path | None = None):
        if mode not in ("r", "w"):
            raise UsageError(f"mode must be 'r' or 'w', not {mode!r}")
        self.path = Path(path) if path is not None else default_store_path()
        self.mode: Mode = mode
        self._model_ref = model
        self._spec: ModelSpec | None = None
        self._model: Model | None = None
        if model is not None:  # checked first: a wrong model path must not create a store
            from imgdb.imaging.model import ModelSpec

            self._spec = ModelSpec.load(model)
        self.store = Store.open(self.path, write=mode == "w")

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def __repr__(self) -> str:
        return f"<imgdb.Collection {str(self.path)!r} mode={self.mode!r}>"

    # -- the model ----------------------------------------------------------------

    @property
    def spec(self) -> ModelSpec:
        """The model's spec (cheap: reads the JSON and hashes the ONNX file once)."""
        if self._spec is None:
            from imgdb.imaging.model import ModelSpec

            self._spec = ModelSpec.load(self._model_ref)
        return self._spec

    @property
    def model(self) -> Model:
        """The onnxruntime session, loaded on first use and kept."""
        if self._model is None:
            from imgdb.imaging.model import Model

            self._model = Model(self.spec)
        return self._model

    # -- reading ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the store holds, as plain JSON-able values."""
        return self.store.info()

    def sql(self, query: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of one read-only statement over the tables and views."""
        from imgdb.store.sql import run_sql

        if self.store.write:  # users' SQL only ever runs on a read-only connection
            raise UsageError("sql needs the collection opened read-only (mode='r')")
        return run_sql(self.store, query)

    def similar(self, query: str | bytes, *, k: int = 10, where: str | None = None) -> tuple[Query, list[Match]]:
        """The ``k`` stored images nearest to a file, an image URL, a stored id (prefix) or
        an image's bytes (say, an upload).

        ``where`` filters by a SQL predicate over the ``image_sources`` view; like ``sql``,
        it needs a read-only collection. A query that is not stored is embedded, not stored.
        """
        from imgdb import search

        if where is not None and self.store.write:
            raise UsageError("a --where filter needs the collection opened read-only (mode='r')")
        if isinstance(query, bytes):
            data = query
            return search.similar(self.store, "upload", self.spec, lambda: self.model, lambda _: data, k=k, where=where)
        return search.similar(self.store, query, self.spec, lambda: self.model, read_query, k=k, where=where)

    def images(self, *, where: str | None = None, limit: int = 60, offset: int = 0) -> tuple[int, list[ImageInfo]]:
        """A page of stored images, newest first, and how many match ``where`` (a predicate
        over the ``image_sources`` view, as ``similar`` takes); read-only, like ``sql``."""
        from imgdb.store.sql import check_single_statement

        if where is not None and self.store.write:
            raise UsageError("a --where filter needs the collection opened read-only (mode='r')")
        match = ""
        if where:
            check_single_statement(f"SELECT 1 FROM image_sources WHERE ({where})")
            match = f" WHERE id IN (SELECT id FROM image_sources WHERE ({where}))"
        # Two statements: a window count over every row would defeat the top-N sort.
        _, rows = self.sql(
            f"SELECT id FROM images{match} ORDER BY added_at DESC, id LIMIT {int(limit)} OFFSET {int(offset)}"
        )
        total = (
            len(rows) + int(offset)
            if 0 < len(rows) < int(limit)
            else int(self.sql(f"SELECT count(*) FROM images{match}")[1][0][0])
        )
        described = self.store.describe([r[0] for r in rows])
        return total, [described[r[0]] for r in rows if r[0] in described]

    def image(self, ref: str) -> tuple[ImageInfo, list[dict[str, Any]]]:
        """One stored image (id, id prefix, path or URL) and every place it was found, with
        the page, alt text, title and HTTP facts of each."""
        info = self._described(ref)
        image_id = info.id
        keys = ["source", "kind", "page_url", "site", "alt", "title", "http_status", "content_type", "fetched_at"]
        rows = self.store.query(
            f"SELECT {', '.join(keys)} FROM sources WHERE image_id = ? ORDER BY fetched_at, source, page_url",
            [image_id],
        )
        return info, [dict(zip(keys, r)) for r in rows]

    def image_bytes(self, ref: str) -> tuple[ImageInfo, bytes]:
        """A stored image (id, id prefix, path or URL) and its bytes, checked against its id."""
        info = self._described(ref)
        return info, self.store.read_blob(info.id, verify=True)

    def _described(self, ref: str) -> ImageInfo:
        from imgdb.dedup import resolve_image

        full_id = len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)
        image_id = ref if full_id else resolve_image(self.store, ref)
        info = self.store.describe([image_id]).get(image_id)
        if info is None:
            raise UsageError(f"no image {ref!r} in {self.path}")
        return info

    @overload
    def thumbnail(self, image_id: str, size: int = ..., *, make: Literal[True] = ...) -> bytes: ...
    @overload
    def thumbnail(self, image_id: str, size: int = ..., *, make: bool) -> bytes | None: ...
    def thumbnail(self, image_id: str, size: int = 256, *, make: bool = True) -> bytes | None:
        """A WebP thumbnail (longest side ``size``) of a stored image: made once, then cached
        in the store's ``thumbs/`` folder. ``make=False``: None unless it is cached."""
        cached = self.store.read_thumbnail(image_id, size)
        if cached is not None or not make:
            return cached
        import io

        from PIL import Image

        from imgdb.imaging.decode import decode

        data = self.store.read_blob(image_id, verify=True)
        image = decode(data, target=(size, size)).image
        image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
        out = io.BytesIO()
        image.save(out, "WEBP", quality=80, method=4)
        self.store.put_thumbnail(image_id, size, out.getvalue())
        return out.getvalue()

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Check every blob's sha256 and that DuckDB and LanceDB agree (see ``store.verify``).

        ``repair`` (a collection opened with mode="w") re-reads damaged or missing blobs from
        their file sources or re-fetches them from their URLs, rebuilds an unreadable vectors
        table from its readable files, drops orphan vectors and re-embeds missing ones with
        this collection's model. The report says what could not be restored.
        """
        from imgdb.store.verify import verify

        if repair:
            self.store.require_write()
        return verify(self.store, repair=repair, fetch=read_url, embed=self._embed_blobs)

    def _embed_blobs(self, model_key: str, blobs: Sequence[bytes]) -> np.ndarray | None:
        """Vectors of stored images' bytes, or None when ``model_key`` is not this collection's model."""
        import numpy as np

        from imgdb.imaging.decode import decode

        if model_key != self.spec.key:
            return None
        spec = self.spec
        tensors = [spec.preprocess(decode(data, target=spec.decode_target).image) for data in blobs]
        return self.model.embed_arrays(np.stack(tensors))

    # -- writing ------------------------------------------------------------------

    def ingest(
        self, targets: Sequence[str], *, options: IngestOptions | None = None, progress: Progress | None = None
    ) -> IngestSummary:
        """Crawl URLs, walk folders, read files; store every new image with its vector."""
        from imgdb.acquire.ingest import ingest

        self.store.require_write()
        if not targets:
            raise UsageError("nothing to ingest: give a URL, a folder or files")
        return ingest(self.store, targets, self.model, options, progress)

    def add_query(self, query: str) -> None:
        """Store a query image (a file or an image URL) unless it is stored already."""
        if self.store.image_by_prefix(query) is not None:
            return
        if Path(query).is_dir():
            raise UsageError(f"{query} is a folder: --add stores one image; use `imgdb ingest` for folders")
        from imgdb.imaging.decode import sniff_markup

        if urlsplit(query).scheme in ("http", "https") and sniff_markup(read_query(query)) == "html":
            # Refused before any crawling: ingest would follow the page's pagination.
            raise UsageError(f"{query} is a web page, not an image: --add stores one image; use `imgdb ingest`")
        self.ingest([query])

    # -- duplicates ---------------------------------------------------------------

    def find_dupes(self, *, progress: Progress | None = None, **options: Any) -> DupeResult:
        """Find near-duplicate groups and save them as a new run (see ``dedup.find``)."""
        from imgdb import dedup

        self.store.require_write()
        return dedup.find(self.store, progress=progress, **options)

    def dupes(self, run: int | None = None) -> DupeResult:
        """A saved dupes run (default: the latest): its groups and its pairs with evidence."""
        from imgdb import dedup

        return dedup.load(self.store, run)

    def rejects(self) -> set[tuple[str, str]]:
        """Every pair ``reject`` recorded, as (smaller id, larger id)."""
        from imgdb import dedup

        return dedup.rejected_pairs(self.store)

    def reject(self, a: str, b: str) -> tuple[str, str]:
        """Remember that two images (ids, id prefixes, paths or URLs) are not duplicates."""
        from imgdb import dedup

        self.store.require_write()
        return dedup.reject(self.store, a, b)

    def dupes_gallery(self, result: DupeResult, to: str | Path) -> Path:
        """A browsable HTML gallery of a dupes result in the folder ``to``; returns index.html.

        Each group shows its kept member first, each other member's evidence, and the
        ``imgdb dupes reject`` line that overrules the pair.
        """
        from imgdb.dedup.results import evidence_line
        from imgdb.export import GalleryGroup, export_groups

        groups = []
        for g in result.groups:
            captions = {g.keep_id: "kept"}
            for m in g.members[1:]:
                captions[m.image_id] = evidence_line(result.pair(m.image_id, g.keep_id), m.kind or "duplicate") + (
                    f" | imgdb dupes reject {g.keep_id[:12]} {m.image_id[:12]}"
                )
            groups.append(
                GalleryGroup(
                    f"group {g.group_id}: {g.size} images, {g.stage}",
                    g.ids,
                    note=f"kept: {g.keep_id[:12]} (first)",
                    captions=captions,
                )
            )
        recolours = result.recolours
        if recolours and not result.params.get("recolours"):
            for n, p in enumerate(recolours, 1):
                groups.append(
                    GalleryGroup(
                        f"recolour {n}",
                        [p.a, p.b],
                        note="the same photograph with the product's colour changed: not grouped",
                        captions={p.b: evidence_line(p, "recolour")},
                    )
                )
        return export_groups(self.store, groups, to, title=f"imgdb duplicate groups, run {result.run_id}")

    # -- clusters -----------------------------------------------------------------

    def fit_clusters(self, **options: Any) -> ClusterRun:
        """Cluster every image and save the run (see ``clustering.fit`` for the options);
        ``save=False`` computes without saving, which a read-only collection may do."""
        from imgdb import clustering

        if options.get("save", True):
            self.store.require_write()
        return clustering.fit(self.store, **options)

    def compare_clusters(self, **options: Any) -> CompareResult:
        """Silhouette for every (method, k), saving nothing (see ``clustering.compare``)."""
        from imgdb import clustering

        return clustering.compare(self.store, **options)

    def plot_clusters(self, run: ClusterRun, to: str | Path | None = None) -> list[Path]:
        """The run's PNG plots in ``to``, by default in the store's ``plots/run-N``."""
        from imgdb import clustering

        if to is None:
            if run.run_id is None:
                raise UsageError("an unsaved run has no folder in the store: give the plots a folder")
            self.store.require_write()
            to = self.path / "plots" / f"run-{run.run_id}"
        return clustering.plot(run, Path(to))

    def cluster_run(self, run: int | None = None) -> ClusterRun:
        """A saved run (default: the latest) with its 2-D map, as ``fit_clusters`` returned it."""
        from imgdb import clustering

        return clustering.load_run(self.store, run)

    def clusters(self, run: int | None = None) -> tuple[int, list[ClusterSummary]]:
        """A saved run's id and its clusters: size, medoid, top sites (default: the latest run)."""
        from imgdb import clustering

        run_id = clustering.resolve_run(self.store, run)
        return run_id, clustering.show(self.store, run_id)

    def export_clusters(self, to: str | Path, run: int | None = None, mode: str = "copy") -> Path:
        """One folder per cluster, contact sheets and index.html under ``to``; returns index.html."""
        from imgdb import clustering
        from imgdb.export import export_clusters

        run_id = clustering.resolve_run(self.store, run)
        top_sites = {c.cluster: c.top_sites for c in clustering.show(self.store, run_id)}
        return export_clusters(self.store, run_id, to, mode, top_sites=top_sites)

    def export_dataset(
        self,
        to: str | Path,
        *,
        format: Literal["parquet", "webdataset"] = "parquet",  # noqa: A002 - as users type it (--format)
        where: str | None = None,
        images: Literal["bytes", "paths"] = "bytes",
        shard_size: int = 10_000,
        progress: Progress | None = None,
    ) -> DatasetExport:
        """The images (all, or those ``where`` selects, as in ``similar``) as a training dataset in ``to``.

        Parquet shards, or WebDataset tar shards with a Parquet of metadata beside each:
        the bytes (or, ``images="paths"``, blob paths; Parquet only), every metadata column,
        the vectors of this collection's model (without an explicit ``model=``, of the model
        most images were ingested with when the store has none for the bundled one), and
        the latest clustering and dupes runs' labels. See ``imgdb.export.dataset``.
        """
        from imgdb.export.dataset import export_dataset

        if where is not None and self.store.write:
            raise UsageError("a --where filter needs the collection opened read-only (mode='r')")
        model = self.spec.key
        if self._model_ref is None and not self.store.query("SELECT 1 FROM models WHERE key = ?", [model]):
            model = self.store.main_model() or model
        return export_dataset(
            self.store,
            to,
            format=format,
            where=where,
            images=images,
            shard_size=shard_size,
            model=model,
            progress=progress,
        )


def read_query(query: str) -> bytes:
    """The bytes of a query image: an http(s) URL (fetched politely) or a file."""
    if "://" in query:
        from imgdb.acquire.ingest import check_url

        try:
            scheme = urlsplit(query).scheme
        except ValueError:
            scheme = query.partition("://")[0].lower()
        if scheme in ("http", "https"):
            check_url(query)
            return read_url(query)
    path = Path(query)
    if not path.is_file():
        raise UsageError(f"{query} is not a stored image id, an image file or an http(s) URL")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {query}: {exc.strerror}") from None


def read_url(url: str) -> bytes:
    """An image's bytes from the web (robots.txt, limits and retries as ingest has them)."""
    return asyncio.run(_fetch(url))


async def _fetch(url: str) -> bytes:
    from imgdb.acquire.fetch import Fetcher

    async with Fetcher() as fetcher:
        return (await fetcher.get(url, kind="image")).content
