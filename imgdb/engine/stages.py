"""What runs on the workers: two Ray Data stages over batches of work items.

A work item is a row ``{idx, urls, path, data}``: the URLs to try in turn (``\\n``-joined),
or a path every node can read, or the bytes themselves. ``idx`` points back to the
driver's ``SourceRow``, which never travels.

``Downloader`` (I/O: no CPU reserved) fetches with a ``ClusterFetcher`` or reads the file;
``Embedder`` (CPU, one ONNX session per actor, loaded once) hashes, decodes, preprocesses
and embeds. Decoding sits in the embedding actor rather than a stage of its own so that a
preprocessed tensor (600 KB for 224x224) never crosses the network; only bytes and
vectors do (and each image's dupes hashes, from the same decode). Every failure is a row with ``reason`` and ``detail``, never an exception, so
one bad image never fails a block.
"""

from __future__ import annotations

import asyncio
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.errors import DecodeError, FetchError

OK = ""  # ``reason`` of a row that has not failed


class Downloader:
    """Stage 1: the image's bytes, from the web (politely, cluster-wide) or from a shared folder."""

    def __init__(self, policy: Any, limiter: Any):
        from imgdb.engine.politeness import ClusterFetcher

        self.loop = asyncio.new_event_loop()  # one loop for the actor's life: the fetcher's pool lives in it
        self.fetcher = ClusterFetcher(policy, limiter)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = self.loop.run_until_complete(self._all(batch))
        out: dict[str, np.ndarray] = {"idx": np.asarray(batch["idx"], dtype=np.int64), "min_size": batch["min_size"]}
        for i, name in enumerate(("data", "url", "status", "content_type", "fetched_at", "reason", "detail")):
            out[name] = _column([r[i] for r in rows], name)
        return out

    async def _all(self, batch: dict[str, np.ndarray]) -> list[tuple[bytes, str, int, str, float, str, str]]:
        return await asyncio.gather(
            *(self._one(u, p, d) for u, p, d in zip(batch["urls"], batch["path"], batch["data"]))
        )

    async def _one(self, urls: str, path: str, data: Any) -> tuple[bytes, str, int, str, float, str, str]:
        now = datetime.now(timezone.utc).timestamp()
        if urls:
            return await self._download(urls.split("\n"))
        if path:
            from imgdb.acquire.ingest import _read

            try:
                return await asyncio.to_thread(_read, Path(path)), "", 0, "", now, OK, ""
            except DecodeError as exc:
                return b"", "", 0, "", now, exc.reason, str(exc)
            except OSError as exc:
                return b"", "", 0, "", now, "unreadable", str(exc)
        return bytes(data), "", 0, "", now, OK, ""

    async def _download(self, urls: list[str]) -> tuple[bytes, str, int, str, float, str, str]:
        """The first of an image's URLs that downloads (as the local crawler tries them)."""
        from imgdb.errors import NoAIRefused

        errors: list[FetchError] = []
        for url in urls:
            try:
                got = await self.fetcher.get(url, kind="image")
            except FetchError as exc:
                errors.append(exc)
                if isinstance(exc, NoAIRefused):
                    break  # the image itself says no: its other sizes are the same image
                continue
            return got.content, url, got.status, got.content_type or "", got.fetched_at.timestamp(), OK, ""
        first = errors[0]
        detail = str(first)
        if len(errors) > 1:
            detail += "; other candidates: " + ", ".join(f"{e.reason} ({e.url})" for e in errors[1:])
        return b"", "", 0, "", 0.0, first.reason, detail

    def __del__(self) -> None:
        try:
            self.loop.run_until_complete(self.fetcher.aclose())
            self.loop.close()
        except Exception:  # the actor is going away either way
            pass


