"""What a near-duplicate is, on generated pictures: crops and renditions join, look-alikes do not,
recolours are their own kind, transparent images are compared by their shapes, and every
pair carries its evidence."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps
from typer.testing import CliRunner

import imgdb
from imgdb import dedup
from imgdb.cli import app
from imgdb.dedup.verify import MIN_INLIERS
from imgdb.demo.pictures import render
from tests import images

runner = CliRunner()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    return images.jpeg_bytes(img, quality=quality)


def centre_square(img: Image.Image, side: int) -> Image.Image:
    s = min(img.size)
    left, top = (img.width - s) // 2, (img.height - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((side, side), Image.Resampling.LANCZOS)


def product_on_white(seed: int, size: tuple[int, int] = (300, 300)) -> tuple[Image.Image, Image.Image]:
    """A textured, saturated object on a white catalogue background, and the object's mask."""
    w, h = size
    texture = images.photo(seed, size)
    hsv = np.asarray(texture.convert("HSV")).copy()
    hsv[..., 1] = np.maximum(hsv[..., 1], 170)  # a colourful product
    texture = Image.fromarray(hsv, "HSV").convert("RGB")
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rounded_rectangle([w * 0.25, h * 0.12, w * 0.75, h * 0.9], radius=w // 10, fill=255)
    white = Image.new("RGB", size, (255, 255, 255))
    return Image.composite(texture, white, mask), mask


def turn_hue(img: Image.Image, mask: Image.Image, turn: float) -> Image.Image:
    hsv = np.asarray(img.convert("HSV")).copy()
    inside = np.asarray(mask) > 0
    hsv[..., 0] = np.where(inside, (hsv[..., 0].astype(int) + int(turn * 255)) % 256, hsv[..., 0]).astype(np.uint8)
    return Image.fromarray(hsv, "HSV").convert("RGB")


def logo(shape: str, side: int = 200) -> bytes:
    """A white logo on a transparent background, as PNG."""
    img = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    draw = ImageDraw.Draw(img)
    if shape == "ring":
        draw.ellipse(
            [side * 0.15, side * 0.15, side * 0.85, side * 0.85], outline=(255, 255, 255, 255), width=side // 8
        )
    else:
        draw.polygon([(side * 0.5, side * 0.1), (side * 0.9, side * 0.85), (side * 0.1, side * 0.85)], fill="white")
        draw.rectangle([side * 0.4, side * 0.55, side * 0.6, side * 0.85], fill=(255, 255, 255, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def ingest_and_find(root: Path, files: dict[str, bytes]) -> dict:
    """The files written to a folder, ingested into a fresh store, and its dupes run."""
    pics = root / "pics"
    pics.mkdir()
    for name, data in files.items():
        (pics / name).write_bytes(data)
    with imgdb.open(root / "db", "w") as col:
        col.ingest([str(pics)])
        result = col.find_dupes()
    return {"db": root / "db", "ids": {name: sha(data) for name, data in files.items()}, "result": result}


@pytest.fixture(scope="module")
def shop(tmp_path_factory, model):
    """A small shop's uploads: a portrait photo with its CMS renditions, two products shot the
    same way, a product and its recolour, two transparent logos and a logo at two sizes."""
    root = tmp_path_factory.mktemp("shop")
    portrait = images.photo(41, (360, 540))
    files = {
        "photo.jpg": jpeg(portrait, 95),
        "photo-150x150.jpg": jpeg(centre_square(portrait, 150), 85),
        "photo-330x413.jpg": jpeg(ImageOps.fit(portrait, (330, 413)), 85),
        "photo-768.webp": images.webp_bytes(portrait.resize((240, 360), Image.Resampling.LANCZOS)),
        "bag-red.jpg": jpeg(render("Bags", (200, 40, 40), "striped", seed=5, view="main", size=(480, 360))),
        "bag-blue.jpg": jpeg(render("Bags", (40, 60, 200), "dotted", seed=5, view="main", size=(480, 360))),
        "logo-ring.png": logo("ring"),
        "logo-arrow.png": logo("arrow"),
        "logo-ring-small.png": logo("ring", 100),
    }
    shirt, mask = product_on_white(7)
    files["shirt-red.jpg"] = jpeg(shirt)
    files["shirt-teal.jpg"] = jpeg(turn_hue(shirt, mask, 0.4))
    return ingest_and_find(root, files)


def group_names(shop: dict, result: dedup.DupeResult) -> list[set[str]]:
    names = {v: k for k, v in shop["ids"].items()}
    return [{names[i] for i in g.ids} for g in result.groups if g.stage != "exact"]


def test_cms_renditions_and_a_square_centre_crop_join_their_portrait_original(shop):
    groups = group_names(shop, shop["result"])
    assert {"photo.jpg", "photo-150x150.jpg", "photo-330x413.jpg", "photo-768.webp"} in groups
    ids = shop["ids"]
    (pair,) = [p for p in shop["result"].pairs if {p.a, p.b} == {ids["photo.jpg"], ids["photo-150x150.jpg"]}]
    assert pair.kind == "duplicate" and pair.verified == "keypoints" and pair.inliers >= MIN_INLIERS


def test_different_products_shot_the_same_way_never_join(shop):
    for group in group_names(shop, shop["result"]):
        assert not {"bag-red.jpg", "bag-blue.jpg"} <= group
        assert not {"shirt-red.jpg", "shirt-teal.jpg"} <= group  # a recolour is not a duplicate


def test_a_recolour_is_reported_as_its_own_kind_and_joins_only_when_asked(shop):
    ids = shop["ids"]
    recolours = [{p.a, p.b} for p in shop["result"].recolours]
    assert {ids["shirt-red.jpg"], ids["shirt-teal.jpg"]} in recolours
    with imgdb.open(shop["db"], "w") as col:
        joined = col.find_dupes(recolours=True)
    (group,) = [g for g in joined.groups if ids["shirt-red.jpg"] in g.ids]
    assert set(group.ids) == {ids["shirt-red.jpg"], ids["shirt-teal.jpg"]}
    assert [m.kind for m in group.members[1:]] == ["recolour"]


def test_transparent_logos_are_compared_by_their_shapes(shop):
    groups = group_names(shop, shop["result"])
    assert not any({"logo-ring.png", "logo-arrow.png"} <= g for g in groups)  # both blank on white
    assert {"logo-ring.png", "logo-ring-small.png"} in groups  # one logo at two sizes


def test_every_pair_carries_its_evidence_in_json_and_in_the_dupes_view(shop):
    out = runner.invoke(app, ["dupes", "show", "--db", str(shop["db"]), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["pairs"] and data["groups"]
    for pair in data["pairs"]:
        for field in ("kind", "stages", "phash_distance", "square_distance", "cosine", "inliers", "matched_area"):
            assert field in pair
    verified = [p for p in data["pairs"] if p["inliers"]]
    assert verified and all(0 < p["matched_area"] <= 1 for p in verified)
    with imgdb.open(shop["db"]) as col:
        columns, rows = col.sql("SELECT kind, stages, inliers, matched_area FROM dupes WHERE NOT is_keep")
    assert columns == ["kind", "stages", "inliers", "matched_area"] and rows
    assert {r[0] for r in rows} <= {"duplicate", "recolour"}


def test_an_unchanged_store_shows_its_last_run(shop, tmp_path):
    with imgdb.open(shop["db"], "w") as col:
        first = col.find_dupes()
        again = col.find_dupes()
        assert again.reused and again.run_id == first.run_id
        assert [g.ids for g in again.groups] == [g.ids for g in first.groups]
        extra = tmp_path / "new.jpg"
        extra.write_bytes(jpeg(images.photo(77, (200, 150))))
        col.ingest([str(extra)])
        changed = col.find_dupes()
        assert not changed.reused and changed.run_id > first.run_id
    out = runner.invoke(app, ["dupes", "--db", str(shop["db"])])
    assert out.exit_code == 0 and "unchanged since run" in out.stdout


def test_the_gallery_marks_the_kept_member_and_gives_the_reject_line(shop, tmp_path):
    out = runner.invoke(app, ["dupes", "show", "--db", str(shop["db"]), "--html", str(tmp_path / "gallery")])
    assert out.exit_code == 0, out.output
    page = (Path(tmp_path / "gallery") / "index.html").read_text()
    assert "kept" in page and "imgdb dupes reject " in page and "inliers" in page


def _dull_or_one_hue(
    seed: int, *, saturation: int | None = None, hue: int | None = None
) -> tuple[Image.Image, Image.Image]:
    """A product on white whose colour is dull (low saturation) or of one hue (a fruit)."""
    shot, mask = product_on_white(seed)
    hsv = np.asarray(shot.convert("HSV")).copy()
    inside = np.asarray(mask) > 0
    if saturation is not None:
        hsv[..., 1] = np.where(inside, np.minimum(hsv[..., 1], saturation), hsv[..., 1])
    if hue is not None:
        hsv[..., 0] = np.where(inside, hue + hsv[..., 0] % 12, hsv[..., 0])
    return Image.fromarray(hsv, "HSV").convert("RGB"), mask


@pytest.mark.parametrize(
    ("look", "turn"),
    [({"saturation": 30}, 0.25), ({"saturation": 45}, 0.35), ({"hue": 20}, 0.5)],
    ids=["dull-turned-a-little", "dull-turned-more", "orange-turned-blue"],
)
def test_a_dull_or_single_hue_product_recoloured_is_a_recolour(look, turn):
    from imgdb.dedup.verify import prepare, verify
    from imgdb.imaging.decode import decode

    shot, mask = _dull_or_one_hue(11, **look)
    a, b = (decode(jpeg(img)) for img in (shot, turn_hue(shot, mask, turn)))
    evidence = verify(prepare(a.image), prepare(b.image))
    assert evidence.kind == "recolour", evidence


def test_a_whole_image_tint_is_not_a_recolour():
    from imgdb.dedup.verify import prepare, verify
    from imgdb.imaging.decode import decode

    shot, _ = _dull_or_one_hue(11, hue=20)
    tinted = Image.blend(shot, Image.new("RGB", shot.size, (40, 90, 220)), 0.3)
    a, b = (decode(jpeg(img)) for img in (shot, tinted))
    assert verify(prepare(a.image), prepare(b.image)).kind != "recolour"


def flavour_pack(flavour: str, colour: tuple[int, int, int]) -> Image.Image:
    """One packaging design: the same photo, box and brand band; only the flavour panel differs."""
    img = Image.new("RGB", (360, 480), (250, 250, 250))
    img.paste(images.photo(23, (300, 420)), (30, 30))
    draw = ImageDraw.Draw(img)
    draw.rounded_rectangle([90, 80, 270, 420], radius=20, fill=(235, 235, 235))
    draw.rectangle([90, 80, 270, 150], fill=(30, 80, 160))
    draw.text((110, 100), "OATLY", fill="white", font_size=36)
    draw.rectangle([110, 250, 250, 330], fill=colour)
    draw.text((115, 270), flavour, fill="black", font_size=22)
    return img


@pytest.fixture(scope="module")
def uploads(tmp_path_factory, model):
    """A photo with a resize and a re-encode, a product with a slight recolour, two flavours of one pack."""
    root = tmp_path_factory.mktemp("uploads")
    photo = images.photo(41, (360, 540))
    shirt, mask = product_on_white(7)
    files = {
        "photo.jpg": jpeg(photo, 95),
        "photo-q70.jpg": jpeg(photo, 70),
        "photo-324.jpg": jpeg(photo.resize((324, 486), Image.Resampling.LANCZOS), 92),
        "shirt-red.jpg": jpeg(shirt),
        "shirt-green.jpg": jpeg(turn_hue(shirt, mask, 0.25)),
        "pack-blueberry.jpg": jpeg(flavour_pack("BLUEBERRY", (90, 60, 160))),
        "pack-vanilla.jpg": jpeg(flavour_pack("VANILLA", (240, 220, 150))),
    }
    return ingest_and_find(root, files)


def the_pair(shop: dict, a: str, b: str) -> dedup.Pair | None:
    return shop["result"].pair(shop["ids"][a], shop["ids"][b])


def test_a_resize_in_the_sure_zone_is_a_duplicate_on_its_cheap_evidence_alone(uploads):
    from imgdb.dedup.verify import SURE, SURE_COSINE, SURE_PHASH

    pair = the_pair(uploads, "photo.jpg", "photo-324.jpg")
    assert pair is not None and pair.kind == "duplicate"
    assert pair.stages[-1] == SURE and "phash" in pair.stages
    assert pair.phash_distance is not None and pair.phash_distance <= SURE_PHASH
    assert pair.cosine is not None and pair.cosine >= SURE_COSINE
    # Nothing was verified, and the pair does not pretend it was.
    assert pair.verified is None and pair.inliers is None and pair.changed is None and pair.matched_area is None
    assert uploads["result"].stats["sure_pairs"] >= 1
    assert uploads["result"].stats["to_verify"] < uploads["result"].stats["candidate_pairs"]
    assert "sure" in dedup.results.evidence_line(pair, pair.kind) and "inliers" not in dedup.results.evidence_line(
        pair, pair.kind
    )
    (group,) = [g for g in uploads["result"].groups if uploads["ids"]["photo.jpg"] in g.ids]
    assert {uploads["ids"][n] for n in ("photo.jpg", "photo-q70.jpg", "photo-324.jpg")} == set(group.ids)


def test_a_sure_pair_says_so_in_json_csv_and_the_dupes_view(uploads):
    a, b = sorted((uploads["ids"]["photo.jpg"], uploads["ids"]["photo-324.jpg"]))
    out = runner.invoke(app, ["dupes", "show", "--db", str(uploads["db"]), "--json"])
    assert out.exit_code == 0, out.output
    (pair,) = [p for p in json.loads(out.stdout)["pairs"] if (p["a"], p["b"]) == (a, b)]
    assert pair["stages"][-1] == "sure" and pair["inliers"] is None and pair["phash_distance"] is not None
    out = runner.invoke(app, ["dupes", "show", "--db", str(uploads["db"]), "--csv"])
    assert out.exit_code == 0, out.output
    assert any("+sure" in line for line in out.stdout.splitlines())
    with imgdb.open(uploads["db"]) as col:
        _columns, rows = col.sql("SELECT stages, inliers FROM dupes WHERE NOT is_keep AND stages LIKE '%sure'")
    assert rows and all(inliers is None for _s, inliers in rows)


def test_a_recolour_close_in_phash_is_still_verified_and_labelled_recolour(uploads):
    from imgdb.dedup.verify import SURE_PHASH

    pair = the_pair(uploads, "shirt-red.jpg", "shirt-green.jpg")
    assert pair is not None
    assert pair.phash_distance is not None and pair.phash_distance <= SURE_PHASH  # pHash is on luminance
    assert pair.kind == "recolour" and pair.verified == "keypoints" and "sure" not in pair.stages


def test_two_flavours_of_one_pack_never_join(uploads):
    assert the_pair(uploads, "pack-blueberry.jpg", "pack-vanilla.jpg") is None
    ids = uploads["ids"]
    assert not any({ids["pack-blueberry.jpg"], ids["pack-vanilla.jpg"]} <= set(g.ids) for g in uploads["result"].groups)


def test_the_verifier_prepares_each_image_once_even_with_a_small_cache():
    from imgdb.dedup.verify import Verifier
    from imgdb.imaging.decode import decode

    # Two photos with four renditions each; their pairs arrive interleaved, by id.
    blobs = {}
    for seed in (3, 4):
        photo = images.photo(seed, (240, 180))
        for k, width in enumerate((240, 200, 160, 120)):
            blobs[f"{k}-{seed}"] = jpeg(photo.resize((width, width * 3 // 4), Image.Resampling.LANCZOS))
    loads: list[str] = []

    def load(image_id: str):
        loads.append(image_id)
        decoded = decode(blobs[image_id])
        return decoded.image, decoded.alpha

    pairs = [(a, b) for a in sorted(blobs) for b in sorted(blobs) if a < b and a[-1] == b[-1]]
    verifier = Verifier(load, workers=1, cache=4)
    evidence = verifier.check_many(pairs)
    assert all(ev is not None and ev.kind == "duplicate" for ev in evidence)
    assert sorted(loads) == sorted(blobs)  # each image read and prepared once
