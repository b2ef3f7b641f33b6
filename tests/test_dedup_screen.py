"""The dupes screen: a rendition or crop placed inside its photograph passes; another shot does not."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.dedup.screen import SCREEN_MIN, Screen
from imgdb.imaging.decode import decode
from imgdb.imaging.hashes import HASH_TARGET, THUMB_SIDE, hash_image, hash_row, row_from_json, row_json
from imgdb.store import Store
from tests import images


def hashed(img: Image.Image) -> dedup.ImageHashes:
    """The hashes ingest would store for ``img`` saved as a JPEG."""
    decoded = decode(images.jpeg_bytes(img), target=HASH_TARGET)
    return hash_image(decoded.image, decoded.alpha)


def crop_share(img: Image.Image, keep: float, left: float, top: float) -> Image.Image:
    """A crop of the same aspect keeping ``keep`` of the area, its corner at (left, top) of the slack."""
    w, h = img.size
    cw, ch = round(w * keep**0.5), round(h * keep**0.5)
    x, y = round((w - cw) * left), round((h - ch) * top)
    return img.crop((x, y, x + cw, y + ch))


def screen_of(**pictures: Image.Image) -> Screen:
    return Screen({name: hashed(img) for name, img in pictures.items()})


def test_the_hashes_carry_a_thumbnail_that_survives_json():
    h = hashed(images.photo(1, (320, 240)))
    assert h.thumb_width == THUMB_SIDE and h.thumb is not None and len(h.thumb) == THUMB_SIDE * 24
    # The Ray engine passes hash rows between processes as JSON.
    for row in (hash_row(h), hash_row(dedup.ImageHashes(None, None, None, "corrupt"))):
        assert row_from_json(row_json(row)) == row


@pytest.mark.parametrize("seed", [3, 4, 8])
def test_crops_renditions_and_colour_changes_pass(seed):
    photo = images.photo(seed, (480, 360))
    w, h = photo.size
    screen = screen_of(
        photo=photo,
        crop50=crop_share(photo, 0.5, 0.9, 0.1),
        crop70=crop_share(photo, 0.7, 0.2, 0.8),
        square=photo.crop(((w - h) // 2, 0, (w + h) // 2, h)).resize((150, 150)),  # a CMS thumbnail
        left_square=photo.crop((0, 0, h, h)),  # full height, another shape, off centre
        right_portrait=photo.crop((w - 3 * h // 4, 0, w, h)),
        small=photo.resize((160, 120)),
        gray=ImageOps.grayscale(photo).convert("RGB"),
        tint=Image.blend(photo, Image.new("RGB", photo.size, (200, 120, 40)), 0.3),
    )
    for name in ("crop50", "crop70", "square", "left_square", "right_portrait", "small", "gray", "tint"):
        score = screen.score("photo", name)
        assert score is not None and score >= SCREEN_MIN, name
        assert screen.score(name, "photo") == score  # either order
        assert screen.passes("photo", name)


def test_other_shots_of_the_same_kind_are_turned_away():
    # Members of one family: the same motif, drawn again at other places and sizes. (Stripes
    # and checkerboards, families 1 and 2, line up at some shift: verification decides them.)
    for family in (3, 4, 5):
        screen = screen_of(a=images.family(family, 0), b=images.family(family, 1))
        score = screen.score("a", "b")
        assert score is not None and score < SCREEN_MIN, family
        assert not screen.passes("a", "b")


def test_flat_or_missing_thumbnails_cannot_be_screened():
    strip = hashed(images.photo(3, (600, 12)))
    assert (strip.thumb_width, len(strip.thumb or b"")) == (THUMB_SIDE, THUMB_SIDE)  # 32x1
    screen = Screen({
        "flat": hashed(Image.new("RGB", (200, 200), (240, 240, 240))),
        "strip": hashed(images.photo(3, (600, 12))),
        "photo": hashed(images.photo(2, (320, 240))),
        "old": dedup.ImageHashes(1, 2, "x"),  # a row without a thumbnail
        "damaged": dedup.ImageHashes(1, 2, "x", thumb=b"\x01" * 33, thumb_width=32),
    })  # fmt: skip
    assert screen.score("flat", "photo") is None and screen.passes("flat", "photo")
    assert screen.score("old", "photo") is None and screen.passes("old", "photo")
    assert screen.score("strip", "photo") is None and screen.passes("strip", "photo")
    assert screen.score("damaged", "photo") is None and screen.passes("damaged", "photo")


def test_a_run_screens_embedding_pairs_before_verifying(tmp_path: Path, model):
    photo = images.photo(5, (480, 360))
    pics = tmp_path / "pics"
    pics.mkdir()
    files = {"photo.jpg": photo, "crop.jpg": crop_share(photo, 0.7, 0.3, 0.6)}
    for f in range(6):
        for m in range(3):
            files[f"family{f}-{m}.jpg"] = images.family(f, m)
    for name, img in files.items():
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        (pics / name).write_bytes(buf.getvalue())
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(pics)], model)
        result = dedup.find(store)
        stats = result.stats
        # Family members look alike to the model; the screen turns pairs of them away
        # unverified, and only what it lets through (and the hash stages' pairs) is verified.
        assert stats["pairs"]["embedding"] > 1 and stats["screened_out"] >= 1
        assert stats["pairs"]["pixels"] == 0  # so every candidate is sure, screened out or verified
        assert stats["to_verify"] == stats["candidate_pairs"] - stats["screened_out"] - stats["sure_pairs"]
        (group,) = result.groups
        assert group.size == 2 and group.stage == "embedding"