class Embedder:
    """Stage 2: sha256 (the id), decode, preprocess and embed; one ONNX session per actor.

    ``known`` holds the digests (sorted, 32 bytes each) of images the store already has
    with this model's vector: those are hashed and passed on, never decoded.
    """

    def __init__(self, model_path: str, known: np.ndarray, threads: int, decode_workers: int, embed_batch: int):
        from imgdb.imaging.model import Model, ModelSpec

        self.model = Model(ModelSpec.load(model_path), threads=threads)
        self.spec = self.model.spec
        self.known = known
        self.embed_batch = embed_batch
        self.pool = ThreadPoolExecutor(max(1, decode_workers), thread_name_prefix="imgdb-decode")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["idx"])
        reasons = list(batch["reason"])
        details = list(batch["detail"])
        ids = [""] * n
        width = np.zeros(n, dtype=np.int64)
        height = np.zeros(n, dtype=np.int64)
        formats = [""] * n
        hashes = [""] * n  # JSON of each image's image_hashes row (its 64-bit ints kept exact)
        vectors = np.zeros((n, self.spec.dim), dtype=np.float32)
        embedded = np.zeros(n, dtype=bool)
        todo: list[tuple[int, Future[Any]]] = []
        for i, (data, reason, least) in enumerate(zip(batch["data"], reasons, batch["min_size"])):
            if reason != OK:
                continue
            digest = hashlib.sha256(data).digest()
            ids[i] = digest.hex()
            if not self._known(digest):
                todo.append((i, self.pool.submit(self._prepare, data, (int(least[0]), int(least[1])))))
        # Embed in slices as their decodes finish, so decoding overlaps inference.
        for start in range(0, len(todo), self.embed_batch):
            rows: list[int] = []
            tensors: list[np.ndarray] = []
            for i, future in todo[start : start + self.embed_batch]:
                try:
                    tensor, width[i], height[i], formats[i], hashes[i] = future.result()
                except DecodeError as exc:
                    reasons[i], details[i] = exc.reason, str(exc)
                    continue
                rows.append(i)
                tensors.append(tensor)
            if rows:
                vectors[rows] = self.model.embed_arrays(np.stack(tensors))
                embedded[rows] = True
        return {
            **batch,
            "id": _column(ids, "id"),
            "width": width,
            "height": height,
            "format": _column(formats, "format"),
            "hashes": _column(hashes, "hashes"),
            "vector": vectors,
            "embedded": embedded,
            "reason": _column(reasons, "reason"),
            "detail": _column(details, "detail"),
        }

    def _known(self, digest: bytes) -> bool:
        at = int(np.searchsorted(self.known, digest))
        # numpy drops an S32 value's trailing NULs; every stored digest had 32 bytes, so
        # comparing without them is still exact.
        return at < len(self.known) and bytes(self.known[at]) == digest.rstrip(b"\0")

    def _prepare(self, data: bytes, least: tuple[int, int]) -> tuple[np.ndarray, int, int, str, str]:
        from imgdb.acquire.ingest import _check_size
        from imgdb.imaging.decode import decode
        from imgdb.imaging.hashes import hash_decoded, hash_row, row_json

        decoded = decode(data, target=self.spec.decode_target)
        _check_size(decoded.width, decoded.height, least)
        # The dupes hashes from the same decode, as the local ingest computes them.
        hashes = row_json(hash_row(hash_decoded(data, decoded, self.spec.decode_target)))
        return self.spec.preprocess(decoded.image), decoded.width, decoded.height, decoded.format, hashes


def _column(values: list[Any], name: str) -> np.ndarray:
    """A batch column: object arrays for text and bytes (so Arrow keeps them as such)."""
    if name in ("status",):
        return np.asarray(values, dtype=np.int64)
    if name in ("fetched_at",):
        return np.asarray(values, dtype=np.float64)
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def known_digests(ids: set[str] | list[str]) -> np.ndarray:
    """Sorted 32-byte digests of hex ids: 32 MB per million images, searched by bisection."""
    return np.sort(np.array([bytes.fromhex(i) for i in ids], dtype="S32"))
