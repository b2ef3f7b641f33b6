"""``imgdb ingest --engine ray`` on a real two-node Ray cluster on 127.0.0.1.

The cluster is two ``ray start`` processes (a head and a worker, one CPU each), started for
this module and stopped (by their process groups) at its end. A shop of ``IMAGES``
generated JPEGs is served on 127.0.0.1; every Ray ingest runs the real CLI in a
subprocess (so the driver can be killed) and its store must equal a local ingest of the
same pages: the same image ids, vectors within 1e-5, the same sources and dupes hashes.

Marked ``ray``: ``pytest -m ray`` runs only these, ``-m 'not ray'`` skips them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from imgdb.acquire.ingest import IngestOptions, ingest
from imgdb.engine.cluster import LocalCluster
from imgdb.eval.shops import write_listing_shop
from imgdb.imaging.model import Model
from imgdb.store import Store
from tests.server import LocalServer

pytest.importorskip("ray", reason="the ray extra is not installed: pip install -e '.[ray]'")

pytestmark = pytest.mark.ray

IMAGES = 2000  # the number


# ---------------------------------------------------------------------------- fixtures


@dataclass
class Shop:
    url: str
    server: LocalServer
    local_db: Path  # the same pages ingested locally: what every Ray ingest must equal


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("shop")
    write_listing_shop(root / "site", IMAGES)
    with LocalServer() as server:
        server.static(root / "site", prefix="/")
        url = server.url("/list/1.html")
        with Store.open(root / "local", write=True) as store:
            summary = ingest(store, [url], Model.load(), IngestOptions(pages=100))
        assert summary.new == IMAGES
        yield Shop(url, server, root / "local")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A head and one worker node, one CPU each, stopped (by their process groups) at the end."""
    with LocalCluster(workers=1, cpus=1) as cluster:
        yield cluster


# ---------------------------------------------------------------------------- helpers


def ingest_command(shop: Shop, cluster: LocalCluster, db: Path) -> list[str]:
    return [sys.executable, "-m", "imgdb.cli", "ingest", shop.url, "--pages", "100", "--engine", "ray",
            "--ray-address", cluster.address, "--db", str(db)]  # fmt: skip


