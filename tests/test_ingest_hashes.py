"""Ingest computes dupes' per-image hashes from the pixels it decodes anyway: a freshly
ingested store's dupes decodes nothing to hash, and the values are the ones
``compute_hashes`` gives an image stored without them (before ingest hashed, or by
another model)."""

from __future__ import annotations

import hashlib
import shutil
import struct
from dataclasses import replace

import pytest
from PIL import Image

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.imaging.decode import decode
from imgdb.imaging.hashes import HASH_TARGET, hash_bytes
from imgdb.imaging.model import Model
from imgdb.store import Store
from tests import images
from tests.images import png_bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def camera_jpeg(img: Image.Image) -> bytes:
    """A JPEG with the EXIF a camera writes (make, model, time)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Imgdb", "Test Camera", "2026:01:02 03:04:05"
    return images.jpeg_bytes(img, exif=exif.tobytes())


def strip_metadata(jpeg: bytes) -> bytes:
    """The JPEG without its APPn and COM segments, as metadata strippers write it: the same
    compressed pixels."""
    out, at = bytearray(jpeg[:2]), 2
    while True:
        marker = jpeg[at + 1]
        if marker == 0xDA:  # start of scan: the rest is the compressed image
            return bytes(out + jpeg[at:])
        (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
        if not (0xE1 <= marker <= 0xEF or marker == 0xFE):
            out += jpeg[at : at + 2 + length]
        at += 2 + length


def hash_columns(store: Store) -> dict[str, tuple]:
    rows = store.query("SELECT image_id, phash, dhash, square_phash, pixel_sha256, error, hasher FROM image_hashes")
    return {r[0]: tuple(r[1:]) for r in rows}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("ingest-hashes")
    big = camera_jpeg(images.photo(40, (1024, 768)))  # JPEG decodes at half scale for HASH_TARGET
    small = images.jpeg_bytes(images.photo(41, (320, 240)))  # decodes at full size
    pic = images.photo(42, (300, 200))
    files = {
        "big.jpg": big,
        "big-stripped.jpg": strip_metadata(big),
        "big.png": png_bytes(decode(big).image),  # its full-size pixels
        "small.jpg": small,
        "small.png": png_bytes(decode(small).image),
        "rgba.png": images.png_rgba_bytes(pic),
        "palette.png": images.palette_png_bytes(pic),
        "gray.jpg": images.grayscale_jpeg_bytes(pic),
        "rotated.jpg": images.exif_rotated_jpeg_bytes(images.photo(43, (900, 600))),
        "pic.webp": images.webp_bytes(pic),
    }
    for name, data in files.items():
        (root / "pics" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "pics" / name).write_bytes(data)
    store = Store.open(root / "db", write=True)
    assert ingest(store, [str(root / "pics")], model).new == len(files)
    yield {"store": store, "ids": {name: sha(data) for name, data in files.items()}, "rows": hash_columns(store)}
    store.close()


def test_ingest_writes_every_images_hashes_with_the_current_hasher(ingested):
    store, rows = ingested["store"], ingested["rows"]
    assert set(rows) == store.image_ids()
    assert {r[-1] for r in rows.values()} == {dedup.HASHER}
    assert all(None not in r[:4] and r[4] is None for r in rows.values())  # every hash, no error
    assert dedup.find(store).stats["hashed_now"] == 0


def test_ingest_hashes_are_what_dupes_computes_for_images_stored_without_them(ingested):
    store, rows = ingested["store"], ingested["rows"]
    thumbs = {r[0]: tuple(r[1:]) for r in store.query("SELECT image_id, thumb, thumb_width FROM image_hashes")}
    for image_id in rows:
        h = hash_bytes(store.read_blob(image_id))
        assert (h.phash, h.dhash, h.square_phash, h.pixel_sha256, h.error) == rows[image_id][:5]
        assert h.thumb and (h.thumb, h.thumb_width) == thumbs[image_id]  # the screen's thumbnail too
    store.query("DELETE FROM image_hashes")  # as a store ingested before ingest hashed
    recomputed = dedup.compute_hashes(store)
    assert hash_columns(store) == rows
    assert {i: (h.phash, h.dhash, h.square_phash, h.pixel_sha256) for i, h in recomputed.items()} == {
        i: r[:4] for i, r in rows.items()
    }


def test_pixel_identity_holds_at_the_hashes_decode(ingested):
    store, ids, rows = ingested["store"], ingested["ids"], ingested["rows"]

    def pixels(name: str) -> str:
        return rows[ids[name]][3]

    # A metadata-stripped copy has the same JPEG data, so the same pixels at any draft scale.
    assert pixels("big.jpg") == pixels("big-stripped.jpg")
    assert pixels("small.jpg") == pixels("small.png")  # a small JPEG is hashed at full size
    # A PNG of a large JPEG's full-size pixels is not pixel-identical to the draft decode,
    # but its pHash finds it and verification keeps it.
    assert pixels("big.jpg") != pixels("big.png")
    result = dedup.find(store, again=True)
    (group,) = [g for g in result.groups if ids["big.jpg"] in g.ids]
    assert set(group.ids) == {ids["big.jpg"], ids["big-stripped.jpg"], ids["big.png"]}
    stages = {frozenset((p.a, p.b)): p.stage for p in result.pairs}
    assert stages[frozenset((ids["big.jpg"], ids["big-stripped.jpg"]))] == "pixels"
    assert stages[frozenset((ids["small.jpg"], ids["small.png"]))] == "pixels"


def test_dupes_hashes_a_fresh_store_without_reading_its_blobs(tmp_path, model):
    pics = tmp_path / "pics"
    pics.mkdir()
    for seed in (50, 51, 52):
        (pics / f"{seed}.jpg").write_bytes(images.jpeg_bytes(images.photo(seed, (640, 480))))
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(pics)], model)
        before = hash_columns(store)
        shutil.rmtree(tmp_path / "db" / "blobs")  # nothing left to decode
        hashes = dedup.compute_hashes(store)
        assert len(hashes) == 3 and all(h.error is None and h.phash is not None for h in hashes.values())
        assert hash_columns(store) == before


def test_a_model_with_another_decode_target_stores_the_same_hashes(tmp_path, model):
    # 1400x1100: the hashes' decode is at quarter scale, this model's (320 px) at half.
    other = Model(replace(model.spec, crop_fraction=0.7, vectors_key="hashes-test-crop70"))
    assert other.spec.decode_target != HASH_TARGET
    data = images.jpeg_bytes(images.photo(44, (1400, 1100)))
    assert decode(data, target=other.spec.decode_target).image.size != decode(data, target=HASH_TARGET).image.size
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.jpg").write_bytes(data)
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], other)
        (row,) = hash_columns(store).values()
    h = hash_bytes(data)
    assert row[:5] == (h.phash, h.dhash, h.square_phash, h.pixel_sha256, None) and row[5] == dedup.HASHER


def test_hashes_of_images_stored_by_another_model_are_written_when_embedded_again(tmp_path, model):
    (tmp_path / "pics").mkdir()
    data = images.jpeg_bytes(images.photo(45, (640, 480)))
    (tmp_path / "pics" / "a.jpg").write_bytes(data)
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        store.query("DELETE FROM image_hashes")  # stored before ingest hashed
        other = Model(replace(model.spec, vectors_key="hashes-test-again"))
        assert ingest(store, [str(tmp_path / "pics")], other).already_stored == 1
        h = hash_bytes(data)
        assert hash_columns(store)[sha(data)][:4] == (h.phash, h.dhash, h.square_phash, h.pixel_sha256)
