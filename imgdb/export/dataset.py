"""Export: the collection as a training dataset, Parquet shards or WebDataset tar shards.

The layout follows img2dataset's, which is what training code already reads::

    00000.parquet   parquet: one row per image (its bytes or its path, every metadata
                    column, its vector, its cluster and duplicate-group labels)
    00000.tar       webdataset: per image <id>.<ext> (the stored bytes), <id>.json (the
                    metadata), <id>.txt (the caption: alt text or title, may be empty),
                    <id>.npy (the vector, float32) and <id>.cls (the cluster, when it has
                    one); beside each tar a 00000.parquet of the same rows without the
                    image bytes, as img2dataset writes
    _stats.json     what was exported: format, images per shard, columns, model, runs
    .imgdb-dataset.json   marks the folder as a dataset export, so exporting again replaces it

One row per image (its sources as a list, the most telling one also in ``source``,
``page_url``, ``site`` and ``caption``), in id order; the sample key is the image id (the
sha256 of its bytes). Cluster labels come from the latest clustering run and duplicate
groups from the latest dupes run (null where an image has none). ``where`` is the
predicate ``imgdb similar --where`` takes, over the ``image_sources`` view: an image is
exported when any of its sources matches.

Everything streams: the metadata is read a page of ids at a time (keyset paging; each page
is one scan of the tables, so a store of millions is read in at most ``MAX_PAGES`` pages),
and each chunk of at most ``CHUNK_BYTES`` (image bytes, vectors and metadata) takes its
vectors from LanceDB by row id, reads and checks its bytes, and is written. What is held
for the whole export is the vector table's (id, row id) pairs, about 100 bytes per image.

Exporting again into a folder removes only files an earlier dataset export verifiably
wrote (a shard's name and its own mark: Parquet footer metadata, a tar's PAX header) and
leaves anything else alone; a file in one of the export's names that is not ours, or a
non-empty folder without the marker, stops the export with a one-line error, untouched.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgdb import __version__
from imgdb.errors import UsageError
from imgdb.export import _open_new, _writing, extension
from imgdb.store import Store
from imgdb.store.sql import check_single_statement

if TYPE_CHECKING:
    import pyarrow as pa

    from imgdb.progress import Progress

FORMATS = ("parquet", "webdataset")
IMAGE_MODES = ("bytes", "paths")
MARKER = ".imgdb-dataset.json"
STATS = "_stats.json"  # "_": Parquet readers (pyarrow, pandas, Spark) skip it when reading the folder
SHARD_SIZE = 10_000  # images per shard, img2dataset's default
PAGE_ROWS = 16_384  # metadata rows read per query, at least
MAX_PAGES = 64  # at most, however large the store
CHUNK_BYTES = 32 << 20  # bytes per Parquet row group / per write

_MARK_KEY = "imgdb"  # Parquet footer key and tar PAX header naming the export
_SHARD = re.compile(r"^\d{5}\.(parquet|tar)(\.partial)?$")


@dataclass
class DatasetExport:
    """What an export wrote."""

    path: Path  # the folder
    format: str
    images: int
    shards: list[Path]  # the 00000.parquet or 00000.tar files, in order
    files: list[Path]  # every file written (shards, their Parquet beside tars, _stats.json)
    model: str | None  # model key of the vectors
    dim: int | None
    cluster_run: int | None  # where the cluster labels come from (None: no clustering run)
    dupes_run: int | None
    bytes: int = 0  # size of the files written
    columns: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "images": self.images,
            "shards": [p.name for p in self.shards],
            "files": [p.name for p in self.files],
            "model": self.model,
            "dim": self.dim,
            "cluster_run": self.cluster_run,
            "dupes_run": self.dupes_run,
            "bytes": self.bytes,
            "columns": self.columns,
        }


def export_dataset(
    store: Store,
    to: Path | str,
    *,
    format: str = "parquet",  # noqa: A002 - the word users type (--format)
    where: str | None = None,
    images: str = "bytes",
    shard_size: int = SHARD_SIZE,
    model: str | None = None,
    progress: Progress | None = None,
) -> DatasetExport:
    """Write the images matching ``where`` (all by default) to ``to`` as a dataset.

    ``format``: "parquet" or "webdataset". ``images``: "bytes" (the stored bytes, checked
    against their id) or "paths" (the absolute path of each blob in the store; Parquet
    only). ``model``: the model key whose vectors are exported (default: the model most
    images were ingested with). ``shard_size``: images per shard.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r} (use one of: {', '.join(FORMATS)})")
    if images not in IMAGE_MODES:
        raise UsageError(f"unknown image mode {images!r} (use one of: {', '.join(IMAGE_MODES)})")
    if format == "webdataset" and images == "paths":
        raise UsageError("webdataset shards hold the image bytes; use --format parquet to export paths")
    if shard_size < 1:
        raise UsageError(f"the shard size must be at least 1, not {shard_size}")
    if where is not None and store.write:  # users' SQL only ever runs on a read-only connection
        raise UsageError("a --where filter needs the collection opened read-only (mode='r')")
    out = Path(to)
    model_key, dim = _model(store, model)
    filter_sql, total = _filtered(store, where)
    cluster_run, dupes_run = store.latest_run("clusters"), store.latest_run("dupes")
    with store.errors():  # a damaged vectors table is a one-line error
        rows = store.vectors(model_key).search().select(["id"]).with_row_id(True).limit(None).to_arrow()
    vector_rows = rows.select(["id", "_rowid"]).rename_columns(["id", "vector_row"])

    if progress is not None:
        progress.total("images", total)
    with _writing(out):
        _prepare(out, format)
        writer = _Writer(store, out, format, images, shard_size, model_key, dim, cluster_run, dupes_run, where)
        writer.progress = progress
        # Each page scans the tables once, so pages grow with the store: at most MAX_PAGES scans.
        page_rows = max(PAGE_ROWS, -(-total // MAX_PAGES))
        # A cursor of its own (the registration and any unfinished result die with it), under the
        # store's session so that a writing collection keeps its connection open meanwhile.
        try:
            with store._db() as con, closing(con.cursor()) as cursor:
                cursor.execute("SET enable_progress_bar = false")
                cursor.register("_imgdb_vector_rows", vector_rows)
                for page in _pages(cursor, filter_sql, cluster_run, dupes_run, page_rows):
                    writer.write(page)
            result = writer.finish()
        except BaseException:
            writer.abort()  # its .partial file stays, for the next export into the folder to remove
            raise
    if progress is not None and total != result.images:  # the store changed meanwhile: say what was written
        progress.total("images", result.images)
    return result


# ---------------------------------------------------------------------------------------
# reading


def _model(store: Store, model: str | None) -> tuple[str, int]:
    """The model key whose vectors are exported and their dimension."""
    models = dict(store.query("SELECT key, dim FROM models ORDER BY added_at"))
    key = model or store.main_model()
    if key is None:
        raise UsageError(f"store {store.path} holds no images: nothing to export")
    if key not in models:
        known = ", ".join(models) or "none"
        raise UsageError(f"the store has no vectors for model {key} (it has: {known})")
    return key, int(models[key])


def _filtered(store: Store, where: str | None) -> tuple[str, int]:
    """The SQL that filters ``images`` by ``where`` (or ""), and how many images it keeps."""
    if where is None:
        return "", int(store.query("SELECT count(*) FROM images")[0][0])
    import duckdb

    if not where.strip():
        raise UsageError("bad --where: the predicate is empty")
    try:
        check_single_statement(f"SELECT 1 WHERE {where}")
    except UsageError as exc:
        raise UsageError(f"bad --where: {str(exc).removeprefix('SQL error: ')}") from None
    sql = f"AND id IN (SELECT id FROM image_sources WHERE ({where}))"
    try:
        return sql, int(store.query(f"SELECT count(*) FROM images WHERE true {sql}")[0][0])
    except duckdb.Error as exc:
        raise UsageError(f"bad --where: {_sql_message(exc)}") from None


def _sql_message(exc: BaseException) -> str:
    """DuckDB's first line, with its "did you mean" / candidate hint when it gives one."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    hints = [line for line in lines[1:] if line.lower().startswith(("did you mean", "candidate bindings"))]
    return "; ".join(lines[:1] + hints[:1]) or type(exc).__name__


# One page of metadata: the page's images, their sources as a list (first seen first) and
# the most telling one (a URL before a path, as ``Store.describe`` picks it), the latest
# runs' labels and each image's row in the vectors table.
_PAGE_SQL = """
WITH page AS (
    SELECT id, width, height, format, bytes, model, added_at, run_id FROM images
    WHERE id > ? {filter} ORDER BY id LIMIT ?
), src AS (
    SELECT s.image_id,
           coalesce(min(s.source) FILTER (WHERE s.kind = 'url'), min(s.source)) AS source,
           coalesce(arg_min(s.page_url, (s.source, s.page_url)) FILTER (WHERE s.kind = 'url'),
                    arg_min(s.page_url, (s.source, s.page_url))) AS page_url,
           arg_min(s.site, (s.source, s.page_url)) FILTER (WHERE s.kind = 'url') AS site,
           coalesce(arg_min(nullif(trim(s.alt), ''), (s.kind <> 'url', s.source, s.page_url)),
                    arg_min(nullif(trim(s.title), ''), (s.kind <> 'url', s.source, s.page_url))) AS caption,
           list({{'source': s.source, 'kind': s.kind, 'page_url': s.page_url, 'site': s.site, 'alt': s.alt,
                  'title': s.title, 'http_status': s.http_status, 'content_type': s.content_type,
                  'file_size': s.file_size, 'file_mtime': s.file_mtime, 'fetched_at': s.fetched_at,
                  'run_id': s.run_id}} ORDER BY s.fetched_at, s.source, s.page_url) AS sources
    FROM sources s WHERE s.image_id IN (SELECT id FROM page) GROUP BY s.image_id
)
SELECT p.id, p.width, p.height, p.format, p.bytes, p.added_at, p.model AS ingest_model, p.run_id AS ingest_run,
       src.source, nullif(src.page_url, '') AS page_url, src.site, src.caption, src.sources,
       c.cluster, c.distance AS cluster_distance,
       d.group_id AS dupe_group, d.is_keep AS dupe_keep,
       CASE WHEN d.group_id IS NOT NULL THEN coalesce(d.kind, 'duplicate') END AS dupe_kind,
       v.vector_row
FROM page p
LEFT JOIN src ON src.image_id = p.id
LEFT JOIN cluster_members c ON c.run_id = ? AND c.image_id = p.id
LEFT JOIN dupe_groups d ON d.run_id = ? AND d.image_id = p.id
LEFT JOIN _imgdb_vector_rows v ON v.id = p.id
ORDER BY p.id
"""


def _pages(
    con: Any, filter_sql: str, cluster_run: int | None, dupes_run: int | None, page_rows: int
) -> Iterator[pa.Table]:
    """Pages of metadata in id order (keyset paging: each page starts after the last id)."""
    sql = _PAGE_SQL.format(filter=filter_sql)
    after = ""
    while True:
        page = con.sql(sql, params=[after, page_rows, cluster_run, dupes_run]).to_arrow_table()
        if page.num_rows == 0:
            if not after:
                yield page  # no rows, but the columns: an empty export still has a readable schema
            return
        yield page
        after = page.column("id")[-1].as_py()
        if page.num_rows < page_rows:
            return


def _vectors(store: Store, model_key: str, dim: int, page: pa.Table) -> pa.Array:
    """The rows' vectors in their order (null for an image without one for this model)."""
    import pyarrow as pa

    rows = page.column("vector_row").to_pylist()
    wanted = [r for r in rows if r is not None]
    matrix = np.zeros((len(rows), dim), dtype=np.float32)
    if wanted:
        with store.errors():
            taken = store.vectors(model_key).take_row_ids(wanted).select(["id", "vector"]).to_arrow()
        # take_row_ids returns rows in table order, not the order asked: match them by id
        where = {image_id: n for n, image_id in enumerate(page.column("id").to_pylist())}
        flat = taken.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        found = np.asarray(flat, dtype=np.float32).reshape(taken.num_rows, dim)
        for image_id, vector in zip(taken.column("id").to_pylist(), found):
            matrix[where[image_id]] = vector
    missing = pa.array([r is None for r in rows], type=pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), dim, mask=missing)


# ---------------------------------------------------------------------------------------
# writing


class _Writer:
    """Cuts pages into shards and writes them in the chosen format."""

    def __init__(
        self,
        store: Store,
        out: Path,
        format: str,  # noqa: A002
        images: str,
        shard_size: int,
        model_key: str,
        dim: int,
        cluster_run: int | None,
        dupes_run: int | None,
        where: str | None,
    ):
        self.store, self.out, self.format, self.images = store, out, format, images
        self.shard_size = shard_size
        self.model_key, self.dim = model_key, dim
        self.cluster_run, self.dupes_run, self.where = cluster_run, dupes_run, where
        self.blobs = store.path.resolve() / "blobs"
        self.shard: _Shard | None = None
        self.shards: list[dict[str, Any]] = []
        self.files: list[Path] = []
        self.count = 0
        self.columns: list[str] = []
        self.progress: Progress | None = None

    def meta(self) -> dict[str, Any]:
        return {
            "generator": f"imgdb {__version__}",
            "kind": "dataset",
            "model": self.model_key,
            "dim": self.dim,
            "cluster_run": self.cluster_run,
            "dupes_run": self.dupes_run,
        }

    def write(self, page: pa.Table) -> None:
        if page.num_rows == 0:  # nothing matched: one empty shard, so the columns can still be read
            if self.shard is None and not self.shards:
                self._next_shard()
                assert self.shard is not None
                self.shard.write(self._complete(page))
            return
        start = 0
        while start < page.num_rows:
            if self.shard is None or self.shard.count >= self.shard_size:
                self._next_shard()
            assert self.shard is not None
            size = min(self.shard_size - self.shard.count, page.num_rows - start)
            self._write_rows(page.slice(start, size))
            start += size

    def _write_rows(self, rows: pa.Table) -> None:
        """Rows of one shard, in chunks of at most CHUNK_BYTES (image bytes, vector, metadata)."""
        assert self.shard is not None
        fixed = self.dim * 4 + 1024
        sizes = [(size if self.images == "bytes" else 0) + fixed for size in rows.column("bytes").to_pylist()]
        start = 0
        while start < rows.num_rows:
            end, total = start, 0
            while end < rows.num_rows and (end == start or total + sizes[end] <= CHUNK_BYTES):
                total += sizes[end]
                end += 1
            self.shard.write(self._complete(rows.slice(start, end - start)))
            self.count += end - start
            if self.progress is not None:
                self.progress.done("images", end - start)
            start = end

    def _complete(self, rows: pa.Table) -> pa.Table:
        """The rows with their ``image`` bytes (checked against the id) or blob ``path``, and vector."""
        import pyarrow as pa

        ids = rows.column("id").to_pylist()
        vectors = _vectors(self.store, self.model_key, self.dim, rows)
        rows = rows.drop_columns(["vector_row"]).append_column(
            pa.field("vector", pa.list_(pa.float32(), self.dim)), pa.chunked_array([vectors])
        )
        if self.images == "paths":
            paths = [str(self.blobs / i[:2] / i[2:4] / i) for i in ids]
            return rows.add_column(1, "path", pa.array(paths, pa.string()))
        data = [self.store.read_blob(i, verify=True) for i in ids]  # missing or damaged: a one-line error
        return rows.add_column(1, "image", pa.array(data, pa.binary()))

    def _next_shard(self) -> None:
        if self.shard is not None:
            self._close_shard()
        name = f"{len(self.shards):05d}"
        if self.format == "parquet":
            self.shard = _ParquetShard(self.out, name, self.meta())
        else:
            self.shard = _TarShard(self.out, name, self.meta())
        self.shards.append({"name": self.shard.names[0], "images": 0})

    def _close_shard(self) -> None:
        assert self.shard is not None
        files = self.shard.close()
        self.files += files
        self.shards[-1].update(images=self.shard.count, bytes=sum(f.stat().st_size for f in files))
        if not self.columns:
            self.columns = self.shard.columns
        self.shard = None

    def abort(self) -> None:
        if self.shard is not None:
            with suppress(Exception):
                self.shard.abort()
            self.shard = None

    def finish(self) -> DatasetExport:
        if self.shard is not None:
            self._close_shard()
        shards = [self.out / s["name"] for s in self.shards]
        stats = {
            **self.meta(),
            "format": self.format,
            "images": self.count,
            "image_mode": self.images,
            "where": self.where,
            "store": str(self.store.path.resolve()),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "shard_size": self.shard_size,
            "shards": self.shards,
            "columns": self.columns,
        }
        _write_new(self.out / STATS, json.dumps(stats, indent=1).encode("utf-8"))
        self.files.append(self.out / STATS)
        _write_marker(self.out, self.format, "done", [f.name for f in self.files])
        return DatasetExport(
            path=self.out,
            format=self.format,
            images=self.count,
            shards=shards,
            files=list(self.files),
            model=self.model_key,
            dim=self.dim,
            cluster_run=self.cluster_run,
            dupes_run=self.dupes_run,
            bytes=sum(f.stat().st_size for f in self.files),
            columns=self.columns,
        )


class _Shard:
    """One shard being written under a ``.partial`` name, renamed into place when closed."""

    names: list[str]
    columns: list[str]
    count: int

    def write(self, rows: pa.Table) -> None:
        raise NotImplementedError

    def close(self) -> list[Path]:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class _ParquetFile:
    """A Parquet file marked as ours in its footer; the schema comes from the first rows."""

    def __init__(self, path: Path, meta: dict[str, Any]):
        self.path, self.meta = path, meta
        self.partial = path.with_name(path.name + ".partial")
        self.fh = _open_new(self.partial)
        self.writer: Any = None
        self.columns: list[str] = []

    def write(self, rows: pa.Table) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            schema = rows.schema.with_metadata({_MARK_KEY: json.dumps(self.meta)})
            # Image bytes are compressed already and unique: no codec, dictionary or min/max for them.
            small = [name for name in rows.column_names if name != "image"]
            self.writer = pq.ParquetWriter(
                self.fh,
                schema,
                compression={path: ("none" if path == "image" else "zstd") for path in _leaf_paths(schema)},
                use_dictionary=small,
                write_statistics=small,
            )
            self.columns = rows.column_names
        self.writer.write_table(rows)

    def abort(self) -> None:
        with suppress(Exception):
            if self.writer is not None:
                self.writer.close()
        self.fh.close()

    def close(self) -> Path:
        if self.writer is not None:
            self.writer.close()
        self.fh.close()
        os.replace(self.partial, self.path)
        return self.path


def _leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's names for every leaf column ("sources.list.element.alt"), which per-column options take."""
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(schema.empty_table(), buffer)
    layout = pq.ParquetFile(io.BytesIO(buffer.getvalue())).schema
    return [layout.column(i).path for i in range(len(layout))]


class _ParquetShard(_Shard):
    def __init__(self, out: Path, name: str, meta: dict[str, Any]):
        self.file = _ParquetFile(out / f"{name}.parquet", meta)
        self.names = [f"{name}.parquet"]
        self.columns = []
        self.count = 0

    def write(self, rows: pa.Table) -> None:
        self.file.write(rows)
        self.columns = self.file.columns
        self.count += rows.num_rows

    def close(self) -> list[Path]:
        return [self.file.close()]

    def abort(self) -> None:
        self.file.abort()


class _TarShard(_Shard):
    """A WebDataset tar and its Parquet of metadata.

    The tar is written member by member from ``tarfile``'s own headers (ustar; the names are
    short), after a PAX global header that marks it as ours: ``TarFile.addfile`` costs more
    than the bytes themselves for small members.
    """

    def __init__(self, out: Path, name: str, meta: dict[str, Any]):
        self.path = out / f"{name}.tar"
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.fh = _open_new(self.partial)
        self.fh.write(tarfile.TarInfo.create_pax_global_header({_MARK_KEY: json.dumps(meta)}))
        self.meta = _ParquetFile(out / f"{name}.parquet", meta)
        self.names = [f"{name}.tar", f"{name}.parquet"]
        self.columns = []
        self.count = 0
        self.mtime = int(datetime.now(timezone.utc).timestamp())

    def write(self, rows: pa.Table) -> None:
        metadata = rows.drop_columns(["image"])
        self.meta.write(metadata)
        if not self.columns:
            self.columns = rows.column_names
        images = rows.column("image").to_pylist()
        vectors = rows.column("vector").combine_chunks()
        dim = vectors.type.list_size
        start = vectors.offset * dim
        matrix = vectors.values.to_numpy(zero_copy_only=False)[start : start + len(vectors) * dim].reshape(-1, dim)
        valid = vectors.is_valid().to_pylist()
        for n, record in enumerate(metadata.drop_columns(["vector"]).to_pylist()):
            key = record["id"]
            members = [
                self._member(f"{key}{extension(record['format'])}", images[n]),
                self._member(f"{key}.json", json.dumps(record, default=_json_value, ensure_ascii=False).encode()),
                self._member(f"{key}.txt", (record["caption"] or "").encode("utf-8")),
            ]
            if record["cluster"] is not None:  # WebDataset's class-label file
                members.append(self._member(f"{key}.cls", str(record["cluster"]).encode("ascii")))
            if valid[n]:
                buffer = io.BytesIO()
                np.save(buffer, matrix[n].astype(np.float32, copy=False), allow_pickle=False)
                members.append(self._member(f"{key}.npy", buffer.getvalue()))
            self.fh.write(b"".join(members))
        self.count += rows.num_rows

    def _member(self, name: str, data: bytes) -> bytes:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), self.mtime, 0o644
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict") + data + b"\0" * (-len(data) % tarfile.BLOCKSIZE)

    def close(self) -> list[Path]:
        end = b"\0" * (2 * tarfile.BLOCKSIZE)  # the end-of-archive marker, padded to whole records
        written = self.fh.tell() + len(end)
        self.fh.write(end + b"\0" * (-written % tarfile.RECORDSIZE))
        self.fh.close()
        os.replace(self.partial, self.path)
        return [self.path, self.meta.close()]

    def abort(self) -> None:
        self.fh.close()
        self.meta.abort()