def run_ingest(shop: Shop, cluster: LocalCluster, db: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ingest_command(shop, cluster, db), capture_output=True, text=True, timeout=600, env=cluster.env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def start_ingest(shop: Shop, cluster: LocalCluster, db: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(ingest_command(shop, cluster, db), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cluster.env)  # fmt: skip


def wait_for_blobs(db: Path, at_least: int, proc: subprocess.Popen[bytes], timeout: float = 300) -> int:
    """Blobs written so far (a committed batch writes its blobs first), once there are ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        blobs = db / "blobs"
        count = sum(1 for p in blobs.glob("??/??/*")) if blobs.exists() else 0
        if count >= at_least:
            return count
        assert proc.poll() is None, "the ingest ended before it could be interrupted"
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} blobs after {timeout} s")


Rows = set[tuple[object, ...]]


def snapshot(db: Path) -> tuple[dict[str, np.ndarray], Rows, Rows, Rows]:
    """(id -> vector, image rows, source rows, hash rows) of a store, without what differs by run (times, run ids)."""
    with Store.open(db) as store:
        key = store.main_model()
        assert key is not None
        ids, vectors = store.all_vectors(key)
        images = set(store.query("SELECT id, width, height, format, bytes, model FROM images"))
        sources = set(store.query("SELECT image_id, source, kind, page_url, alt, http_status, content_type FROM sources"))  # fmt: skip
        hashes = set(store.query("SELECT image_id, phash, dhash, pixel_sha256, square_phash, thumb, thumb_width, error, hasher FROM image_hashes"))  # fmt: skip
    return dict(zip(ids, vectors)), images, sources, hashes


def assert_same_store(db: Path, expected: Path) -> None:
    vectors, images, sources, hashes = snapshot(db)
    want_vectors, want_images, want_sources, want_hashes = snapshot(expected)
    assert len(vectors) == len(want_vectors) == IMAGES  # one vector per image: no duplicates
    assert vectors.keys() == want_vectors.keys()
    worst = max(float(np.abs(vectors[i] - want_vectors[i]).max()) for i in vectors)
    assert worst <= 1e-5
    assert images == want_images
    assert sources == want_sources
    assert len(want_hashes) == IMAGES and hashes == want_hashes  # the dupes hashes ingest computes


# ---------------------------------------------------------------------------- tests


def test_ray_ingest_equals_a_local_ingest_and_stays_polite(shop, cluster, tmp_path):
    shop.server.reset()
    done = run_ingest(shop, cluster, tmp_path / "db")
    assert_same_store(tmp_path / "db", shop.local_db)
    assert "Traceback" not in done.stderr
    # Two download actors, one per node, shared the host's 4 slots through the limiter.
    assert shop.server.max_in_flight <= 4
    assert shop.server.count("/img/0.jpg") == 1  # every image downloaded once

    again = run_ingest(shop, cluster, tmp_path / "db")  # a re-run adds nothing
    assert_same_store(tmp_path / "db", shop.local_db)
    assert "Traceback" not in again.stderr


def test_a_killed_driver_is_finished_by_running_it_again(shop, cluster, tmp_path):
    db = tmp_path / "db"
    proc = start_ingest(shop, cluster, db)
    try:
        stored = wait_for_blobs(db, 300, proc)
    finally:
        proc.kill()
        proc.wait()
    assert stored < IMAGES
    run_ingest(shop, cluster, db)
    assert_same_store(db, shop.local_db)
    with Store.open(db) as store:
        statuses = [r[0] for r in store.query("SELECT status FROM runs ORDER BY id")]
    assert statuses == ["interrupted", "done"]


def test_a_folder_ingested_on_the_cluster_equals_a_local_ingest(shop, cluster, tmp_path):
    pictures = tmp_path / "pictures"
    (pictures / "sub").mkdir(parents=True)
    site = shop.local_db.parent / "site" / "img"
    for i in range(40):  # a folder every node can read, with a copy and a file that is not an image
        (pictures / ("sub" if i % 2 else "") / f"{i}.jpg").write_bytes((site / f"{i}.jpg").read_bytes())
    (pictures / "copy-of-0.jpg").write_bytes((site / "0.jpg").read_bytes())
    (pictures / "broken.jpg").write_bytes(b"not a jpeg")
    with Store.open(tmp_path / "local", write=True) as store:
        local = ingest(store, [str(pictures)], Model.load())
    command = [sys.executable, "-m", "imgdb.cli", "ingest", str(pictures), "--engine", "ray",
               "--ray-address", cluster.address, "--db", str(tmp_path / "ray")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=cluster.env)
    assert done.returncode == 0, done.stderr[-3000:]
    vectors, images, sources, hashes = snapshot(tmp_path / "ray")
    want_vectors, want_images, want_sources, want_hashes = snapshot(tmp_path / "local")
    assert local.new == 40 and vectors.keys() == want_vectors.keys()
    assert max(float(np.abs(vectors[i] - want_vectors[i]).max()) for i in vectors) <= 1e-5
    assert images == want_images and sources == want_sources and hashes == want_hashes
    failures = []
    for db in (tmp_path / "ray", tmp_path / "local"):
        with Store.open(db) as store:
            failures.append(store.query("SELECT source, reason FROM failures"))
    assert failures[0] == failures[1] and [f[0] for f in failures[0]] == [str(pictures / "broken.jpg")]


def test_the_job_completes_when_a_worker_node_is_killed(shop, cluster, tmp_path):
    # Last in the module: the worker node stays dead.
    db = tmp_path / "db"
    proc = start_ingest(shop, cluster, db)
    try:
        wait_for_blobs(db, 300, proc)
        cluster.kill(cluster.workers[0])
        assert proc.wait(timeout=300) == 0
    finally:
        proc.kill()
    assert_same_store(db, shop.local_db)
