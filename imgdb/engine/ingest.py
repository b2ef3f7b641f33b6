"""The driver of a Ray ingest: collect the work, run the stages on the cluster, commit.

1. Collect: URLs are crawled by the local ingest's own crawler (pages, pagination, depth,
   robots, noai, known URLs, caps), except that an image's URLs are queued instead of
   downloaded; folders are walked by the local walk. Images already stored and embedded
   are settled here (a source row), without touching the cluster. Ray connects meanwhile.
2. Run: the rest go through ``stages.Downloader`` and ``stages.Embedder`` as Ray Data
   stages; what a lost worker took with it is sent again in another pass (``_run_passes``).
3. Commit: results stream back to the driver, the store's one writer, which stores them
   in batches through ``Store.add_images`` / ``add_vectors`` / ``add_sources`` and records
   each failure, exactly as the local ``Processor`` does. A killed driver loses only the
   batches it had not committed; the same command run again skips what is stored.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import queue
import socket
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.acquire.ingest import (
    Candidate,
    IngestOptions,
    IngestSummary,
    _Crawler,
    _default_min_size,
    _file_candidates,
    link_source,
    safe_text,
)
from imgdb.errors import ImgdbError, UsageError
from imgdb.imaging.hashes import row_from_json
from imgdb.imaging.model import Model
from imgdb.progress import Progress
from imgdb.store import NewImage, SourceRow, Store

# Rows per Ray Data block and per download batch: enough for the download actor to keep
# ``per_host`` requests in flight, small enough that a lost worker redoes little.
BLOCK_ROWS = 64
COMMIT_ROWS = 128  # images per store batch (one Lance commit, one DuckDB transaction)


@dataclass
class RayPlan:
    """How the stages are laid out on the cluster (``plan`` works it out from its CPUs)."""

    embed_actors: int
    cpus_per_actor: int
    download_actors: int = 1
    decode_workers: int = 2
    embed_batch: int = 32


def run_on_ray(
    store: Store,
    paths: Sequence[Path],
    urls: Sequence[str],
    model: Model,
    summary: IngestSummary,
    progress: Progress,
    options: IngestOptions,
) -> None:
    """Ingest ``paths`` and ``urls`` into ``store`` with the cluster at ``options.ray_address``."""
    connection = _Connection(options.ray_address)  # connects while the driver crawls
    committer: Committer | None = None
    try:
        work = _Work(store, model.spec.key, summary, progress, options)
        if paths:
            work.add_all(_file_candidates(store, paths, summary, progress, options.max_images))
        if urls:
            work.crawl(urls)
        # What the store held before the run: the work list read it already.
        committer = Committer(store, model.spec.key, summary, progress, COMMIT_ROWS, set(work.embedded), set(work.sizes))  # fmt: skip
        committer.settle(work.settled)
        if work.items:
            _run_passes(connection.ray(), work, model, committer)
    finally:
        if committer is not None:
            committer.flush()
        connection.close()


class _Connection:
    """Ray imported and connected in a thread of its own, so that it overlaps the crawl."""

    def __init__(self, address: str | None):
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--engine ray needs Ray: pip install 'imgdb[ray]'")
        if address and address not in ("auto", "local") and "://" not in address:
            _check_reachable(address)
        self.address = address
        self.started_here = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._connect, name="imgdb-ray-connect", daemon=True)
        self.thread.start()

    def _connect(self) -> None:
        try:
            ray = _import_ray()
            if not ray.is_initialized():
                _init_ray(ray, self.address)
                self.started_here = True
        except BaseException as exc:  # raised in the driver's thread by ray()
            self.error = exc

    def ray(self) -> Any:
        self.thread.join()
        if self.error is not None:
            raise self.error
        return _import_ray()

    def close(self) -> None:
        """Disconnect (ending a local instance this run started); waits for a connect under way."""
        self.thread.join()
        if self.started_here:
            _import_ray().shutdown()


def _run_passes(ray: Any, work: _Work, model: Model, committer: Committer) -> None:
    """Every item through the cluster; what a lost worker took with it is sent again.

    Ray Data does not hand a lost actor's batch to another actor: it waits for that actor
    to restart, which on a cluster that lost the node's CPUs is forever. So an embedding
    task fails at once when its actor dies (``max_task_retries=0``), the failed block is
    dropped instead of failing the run (``max_errored_blocks=-1``), and the driver, which
    knows which items came back, runs another pass over the rest on the actors the cluster
    has now. A result lost with its node ends a pass the same way. A pass that brings back
    nothing ends the run with an error (nothing committed is lost).
    """
    # Ray Data's no-progress timeout (30 min by default); older Rays have no such error.
    stalled = getattr(importlib.import_module("ray.data.exceptions"), "ExecutionTimeoutError", ray.exceptions.RayError)
    stages = _stage_arguments(ray, work)
    todo = work.items
    while todo:
        lost = ""
        batches = iter(
            _dataset(ray, todo, stages, model, plan(ray)).iter_batches(batch_size=None, batch_format="numpy")
        )
        try:
            for batch in batches:
                committer.add(batch, work.rows)
        except (ray.exceptions.RayError, stalled) as exc:
            lost = str(exc).splitlines()[0]  # not the exception: its traceback would keep the pass alive
        finally:
            batches.close()  # ends the pass's actors now, so the next pass can have their CPUs
        left = [item for item in todo if item["idx"] not in committer.done]
        if len(left) == len(todo):
            why = f": {lost}" if lost else " (see Ray's logs)"
            raise ImgdbError(f"the Ray cluster returned none of the {len(todo)} images it was given{why}")
        todo = left


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise UsageError("--engine ray needs Ray: pip install 'imgdb[ray]'") from None
    return ray


def _init_ray(ray: Any, address: str | None) -> None:
    # Ray's own chatter (progress bars, executor logs) would bury imgdb's output. Ray Data
    # logs a block lost with its worker as an error with a traceback; _run_passes sends it
    # again, and a pass that returns nothing ends the run with imgdb's own one-line error.
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None and "RAY_ADDRESS" not in os.environ:
        kwargs["include_dashboard"] = False  # a local instance started just for this run
    try:
        with warnings.catch_warnings():
            # Starting a local instance forks; the open store's LanceDB warns about that, and
            # nothing of it runs in the child (Ray's own processes exec at once).
            warnings.filterwarnings("ignore", message="lancedb fork support", category=RuntimeWarning)
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A one-line error now for a head that does not answer (``ray.init`` would retry for minutes)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}") from None


def plan(ray: Any) -> RayPlan:
    """One embedding actor per CPU (one ONNX thread each), one download actor per node."""
    cpus = int(ray.cluster_resources().get("CPU", 1))
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return RayPlan(embed_actors=max(1, cpus), cpus_per_actor=1, download_actors=max(1, nodes))


def _stage_arguments(ray: Any, work: _Work) -> dict[str, Any]:
    """What every pass of a run shares: Ray Data's settings, the fetch policy, the run's one
    ``HostLimiter`` actor (on the driver's node) and the digests of the images embedded."""
    from imgdb.acquire.fetch import FetchPolicy
    from imgdb.engine.politeness import limiter_actor
    from imgdb.engine.stages import known_digests

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_operator_progress_bars = False
    ctx.max_errored_blocks = -1  # a block lost with its actor is sent again by _run_passes
    policy = work.options.fetch_policy or FetchPolicy()
    policy.respect_robots = work.options.respect_robots
    limiter = limiter_actor(policy, ray.get_runtime_context().get_node_id())
    return {"policy": policy, "limiter": limiter, "known": known_digests(work.embedded)}


def _dataset(ray: Any, items: list[dict[str, Any]], stages: dict[str, Any], model: Model, layout: RayPlan) -> Any:
    from imgdb.engine.stages import Downloader, Embedder

    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // BLOCK_ROWS)))
    ds = ds.map_batches(
        Downloader,
        fn_constructor_kwargs={"policy": stages["policy"], "limiter": stages["limiter"]},
        batch_size=BLOCK_ROWS,
        batch_format="numpy",
        concurrency=layout.download_actors,
        num_cpus=0,  # it waits on the network; the limiter, not CPUs, bounds it
    )
    with warnings.catch_warnings():
        # Ray 2.60 deprecates remote args given as keywords but has no parameter for
        # max_task_retries yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
        return ds.map_batches(
            Embedder,
            fn_constructor_kwargs={
                "model_path": str(model.spec.path),
                "known": stages["known"],
                "threads": layout.cpus_per_actor,
                "decode_workers": layout.decode_workers,
                "embed_batch": layout.embed_batch,
            },
            batch_size=BLOCK_ROWS,
            batch_format="numpy",
            concurrency=layout.embed_actors,
            num_cpus=layout.cpus_per_actor,
            # Fail a batch whose actor died rather than wait for a restart that may never
            # be placed (its node's CPUs are gone); _run_passes sends it again.
            max_task_retries=0,
        )


class _Work:
    """What the cluster is to do: ``items`` (rows for Ray Data) and the ``rows`` they point to."""

    def __init__(
        self, store: Store, model_key: str, summary: IngestSummary, progress: Progress, options: IngestOptions
    ):
        self.store = store
        self.summary = summary
        self.progress = progress
        self.options = options
        self.embedded = store.vector_ids(model_key)
        self.sizes = store.image_sizes()
        self.rows: list[SourceRow] = []
        self.items: list[dict[str, Any]] = []
        self.settled: list[tuple[str, SourceRow]] = []  # already stored and embedded: a source row only

    def add_all(self, candidates: Iterable[Candidate]) -> None:
        for cand in candidates:
            self.add(cand)

    def add(self, cand: Candidate, urls: Sequence[str] = ()) -> None:
        known = cand.known_id
        if known and known in self.embedded and self.store.blob_ok(known, self.sizes.get(known)):
            self.settled.append((known, cand.source))
            return
        self.items.append(
            {
                "idx": len(self.rows),
                "urls": "\n".join(urls),
                "path": str(cand.path) if cand.path is not None and not urls else "",
                "data": cand.data or b"",
                # The local ingest's size floor (icons and tracking pixels from web pages).
                "min_size": list(self.options.min_size or _default_min_size(cand.source.kind)),
            }
        )
        self.rows.append(cand.source)

    def crawl(self, urls: Sequence[str]) -> None:
        """The local crawl, with each image's URLs queued here instead of downloaded."""
        handoff: queue.Queue[Candidate | None] = queue.Queue()
        crawler = _QueueingCrawler(self, handoff)
        asyncio.run(crawler.run(urls))
        while not handoff.empty():
            cand = handoff.get()
            if cand is not None:
                self.add(cand)
        if crawler.start_errors and len(crawler.start_errors) == len(urls) and self.summary.images_found == 0:
            raise crawler.start_errors[0]


class _QueueingCrawler(_Crawler):
    def __init__(self, work: _Work, handoff: queue.Queue[Candidate | None]):
        super().__init__(work.store, handoff, work.summary, work.progress, work.options, work.sizes)
        self.work = work

    async def _fetch_first(self, link: Any, urls: list[str]) -> Any:
        """Where the local crawler would download (bytes not in hand, URL not stored): queue
        the URLs for the cluster instead."""
        kept = [u for u in urls if u not in self.not_retried]
        if not kept:
            return await super()._fetch_first(link, urls)  # records the "not-retried" failure
        self.work.add(Candidate(link_source(link)), kept)
        return None


class Committer:
    """The one committing step: cluster results into the store, through ``Store``'s methods."""

    def __init__(
        self,
        store: Store,
        model_key: str,
        summary: IngestSummary,
        progress: Progress,
        batch_rows: int,
        embedded: set[str],
        stored: set[str],
    ):
        self.store = store
        self.key = model_key
        self.summary = summary
        self.progress = progress
        self.batch_rows = batch_rows
        self.embedded = embedded  # ids with a vector for this model
        self.stored = stored  # ids in the store
        self.images: dict[str, tuple[NewImage, np.ndarray]] = {}  # new to the store
        self.vectors: dict[str, np.ndarray] = {}  # stored already, new to this model
        self.hashes: list[tuple[str, dict[str, Any]]] = []  # image_hashes rows of those
        self.sources: list[tuple[str, SourceRow]] = []
        self.done: set[int] = set()  # work items whose result came back (a retried block may repeat some)

    def settle(self, known: Iterable[tuple[str, SourceRow]]) -> None:
        """Sources of images stored and embedded already (found again): one row each."""
        for image_id, row in known:
            self.progress.done("images")
            self.summary.already_stored += 1
            self.sources.append((image_id, row))
        self.flush()

    def add(self, batch: dict[str, np.ndarray], rows: list[SourceRow]) -> None:
        for i, idx in enumerate(batch["idx"]):
            if int(idx) in self.done:
                continue
            self.done.add(int(idx))
            row = rows[int(idx)]
            self.progress.done("images")
            if batch["url"][i]:
                self.summary.downloaded += 1
                row.source = safe_text(str(batch["url"][i]))
                row.http_status = int(batch["status"][i]) or None
                row.content_type = str(batch["content_type"][i]) or None
                row.fetched_at = datetime.fromtimestamp(float(batch["fetched_at"][i]), timezone.utc)
            reason = str(batch["reason"][i])
            if reason:
                self._fail(row, reason, str(batch["detail"][i]))
                continue
            image_id = str(batch["id"][i])
            if (
                not batch["embedded"][i]
                or image_id in self.embedded
                or image_id in self.images
                or image_id in self.vectors
            ):
                self._known(image_id, bytes(batch["data"][i]), row)
                continue
            vector = np.asarray(batch["vector"][i], dtype=np.float32)
            hashes = row_from_json(str(batch["hashes"][i]))  # image_hashes' columns, as the local ingest has them
            if image_id in self.stored:  # stored under another model: only the vector (and its hashes) are new
                self.vectors[image_id] = vector
                self.hashes.append((image_id, hashes))
                self.sources.append((image_id, row))
                self.summary.already_stored += 1
            else:
                data = bytes(batch["data"][i])
                image = NewImage(image_id, data, int(batch["width"][i]), int(batch["height"][i]), str(batch["format"][i]), [row], hashes)  # fmt: skip
                self.images[image_id] = (image, vector)
                self.summary.new += 1
            if len(self.images) + len(self.vectors) >= self.batch_rows:
                self.flush()

    def _known(self, image_id: str, data: bytes, row: SourceRow) -> None:
        """An image this run or an earlier one stored: one more source (and its blob mended)."""
        self.summary.already_stored += 1
        if image_id in self.images:
            self.images[image_id][0].sources.append(row)
            return
        if image_id in self.embedded and image_id in self.stored and data and self.store.restore_blob(image_id, data):
            self.summary.restored += 1
        self.sources.append((image_id, row))

    def _fail(self, row: SourceRow, reason: str, detail: str) -> None:
        self.summary.failed[reason] += 1
        self.progress.failed("images")
        self.store.record_failure(self.summary.run_id, row.source, reason, safe_text(detail), row.page_url or None)

    def flush(self) -> None:
        """Write what is pending: blobs, vectors and rows of new images first (Store orders them)."""
        images, self.images = list(self.images.values()), {}
        vectors, self.vectors = self.vectors, {}
        hashes, self.hashes = self.hashes, []
        sources, self.sources = self.sources, []
        if images:
            self.store.add_images([im for im, _ in images], self.key, np.stack([v for _, v in images]), self.summary.run_id)  # fmt: skip
            self.stored.update(im.id for im, _ in images)
            self.embedded.update(im.id for im, _ in images)
        if vectors:
            self.store.add_vectors(self.key, list(vectors), np.stack(list(vectors.values())))
            self.store.put_hashes(hashes)
            self.embedded.update(vectors)
        if sources:
            self.store.add_sources(sources, self.summary.run_id)
