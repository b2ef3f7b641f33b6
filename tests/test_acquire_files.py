"""Folder ingest and decode against hostile files made by the test: FIFOs, devices, endless
/proc files, skipped folders, odd formats, pixel strips, names that are not UTF-8."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from imgdb.acquire import ingest as ingest_module
from imgdb.acquire.ingest import IngestSummary, ingest
from imgdb.errors import DecodeError
from imgdb.imaging.decode import decode
from imgdb.store import Store
from tests import images


def png(seed: int) -> bytes:
    return images.png_bytes(images.photo(seed, (96, 72)))


def avif(seed: int) -> bytes:
    buf = io.BytesIO()
    images.photo(seed, (96, 72)).save(buf, "AVIF")
    return buf.getvalue()


def run_bounded(store: Store, targets: list[str], model: Any, seconds: float = 60) -> IngestSummary:
    """ingest() in a daemon thread, so a hang fails the test instead of freezing the suite."""
    result: list[Any] = []

    def go() -> None:
        try:
            result.append(ingest(store, targets, model))
        except BaseException as exc:
            result.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"ingest of {targets} did not end in {seconds} s"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def failures(store: Store) -> dict[str, str]:
    """source file name -> reason."""
    return {Path(s).name: r for s, r in store.query("SELECT source, reason FROM failures")}


# ----------------------------------------------------------- special files


def ingest_in_child(db: Path, targets: list[str]) -> dict[str, Any]:
    return ingests_in_child(db, [targets])[0]


def ingests_in_child(db: Path, runs: list[list[str]]) -> list[dict[str, Any]]:
    """ingest() of each run in turn, in one child process capped at 6 GB and 120 s: an
    endless read fails the test, not the machine."""
    code = f"""
import json, resource
resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))
from imgdb.acquire.ingest import ingest
from imgdb.imaging.model import Model
from imgdb.store import Store
model = Model.load()
for targets in {runs!r}:
    with Store.open({str(db)!r}, write=True) as store:
        print(json.dumps(ingest(store, targets, model).as_dict()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads(line) for line in out.stdout.splitlines()[-len(runs) :]]


def test_fifo_and_device_named_like_images_do_not_hang(tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "a.png").write_bytes(png(1))
    os.mkfifo(pics / "x.jpg")
    (pics / "z.jpg").symlink_to("/dev/zero")
    # Walked, then named directly.
    summary, again = ingests_in_child(tmp_path / "db", [[str(pics)], [str(pics / "x.jpg"), str(pics / "z.jpg")]])
    assert summary["new"] == 1
    assert summary["failed"] == {"not-a-file": 2}
    assert again["failed"] == {"not-a-file": 2}
    with Store.open(tmp_path / "db") as store:  # the walk's (the named link is recorded as its target)
        assert {"x.jpg": "not-a-file", "z.jpg": "not-a-file"}.items() <= failures(store).items()


def test_reads_are_capped_whatever_st_size_says(tmp_path, model, monkeypatch):
    """/proc files are regular files of size 0 that read as much as they like."""
    maps = Path("/proc/self/maps")
    if not maps.is_file() or len(maps.read_bytes()) < 2000:
        pytest.skip("needs a /proc/self/maps larger than 2000 bytes")
    monkeypatch.setattr(ingest_module, "MAX_BYTES", 1000)
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "m.jpg").symlink_to(maps)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(pics)], model)
        assert dict(summary.failed) == {"too-large": 1}


# ------------------------------------------------------------- walk skips


def test_folder_walk_records_what_it_skips(tmp_path, model):
    pics = tmp_path / "pics"
    (pics / "sub").mkdir(parents=True)
    (pics / "sub" / "b.png").write_bytes(png(2))
    (pics / "a.png").write_bytes(png(1))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.png").write_bytes(png(3))
    (pics / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (pics / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 100)
    (pics / "notes.txt").write_text("not an image: ignored without a word")
    (pics / "photo.avif").write_bytes(avif(4))
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(pics)], model)
        assert summary.new == 3  # a.png, sub/b.png and the AVIF (this Pillow decodes AVIF)
        assert failures(store) == {"linked": "symlink", "phone.heic": "unsupported"}
        assert summary.failed == {"symlink": 1, "unsupported": 1}
        assert store.query("SELECT format FROM images WHERE format = 'AVIF'") == [("AVIF",)]


def test_avif_in_a_folder_is_treated_like_the_file_named_directly(tmp_path, model):
    data = avif(5)
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "x.avif").write_bytes(data)
    (tmp_path / "one.avif").write_bytes(data)
    with Store.open(tmp_path / "db", write=True) as store:
        by_folder = run_bounded(store, [str(tmp_path / "pics")], model)
    with Store.open(tmp_path / "db2", write=True) as store:
        by_name = run_bounded(store, [str(tmp_path / "one.avif")], model)
    assert (by_folder.new, dict(by_folder.failed)) == (by_name.new, dict(by_name.failed))
    assert by_folder.images_found == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders whatever their mode")
