"""Ingest: crawl or walk, fetch, hash, decode, embed and store.

Two producers feed one ``Processor``:

* ``ingest`` of a URL crawls the listing page, its pagination and (``depth``) the same-site
  pages they link to, downloading images concurrently (``fetch.Fetcher`` keeps it polite);
* ``ingest`` of folders and files walks them in sorted order.

The processor hashes every image (the id is the sha256 of its bytes), skips what the store
already has, decodes the rest in a thread pool while the model embeds the previous batch,
and writes each batch through ``Store.add_images``. A partial batch is written once no new
image arrived for ``flush_after`` seconds, so a slow download never holds finished ones
back. Re-runs skip known URLs and unchanged files without reading them, fetch pages
conditionally (ETag / Last-Modified), and do not retry URLs whose last failure was a
connect failure (``connect``, ``host-down``) unless ``retry_failed`` or ``refresh``.

Limits that hold whatever a site or a folder holds:

* the crawl stops as soon as ``max_images`` images were found, and fetches at most
  ``max_pages`` pages per depth level, on the site the user named (a start page that
  redirects elsewhere is read, but pagination and links stay on the named site);
* a page that says ``noai`` / ``noimageai`` (X-Robots-Tag, or ``<meta name="robots">``)
  gives no images, unless robots rules are off;
* an image element's other candidates (srcset sizes, ``<source>``, ``src``) are tried in
  turn before its failure is recorded;
* folder walks read regular files only (a FIFO or a device named ``x.jpg`` is recorded as
  ``not-a-file``), with reads capped at ``MAX_BYTES`` whatever ``st_size`` says; they do not
  follow symlinked folders (``symlink``) and record unreadable folders (``unreadable``) and
  image files of formats we do not read (``unsupported``); a file without an extension is
  read when its first bytes say it is an image (a store's ``blobs/`` folder, whose files are
  named by their hash, can so be ingested again); other files are ignored.

A stored image whose blob is missing or damaged is noticed when its bytes come by again
(a cheap size check on the paths that skip reading, the sha256 otherwise): the blob is
rewritten and the image counted as ``restored``.

File names are stored as text: bytes that are not UTF-8 (which Python carries as lone
surrogates) are written as ``\\xNN`` escapes, so ``caf\\xe9.jpg`` in the store is the file
whose name holds the byte 0xE9 (``safe_text``). A batch the store refuses is written
image by image, and only the images it still refuses are recorded (reason ``store``).
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import os
import queue
import stat
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from imgdb.errors import DecodeError, FetchError, NoAIRefused, StoreError, UsageError
from imgdb.imaging.decode import MAX_BYTES, decode
from imgdb.imaging.hashes import ImageHashes, hash_decoded, hash_row
from imgdb.imaging.model import Model
from imgdb.progress import NullProgress, Progress
from imgdb.store import NewImage, SourceRow, Store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}
# Image formats a folder walk records as "unsupported" rather than passing over in silence
# (besides whatever mimetypes calls image/*).
_OTHER_IMAGE_SUFFIXES = {
    ".heic", ".heif", ".jxl", ".jp2", ".j2k", ".svg", ".ico", ".psd", ".raw", ".dng", ".cr2", ".cr3",
    ".nef", ".arw", ".orf", ".rw2", ".raf", ".srw", ".pef", ".x3f", ".exr", ".hdr", ".tga", ".avifs",
}  # fmt: skip
# Images from web pages smaller than this are recorded as "too-small" (logos, icons, pixels).
MIN_SIZE = (64, 64)
# Reasons of a failed URL that a re-run does not retry without retry_failed / refresh.
_CONNECT_REASONS = ("connect", "host-down", "not-retried")


@dataclass
class IngestOptions:
    pages: int = 10  # listing pages to follow through pagination, per start URL
    depth: int = 0  # 1 = also the same-site pages the listing pages link to
    max_pages: int = 500  # pages fetched per depth level, per start URL
    max_images: int | None = None
    min_size: tuple[int, int] | None = None  # (w, h) smaller images are "too-small"; None = MIN_SIZE for URLs
    refresh: bool = False  # re-download pages and images even when known
    retry_failed: bool = False  # retry URLs whose last failure was a connect failure
    respect_robots: bool = True
    batch_size: int = 32  # measured against 8 and 16: docs/evaluation.md, "Ingest"
    flush_after: float = 1.0  # seconds without a new image before a partial batch is stored
    decode_workers: int = 2
    fetch_policy: Any = None  # fetch.FetchPolicy; None = defaults
    engine: str = "local"  # "ray": fetch, decode and embed on a Ray cluster (imgdb.engine)
    ray_address: str | None = None  # an existing Ray cluster; None = ray.init()'s default


@dataclass
class IngestSummary:
    run_id: int = 0
    pages: int = 0
    pages_failed: int = 0
    images_found: int = 0
    downloaded: int = 0
    new: int = 0
    already_stored: int = 0
    restored: int = 0  # stored images whose missing or damaged blob this run rewrote
    failed: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    status: str = "running"

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "pages": self.pages,
            "pages_failed": self.pages_failed,
            "images_found": self.images_found,
            "downloaded": self.downloaded,
            "new": self.new,
            "already_stored": self.already_stored,
            "restored": self.restored,
            "failed": dict(self.failed),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Candidate:
    """One image occurrence to process: bytes in hand, or a path to read them from."""

    source: SourceRow
    data: bytes | None = None
    path: Path | None = None
    known_id: str | None = None  # id this source had last time: skip reading if it is embedded


class _Idle:
    """Handed to ``Processor.run`` when no candidate arrived for a while: store what is done."""


IDLE = _Idle()


@dataclass
class _Skip:
    """Something a folder walk passes over, and why (recorded as a failure)."""

    path: Path
    reason: str
    detail: str


@dataclass
class _Prepared:
    id: str
    data: bytes | None  # None when the image was already embedded (nothing to do)
    width: int = 0
    height: int = 0
    format: str = ""
    tensor: np.ndarray | None = None
    restored: bool = False  # already stored, and its damaged blob was rewritten
    hashes: ImageHashes | None = None  # dupes' per-image hashes, from the same decode


# ---------------------------------------------------------------------------------------
# entry point


def ingest(
    store: Store,
    targets: Sequence[str],
    model: Model,
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest URLs, folders and files into ``store``; returns counts for the summary table.

    Raises ImgdbError only when nothing could be done (every target unusable).
    """
    options = options or IngestOptions()
    progress = progress or NullProgress()
    urls, paths = check_targets(targets)
    if options.engine not in ("local", "ray"):
        raise UsageError(f"unknown engine {options.engine!r}: use local or ray")
    store.register_model(model.spec)
    summary = IngestSummary()
    summary.run_id = store.start_run("ingest", {"targets": list(targets), **_options_json(options)})
    processor = Processor(store, model, summary, progress, options)
    started = time.perf_counter()
    try:
        if options.engine == "ray":  # the same crawl and store; the work between runs on the cluster
            from imgdb.engine.ingest import run_on_ray

            run_on_ray(store, paths, urls, model, summary, progress, options)
        else:
            if paths:
                _count_files(paths, store.path.resolve(), progress, options.max_images)
                processor.run(_file_candidates(store, paths, summary, progress, options.max_images))
            if urls:
                _ingest_urls(store, urls, processor, summary, progress, options)
        summary.status = "done"
    except KeyboardInterrupt:
        summary.status = "interrupted"
        raise
    except BaseException:
        summary.status = "failed"
        raise
    finally:
        summary.seconds = time.perf_counter() - started
        store.finish_run(summary.run_id, summary.status, summary.as_dict())
    store.maintain_vectors(model.spec.key, summary.new)
    return summary


