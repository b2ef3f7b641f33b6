"""The store: image bytes on disk, metadata in DuckDB, vectors in LanceDB, one id.

Layout of a store directory::

    imgdb.duckdb        images, sources, pages, runs, failures, models
    vectors/            LanceDB; one table per model key: id (sha256) + vector
    blobs/ab/cd/<id>    the image bytes, content-addressed by sha256
    write.lock          held (flock) by the one process allowed to write
    journal.json        present only while a batch is being written

Order of operations for a batch of new images (``add_images``):

1. write ``journal.json`` listing the batch's ids and model key;
2. write each blob to ``blobs/tmp`` and rename it into place (atomic, idempotent);
3. LanceDB: append the rows whose id has no vector yet (a Lance commit is atomic);
4. one DuckDB transaction inserts the ``images`` and ``sources`` rows (and the
   ``image_hashes`` rows ingest computed);
5. remove ``journal.json``.

So an ``images`` row is only ever committed after its blob and vector exist.

Repair-on-open rule (writers only, under the lock): if ``journal.json`` exists, the last
batch may have stopped between 3 and 4; delete from that model's LanceDB table every
journalled id that DuckDB's ``images`` lacks, then remove the journal. Leftover files in
``blobs/tmp`` are deleted. A blob without an ``images`` row is harmless: the next ingest
that meets those bytes reuses it. After repair, for every model the set of vector ids is a
subset of DuckDB's image ids, and equal for the model the images were ingested with.

A writer that finds runs still marked ``running`` (their process was killed) marks them
``interrupted``.

One writer at a time: ``write.lock`` is taken with a non-blocking ``flock`` for the writer's
whole life; a second writer gets ``StoreBusy``.

Readers during a write: DuckDB lets one process hold the file read-write *or* several hold
it read-only. A reader holds a shared ``flock`` on ``read.lock`` while it waits for and uses
the file; the writer opens its DuckDB connection when it needs it and, whenever a reader is
waiting, closes it (a checkpoint: everything committed is in the file) after the write in
hand, or within 20 ms when it is idle. A reader retries for ``config.READ_WAIT`` (1 s) and
sees the last committed state; the writer's next write waits for the readers to finish (up
to ``config.WRITE_WAIT``). Nobody waiting costs the writer nothing: its connection stays open.

Disk and file errors (disk full, read-only, a damaged DuckDB file, a missing Lance file)
become one-line ``StoreError``/``ReadOnlyStore`` messages here, where the files are known.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np

from imgdb import config
from imgdb.errors import ImgdbError, NoStore, ReadOnlyStore, StoreBusy, StoreError, UsageError
from imgdb.store import schema

DUCKDB_FILE = "imgdb.duckdb"
READ_LOCK = "read.lock"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def site_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return None
    return parts.netloc.lower() or None


class _Locked(Exception):
    """DuckDB refused the file because another process (``pid``) holds it."""

    def __init__(self, pid: int | None):
        super().__init__(pid)
        self.pid = pid


def _connect_duckdb(path: Path, *, read_only: bool) -> Any:
    import duckdb

    # Readers run users' SQL (`imgdb sql`, --where): no files or network beyond the store.
    settings: dict[str, str | bool | int | float | list[str]] = {"enable_external_access": False} if read_only else {}
    try:
        return duckdb.connect(str(path), read_only=read_only, config=settings)
    except duckdb.ConnectionException as exc:
        if "different configuration" in str(exc):  # this very process has it open the other way
            raise _Locked(os.getpid()) from None
        raise StoreError(f"cannot open {path}: {_one_line(exc)}") from None
    except duckdb.IOException as exc:
        text = str(exc)
        if "Could not set lock" in text or "Conflicting lock" in text:
            pid = re.search(r"\(PID (\d+)\)", text)
            raise _Locked(int(pid.group(1)) if pid else None) from None
        raise _io_error(path.parent, exc) from None
    except duckdb.Error as exc:
        raise StoreError(f"cannot open {path}: {_one_line(exc)}") from None


def _open_lock_file(path: Path) -> int | None:
    """A descriptor of ``read.lock`` (made if it can be), or None on a store nobody may write."""
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            continue
    return None


def _flock_shared(fd: int) -> None:
    """A reader's shared lock on ``read.lock``; the writer only ever holds it for an instant."""
    import fcntl

    deadline = time.monotonic() + 1.0
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                return  # not worth failing for: the writer then just does not know we wait
            time.sleep(0.001)