def test_unreadable_folder_is_recorded(tmp_path, model):
    pics = tmp_path / "pics"
    (pics / "locked").mkdir(parents=True)
    (pics / "a.png").write_bytes(png(1))
    (pics / "locked").chmod(0)
    try:
        with Store.open(tmp_path / "db", write=True) as store:
            summary = run_bounded(store, [str(pics)], model)
            assert summary.new == 1
            assert failures(store) == {"locked": "unreadable"}
    finally:
        (pics / "locked").chmod(0o755)


def test_folder_that_cannot_be_listed_is_recorded(tmp_path, model, monkeypatch):
    """Root can list any folder, so the listing error comes from a folder that vanishes mid-walk."""
    pics = tmp_path / "pics"
    (pics / "gone").mkdir(parents=True)
    (pics / "gone" / "b.png").write_bytes(png(2))
    (pics / "a.png").write_bytes(png(1))
    real_scandir = os.scandir

    def vanishing(path: Any = ".") -> Any:
        # Vanish under the ingest's own walk, not the progress count that walks beside it.
        if Path(path).name == "gone" and threading.current_thread().name != "imgdb-count":
            (Path(path) / "b.png").unlink()
            Path(path).rmdir()
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", vanishing)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(pics)], model)
        assert summary.new == 1
        assert failures(store) == {"gone": "unreadable"}


# ----------------------------------------------------------------- decode


def test_pixel_strip_fails_fast_with_aspect(tmp_path, model):
    strip = images.pixel_bomb_png_bytes(65000, 1)
    assert len(strip) < 1000
    with pytest.raises(DecodeError) as info:
        decode(strip, target=model.spec.decode_target)
    assert info.value.reason == "aspect"
    (tmp_path / "strip.png").write_bytes(strip)
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(tmp_path / "strip.png")], model)
        assert dict(summary.failed) == {"aspect": 1}


def test_pixel_strip_keeps_peak_memory_small(tmp_path):
    """Decode and preprocess a 65000x1 PNG the way ingest does, in a child capped at 2 GB."""
    (tmp_path / "strip.png").write_bytes(images.pixel_bomb_png_bytes(65000, 1))
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from imgdb.errors import DecodeError
from imgdb.imaging.decode import decode
from imgdb.imaging.model import ModelSpec
spec = ModelSpec.load(None)
try:
    spec.preprocess(decode(open({str(tmp_path / "strip.png")!r}, "rb").read(), target=spec.decode_target).image)
    print("decoded")
except DecodeError as exc:
    print(exc.reason)
# VmHWM is this process's own peak; ru_maxrss may carry the forking parent's.
try:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
except OSError:
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(int(hwm) // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = out.stdout.split()
    assert lines[:1] == ["aspect"], out.stdout + out.stderr
    assert int(lines[1]) < 500  # MB; the unguarded preprocess peaked at 17.9 GB


def test_ordinary_shapes_still_decode(model):
    for size in ((2000, 40), (40, 2000), (1, 1), (3, 90)):
        decoded = decode(images.png_bytes(images.photo(6, (96, 72)).resize(size)), target=(256, 256))
        assert (decoded.width, decoded.height) == size


# ------------------------------------------------------------------ names


def test_non_utf8_file_name_is_stored_escaped_and_the_batch_survives(tmp_path, model):
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(7):
        (pics / f"{i}.png").write_bytes(png(10 + i))
    bad = os.path.join(os.fsencode(pics), b"caf\xe9-\xff.png")
    with open(bad, "wb") as fh:
        fh.write(png(20))
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(pics)], model)
        assert summary.new == 8 and not summary.failed
        assert len(store.image_ids()) == 8
        names = {Path(s).name for (s,) in store.query("SELECT source FROM sources")}
        assert "caf\\xe9-\\xff.png" in names
        again = run_bounded(store, [str(pics)], model)
        assert again.new == 0 and again.already_stored == 8 and not again.failed


def test_one_row_the_store_refuses_does_not_lose_the_batch(tmp_path, model, monkeypatch):
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(5):
        (pics / f"{i}.png").write_bytes(png(30 + i))
    with Store.open(tmp_path / "db", write=True) as store:
        real = store.add_images

        def refuse_poison(new_images: Any, *args: Any, **kwargs: Any) -> None:
            if any(s.source.endswith("3.png") for im in new_images for s in im.sources):
                raise ValueError("the store refuses this row")
            real(new_images, *args, **kwargs)

        monkeypatch.setattr(store, "add_images", refuse_poison)
        summary = run_bounded(store, [str(pics)], model)
        assert summary.new == 4
        assert dict(summary.failed) == {"store": 1}
        assert failures(store) == {"3.png": "store"}
        assert len(store.image_ids()) == 4
        assert store.vector_ids(model.spec.key) == store.image_ids()


def test_extensionless_files_are_read_when_their_bytes_are_an_image(tmp_path, model):
    """A store's blobs (named by their hash, no extension) can be ingested again."""
    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "0a1b2c").write_bytes(png(7))  # an image without an extension
    (pics / "Makefile").write_text("all:\n\techo not an image\n")  # ignored, as before
    (pics / "empty").write_bytes(b"")
    (pics / "BMfake").write_bytes(b"BM" + b"\0" * 40)  # a bitmap's magic, then nonsense
    with Store.open(tmp_path / "db", write=True) as store:
        summary = run_bounded(store, [str(pics)], model)
        assert summary.new == 1 and summary.images_found == 1 and not summary.failed