def _url_scheme(target: str) -> str:
    try:
        return urlsplit(target).scheme
    except ValueError:  # "http://[::1": a URL, if a broken one
        return target.partition("://")[0].lower() if "://" in target else ""


def check_targets(targets: Sequence[str]) -> tuple[list[str], list[Path]]:
    """The targets' URLs and paths; UsageError for one that cannot be ingested at all.

    Cheap and before any store is opened: a mistyped target must not leave a new, empty store.
    """
    for t in targets:
        if not t.strip():
            raise UsageError(f"empty target {t!r}: give a URL, a folder or files (use . for the current folder)")
    urls = [t for t in targets if _url_scheme(t) in ("http", "https")]
    paths = [Path(t) for t in targets if t not in urls]
    for t in targets:
        if "://" in t and t not in urls:
            raise UsageError(f"unsupported URL scheme: {t} (use http:// or https://)")
    for url in urls:
        check_url(url)
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {safe_text(str(missing[0]))}")
    return urls, paths


def check_url(url: str) -> None:
    """A target URL we can fetch, or a one-line ``UsageError`` saying what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of 0..65535 or not a number
    except ValueError as exc:
        raise UsageError(f"invalid URL {url}: {exc}") from None
    if not parts.hostname:
        raise UsageError(f"invalid URL {url}: it has no host")


def _options_json(options: IngestOptions) -> dict[str, Any]:
    return {k: v for k, v in vars(options).items() if k != "fetch_policy"}


# ---------------------------------------------------------------------------------------
# the processor: hash, decode, embed, store


class Processor:
    """Turns candidates into stored images.

    Decoding runs in a thread pool, embedding on the model's lanes (``Model.submit``, up to
    ``model.lanes`` batches side by side) and storing on a writer thread, so all three
    overlap; batches are stored in the order they were made.
    """

    def __init__(self, store: Store, model: Model, summary: IngestSummary, progress: Progress, options: IngestOptions):
        self.store = store
        self.model = model
        self.spec = model.spec
        self.summary = summary
        self.progress = progress
        self.options = options
        self.embedded = store.vector_ids(self.spec.key)  # ids with a vector for this model
        self.sizes = store.image_sizes()  # id -> bytes of every stored image (its keys: what is stored)
        self._batch: dict[str, tuple[_Prepared, list[SourceRow]]] = {}
        self._sources: list[tuple[str, SourceRow]] = []
        self._writer: ThreadPoolExecutor | None = None
        self._pending_write: Future[None] | None = None
        # Writes waiting for their batch's vectors, in order: (vectors being embedded, fn, args).
        self._queued: deque[tuple[Future[np.ndarray] | None, Any, tuple[Any, ...]]] = deque()
        self._lost: list[int] = []  # images the writer thread could not store (counted in _wait_write)

    def run(self, candidates: Iterable[Candidate | _Idle]) -> None:
        """Process candidates; an ``IDLE`` among them stores the partial batch now."""
        lookahead = self.options.batch_size * 2
        with (
            ThreadPoolExecutor(self.options.decode_workers, thread_name_prefix="imgdb-decode") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="imgdb-write") as self._writer,
        ):
            try:
                pending: deque[tuple[Candidate, Future[_Prepared]]] = deque()
                for cand in candidates:
                    if isinstance(cand, _Idle):
                        while pending:
                            self._take(*pending.popleft())
                        self._flush()
                        self._drain(0)
                        continue
                    pending.append((cand, pool.submit(self._prepare, cand)))
                    while len(pending) > lookahead:
                        self._take(*pending.popleft())
                while pending:
                    self._take(*pending.popleft())
                self._flush()
                self._drain(0)
            finally:
                for vectors, _fn, _args in self._queued:  # a failed run: let the lanes finish
                    if vectors is not None:
                        vectors.exception()
                self._queued.clear()
                self._wait_write()

    def _prepare(self, cand: Candidate) -> _Prepared:
        """Worker thread: bytes -> id, and pixels -> tensor unless already embedded."""
        known = cand.known_id
        if known and known in self.embedded and known in self.sizes and self.store.blob_ok(known, self.sizes[known]):
            return _Prepared(known, None)
        data = cand.data if cand.data is not None else _read(cand.path)
        image_id = hashlib.sha256(data).hexdigest()
        if image_id in self.embedded and image_id in self.sizes:
            # The bytes are in hand: a missing or damaged blob is rewritten (an intact one is not).
            return _Prepared(image_id, None, restored=self.store.restore_blob(image_id, data))
        decoded = decode(data, target=self.spec.decode_target)
        _check_size(decoded.width, decoded.height, self.options.min_size or _default_min_size(cand.source.kind))
        tensor = self.spec.preprocess(decoded.image)
        hashes = hash_decoded(data, decoded, self.spec.decode_target)  # so that dupes decodes nothing
        return _Prepared(image_id, data, decoded.width, decoded.height, decoded.format, tensor, hashes=hashes)

    def _take(self, cand: Candidate, future: Future[_Prepared]) -> None:
        self.progress.done("images")
        try:
            prep = future.result()
        except DecodeError as exc:
            self._fail(cand, exc.reason, str(exc))
            return
        except OSError as exc:
            self._fail(cand, "unreadable", str(exc))
            return
        if prep.restored:
            self.summary.restored += 1
        if prep.data is None or prep.id in self._batch:
            if prep.id in self._batch:
                self._batch[prep.id][1].append(cand.source)
            else:
                self._sources.append((prep.id, cand.source))
            self.summary.already_stored += 1
            return
        self._batch[prep.id] = (prep, [cand.source])
        if len(self._batch) >= self.options.batch_size:
            self._flush()

    def _fail(self, cand: Candidate, reason: str, detail: str) -> None:
        self.summary.failed[reason] += 1
        self.progress.failed("images")
        self.store.record_failure(
            self.summary.run_id, cand.source.source, reason, safe_text(detail), cand.source.page_url or None
        )

    def _flush(self) -> None:
        """Start embedding the batch; it is stored on the writer thread once its vectors are in."""
        batch, self._batch = list(self._batch.values()), {}
        sources, self._sources = self._sources, []
        if batch:
            vectors = self.model.submit(np.stack([_tensor(p) for p, _ in batch]))
            fresh = [i for i, (p, _) in enumerate(batch) if p.id not in self.sizes]
            again = [i for i, (p, _) in enumerate(batch) if p.id in self.sizes]
            # Stored under another model: only this model's vector and the sources are new.
            sources += [(batch[i][0].id, s) for i in again for s in batch[i][1]]
            self.summary.new += len(fresh)
            self.summary.already_stored += len(again)  # later sources were counted in _take
            ids = {p.id for p, _ in batch}
            self.embedded |= ids
            self.sizes.update((p.id, len(p.data or b"")) for p, _ in batch if p.id not in self.sizes)
            self._queued.append((vectors, self._store_batch, (batch, fresh, again, sources)))
        elif sources:
            self._queued.append((None, self.store.add_sources, (sources, self.summary.run_id)))
        self._drain(self.model.lanes)

    def _drain(self, keep: int) -> None:
        """Hand queued writes to the writer in order: those whose vectors are in, and any
        beyond the ``keep`` newest (waiting for their vectors)."""
        while self._queued:
            vectors, fn, args = self._queued[0]
            if len(self._queued) <= keep and vectors is not None and not vectors.done():
                return
            self._queued.popleft()
            self._write(fn, *args, *(() if vectors is None else (vectors.result(),)))

    def _store_batch(
        self,
        batch: list[tuple[_Prepared, list[SourceRow]]],
        fresh: list[int],
        again: list[int],
        sources: list[tuple[str, SourceRow]],
        vectors: np.ndarray,
    ) -> None:
        """Writer thread: blobs, vectors and rows of one embedded batch (Store orders them)."""
        new = [_new_image(*batch[i]) for i in fresh]
        try:
            self.store.add_images(new, self.spec.key, vectors[fresh], self.summary.run_id)
        except (OSError, StoreError):
            raise  # the store itself is in trouble (disk, lock): that ends the run
        except Exception:
            self._store_one_by_one(new, vectors[fresh])
        self.store.add_vectors(self.spec.key, [batch[i][0].id for i in again], vectors[again])
        # Stored before ingest hashed (or by the Ray engine): decoded now, so hashed now.
        self.store.put_hashes([(p.id, hash_row(p.hashes)) for p, _ in (batch[i] for i in again) if p.hashes])
        if sources:
            self.store.add_sources(sources, self.summary.run_id)

    def _store_one_by_one(self, new: list[NewImage], vectors: np.ndarray) -> None:
        """A batch the store refused: write its images singly, record the ones still refused."""
        for i, image in enumerate(new):
            try:
                self.store.add_images([image], self.spec.key, vectors[i : i + 1], self.summary.run_id)
            except (OSError, StoreError):
                raise
            except Exception as exc:
                # The store's own repair rule drops this image's vector if it was written
                # (journal -> vectors without an images row), as it would at the next open.
                self.store._repair()
                self._lost.append(1)
                detail = safe_text(f"the store refused it: {type(exc).__name__}: {exc}")
                for source in image.sources:
                    self.store.record_failure(
                        self.summary.run_id, source.source, "store", detail, source.page_url or None
                    )

    def _write(self, fn: Any, *args: Any) -> None:
        """Queue a store write after the previous one: at most one batch is being written."""
        assert self._writer is not None, "writes happen inside run()"
        self._wait_write()
        self._pending_write = self._writer.submit(fn, *args)

    def _wait_write(self) -> None:
        """Wait for the write in flight; its error, if any, surfaces here in the caller."""
        pending, self._pending_write = self._pending_write, None
        try:
            if pending is not None:
                pending.result()
        finally:
            lost, self._lost = len(self._lost), []
            if lost:
                self.summary.new -= lost
                self.summary.failed["store"] += lost


def _default_min_size(kind: str) -> tuple[int, int]:
    # Icons, logos and tracking pixels come with web pages; a folder holds what its owner put there.
    return MIN_SIZE if kind == "url" else (0, 0)


def _check_size(width: int, height: int, least: tuple[int, int]) -> None:
    if width < least[0] or height < least[1]:
        raise DecodeError("too-small", f"{width}x{height} is under the minimum size {least[0]}x{least[1]}")


def _tensor(prep: _Prepared) -> np.ndarray:
    assert prep.tensor is not None, "only decoded images are batched"
    return prep.tensor


def _new_image(prep: _Prepared, sources: list[SourceRow]) -> NewImage:
    assert prep.data is not None, "only new images are batched"
    hashes = hash_row(prep.hashes) if prep.hashes is not None else None
    return NewImage(prep.id, prep.data, prep.width, prep.height, prep.format, sources, hashes)


def _read(path: Path | None) -> bytes:
    """A regular file's bytes, at most ``MAX_BYTES`` of them whatever its size claims.

    Opened non-blocking and checked on the open descriptor, so a FIFO or a device (or a
    file swapped for one after the walk looked) is refused instead of hanging the run.
    """
    assert path is not None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("not-a-file", f"not a regular file ({_file_kind(st.st_mode)})")
        if st.st_size > MAX_BYTES:
            raise DecodeError("too-large", f"{st.st_size} bytes is over the {MAX_BYTES}-byte cap")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(1 << 20, MAX_BYTES + 1 - size))
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_BYTES:
                raise DecodeError("too-large", f"over the {MAX_BYTES}-byte cap (its size said {st.st_size})")
            chunks.append(chunk)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):  # fmt: skip
        if test(mode):
            return name
    return "not a regular file"


def safe_text(text: str) -> str:
    """``text`` as valid UTF-8 text for the store: undecodable file-name bytes become ``\\xNN``.

    ``os.fsdecode`` carries a byte that is not UTF-8 as a lone surrogate (U+DC80..U+DCFF);
    each becomes the four characters ``\\xNN`` (so b"caf\\xe9" is stored as ``caf\\xe9``).
    Any other lone surrogate becomes ``\\udNNN``. Valid text is returned unchanged.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


