"""Ingest: crawl or walk, fetch, hash, decode, embed and store.

Two producers feed one ``Processor``:

* ``ingest`` of a URL crawls the listing page, its pagination and (``depth``) the same-site
  pages they link to, downloading images concurrently (``fetch.Fetcher`` keeps it polite);
* ``ingest`` of folders and files walks them in sorted order.

The processor hashes every image (the id is the sha256 of its bytes), skips what the store
already has, decodes the rest in a thread pool while the model embeds the previous batch,
and writes each batch through ``Store.add_images``. Re-runs skip known URLs and unchanged
files without reading them, and fetch pages conditionally (ETag / Last-Modified).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from imgdb.errors import DecodeError, FetchError, UsageError
from imgdb.imaging.decode import MAX_BYTES, decode
from imgdb.imaging.model import Model
from imgdb.progress import NullProgress, Progress
from imgdb.store import NewImage, SourceRow, Store

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


@dataclass
class IngestOptions:
    pages: int = 10  # listing pages to follow through pagination, per start URL
    depth: int = 0  # 1 = also the same-site pages the listing pages link to
    max_images: int | None = None
    refresh: bool = False  # re-download pages and images even when known
    respect_robots: bool = True
    batch_size: int = 32  # measured against 8 and 16: docs/evaluation.md, "Ingest"
    decode_workers: int = 2
    fetch_policy: Any = None  # fetch.FetchPolicy; None = defaults


@dataclass
class IngestSummary:
    run_id: int = 0
    pages: int = 0
    pages_failed: int = 0
    images_found: int = 0
    downloaded: int = 0
    new: int = 0
    already_stored: int = 0
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


@dataclass
class _Prepared:
    id: str
    data: bytes | None  # None when the image was already embedded (nothing to do)
    width: int = 0
    height: int = 0
    format: str = ""
    tensor: np.ndarray | None = None


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
    urls = [t for t in targets if urlsplit(t).scheme in ("http", "https")]
    paths = [Path(t) for t in targets if t not in urls]
    for t in targets:
        if "://" in t and t not in urls:
            raise UsageError(f"unsupported URL scheme: {t} (use http:// or https://)")
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {missing[0]}")

    store.register_model(model.spec)
    summary = IngestSummary()
    summary.run_id = store.start_run("ingest", {"targets": list(targets), **_options_json(options)})
    processor = Processor(store, model, summary, progress, options)
    started = time.perf_counter()
    try:
        if paths:
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


def _options_json(options: IngestOptions) -> dict[str, Any]:
    return {k: v for k, v in vars(options).items() if k != "fetch_policy"}


# ---------------------------------------------------------------------------------------
# the processor: hash, decode, embed, store


class Processor:
    """Turns candidates into stored images. Decoding overlaps embedding via a thread pool."""

    def __init__(self, store: Store, model: Model, summary: IngestSummary, progress: Progress, options: IngestOptions):
        self.store = store
        self.model = model
        self.spec = model.spec
        self.summary = summary
        self.progress = progress
        self.options = options
        self.embedded = store.vector_ids(self.spec.key)  # ids with a vector for this model
        self.stored = store.image_ids()
        self._batch: dict[str, tuple[_Prepared, list[SourceRow]]] = {}
        self._sources: list[tuple[str, SourceRow]] = []
        self._writer: ThreadPoolExecutor | None = None
        self._pending_write: Future[None] | None = None

    def run(self, candidates: Iterable[Candidate]) -> None:
        lookahead = self.options.batch_size * 2
        with (
            ThreadPoolExecutor(self.options.decode_workers, thread_name_prefix="imgdb-decode") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="imgdb-write") as self._writer,
        ):
            try:
                pending: deque[tuple[Candidate, Future[_Prepared]]] = deque()
                for cand in candidates:
                    pending.append((cand, pool.submit(self._prepare, cand)))
                    while len(pending) > lookahead:
                        self._take(*pending.popleft())
                while pending:
                    self._take(*pending.popleft())
                self._flush()
            finally:
                self._wait_write()

    def _prepare(self, cand: Candidate) -> _Prepared:
        """Worker thread: bytes -> id, and pixels -> tensor unless already embedded."""
        if cand.known_id and cand.known_id in self.embedded and cand.known_id in self.stored:
            return _Prepared(cand.known_id, None)
        data = cand.data if cand.data is not None else _read(cand.path)
        image_id = hashlib.sha256(data).hexdigest()
        if image_id in self.embedded and image_id in self.stored:
            return _Prepared(image_id, None)
        decoded = decode(data, target=self.spec.decode_target)
        tensor = self.spec.preprocess(decoded.image)
        return _Prepared(image_id, data, decoded.width, decoded.height, decoded.format, tensor)

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
        self.store.record_failure(self.summary.run_id, cand.source.source, reason, detail, cand.source.page_url or None)

    def _flush(self) -> None:
        """Embed the batch here; store it on the writer thread while the next batch embeds."""
        batch, self._batch = list(self._batch.values()), {}
        sources, self._sources = self._sources, []
        if batch:
            vectors = self.model.embed_arrays(np.stack([_tensor(p) for p, _ in batch]))
            fresh = [i for i, (p, _) in enumerate(batch) if p.id not in self.stored]
            again = [i for i, (p, _) in enumerate(batch) if p.id in self.stored]
            # Stored under another model: only this model's vector and the sources are new.
            sources += [(batch[i][0].id, s) for i in again for s in batch[i][1]]
            self.summary.new += len(fresh)
            self.summary.already_stored += len(again)  # later sources were counted in _take
            ids = {p.id for p, _ in batch}
            self.embedded |= ids
            self.stored |= ids
            self._write(self._store_batch, batch, fresh, again, vectors, sources)
        elif sources:
            self._write(self.store.add_sources, sources, self.summary.run_id)

    def _store_batch(
        self,
        batch: list[tuple[_Prepared, list[SourceRow]]],
        fresh: list[int],
        again: list[int],
        vectors: np.ndarray,
        sources: list[tuple[str, SourceRow]],
    ) -> None:
        """Writer thread: blobs, vectors and rows of one embedded batch (Store orders them)."""
        self.store.add_images(
            [_new_image(*batch[i]) for i in fresh],
            self.spec.key,
            vectors[fresh],
            self.summary.run_id,
        )
        self.store.add_vectors(self.spec.key, [batch[i][0].id for i in again], vectors[again])
        if sources:
            self.store.add_sources(sources, self.summary.run_id)

    def _write(self, fn: Any, *args: Any) -> None:
        """Queue a store write after the previous one: at most one batch is being written."""
        assert self._writer is not None, "writes happen inside run()"
        self._wait_write()
        self._pending_write = self._writer.submit(fn, *args)

    def _wait_write(self) -> None:
        """Wait for the write in flight; its error, if any, surfaces here in the caller."""
        pending, self._pending_write = self._pending_write, None
        if pending is not None:
            pending.result()


def _tensor(prep: _Prepared) -> np.ndarray:
    assert prep.tensor is not None, "only decoded images are batched"
    return prep.tensor


def _new_image(prep: _Prepared, sources: list[SourceRow]) -> NewImage:
    assert prep.data is not None, "only new images are batched"
    return NewImage(prep.id, prep.data, prep.width, prep.height, prep.format, sources)


def _read(path: Path | None) -> bytes:
    assert path is not None
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise DecodeError("too-large", f"{size} bytes is over the {MAX_BYTES}-byte cap")
    return path.read_bytes()


# ---------------------------------------------------------------------------------------
# folders and files


def _file_candidates(
    store: Store, paths: Sequence[Path], summary: IngestSummary, progress: Progress, cap: int | None
) -> Iterator[Candidate]:
    known = store.known_files()
    store_dir = store.path.resolve()
    for path in _walk(paths, skip=store_dir):
        if cap is not None and summary.images_found >= cap:
            return
        summary.images_found += 1
        progress.found("images")
        try:
            st = path.stat()
        except OSError as exc:
            summary.failed["unreadable"] += 1
            store.record_failure(summary.run_id, str(path), "unreadable", str(exc))
            continue
        source = str(path)
        row = SourceRow(source=source, kind="file", file_size=st.st_size, file_mtime=st.st_mtime)
        previous = known.get(source)
        unchanged = previous is not None and previous[1] == st.st_size and previous[2] == st.st_mtime
        yield Candidate(row, path=path, known_id=previous[0] if previous is not None and unchanged else None)


def _walk(paths: Sequence[Path], skip: Path) -> Iterator[Path]:
    """Files named directly, plus image files under folders, in a stable order."""
    for path in paths:
        path = path.resolve()
        if path.is_file():
            yield path
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d).resolve() != skip)
            for name in sorted(files):
                if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                    yield Path(root, name)


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
            processor.run(iter(handoff.get, None))
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
            while handoff.get() is not None:  # keep draining so the crawler never blocks
                pass

    worker = threading.Thread(target=consume, name="imgdb-store", daemon=True)
    worker.start()
    crawler = _Crawler(store, handoff, summary, progress, options)
    try:
        asyncio.run(crawler.run(urls))
    finally:
        handoff.put(None)
        worker.join()
    if failure:
        raise failure[0]
    if crawler.start_errors and len(crawler.start_errors) == len(urls) and summary.images_found == 0:
        raise crawler.start_errors[0]


class _Crawler:
    def __init__(
        self,
        store: Store,
        handoff: queue.Queue[Candidate | None],
        summary: IngestSummary,
        progress: Progress,
        options: IngestOptions,
    ):
        self.store = store
        self.handoff = handoff
        self.summary = summary
        self.progress = progress
        self.options = options
        self.known_urls = {} if options.refresh else store.known_urls()
        self.seen_pages: set[str] = set()
        self.seen_images: set[str] = set()
        self.downloads: set[asyncio.Task[None]] = set()
        self.start_errors: list[FetchError] = []

    async def run(self, urls: Sequence[str]) -> None:
        from imgdb.acquire.fetch import Fetcher, FetchPolicy

        policy = self.options.fetch_policy or FetchPolicy()
        policy.respect_robots = self.options.respect_robots
        async with Fetcher(policy) as fetcher:
            self.fetcher = fetcher
            for url in urls:
                await self._crawl_site(url)
            if self.downloads:
                await asyncio.gather(*self.downloads)

    def _capped(self) -> bool:
        cap = self.options.max_images
        return cap is not None and self.summary.images_found >= cap

    async def _crawl_site(self, start: str) -> None:
        links: list[str] = []
        url: str | None = start
        listing = 0
        while url and listing < self.options.pages and not self._capped():
            self.seen_pages.add(url)
            listing += 1
            parsed = await self._page(url, is_start=url == start)
            if parsed is None:
                break
            links += parsed.links
            url = next((n for n in parsed.next_pages if n not in self.seen_pages), None)
        for _level in range(self.options.depth):
            level = [u for u in dict.fromkeys(links) if u not in self.seen_pages]
            self.seen_pages.update(level)
            links = []
            results = await asyncio.gather(*(self._page(u) for u in level))
            for parsed in results:
                if parsed is not None:
                    links += parsed.links

    async def _page(self, url: str, *, is_start: bool = False) -> Any:
        """Fetch and parse one page (or reuse its last parse on 304) and queue its images."""
        from imgdb.acquire.crawl import ImageLink, ParsedPage, parse_page

        self.progress.found("pages")
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
                images=[ImageLink(**i) for i in previous["images"]],
                next_pages=previous["next_pages"],
                links=previous["links"],
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
            },
        )
        for link in parsed.images:
            self._queue_download(link)
        return parsed

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
        row = SourceRow(source=link.url, kind="url", page_url=link.page_url or "", alt=link.alt, title=link.title)
        known = self.known_urls.get(link.url)
        if known is not None and fetched is None:
            await asyncio.to_thread(self.handoff.put, Candidate(row, path=self.store.blob_path(known), known_id=known))
            return
        if fetched is None:
            try:
                fetched = await self.fetcher.get(link.url, kind="image")
            except FetchError as exc:
                self.summary.failed[exc.reason] += 1
                self.progress.done("images")
                self.store.record_failure(self.summary.run_id, link.url, exc.reason, str(exc), link.page_url or None)
                return
        self.summary.downloaded += 1
        row.http_status = fetched.status
        row.content_type = fetched.content_type
        row.fetched_at = fetched.fetched_at
        await asyncio.to_thread(self.handoff.put, Candidate(row, data=fetched.content))