def _json_value(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# ---------------------------------------------------------------------------------------
# the folder: only what is ours is replaced


def _write_new(path: Path, data: bytes) -> None:
    with _open_new(path) as fh:
        fh.write(data)


def _write_marker(out: Path, format: str, status: str, files: list[str]) -> None:  # noqa: A002
    marker = out / MARKER
    if os.path.lexists(marker):
        marker.unlink()
    _write_new(
        marker,
        json.dumps(
            {"generator": "imgdb", "kind": "dataset", "format": format, "status": status, "files": files}
        ).encode("utf-8"),
    )


def _is_marker(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and data.get("generator") == "imgdb" and data.get("kind") == "dataset"


def _ours(path: Path) -> bool:
    """Whether ``path`` (never followed if a link) is a file a dataset export wrote, judged by content."""
    name = path.name
    if path.is_symlink() or not path.is_file():
        return False
    try:
        if name == STATS:
            data = json.loads(path.read_text(encoding="utf-8"))
            return (
                isinstance(data, dict)
                and str(data.get("generator", "")).startswith("imgdb")
                and (data.get("kind") == "dataset")
            )
        if not _SHARD.match(name):
            return False
        with open(path, "rb") as fh:
            head = fh.read(1 << 12)
        if name.endswith(".partial") and not head:
            return True  # killed before its first bytes reached the disk
        if ".tar" in name:
            # Our global PAX header comes first, complete or not: tarfile reads it with the first member.
            return head[156:157] == b"g" and f" {_MARK_KEY}=".encode() in head[512:]
        if name.endswith(".partial"):
            return head.startswith(b"PAR1")  # a Parquet file cut short has no footer yet
        import pyarrow.parquet as pq

        return _MARK_KEY.encode() in (pq.read_metadata(path).metadata or {})
    except (OSError, ValueError, UnicodeDecodeError):  # pyarrow's ArrowInvalid is a ValueError
        return False


def _prepare(out: Path, format: str) -> None:  # noqa: A002
    """Make ``out`` ready: new, empty, or an earlier dataset export whose files are removed."""
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    present = [p for p in sorted(out.iterdir()) if p.name != MARKER]
    if os.path.lexists(marker) and not _is_marker(marker):
        raise UsageError(f"{marker} was not written by an imgdb dataset export; choose a new or empty folder")
    if present and not os.path.lexists(marker):
        raise UsageError(f"{out} is not empty and is not an imgdb dataset export: choose a new or empty folder")
    ours = []
    for path in present:
        if _ours(path):
            ours.append(path)
        elif _SHARD.match(path.name) or path.name == STATS:
            raise UsageError(f"{path} was not written by an imgdb dataset export; choose a new or empty folder")
    # The marker first, so that an interrupted export is still recognised (and cleaned) next time.
    _write_marker(out, format, "writing", [])
    for path in ours:
        with suppress(FileNotFoundError):
            path.unlink()