# ---------------------------------------------------------------------------------------
# folders and files


def _file_candidates(
    store: Store, paths: Sequence[Path], summary: IngestSummary, progress: Progress, cap: int | None
) -> Iterator[Candidate]:
    known = store.known_files()
    store_dir = store.path.resolve()
    for path in _walk(paths, skip=store_dir):
        if isinstance(path, _Skip):
            summary.failed[path.reason] += 1
            store.record_failure(summary.run_id, safe_text(str(path.path)), path.reason, safe_text(path.detail))
            continue
        if cap is not None and summary.images_found >= cap:
            return
        summary.images_found += 1
        progress.found("images")
        source = safe_text(str(path))
        try:
            st = path.stat()
        except OSError as exc:
            summary.failed["unreadable"] += 1
            store.record_failure(summary.run_id, source, "unreadable", safe_text(str(exc)))
            continue
        row = SourceRow(source=source, kind="file", file_size=st.st_size, file_mtime=st.st_mtime)
        previous = known.get(source)
        unchanged = previous is not None and previous[1] == st.st_size and previous[2] == st.st_mtime
        yield Candidate(row, path=path, known_id=previous[0] if previous is not None and unchanged else None)


def _count_files(paths: Sequence[Path], skip: Path, progress: Progress, cap: int | None) -> None:
    """Fix the progress total: walk the folders once more in a thread of its own (names only,
    far quicker than the reading and embedding it runs beside)."""

    def count() -> None:
        n = 0
        for path in _walk(paths, skip):
            if not isinstance(path, _Skip):
                n += 1
                if cap is not None and n >= cap:
                    break
        progress.total("images", n)

    threading.Thread(target=count, name="imgdb-count", daemon=True).start()


