"""``imgdb verify``: are the blobs, DuckDB and LanceDB what they should be; repair what can be.

Checked:

* every image's blob: present, its size the ``images.bytes``, its sha256 its id;
* every model's vectors table: readable (no missing or damaged file);
* DuckDB vs LanceDB: a vector without an ``images`` row is an orphan; an image without a
  vector for the model it was ingested with is missing one.

With ``repair``: a damaged or missing blob is re-read from a file source (if its bytes
still hash to the id) or re-fetched from a URL source (``fetch``); an unreadable vectors
table is rebuilt from its readable files; orphan vectors are dropped; missing vectors are
re-embedded from the blobs (``embed``, for the models it can embed). Nothing is ever
deleted from DuckDB: what cannot be restored is reported, and stays as it was.

The store package does not fetch or embed: the ``Collection`` passes ``fetch`` (an
``acquire.fetch.Fetcher``) and ``embed`` (its model) in.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.errors import ImgdbError, StoreError
from imgdb.store.store import Store

#: ``fetch(url) -> bytes``; raises ``ImgdbError`` when it cannot.
Fetch = Callable[[str], bytes]
#: ``embed(model_key, blobs) -> vectors`` (one row per blob); None when that model is not at hand.
Embed = Callable[[str, Sequence[bytes]], "np.ndarray | None"]


@dataclass
class Problem:
    """One thing wrong, and what repair did about it."""

    kind: str  # blob-missing | blob-damaged | vectors-unreadable | vector-missing | orphan-vector
    detail: str
    image_id: str | None = None
    model: str | None = None
    fixed: bool = False
    how: str = ""  # what repaired it, or why it could not be


@dataclass
class VerifyReport:
    store: str
    images: int = 0
    blobs_checked: int = 0
    vectors: dict[str, int | None] = field(default_factory=dict)  # model key -> rows (None: unreadable)
    repair: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def unresolved(self) -> list[Problem]:
        return [p for p in self.problems if not p.fixed]

    @property
    def ok(self) -> bool:
        return not self.unresolved

    def as_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "images": self.images,
            "blobs_checked": self.blobs_checked,
            "vectors": self.vectors,
            "repair": self.repair,
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
        }


def verify(
    store: Store,
    *,
    repair: bool = False,
    fetch: Fetch | None = None,
    embed: Embed | None = None,
    workers: int = 4,
) -> VerifyReport:
    """Check the store (see the module docstring); with ``repair``, fix what can be fixed."""
    if repair:
        store.require_write()
    report = VerifyReport(str(store.path), repair=repair)
    images = {r[0]: (int(r[1]), r[2]) for r in store.query("SELECT id, bytes, model FROM images")}
    report.images = len(images)
    _check_blobs(store, images, report, fetch, workers)
    for (key,) in store.query("SELECT key FROM models ORDER BY added_at"):
        _check_vectors(store, key, images, report, embed)
    return report


# ---------------------------------------------------------------------------------------
# blobs


def _blob_state(store: Store, image_id: str, size: int) -> str | None:
    """None when the blob is intact, else "blob-missing" or "blob-damaged"."""
    path = store.blob_path(image_id)
    try:
        st = path.lstat()
    except FileNotFoundError:
        return "blob-missing"
    except OSError:
        return "blob-damaged"
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return "blob-damaged"
    return None if store.blob_intact(image_id) else "blob-damaged"


def _check_blobs(
    store: Store, images: dict[str, tuple[int, str]], report: VerifyReport, fetch: Fetch | None, workers: int
) -> None:
    ids = sorted(images)
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="imgdb-verify") as pool:
        states = list(pool.map(lambda i: _blob_state(store, i, images[i][0]), ids))
    report.blobs_checked = len(ids)
    bad = [(i, s) for i, s in zip(ids, states) if s is not None]
    if not bad:
        return
    sources: dict[str, list[tuple[str, str]]] = {}
    for image_id, source, kind in store.query(
        "SELECT image_id, source, kind FROM sources WHERE image_id IN (SELECT unnest(?::VARCHAR[])) "
        "GROUP BY image_id, source, kind ORDER BY image_id, kind, max(fetched_at) DESC, source",
        [[i for i, _ in bad]],
    ):
        sources.setdefault(image_id, []).append((source, kind))  # files before URLs
    for image_id, state in bad:
        what = "missing" if state == "blob-missing" else "damaged (its bytes are not its id's)"
        problem = Problem(state, f"the bytes of image {image_id[:12]} are {what}", image_id=image_id)
        report.problems.append(problem)
        if report.repair:
            _restore(store, image_id, images[image_id][0], sources.get(image_id, []), fetch, problem)


def _restore(
    store: Store, image_id: str, size: int, sources: list[tuple[str, str]], fetch: Fetch | None, problem: Problem
) -> None:
    """Re-read the blob from a file source, else re-fetch it from a URL source."""
    tried: list[str] = []
    for source, kind in sources:
        if kind == "url" and fetch is None:
            continue
        try:
            data = _read_file(Path(source), size) if kind == "file" else fetch(source) if fetch else b""
        except (ImgdbError, OSError) as exc:
            tried.append(f"{source}: {exc}")
            continue
        if hashlib.sha256(data).hexdigest() != image_id:
            tried.append(f"{source}: its content changed")
            continue
        store.restore_blob(image_id, data)
        problem.fixed, problem.how = True, f"restored from {source}"
        return
    if not sources:
        problem.how = "no known source to restore it from"
    elif tried:
        problem.how = "could not restore it: " + "; ".join(tried[:3])
    else:
        problem.how = "its only sources are URLs, and nothing may fetch them"


def _read_file(path: Path, size: int) -> bytes:
    """A regular file's bytes, at most ``size`` + 1 of them (more means it is not the image)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, total = [], 0
        while total <= size and (chunk := os.read(fd, min(1 << 20, size + 1 - total))):
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# vectors