def _writer_pid(path: Path) -> str | None:
    """The pid written in ``write.lock`` while an imgdb writer holds it, else None."""
    import fcntl

    try:
        fd = os.open(path / "write.lock", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.read(fd, 32).decode("ascii", "replace").strip() or "?"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _file_sha256(path: Path) -> str | None:
    """sha256 of a file's bytes, None if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    """An error's first line, without the Rust source locations Lance appends."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    text = re.sub(r",?\s*/\S+\.rs:\d+:\d+", "", text)
    return text if len(text) <= 300 else text[:297] + "..."


def _io_error(path: Path, exc: BaseException) -> StoreError:
    """A disk or file error of the store as a one-line error that says what to do."""
    text = _one_line(exc)
    low = text.lower()
    code = getattr(exc, "errno", None)
    if code == errno.ENOSPC or "no space left" in low:
        return StoreError(
            f"the disk holding store {path} is full ({text}); free some space and run the command again "
            "(what was stored before is kept)"
        )
    if code in (errno.EACCES, errno.EPERM, errno.EROFS) or any(
        words in low for words in ("permission denied", "operation not permitted", "read-only file")
    ):
        return ReadOnlyStore(f"store {path} is read-only here: {text}")
    if "lance error" in low or "lanceerror" in low or ".lance" in low:  # lancedb's words, or pylance's
        return StoreError(f"the vectors in store {path} are damaged ({text}); run `imgdb verify --repair`")
    if type(exc).__module__.startswith(("duckdb", "_duckdb")):
        return StoreError(
            f"the database of store {path} is damaged or unreadable ({text}); if its blobs are intact, "
            f"`imgdb ingest {path}/blobs --db NEW-STORE` rebuilds its images"
        )
    return StoreError(f"cannot use store {path}: {text}")


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """File and database errors of the store -> ``StoreError`` (bugs and bad SQL pass through)."""
    import duckdb

    try:
        yield
    except ImgdbError:
        raise
    except OSError as exc:
        raise _io_error(path, exc) from None
    except (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException) as exc:
        raise _io_error(path, exc) from None
    except duckdb.InvalidInputException as exc:
        if "invalidated" not in str(exc):
            raise
        raise _io_error(path, exc) from None
    except ValueError as exc:
        # pylance (a reader's searches) reports a missing or damaged file as pyarrow's ArrowInvalid.
        trouble = any(word in str(exc).lower() for word in _LANCE_FILE_TROUBLE)
        if not type(exc).__module__.startswith("pyarrow") or not trouble:
            raise
        raise _io_error(path, exc) from None
    except RuntimeError as exc:
        # Lance says "lance error: ..." for everything; only its file troubles are the store's.
        text = str(exc).lower()
        if not text.startswith("lance error") or not any(word in text for word in _LANCE_FILE_TROUBLE):
            raise
        raise _io_error(path, exc) from None


_LANCE_FILE_TROUBLE = (
    "not found", "(io)", "io error", "corrupt", "no space", "permission", "read-only", "unexpected eof",
    "operation not permitted",
)  # fmt: skip


_F = TypeVar("_F", bound=Callable[..., Any])


def _io(method: _F) -> _F:
    """Run a ``Store`` method with its file errors translated (see ``_translated``)."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        with _translated(self.path):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class SourceRow:
    """Where one image was found. ``source`` is a URL or an absolute path."""

    source: str
    kind: str  # "url" | "file"
    page_url: str = ""
    alt: str | None = None
    title: str | None = None
    http_status: int | None = None
    content_type: str | None = None
    file_size: int | None = None
    file_mtime: float | None = None
    fetched_at: datetime = field(default_factory=utcnow)


@dataclass
class ImageInfo:
    """One stored image as every command shows it (see ``Store.describe``)."""

    id: str
    width: int
    height: int
    format: str
    bytes: int
    added_at: datetime | None
    source: str | None  # the representative place it was found
    page_url: str | None
    places: int  # how many sources it has
    sources: list[str] = field(default_factory=list)  # filled when asked for all of them

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class NewImage:
    id: str
    data: bytes
    width: int
    height: int
    format: str
    sources: list[SourceRow]
    hashes: dict[str, Any] | None = None  # its image_hashes row (column -> value; imaging.hashes.hash_row)


class Store:
    """Blobs + DuckDB + LanceDB behind one API. Use ``Store.open(path, write=...)``."""

    def __init__(self, path: Path, *, write: bool):
        self.path = Path(path)
        self.write = write
        self._lock = threading.RLock()  # one DuckDB connection, shared by ingest threads
        self._lock_file: Any = None
        self._readers: int | None = None  # read.lock: readers hold it shared, the writer probes it
        self._probe = threading.Lock()
        self._con: Any = None
        self._depth = 0  # sessions (``_db``) in progress; the connection is never closed under one
        self._closed = False
        self._stop = threading.Event()
        self._closer: threading.Thread | None = None
        self._tables: dict[str, Any] = {}
        # A writer's vector ids per model, read once: appends skip these instead of a Lance
        # merge_insert, whose join reads the whole id column on every batch.
        self._vector_ids: dict[str, set[str]] = {}
        self._lance: Any = None
        self._datasets: dict[str, Any] = {}  # a reader's pylance datasets (``_dataset``)
        self._stale: set[str] = set()  # datasets to move to their latest version (after ``pause``)
        self._paused = False  # a reader that let go of the file for a writer (``pause``)
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"{self.path} is a file, not an imgdb store (--db names the store's folder)")
        if write:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _io_error(self.path, exc) from None
            self._take_write_lock()
        elif not (self.path / DUCKDB_FILE).exists():
            raise NoStore(f"no imgdb store at {self.path} (run `imgdb ingest` first, or pass --db DIR or set IMGDB_DB)")
        try:
            if write:
                self._readers = _open_lock_file(self.path / READ_LOCK)
                with self._db() as con:
                    schema.migrate(con)
            else:
                self._readers = _open_lock_file(self.path / READ_LOCK)
                if self._readers is not None:
                    _flock_shared(self._readers)  # says "a reader is waiting" to the writer
                self._con = self._open_duckdb()
                self._upgrade_if_needed()
            if write:
                self._repair()
                self._interrupt_dead_runs()
                self._closer = threading.Thread(target=self._let_readers_in, name="imgdb-store-readers", daemon=True)
                self._closer.start()
        except BaseException:
            self.close()
            raise

    def _upgrade_if_needed(self) -> None:
        """A reader of a store written by an older release migrates it first (briefly a writer)."""
        with _translated(self.path):
            behind = bool(schema.pending(self._con))
        if not behind:
            return
        self._con.close()
        self._con = None
        try:
            Store(self.path, write=True).close()
        except ReadOnlyStore as exc:
            raise StoreError(
                f"store {self.path} was made by an older imgdb and must be upgraded once by a writer: {exc}"
            ) from None
        self._con = self._open_duckdb()

    @classmethod
    def open(cls, path: str | Path, *, write: bool = False) -> Store:
        return cls(Path(path), write=write)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._closer is not None and self._closer is not threading.current_thread():
            self._closer.join()
            self._closer = None
        with self._lock:  # never under a batch another thread is still writing
            self._closed = True
            self._release()
        if self._readers is not None:
            os.close(self._readers)  # releases a reader's shared flock
            self._readers = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    # -- the DuckDB connection ------------------------------------------------------

    @property
    def con(self) -> Any:
        """The DuckDB connection. A writer's comes and goes (see the module docstring): use
        it through ``query`` or ``transaction``, or hold ``_db()`` while using it."""
        with self._lock:
            return self._connect()

    @contextmanager
    def _db(self) -> Iterator[Any]:
        """The connection for one piece of work, its file errors made one-line errors.

        When the work is done and a reader is waiting, a writer lets the file go.
        """
        with self._lock:
            con = self._connect()
            self._depth += 1
            try:
                with _translated(self.path):
                    yield con
            finally:
                self._depth -= 1
                if self._depth == 0 and self.write and self._reader_waiting():
                    self._release()

    def errors(self) -> Any:
        """A context that turns the store's file errors (disk full, read-only, a damaged or
        missing file) into one-line ``StoreError``s, for code that uses a vectors table itself."""
        return _translated(self.path)

    def _connect(self) -> Any:
        if self._con is None:
            if self._closed:
                raise StoreError(f"store {self.path} is closed")
            if self._paused and self._readers is not None:
                _flock_shared(self._readers)
            self._con = self._open_duckdb()
            if self._paused:  # a writer may have committed meanwhile: reopen the vectors tables too
                self._paused = False
                self._tables.clear()
                self._stale = set(self._datasets)
        return self._con

    def interrupt(self) -> None:
        """Stop the statement this store's connection is running (say, a user's SQL that runs
        too long); it ends with DuckDB's InterruptException. Safe from any thread."""
        con = self._con
        if con is not None:
            with suppress(Exception):
                con.interrupt()

    def writer_active(self) -> bool:
        """True while an imgdb process holds ``write.lock`` (a cheap flock probe)."""
        return _writer_pid(self.path) is not None

    def pause(self) -> None:
        """A long-lived reader (``imgdb serve``) lets go of the DuckDB file and ``read.lock``
        between requests while a writer runs, so the writer is never held up; the next use
        opens the file again (about 20 ms) and sees what the writer committed."""
        if self.write:
            return
        import fcntl

        with self._lock:
            if self._depth or self._con is None:
                return
            self._release()
            self._paused = True
            if self._readers is not None:
                fcntl.flock(self._readers, fcntl.LOCK_UN)

    def _open_duckdb(self) -> Any:
        """Open the DuckDB file, waiting for a writer to pause (a reader) or the readers to finish (a writer)."""
        wait = config.WRITE_WAIT if self.write else config.READ_WAIT
        deadline = time.monotonic() + wait
        while True:
            try:
                return _connect_duckdb(self.path / DUCKDB_FILE, read_only=not self.write)
            except _Locked as exc:
                if time.monotonic() >= deadline:
                    raise StoreBusy(self._busy_message(exc.pid, wait)) from None
                time.sleep(0.02)

    def _busy_message(self, pid: int | None, waited: float) -> str:
        who = f"process {pid}" if pid else "another process"
        if self.write:
            return (
                f"store {self.path} is busy: {who} is reading it and did not finish within {waited:g} s; "
                "run the command again when it is done"
            )
        writer = _writer_pid(self.path)
        if writer is not None:
            return (
                f"store {self.path} is busy: imgdb process {writer} is writing to it and did not pause "
                f"within {waited:g} s; try again in a moment"
            )
        return f"store {self.path} is busy: {who} has its database open for writing"

    def _reader_waiting(self) -> bool:
        """True while some reader holds (or waits for) the store: the writer then lets the file go."""
        if self._readers is None or not self.write:
            return False
        import fcntl

        with self._probe:
            try:
                fcntl.flock(self._readers, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(self._readers, fcntl.LOCK_UN)
            return False

    def _release(self) -> None:
        """Close the connection (a checkpoint), so that readers can open the file."""
        con, self._con = self._con, None
        if con is not None:
            # A failed checkpoint (say, a full disk) leaves the WAL, which the next open replays.
            with suppress(Exception):
                con.close()

    def _let_readers_in(self) -> None:
        """Writer's thread: an idle writer lets the file go within 20 ms of a reader arriving."""
        while not self._stop.wait(0.02):
            if self._con is None or not self._reader_waiting():
                continue
            if self._lock.acquire(timeout=0.2):
                try:
                    if self._depth == 0:
                        self._release()
                finally:
                    self._lock.release()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One DuckDB transaction, under the store's lock: all of it is committed or none."""
        self.require_write()
        with self._db() as con:
            con.execute("BEGIN")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                with suppress(Exception):  # a failed COMMIT has already ended the transaction
                    con.execute("ROLLBACK")
                raise

    def require_write(self) -> None:
        if not self.write:
            raise ReadOnlyStore(f"store {self.path} is open read-only; open it for writing (mode='w') to change it")

    # -- locking and repair -------------------------------------------------------

    def _take_write_lock(self) -> None:
        import fcntl

        try:
            fh = open(self.path / "write.lock", "a+")  # noqa: SIM115 - the flock lasts as long as the file is open
        except OSError as exc:
            raise _io_error(self.path, exc) from None
        for attempt in range(6):  # a reader asking "is anyone writing?" holds it for microseconds
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if attempt < 5:
                    time.sleep(0.01)
                    continue
                fh.seek(0)
                holder = fh.read().strip() or "?"
                fh.close()
                raise StoreBusy(
                    f"store {self.path} is busy: another imgdb process (pid {holder}) is writing to it"
                ) from None
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
        except OSError as exc:
            fh.close()
            raise _io_error(self.path, exc) from None
        self._lock_file = fh

    @property
    def _journal(self) -> Path:
        return self.path / "journal.json"

    def _interrupt_dead_runs(self) -> None:
        """Runs still ``running`` when a writer opens were killed (the writer holds the lock)."""
        with self._db() as con:
            con.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")

    @_io
    def _repair(self) -> None:
        tmp = self.path / "blobs" / "tmp"
        if tmp.exists():
            for leftover in tmp.iterdir():
                leftover.unlink(missing_ok=True)
        if not self._journal.exists():
            return
        try:
            journal = json.loads(self._journal.read_text())
            ids, key = list(journal["ids"]), str(journal["model"])
        except (ValueError, KeyError, TypeError):
            ids, key = [], ""
        if ids and key and self._table_exists(key):
            known = self._existing_image_ids(ids)
            orphans = [i for i in ids if i not in known]
            if orphans:
                self.vectors(key).delete(_in_list("id", orphans))
                self._vector_ids.pop(key, None)
        self._journal.unlink()

    # -- models and vectors ------------------------------------------------------

    @property
    def lance(self) -> Any:
        """The LanceDB connection, made on first use: ``import lancedb`` alone takes 1-2 s
        (most of it its REST namespace client), which a reader searching through pylance
        (``_dataset``) never pays."""
        if self._lance is None:
            import lancedb

            self._lance = lancedb.connect(str(self.path / "vectors"))
        return self._lance

    def _dataset(self, model_key: str) -> Any | None:
        """A reader's pylance dataset of one model's vectors (``import lance`` takes a third
        of ``import lancedb``'s time); None for a writer or without pylance."""
        if self.write:
            return None
        if model_key not in self._datasets:
            try:
                import lance
            except ImportError:
                return None
            path = self.path / "vectors" / f"{self.table_name(model_key)}.lance"
            if not path.is_dir():
                raise UsageError(f"no vectors for model {model_key} in {self.path}")
            self._datasets[model_key] = lance.dataset(str(path))
        elif model_key in self._stale:  # a writer may have added vectors while we paused
            dataset = self._datasets[model_key]
            latest = dataset.latest_version
            if latest != dataset.version:
                self._datasets[model_key] = dataset.checkout_version(latest)  # keeps the loaded index
        self._stale.discard(model_key)
        return self._datasets[model_key]

    @_io
    def nearest(
        self, model_key: str, vector: np.ndarray, limit: int, *, nprobes: int, refine_factor: int
    ) -> list[tuple[str, float]]:
        """(id, cosine distance) of the ``limit`` vectors nearest to ``vector``, nearest first.

        A flat scan below the index; with the IVF index, ``nprobes`` partitions and
        ``refine_factor`` x ``limit`` candidates re-ranked by exact distance. Rows added since
        the index was last extended are scanned flat either way.
        """
        query = vector.astype(np.float32)
        dataset = self._dataset(model_key)
        if dataset is not None:
            nearest: dict[str, Any] = {"column": "vector", "q": query, "k": limit, "metric": "cosine"}
            if any("vector" in index.field_names for index in dataset.describe_indices()):
                nearest.update(nprobes=nprobes, refine_factor=refine_factor)
            rows = dataset.to_table(columns=["id", "_distance"], nearest=nearest)
        else:
            table = self.vectors(model_key)
            search = table.search(query).distance_type("cosine").limit(limit).select(["id", "_distance"])
            if "vector" in _indexed(table):
                search = search.nprobes(nprobes).refine_factor(refine_factor)
            rows = search.to_arrow()
        return list(zip(rows.column("id").to_pylist(), (float(d) for d in rows.column("_distance").to_pylist())))

    @_io
    def count_vectors(self, model_key: str) -> int:
        dataset = self._dataset(model_key)
        return int(dataset.count_rows() if dataset is not None else self.vectors(model_key).count_rows())

    @staticmethod
    def table_name(model_key: str) -> str:
        return "vectors_" + "".join(c if c.isalnum() else "_" for c in model_key)

    def _table_exists(self, model_key: str) -> bool:
        return self.table_name(model_key) in _list_tables(self.lance)

    @_io
    def register_model(self, spec: Any) -> None:
        """Record a model (an ``imaging.model.ModelSpec``) and create its vectors table."""
        import pyarrow as pa

        with self._db() as con:
            con.execute(
                "INSERT INTO models (key, name, sha256, dim, spec, added_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                [spec.key, spec.name, spec.sha256, spec.dim, json.dumps(_spec_json(spec)), utcnow()],
            )
        if not self._table_exists(spec.key):
            schema = pa.schema([pa.field("id", pa.string()), pa.field("vector", pa.list_(pa.float32(), spec.dim))])
            self.lance.create_table(self.table_name(spec.key), schema=schema)

    @_io
    def vectors(self, model_key: str) -> Any:
        """The LanceDB table of one model's vectors."""
        if model_key not in self._tables:
            if not self._table_exists(model_key):
                raise UsageError(f"no vectors for model {model_key} in {self.path}")
            self._tables[model_key] = self.lance.open_table(self.table_name(model_key))
        return self._tables[model_key]

    @_io
    def maintain_vectors(self, model_key: str, new_rows: int) -> None:
        """After an ingest: build the ANN index once the table is big enough, else compact.

        ``optimize()`` also folds rows added since the index was built into it; until then
        they are scanned flat, so results stay exact for them.
        """
        from lancedb.index import BTree, IvfRq

        table = self.vectors(model_key)
        indexed, large = _indexed(table), table.count_rows() >= config.EXACT_MAX_ROWS
        if large and "vector" not in indexed:
            # 4-bit RaBitQ codes: LanceDB's default 1 bit loses recall at 1M rows
            # (docs/evaluation.md, "Similar").
            table.create_index("vector", config=IvfRq(distance_type="cosine", num_bits=4))
        elif new_rows >= 1000 or (new_rows and indexed):
            table.optimize()
        if large and "id" not in indexed:
            # A query image's own vector by id is then a lookup, not a scan of the table.
            table.create_index("id", config=BTree())

    @_io
    def vector_ids(self, model_key: str) -> set[str]:
        if self.write:
            return set(self._known_vector_ids(model_key))
        return self._read_vector_ids(model_key)

    def _read_vector_ids(self, model_key: str) -> set[str]:
        # Through pylance when it can: `imgdb info` would otherwise import lancedb just for this.
        if not (self.path / "vectors" / f"{self.table_name(model_key)}.lance").is_dir():
            return set()
        dataset = self._dataset(model_key)
        if dataset is not None:
            rows = dataset.to_table(columns=["id"])
        else:
            rows = self.vectors(model_key).search().select(["id"]).limit(None).to_arrow()
        return set(rows.column("id").to_pylist())

    @_io
    def delete_vectors(self, model_key: str, ids: Sequence[str]) -> None:
        """Drop the vectors of ``ids`` (say, orphans without an ``images`` row)."""
        ids = list(ids)
        for start in range(0, len(ids), 1000):
            self.vectors(model_key).delete(_in_list("id", ids[start : start + 1000]))
        self._vector_ids.pop(model_key, None)

    @_io
    def salvage_vectors(self, model_key: str) -> tuple[int, int] | None:
        """Rebuild a vectors table some of whose files are missing or unreadable from the rest.

        Rows are read fragment by fragment (a row address is fragment << 32 | offset, and a
        filter on it reads only that fragment's files); the table is rewritten with the
        readable ones. Returns (rows kept, rows lost), or None when every fragment reads.
        """
        import pyarrow as pa

        table = self.vectors(model_key)
        addresses = table.search().select(["_rowaddr"]).limit(None).to_arrow().column("_rowaddr").to_pylist()
        parts, lost = [], 0
        for fragment in sorted({int(a) >> 32 for a in addresses}):
            low, high = fragment << 32, (fragment + 1) << 32
            try:
                part = (
                    table.search()
                    .where(f"_rowaddr >= {low} AND _rowaddr < {high}")
                    .select(["id", "vector"])
                    .limit(None)
                    .to_arrow()
                )
            except (RuntimeError, OSError):
                lost += sum(1 for a in addresses if low <= int(a) < high)
                continue
            parts.append(part.select(["id", "vector"]))
        if not lost:
            return None
        schema = table.schema
        data = pa.concat_tables([p.cast(schema) for p in parts]) if parts else schema.empty_table()
        self._tables.pop(model_key, None)
        self._vector_ids.pop(model_key, None)
        self.lance.create_table(self.table_name(model_key), data=data, schema=schema, mode="overwrite")
        return data.num_rows, lost

    @_io
    def all_vectors(self, model_key: str) -> tuple[list[str], np.ndarray]:
        """Every stored image's vector for ``model_key`` as (ids sorted, float32 matrix).

        Sorted so that sampling is reproducible; vectors without an ``images`` row (a crash
        a writer has not repaired yet) are left out.
        """
        table = self.vectors(model_key).to_arrow()
        ids = table.column("id").to_pylist()
        col = table.column("vector").combine_chunks()
        dim = col.type.list_size
        vectors = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(ids), dim)
        known = self.image_ids()
        order = sorted((i for i, image_id in enumerate(ids) if image_id in known), key=ids.__getitem__)
        return [ids[i] for i in order], vectors[order]

    def main_model(self) -> str | None:
        """The model most images were ingested with; None for an empty store."""
        rows = self.query("SELECT model FROM images GROUP BY model ORDER BY count(*) DESC, model LIMIT 1")
        return rows[0][0] if rows else None

    def image_by_prefix(self, text: str) -> str | None:
        """The image whose id starts with ``text`` (>= 6 hex digits); None if no such image."""
        text = text.strip().lower()
        if not 6 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
            return None
        if len(text) == 64:  # a whole id: the primary key's index, not a scan
            rows = self.query("SELECT id FROM images WHERE id = ?", [text])
        else:
            rows = self.query("SELECT id FROM images WHERE starts_with(id, ?) LIMIT 2", [text])
        if len(rows) > 1:
            raise UsageError(f"image id prefix {text} is ambiguous; give more digits")
        return rows[0][0] if rows else None

    @_io
    def get_vectors(self, model_key: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
        if not ids:
            return {}
        dataset = self._dataset(model_key)
        if dataset is not None:
            rows = dataset.to_table(columns=["id", "vector"], filter=_in_list("id", ids))
        else:
            rows = self.vectors(model_key).search().where(_in_list("id", ids)).limit(len(ids)).to_arrow()
        vecs = rows.column("vector").to_pylist()
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(rows.column("id").to_pylist(), vecs)}

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, image_id: str) -> Path:
        return self.path / "blobs" / image_id[:2] / image_id[2:4] / image_id

    def read_blob(self, image_id: str, *, verify: bool = False) -> bytes:
        """The image's bytes. ``verify``: a missing blob, or one whose bytes are not its id's,
        is a one-line ``StoreError`` (instead of ``OSError`` or wrong bytes)."""
        if not verify:
            return self.blob_path(image_id).read_bytes()
        try:
            data = self.blob_path(image_id).read_bytes()
        except FileNotFoundError:
            raise StoreError(
                f"the bytes of image {image_id[:12]} are missing from store {self.path}; run `imgdb verify --repair`"
            ) from None
        except OSError as exc:
            raise _io_error(self.path, exc) from None
        if hashlib.sha256(data).hexdigest() != image_id:
            raise StoreError(
                f"the bytes of image {image_id[:12]} in store {self.path} are damaged; run `imgdb verify --repair`"
            )
        return data

    def thumbnail_path(self, image_id: str, size: int) -> Path:
        """Where the WebP thumbnail of an image at ``size`` px is cached (``thumbs/<size>/ab/<id>.webp``)."""
        if not _HEX_ID.fullmatch(image_id):
            raise UsageError(f"not an image id: {image_id[:70]!r}")
        return self.path / "thumbs" / str(int(size)) / image_id[:2] / f"{image_id}.webp"

    def read_thumbnail(self, image_id: str, size: int) -> bytes | None:
        """A cached thumbnail's bytes, None when it was not made yet."""
        try:
            return self.thumbnail_path(image_id, size).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _io_error(self.path, exc) from None

    @_io
    def put_thumbnail(self, image_id: str, size: int, data: bytes) -> None:
        """Cache a thumbnail; any process may (readers too): written aside and renamed into place."""
        final = self.thumbnail_path(image_id, size)
        final.parent.mkdir(parents=True, exist_ok=True)
        _write_aside(final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}"), final, data)

    def blob_ok(self, image_id: str, size: int | None) -> bool:
        """Cheap check (one stat): the blob exists and has ``size`` bytes."""
        try:
            return size is not None and self.blob_path(image_id).stat().st_size == size
        except OSError:
            return False

    def blob_intact(self, image_id: str) -> bool:
        """Full check: the blob's bytes hash to its id."""
        return _file_sha256(self.blob_path(image_id)) == image_id

    @_io
    def restore_blob(self, image_id: str, data: bytes) -> bool:
        """Write ``data`` (which must hash to ``image_id``) unless an intact blob is there; True if written."""
        if hashlib.sha256(data).hexdigest() != image_id:
            raise ValueError(f"bytes do not match image {image_id[:12]}")
        return self._put_blob(image_id, data)

    def _put_blob(self, image_id: str, data: bytes) -> bool:
        """Write a blob unless an intact one is there (a truncated or altered one is rewritten)."""
        final = self.blob_path(image_id)
        if _file_sha256(final) == image_id:
            return False
        tmp_dir = self.path / "blobs" / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        # No fsync per blob: it would cap ingest far below the model's rate. Process death
        # (Ctrl-C, kill -9) cannot lose written pages; only a power loss could.
        _write_aside(tmp_dir / f"{image_id}.{os.getpid()}.{threading.get_ident()}", final, data)
        return True

    # -- writing -----------------------------------------------------------------

    @_io
    def add_images(self, images: Sequence[NewImage], model_key: str, vectors: np.ndarray, run_id: int | None) -> None:
        """Store a batch of new images with their vectors (see the module docstring's order)."""
        import pyarrow as pa

        if not images:
            return
        with self._lock:  # one batch at a time, and close() waits for it
            ids = [im.id for im in images]
            self._journal.write_text(json.dumps({"model": model_key, "ids": ids}))
            for im in images:
                self._put_blob(im.id, im.data)
            dim = vectors.shape[1]
            table = pa.table(
                {
                    "id": ids,
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.astype(np.float32).ravel()), dim),
                }
            )
            self._append_vectors(model_key, table)
            now = utcnow()
            with self.transaction():
                self._insert(
                    "images",
                    ["id", "width", "height", "format", "bytes", "model", "added_at", "run_id"],
                    [[im.id, im.width, im.height, im.format, len(im.data), model_key, now, run_id] for im in images],
                    "ON CONFLICT DO NOTHING",
                )
                self._insert_sources([(im.id, s) for im in images for s in im.sources], run_id)
                self._insert_hashes([(im.id, im.hashes) for im in images if im.hashes is not None])
            self._journal.unlink(missing_ok=True)

    @_io
    def add_vectors(self, model_key: str, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Vectors for images already stored (embedding them with another model)."""
        import pyarrow as pa

        if not ids:
            return
        table = pa.table(
            {
                "id": list(ids),
                "vector": pa.FixedSizeListArray.from_arrays(
                    pa.array(vectors.astype(np.float32).ravel()), vectors.shape[1]
                ),
            }
        )
        self._append_vectors(model_key, table)

    def _append_vectors(self, model_key: str, table: Any) -> None:
        """Append the rows whose id has no vector yet (insert-only, as one Lance commit)."""
        import pyarrow as pa

        known = self._known_vector_ids(model_key)
        keep, seen = [], set()
        for i, image_id in enumerate(table.column("id").to_pylist()):
            if image_id not in known and image_id not in seen:
                keep.append(i)
                seen.add(image_id)
        if keep:
            self.vectors(model_key).add(table.take(pa.array(keep, pa.int64())))
            known |= seen

    def _known_vector_ids(self, model_key: str) -> set[str]:
        if model_key not in self._vector_ids:
            self._vector_ids[model_key] = self._read_vector_ids(model_key)
        return self._vector_ids[model_key]

    def put_hashes(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Write ``image_hashes`` rows (image id, column -> value), replacing older ones."""
        with self._db():
            self._insert_hashes(rows)

    def _insert_hashes(self, rows: Sequence[tuple[str, dict[str, Any]]]) -> None:
        import pyarrow as pa

        if not rows:
            return
        columns = list(rows[0][1])
        now = utcnow()
        # Hashes are unsigned 64-bit: Arrow would guess int64 and overflow on the top bit.
        batch = pa.table(
            {
                "image_id": [image_id for image_id, _ in rows],
                **{c: pa.array([r[c] for _, r in rows], pa.uint64() if c in _UNSIGNED else None) for c in columns},
                "computed_at": [now] * len(rows),
            }
        )
        names = ", ".join(batch.column_names)
        updates = ", ".join(f"{c} = excluded.{c}" for c in batch.column_names[1:])
        with self._db() as con:
            con.register("_imgdb_hashes", batch)
            try:
                con.execute(
                    f"INSERT INTO image_hashes ({names}) SELECT {names} FROM _imgdb_hashes ON CONFLICT DO UPDATE SET {updates}"
                )
            finally:
                con.unregister("_imgdb_hashes")

    def add_sources(self, rows: Iterable[tuple[str, SourceRow]], run_id: int | None) -> None:
        """Record more places where already-stored images were found."""
        with self._db():
            self._insert_sources(list(rows), run_id)

    def _insert_sources(self, rows: list[tuple[str, SourceRow]], run_id: int | None) -> None:
        if not rows:
            return
        # One row per (image, source, page), the last seen winning: DuckDB refuses an
        # upsert that names one key twice. A later run refreshes when and what it saw.
        unique = {
            (image_id, s.source, s.page_url): [
                image_id,
                s.source,
                s.kind,
                s.page_url,
                site_of(s.source),
                s.alt,
                s.title,
                s.http_status,
                s.content_type,
                s.file_size,
                s.file_mtime,
                s.fetched_at,
                run_id,
            ]
            for image_id, s in rows
        }
        self._insert(
            "sources",
            _SOURCE_COLUMNS,
            list(unique.values()),
            "ON CONFLICT DO UPDATE SET fetched_at = excluded.fetched_at, run_id = excluded.run_id, "
            "file_size = excluded.file_size, file_mtime = excluded.file_mtime",
        )

    def _insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], conflict: str = "") -> None:
        """Insert rows by column name through one Arrow scan (executemany is far slower)."""
        import pyarrow as pa

        if not rows:
            return
        batch = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
        names = ", ".join(columns)
        with self._db() as con:
            con.register("_imgdb_batch", batch)
            try:
                con.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM _imgdb_batch {conflict}")
            finally:
                con.unregister("_imgdb_batch")

    # -- runs, pages, failures ---------------------------------------------------

    def start_run(self, command: str, args: dict[str, Any]) -> int:
        with self._db() as con:
            row = con.execute(
                "INSERT INTO runs (command, args, started_at, status) VALUES (?, ?, ?, 'running') RETURNING id",
                [command, json.dumps(args, default=str), utcnow()],
            ).fetchone()
        return int(row[0])

    def finish_run(self, run_id: int, status: str, counts: dict[str, Any]) -> None:
        with self._db() as con:
            con.execute(
                "UPDATE runs SET finished_at = ?, status = ?, counts = ? WHERE id = ?",
                [utcnow(), status, json.dumps(counts, default=str), run_id],
            )

    def record_failure(
        self, run_id: int | None, source: str, reason: str, detail: str, page_url: str | None = None
    ) -> None:
        with self._db() as con:
            con.execute(
                "INSERT INTO failures (run_id, source, page_url, reason, detail, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
                [run_id, source, page_url, reason, detail[:500], utcnow()],
            )

    def record_page(
        self,
        url: str,
        *,
        run_id: int | None,
        status: int | None,
        final_url: str | None = None,
        images_found: int | None = None,
        error: str | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        parsed: dict[str, Any] | None = None,
    ) -> None:
        """Upsert a crawled page; a failed re-fetch keeps what the last good fetch parsed."""
        with self._db() as con:
            con.execute(
                """INSERT INTO pages (url, final_url, status, fetched_at, images_found, error, etag,
                                     last_modified, parsed, run_id)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT DO UPDATE SET final_url = excluded.final_url, status = excluded.status,
                     fetched_at = excluded.fetched_at, images_found = excluded.images_found,
                     error = excluded.error, run_id = excluded.run_id,
                     etag = coalesce(excluded.etag, pages.etag),
                     last_modified = coalesce(excluded.last_modified, pages.last_modified),
                     parsed = coalesce(excluded.parsed, pages.parsed)""",
                [
                    url,
                    final_url,
                    status,
                    utcnow(),
                    images_found,
                    error,
                    etag,
                    last_modified,
                    json.dumps(parsed) if parsed is not None else None,
                    run_id,
                ],
            )

    def page_state(self, url: str) -> tuple[str | None, str | None, dict[str, Any] | None]:
        """(etag, last_modified, parsed) of the last good fetch of ``url``."""
        with self._db() as con:
            row = con.execute("SELECT etag, last_modified, parsed FROM pages WHERE url = ?", [url]).fetchone()
        if not row or row[2] is None:
            return None, None, None
        return row[0], row[1], json.loads(row[2])

    # -- reading -----------------------------------------------------------------

    def _existing_image_ids(self, ids: Sequence[str]) -> set[str]:
        with self._db() as con:
            rows = con.execute("SELECT id FROM images WHERE id IN (SELECT unnest(?))", [list(ids)]).fetchall()
        return {r[0] for r in rows}

    def image_ids(self) -> set[str]:
        with self._db() as con:
            return {r[0] for r in con.execute("SELECT id FROM images").fetchall()}

    def image_sizes(self) -> dict[str, int]:
        """Image id -> its size in bytes, for every stored image."""
        return {r[0]: int(r[1]) for r in self.query("SELECT id, bytes FROM images")}

    def known_urls(self) -> dict[str, str]:
        """URL -> image id for every URL source, so re-runs skip known downloads."""
        with self._db() as con:
            rows = con.execute(
                "SELECT source, arg_max(image_id, fetched_at) FROM sources WHERE kind = 'url' GROUP BY source"
            ).fetchall()
        return dict(rows)

    def known_files(self) -> dict[str, tuple[str, int, float]]:
        """Path -> (image id, size, mtime), so re-runs skip unchanged files unread."""
        with self._db() as con:
            # A path whose content changed has a row per version: the latest one counts.
            rows = con.execute(
                "SELECT source, arg_max(image_id, fetched_at), arg_max(file_size, fetched_at), "
                "arg_max(file_mtime, fetched_at) FROM sources WHERE kind = 'file' GROUP BY source"
            ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def describe(self, ids: Sequence[str], *, all_sources: bool = False) -> dict[str, ImageInfo]:
        """What every view of an image shows: size, format and one representative source.

        The representative source is a URL when there is one (it says more than a local
        path), then the first by name, so every command labels an image the same way.
        ``all_sources`` also lists every place it was found, first seen first.
        """
        ids = list(dict.fromkeys(ids))
        if not ids:
            return {}
        rows = self.query(
            """SELECT i.id, i.width, i.height, i.format, i.bytes, i.added_at, s.source, s.page_url, coalesce(s.n, 0)
               FROM images i
               LEFT JOIN (SELECT image_id,
                                 coalesce(min(source) FILTER (WHERE kind = 'url'), min(source)) AS source,
                                 coalesce(arg_min(page_url, (source, page_url)) FILTER (WHERE kind = 'url'),
                                          arg_min(page_url, (source, page_url))) AS page_url,
                                 count(*) AS n
                          FROM sources WHERE image_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY image_id) s
                 ON s.image_id = i.id
               WHERE i.id IN (SELECT unnest(?::VARCHAR[]))""",
            [ids, ids],
        )
        out = {
            r[0]: ImageInfo(r[0], int(r[1]), int(r[2]), r[3], int(r[4]), r[5], r[6], r[7] or None, int(r[8]))
            for r in rows
        }
        if all_sources:
            for image_id, source in self.query(
                "SELECT image_id, source FROM sources WHERE image_id IN (SELECT unnest(?::VARCHAR[])) "
                "GROUP BY image_id, source ORDER BY image_id, min(fetched_at), source",
                [ids],
            ):
                if image_id in out:
                    out[image_id].sources.append(source)
        return out

    def latest_run(self, kind: str) -> int | None:
        """The newest run's id of one kind ("ingest", "dupes" or "clusters"), None if there is none."""
        table = _RUN_TABLES[kind]
        row = self.query(f"SELECT max(id) FROM {table}")
        return int(row[0][0]) if row and row[0][0] is not None else None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._db() as con:
            return con.execute(sql, list(params)).fetchall()

    def info(self) -> dict[str, Any]:
        """What the store holds, as plain JSON-able values."""
        one = lambda sql: self.query(sql)[0][0]  # noqa: E731
        models = []
        for key, name, dim in self.query("SELECT key, name, dim FROM models ORDER BY added_at"):
            model: dict[str, Any] = {"key": key, "name": name, "dim": dim}
            try:
                model["vectors"] = len(self.vector_ids(key))
            except StoreError as exc:  # info still tells what it can, and what is wrong
                model["vectors"] = None
                model["problem"] = str(exc)
            models.append(model)
        with self._db() as con:
            applied = schema.applied(con)
        return {
            "store": str(self.path),
            "images": int(one("SELECT count(*) FROM images")),
            "sources": int(one("SELECT count(*) FROM sources")),
            "sites": [
                {"site": s, "images": n}
                for s, n in self.query(
                    "SELECT coalesce(site, '(files)'), count(DISTINCT image_id) FROM sources GROUP BY 1 ORDER BY 2 DESC, 1"
                )
            ],
            "formats": dict(self.query("SELECT format, count(*) FROM images GROUP BY 1 ORDER BY 2 DESC, 1")),
            "pages": int(one("SELECT count(*) FROM pages")),
            "runs": int(one("SELECT count(*) FROM runs")),
            "failures": int(one("SELECT count(*) FROM failures")),
            "schema": applied,
            "models": models,
            "image_bytes": int(one("SELECT coalesce(sum(bytes), 0) FROM images")),
            "disk_bytes": _du(self.path),
        }


_RUN_TABLES = {"ingest": "runs", "dupes": "dupe_runs", "clusters": "cluster_runs"}
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_SOURCE_COLUMNS = [
    "image_id",
    "source",
    "kind",
    "page_url",
    "site",
    "alt",
    "title",
    "http_status",
    "content_type",
    "file_size",
    "file_mtime",
    "fetched_at",
    "run_id",
]
_UNSIGNED = ("phash", "dhash", "square_phash")  # image_hashes' UBIGINT columns


def _list_tables(db: Any) -> list[str]:
    result = db.list_tables()
    return list(getattr(result, "tables", result))


def _indexed(table: Any) -> set[str]:
    """The columns of a LanceDB table that carry an index."""
    return {column for index in table.list_indices() for column in index.columns}


def _in_list(column: str, values: Sequence[str]) -> str:
    # ids are sha256 hex; quoting still guards any other caller
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f"{column} IN ({quoted})"


def _spec_json(spec: Any) -> dict[str, Any]:
    return {
        "name": spec.name,
        "file": str(spec.path),
        "sha256": spec.sha256,
        "size": list(spec.size),
        "dim": spec.dim,
        "license": spec.license,
        "provenance": spec.provenance,
    }


def _du(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def _write_aside(tmp: Path, final: Path, data: bytes) -> None:
    """Write ``data`` to ``tmp`` and rename it to ``final``: readers see all of it or nothing."""
    try:
        tmp.write_bytes(data)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