def _walk(paths: Sequence[Path], skip: Path) -> Iterator[Path | _Skip]:
    """Files named directly, plus image files under folders, in a stable order.

    Only regular files are yielded; what is passed over for a reason comes as a ``_Skip``.
    """
    for path in paths:
        path = path.resolve()
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            yield _Skip(path, "unreadable", f"cannot stat: {exc.strerror or exc}")
            continue
        if stat.S_ISDIR(mode):
            yield from _walk_folder(path, skip)
        elif stat.S_ISREG(mode):
            yield path
        else:
            yield _Skip(path, "not-a-file", f"not a regular file ({_file_kind(mode)})")


def _walk_folder(top: Path, skip: Path) -> Iterator[Path | _Skip]:
    """Top-down, files before subfolders, each sorted by name; hidden entries are ignored."""
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            yield _Skip(folder, "unreadable", f"cannot list folder: {exc.strerror or exc}")
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            image_name = path.suffix.lower() in IMAGE_SUFFIXES
            try:
                if entry.is_symlink() and entry.is_dir():
                    yield _Skip(path, "symlink", "symlinked folder not followed (name it to ingest it)")
                    continue
                mode = entry.stat().st_mode
            except OSError as exc:
                if image_name or entry.is_symlink():
                    yield _Skip(path, "unreadable", f"cannot stat: {exc.strerror or exc}")
                continue
            if stat.S_ISDIR(mode):
                if path.resolve() != skip:
                    subfolders.append(path)
            elif image_name:
                yield (
                    path
                    if stat.S_ISREG(mode)
                    else _Skip(path, "not-a-file", f"not a regular file ({_file_kind(mode)})")
                )
            elif not path.suffix and stat.S_ISREG(mode) and _sniffed_image(path):
                yield path
            elif _looks_like_image(path):
                yield _Skip(
                    path,
                    "unsupported",
                    f"{path.suffix or 'this'} files are not read (supported: {', '.join(sorted(IMAGE_SUFFIXES))})",
                )
        stack.extend(reversed(subfolders))