def _check_vectors(
    store: Store, key: str, images: dict[str, tuple[int, str]], report: VerifyReport, embed: Embed | None
) -> None:
    try:
        vector_ids = store.vector_ids(key)
    except StoreError as exc:
        problem = Problem("vectors-unreadable", str(exc), model=key)
        report.problems.append(problem)
        if not report.repair:
            report.vectors[key] = None
            return
        salvaged = store.salvage_vectors(key)
        kept, lost = salvaged if salvaged is not None else (0, 0)
        problem.fixed, problem.how = True, f"rebuilt from its readable files: {kept} vectors kept, {lost} lost"
        vector_ids = store.vector_ids(key)
    report.vectors[key] = len(vector_ids)
    orphans = sorted(vector_ids - images.keys())
    if orphans:
        problem = Problem(
            "orphan-vector", f"{len(orphans)} vectors of model {key} have no image (e.g. {orphans[0][:12]})", model=key
        )
        report.problems.append(problem)
        if report.repair:
            store.delete_vectors(key, orphans)
            problem.fixed, problem.how = True, "dropped"
            report.vectors[key] = len(vector_ids) - len(orphans)
    missing = sorted(i for i, (_size, model) in images.items() if model == key and i not in vector_ids)
    if missing:
        problem = Problem(
            "vector-missing",
            f"{len(missing)} images ingested with model {key} have no vector (e.g. {missing[0][:12]})",
            model=key,
        )
        report.problems.append(problem)
        if report.repair and embed is not None:
            _reembed(store, key, missing, embed, problem, report)


def _reembed(store: Store, key: str, ids: list[str], embed: Embed, problem: Problem, report: VerifyReport) -> None:
    done, unreadable = 0, 0
    for start in range(0, len(ids), 32):
        part = ids[start : start + 32]
        blobs, ok = [], []
        for image_id in part:
            try:
                blobs.append(store.read_blob(image_id, verify=True))
                ok.append(image_id)
            except StoreError:
                unreadable += 1
        if not ok:
            continue
        try:
            vectors = embed(key, blobs)
        except ImgdbError as exc:
            problem.how = f"could not re-embed: {exc}"
            return
        if vectors is None:
            problem.how = f"model {key} is not at hand: run `imgdb verify --repair --model` with it"
            return
        store.add_vectors(key, ok, np.asarray(vectors, dtype=np.float32))
        done += len(ok)
    store.maintain_vectors(key, done)
    report.vectors[key] = (report.vectors.get(key) or 0) + done
    problem.fixed = unreadable == 0
    problem.how = f"re-embedded {done}" + (f"; {unreadable} have no intact blob to embed" if unreadable else "")