# What the decoder reads (Pillow's names), for files whose name says nothing.
_SNIFFED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "MPO")


def _sniffed_image(path: Path) -> bool:
    """An extensionless regular file whose first bytes are an image's (Pillow reads the header only)."""
    from PIL import Image

    try:
        with Image.open(path, formats=_SNIFFED_FORMATS) as im:
            return im.format is not None
    except Image.DecompressionBombError:
        return True  # an image all right: decoding records it as a bomb
    except Exception:  # whatever Pillow makes of arbitrary bytes: not an image
        return False


def _looks_like_image(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in _OTHER_IMAGE_SUFFIXES:
        return True
    guessed, _ = mimetypes.guess_type(path.name)
    return bool(guessed and guessed.startswith("image/"))


# ---------------------------------------------------------------------------------------
# the web


def _ingest_urls(
    store: Store,
    urls: Sequence[str],
    processor: Processor,
    summary: IngestSummary,
    progress: Progress,
    options: IngestOptions,
) -> None:
    """Run the async crawl; the processor consumes its downloads in a thread of its own."""
    handoff: queue.Queue[Candidate | None] = queue.Queue(maxsize=options.batch_size * 4)
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            processor.run(_arrivals(handoff, options.flush_after))
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
            while handoff.get() is not None:  # keep draining so the crawler never blocks
                pass

    worker = threading.Thread(target=consume, name="imgdb-store", daemon=True)
    worker.start()
    crawler = _Crawler(store, handoff, summary, progress, options, processor.sizes)
    try:
        asyncio.run(crawler.run(urls))
    finally:
        handoff.put(None)
        worker.join()
    if failure:
        raise failure[0]
    if crawler.start_errors and len(crawler.start_errors) == len(urls) and summary.images_found == 0:
        raise crawler.start_errors[0]


def _arrivals(handoff: queue.Queue[Candidate | None], idle: float) -> Iterator[Candidate | _Idle]:
    """The crawler's candidates until its None, with an ``IDLE`` after each ``idle`` s of quiet."""
    while True:
        try:
            item = handoff.get(timeout=max(0.01, idle))
        except queue.Empty:
            yield IDLE
            continue
        if item is None:
            return
        yield item


class _Crawler:
    def __init__(
        self,
        store: Store,
        handoff: queue.Queue[Candidate | None],
        summary: IngestSummary,
        progress: Progress,
        options: IngestOptions,
        sizes: dict[str, int] | None = None,
    ):
        self.store = store
        self.handoff = handoff
        self.summary = summary
        self.progress = progress
        self.options = options
        self.known_urls = {} if options.refresh else store.known_urls()
        self.sizes = sizes
        self.not_retried = set() if options.refresh or options.retry_failed else _connect_failures(store)
        self.seen_pages: set[str] = set()
        self.seen_images: set[str] = set()
        self.downloads: set[asyncio.Task[None]] = set()
        self.start_errors: list[FetchError] = []

    async def run(self, urls: Sequence[str]) -> None:
        from imgdb.acquire.fetch import Fetcher, FetchPolicy

        policy = self.options.fetch_policy or FetchPolicy()
        policy.respect_robots = self.options.respect_robots
        self.page_workers = max(1, policy.per_host)
        async with Fetcher(policy) as fetcher:
            self.fetcher = fetcher
            for url in urls:
                await self._crawl_site(url)
            self.progress.total("images", self.summary.images_found)  # every page read: no more to find
            if self.downloads:
                await asyncio.gather(*self.downloads)

    def _capped(self) -> bool:
        cap = self.options.max_images
        return cap is not None and self.summary.images_found >= cap

    async def _crawl_site(self, start: str) -> None:
        """Listing pages through pagination, then up to ``depth`` levels of linked pages.

        Everything followed stays on ``start``'s site, even when ``start`` redirects away.
        """
        from imgdb.acquire.crawl import same_site

        links: list[str] = []
        url: str | None = start
        listing = 0
        while url and listing < self.options.pages and not self._capped():
            self.seen_pages.add(url)
            listing += 1
            parsed = await self._page(url, is_start=url == start)
            if parsed is None:
                break
            links += [u for u in parsed.links if same_site(u, start)]
            url = next((n for n in parsed.next_pages if n not in self.seen_pages and same_site(n, start)), None)
        for _level in range(self.options.depth):
            if self._capped():
                return
            level = [u for u in dict.fromkeys(links) if u not in self.seen_pages][: max(0, self.options.max_pages)]
            self.seen_pages.update(level)
            links = []
            for parsed in await self._pages(level):
                links += [u for u in parsed.links if same_site(u, start)]

    async def _pages(self, urls: list[str]) -> list[Any]:
        """Fetch ``urls`` a few at a time, stopping as soon as the image cap is reached."""
        todo = deque(urls)
        done: list[Any] = []

        async def worker() -> None:
            while todo and not self._capped():
                parsed = await self._page(todo.popleft())
                if parsed is not None:
                    done.append(parsed)

        await asyncio.gather(*(worker() for _ in range(min(self.page_workers, len(urls)))))
        return done

    async def _page(self, url: str, *, is_start: bool = False) -> Any:
        """Fetch and parse one page (or reuse its last parse on 304) and queue its images."""
        from imgdb.acquire.crawl import ImageLink, ParsedPage, parse_page
        from imgdb.acquire.fetch import page_refuses_ai

        self.progress.found("pages")
        if not is_start and url in self.not_retried:
            self.summary.pages_failed += 1
            self.progress.done("pages")
            self.store.record_failure(self.summary.run_id, url, "not-retried", _NOT_RETRIED, url)
            return None
        etag, last_modified, previous = (None, None, None) if self.options.refresh else self.store.page_state(url)
        headers = {}
        if previous is not None and etag:
            headers["If-None-Match"] = etag
        if previous is not None and last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            fetched = await self.fetcher.get(url, kind="page", headers=headers)
        except FetchError as exc:
            self.summary.pages_failed += 1
            self.progress.done("pages")
            self.store.record_page(url, run_id=self.summary.run_id, status=getattr(exc, "status", None), error=str(exc))
            self.store.record_failure(self.summary.run_id, url, exc.reason, str(exc), url)
            if is_start:
                self.start_errors.append(exc)
            return None
        self.summary.pages += 1
        self.progress.done("pages")
        if fetched.status == 304 and previous is not None:
            parsed = ParsedPage(
                url=previous["url"],
                images=[ImageLink(**{**i, "fallbacks": tuple(i.get("fallbacks") or ())}) for i in previous["images"]],
                next_pages=previous["next_pages"],
                links=previous["links"],
                noai=bool(previous.get("noai")),
            )
        elif fetched.content_type and fetched.content_type.startswith("image/"):
            # The URL is an image itself: ingest it directly.
            self._queue_download(ImageLink(url=fetched.final_url, page_url=""), fetched)
            self.store.record_page(
                url, run_id=self.summary.run_id, status=fetched.status, final_url=fetched.final_url, images_found=1
            )
            return None
        else:
            parsed = parse_page(fetched.content, fetched.final_url)
            if page_refuses_ai(fetched.headers):
                parsed = replace(parsed, noai=True)
        self.store.record_page(
            url,
            run_id=self.summary.run_id,
            status=fetched.status,
            final_url=fetched.final_url,
            images_found=len(parsed.images),
            etag=fetched.headers.get("etag"),
            last_modified=fetched.headers.get("last-modified"),
            parsed={
                "url": parsed.url,
                "images": [vars(i) for i in parsed.images],
                "next_pages": list(parsed.next_pages),
                "links": list(parsed.links),
                "noai": parsed.noai,
            },
        )
        if parsed.noai and self.options.respect_robots:
            self._refuse_images(url, parsed.images)
            return parsed
        for link in parsed.images:
            self._queue_download(link)
        return parsed

    def _refuse_images(self, url: str, links: list[Any]) -> None:
        """A page that says noai/noimageai: record its images as refused, fetch none."""
        for link in links:
            if link.url in self.seen_images:
                continue
            self.seen_images.add(link.url)
            exc = NoAIRefused(link.url, f"the page says noai/noimageai ({url}): {link.url}")
            self.summary.failed[exc.reason] += 1
            self.store.record_failure(self.summary.run_id, link.url, exc.reason, str(exc), link.page_url or None)

    def _queue_download(self, link: Any, fetched: Any = None) -> None:
        if link.url in self.seen_images or self._capped():
            return
        self.seen_images.add(link.url)
        self.summary.images_found += 1
        self.progress.found("images")
        task = asyncio.ensure_future(self._download(link, fetched))
        self.downloads.add(task)
        task.add_done_callback(self.downloads.discard)

    async def _download(self, link: Any, fetched: Any = None) -> None:
        row = link_source(link)
        candidates = [link.url, *getattr(link, "fallbacks", ())] if fetched is None else [link.url]
        if fetched is None:
            for url in candidates:
                known = self.known_urls.get(url)
                # Read from the store only while its blob is whole; else download it again.
                if known is not None and self.store.blob_ok(known, (self.sizes or {}).get(known)):
                    row.source = safe_text(url)
                    candidate = Candidate(row, path=self.store.blob_path(known), known_id=known)
                    await asyncio.to_thread(self.handoff.put, candidate)
                    return
            fetched = await self._fetch_first(link, candidates)
            if fetched is None:
                return
            row.source = safe_text(fetched.url)
        self.summary.downloaded += 1
        row.http_status = fetched.status
        row.content_type = fetched.content_type
        row.fetched_at = fetched.fetched_at
        await asyncio.to_thread(self.handoff.put, Candidate(row, data=fetched.content))

    async def _fetch_first(self, link: Any, urls: list[str]) -> Any:
        """The first of an image's candidate URLs that downloads; None (and one failure) if none does."""
        errors: list[FetchError] = []
        for url in urls:
            if url in self.not_retried:
                exc = FetchError(url, f"{_NOT_RETRIED}: {url}")
                exc.reason = "not-retried"
                errors.append(exc)
                continue
            try:
                return await self.fetcher.get(url, kind="image")
            except FetchError as exc:
                errors.append(exc)
                if isinstance(exc, NoAIRefused):
                    break  # the image itself says no: its other sizes are the same image
        first = errors[0]
        detail = str(first)
        if len(errors) > 1:
            detail += "; other candidates: " + ", ".join(f"{e.reason} ({e.url})" for e in errors[1:])
        self.summary.failed[first.reason] += 1
        self.progress.done("images")
        self.progress.failed("images")
        self.store.record_failure(
            self.summary.run_id, safe_text(link.url), first.reason, safe_text(detail), safe_text(link.page_url) or None
        )
        return None


def link_source(link: Any) -> SourceRow:
    """The source row of an image link found on a page (``crawl.ImageLink``)."""
    return SourceRow(
        source=safe_text(link.url),
        kind="url",
        page_url=safe_text(link.page_url or ""),
        alt=safe_text(link.alt) if link.alt else link.alt,
        title=safe_text(link.title) if link.title else link.title,
    )


_NOT_RETRIED = "not retried: its last attempt could not connect (use --retry-failed or --refresh)"


def _connect_failures(store: Store) -> set[str]:
    """URLs whose latest recorded failure says the host could not be reached."""
    rows = store.query(
        "SELECT f.source FROM (SELECT source, arg_max(reason, failed_at) AS reason FROM failures GROUP BY source) f "
        f"WHERE f.reason IN ({', '.join('?' for _ in _CONNECT_REASONS)}) "
        # A page fetched fine since (record_page clears its error) is not a failure any more.
        "AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.url = f.source AND p.error IS NULL)",
        list(_CONNECT_REASONS),
    )
    return {r[0] for r in rows}
