"""imgdb.eval: reading label CSVs, the metrics on hand-computed cases, and the
near-duplicate benchmark builder (scripts/make_dupes_bench.py) on generated pictures."""

from __future__ import annotations

import csv
import importlib.util
import random
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from imgdb.eval.labels import read_labels
from imgdb.eval.metrics import (
    KindScores,
    PairScores,
    Rate,
    ari,
    false_pairs,
    group_pairs,
    grouping_scores,
    kind_scores,
    nmi,
    ns_score,
    pair_recall,
    pair_scores,
    recall_at_k,
    recall_by,
    true_pairs,
)
from tests import images


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path.resolve()


def _csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------
# labels


def test_paths_resolve_against_the_folder_the_csv_folder_and_bare_names(tmp_path):
    folder = tmp_path / "images"
    a = _touch(folder / "a.jpg")
    b = _touch(folder / "sub" / "b.jpg")
    c = _touch(tmp_path / "meta" / "extra" / "c.jpg")
    d = _touch(folder / "d.jpg")
    labels_csv = _csv(
        tmp_path / "meta" / "labels.csv",
        "path,group_id\na.jpg,1\nsub/b.jpg,1\nextra/c.jpg,2\nelsewhere/d.jpg,2\ngone.jpg,3\n",
    )
    labels = read_labels(labels_csv, folder)
    assert labels.columns == ("group_id",)
    assert labels.column() == {a: "1", b: "1", c: "2", d: "2"}
    assert labels.unresolved == {"gone.jpg": {"group_id": "3"}}


def test_without_a_folder_paths_are_relative_to_the_csv(tmp_path):
    a = _touch(tmp_path / "x" / "a.png")
    labels = read_labels(_csv(tmp_path / "labels.csv", "filename,group_id\nx/a.png,7\n"))
    assert labels.column("group_id") == {a: "7"}


def test_default_label_columns(tmp_path):
    a = _touch(tmp_path / "a.jpg")
    grocery = read_labels(_csv(tmp_path / "g.csv", "path,fine_id,fine_label,coarse_id\na.jpg,3,Gala,0\n"))
    assert grocery.columns == ("fine_id", "coarse_id")
    assert grocery.by_path == {a: {"fine_id": "3", "coarse_id": "0"}}
    assert grocery.column("coarse_id") == {a: "0"}
    # No known path column name: the first column is the path, the next one the label.
    plain = read_labels(_csv(tmp_path / "p.csv", "image,kind,note\na.jpg,cat,x\n"))
    assert plain.columns == ("kind",)
    assert plain.column() == {a: "cat"}


def test_explicit_columns_and_errors(tmp_path):
    a = _touch(tmp_path / "a.jpg")
    labels_csv = _csv(tmp_path / "l.csv", "file,variant,group\na.jpg,original,g1\n")
    labels = read_labels(labels_csv, tmp_path, path_column="file", label_columns=["group", "variant"])
    assert labels.columns == ("group", "variant")
    assert labels.column() == {a: "g1"}
    with pytest.raises(KeyError):
        labels.column("split")
    with pytest.raises(ValueError, match="no column 'group_id'"):
        read_labels(labels_csv, tmp_path, label_columns=["group_id"])
    with pytest.raises(ValueError, match="no rows"):
        read_labels(_csv(tmp_path / "empty.csv", "path,group_id\n"))


# ---------------------------------------------------------------------------------------
# pairwise precision / recall / F1

LABELS = {"a": "x", "b": "x", "c": "x", "d": "y"}  # true pairs: a-b, a-c, b-c


def test_true_pairs():
    assert true_pairs(LABELS) == 3
    assert true_pairs({}) == 0


def test_perfect_grouping_scores_one():
    s = grouping_scores([["a", "b", "c"], ["d"]], LABELS)
    assert (s.found, s.correct, s.true) == (3, 3, 3)
    assert s.precision == s.recall == s.f1 == 1.0


def test_a_known_split():
    # Predicted pairs: a-b (right) and c-d (wrong); c's true partners a and b are missed.
    s = grouping_scores([["a", "b"], ["c", "d"]], LABELS)
    assert (s.found, s.correct, s.true) == (2, 1, 3)
    assert s.precision == pytest.approx(1 / 2)
    assert s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(0.4)  # 2 * 1/2 * 1/3 / (1/2 + 1/3)
    assert s.as_dict() == {"precision": 0.5, "recall": 0.3333, "f1": 0.4, "found": 2, "correct": 1, "true": 3}


def test_no_prediction_and_unlabelled_items():
    s = grouping_scores([], LABELS)
    assert (s.precision, s.recall, s.f1) == (1.0, 0.0, 0.0)
    # Unlabelled items are ignored: this group is the single pair a-b.
    assert grouping_scores([["a", "zz", "b"]], LABELS) == PairScores(found=1, correct=1, true=3)
    with pytest.raises(ValueError):
        grouping_scores([["a", "b"], ["b", "c"]], LABELS)


def test_pair_scores():
    s = pair_scores([("a", "b"), ("b", "d"), ("a", "zz")], LABELS)
    assert (s.found, s.correct, s.true) == (2, 1, 3)
    # Pairs give the same counts as the grouping they describe.
    assert pair_scores([("a", "b"), ("a", "c"), ("b", "c")], LABELS) == grouping_scores([["a", "b", "c"]], LABELS)


# ---------------------------------------------------------------------------------------
# clustering


def test_nmi_and_ari():
    truth = [0, 0, 1, 1]
    assert nmi(truth, ["q", "q", "p", "p"]) == pytest.approx(1.0)  # same partition, other names
    assert ari(truth, ["q", "q", "p", "p"]) == pytest.approx(1.0)
    # Crossing partitions share no information; ARI (0 - 2/3) / (2 - 2/3) = -0.5.
    assert nmi(truth, [0, 1, 0, 1]) == pytest.approx(0.0)
    assert ari(truth, [0, 1, 0, 1]) == pytest.approx(-0.5)
    # Contingency [[2, 0], [1, 1]]: index 1 equals its expectation 2 * 3 / 6, so ARI = 0.
    assert ari(truth, [0, 0, 0, 1]) == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------
# retrieval


GROUPS = {f"{g}{i}": g for g in "AB" for i in range(4)}  # two groups of four


def test_ns_score_of_a_perfect_ranking_is_four():
    results = {q: [q] + [o for o in GROUPS if GROUPS[o] == GROUPS[q] and o != q] for q in GROUPS}
    assert ns_score(results, GROUPS) == 4.0
    assert recall_at_k(results, GROUPS, 4) == 1.0


def test_ns_score_and_recall_on_a_mixed_ranking():
    results = {
        "A0": ["A0", "B0", "A1", "B1", "A2"],  # 2 of group A in the top 4; A2 comes fifth
        "B0": ["B0", "B1", "B2", "B3"],  # all 4
    }
    assert ns_score(results, GROUPS) == pytest.approx((2 + 4) / 2)
    assert recall_at_k(results, GROUPS, 4) == pytest.approx((1 / 3 + 1) / 2)
    assert recall_at_k(results, GROUPS, 5) == pytest.approx((2 / 3 + 1) / 2)
    assert ns_score({}, GROUPS) == 0.0


# ---------------------------------------------------------------------------------------
# scoring some items' pairs apart, and breakdowns of found pairs

# Group x: an original o, its rendition r and a recolour c; group y: another shot n.
APART = {"o": "x", "r": "x", "c": "x", "n": "y"}


def test_pairs_of_apart_items_are_neither_found_nor_true():
    assert true_pairs(APART) == 3
    assert true_pairs(APART, apart={"c"}) == 1  # only o-r
    # o-c is scored apart; c-n is a wrong pair all the same; o-r is right.
    s = pair_scores([("o", "r"), ("o", "c"), ("c", "n")], APART, apart={"c"})
    assert (s.found, s.correct, s.true) == (2, 1, 1)
    assert (s.precision, s.recall) == (0.5, 1.0)


def test_grouping_with_apart_items_counts_like_its_pairs():
    # Group {o, r, c, n}: pairs o-r (right), o-c and r-c (apart), o-n, r-n, c-n (wrong).
    s = grouping_scores([["o", "r", "c", "n"]], APART, apart={"c"})
    assert (s.found, s.correct, s.true) == (4, 1, 1)
    for groups in ([["o", "r", "c", "n"]], [["o", "c"], ["r", "n"]], [["c", "n"], ["o"], ["r"]]):
        assert grouping_scores(groups, APART, apart={"c"}) == pair_scores(group_pairs(groups), APART, apart={"c"})
    # Nothing apart: the plain scores.
    assert grouping_scores([["o", "r", "c", "n"]], APART, apart=()) == grouping_scores([["o", "r", "c", "n"]], APART)


def test_group_pairs():
    assert list(group_pairs([["a", "b", "c"], ["d"], ["e", "e", "f"]])) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "c"),
        ("e", "f"),
    ]


def test_pair_recall_in_either_order_and_per_key():
    found = [("a", "b"), ("c", "a"), ("d", "e")]
    assert pair_recall(found, [("b", "a"), ("a", "c"), ("a", "d")]) == Rate(2, 3)
    # A wanted pair listed twice counts once.
    assert pair_recall(found, [("a", "b"), ("b", "a")]) == Rate(1, 1)
    by = recall_by(found, {"thumb": [("a", "b")], "crop": [("a", "d"), ("e", "d")], "none": []})
    assert by == {"thumb": Rate(1, 1), "crop": Rate(1, 2), "none": Rate(0, 0)}
    assert by["crop"].value == 0.5 and by["none"].value is None
    assert Rate(1, 3).as_dict() == {"rate": 0.3333, "hit": 1, "total": 3}
    assert Rate(0, 0).as_dict() == {"rate": None, "hit": 0, "total": 0}


def test_false_pairs_within_a_subset():
    labels = {"i1": "p", "i2": "q", "i3": "r", "v": "s", "v2": "s"}
    found = [("i1", "i2"), ("i2", "v"), ("v", "v2"), ("i3", "zz")]
    assert false_pairs(found, labels) == [("i1", "i2"), ("i2", "v")]
    assert false_pairs(found, labels, among={"i1", "i2", "i3"}) == [("i1", "i2")]
    assert false_pairs([], labels) == []


def test_kind_scores():
    # Wanted recolour pairs: (o1, c1), (o2, c2), (o3, c3). Found: o1-c1 labelled recolour,
    # c2-o2 found as a plain duplicate, o3-c3 missed; o1-x wrongly labelled recolour.
    found = {("o1", "c1"): "recolour", ("c2", "o2"): None, ("o1", "x"): "recolour", ("a", "b"): "duplicate"}
    k = kind_scores(found, [("o1", "c1"), ("o2", "c2"), ("o3", "c3")], "recolour")
    assert k == KindScores("recolour", true=3, found=2, labelled=1, claimed=2)
    assert (k.found_rate, k.labelled_rate, k.recall, k.precision) == pytest.approx((2 / 3, 1 / 2, 1 / 3, 1 / 2))
    assert k.as_dict()["labelled_rate"] == 0.5
    # Today's pipeline gives no kinds: found, never labelled.
    none = kind_scores({("o1", "c1"): None}, [("c1", "o1")], "recolour")
    assert (none.found, none.labelled, none.labelled_rate) == (1, 0, 0.0)
    empty = kind_scores({}, [], "recolour")
    assert (empty.found_rate, empty.labelled_rate, empty.recall, empty.precision) == (1.0, 1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------
# scripts/make_dupes_bench.py


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "make_dupes_bench.py"
    spec = importlib.util.spec_from_file_location("make_dupes_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _marked(size: tuple[int, int]) -> Image.Image:
    """Black with a white centre pixel block and a red top-left pixel."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1] = 255
    a[0, 0] = (255, 0, 0)
    return Image.fromarray(a)


def test_crops_keep_the_centre_and_the_aspect(bench):
    im = _marked((40, 100))  # portrait
    sq = bench.square_crop(im)
    assert sq.size == (40, 40)
    assert sq.getpixel((20, 20)) == (255, 255, 255)  # the centre stays the centre
    assert bench.square_crop(_marked((100, 40))).size == (40, 40)
    thumb = bench.fit(im, 150, 150)
    assert thumb.size == (150, 150)  # upscaled, as CMS do
    assert bench.fit(im, 33, 41).size == (33, 41)
    assert bench.resize_width(im, 1024).size == (1024, 2560)
    rng = random.Random(1)
    crop = bench.crop_area(im, 0.5, rng)
    assert abs(crop.size[0] * crop.size[1] / 4000 - 0.5) < 0.02
    portrait = bench.portrait_crop(_marked((348, 348)), rng)
    assert portrait.size == (232, 348)


def test_recolour_turns_the_object_and_keeps_white_white(bench):
    a = np.full((40, 40, 3), 255, np.uint8)
    a[10:30, 10:30] = (200, 30, 30)  # a red object on white
    a[0:3, 0:3] = (240, 240, 240)  # near-white: background too
    im = Image.fromarray(a)
    mask = bench.object_mask(a)
    assert mask[20, 20] and not mask[0, 0] and not mask[39, 39]
    out = np.asarray(bench.recolour(im, 120))
    assert (out[~mask] == a[~mask]).all()  # the background is untouched
    r, g, b = (int(x) for x in out[20, 20])
    assert g > r and g > b  # red turned by 120 degrees is green
    # No turn: the object only goes through HSV and back (rounding).
    assert np.abs(np.asarray(bench.recolour(im, 0), np.int16) - a).max() <= 2


def test_renditions_cover_every_variant(bench):
    rng = random.Random(0)
    im = images.photo(3, (120, 180))
    out = bench.renditions(im, rng)
    assert set(out) == {
        "thumb150", "square300", "crop330x413", "w768", "w1024", "webp", "q60",
        "crop50", "crop70", "crop90", "overlay", "gray", "tint", "adjust",
    }  # fmt: skip
    assert out["crop330x413"][0].size == (330, 413)
    assert out["gray"][0].mode == "L"
    assert out["webp"][1] == "WEBP" and out["q60"][2] == 60
    overlay = np.asarray(out["overlay"][0], np.int16)
    changed = (np.abs(overlay - np.asarray(im, np.int16)).max(axis=2) > 40).mean()
    assert 0.01 < changed < 0.15  # a small badge and watermark


def _write_shared(root: Path) -> None:
    """A tiny copy of the shared data layout, with generated pictures."""

    def save(path: Path, im: Image.Image) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        im.save(path, quality=90)

    rows = ["path,group_id,variant"]
    for k in range(3):
        rel = f"site/products/p{k}/P{k}.jpg"
        save(root / "jammy_shop" / rel, images.photo(k, (44, 72)))
        rows.append(f"{rel},p{k},original")
    (root / "jammy_shop" / "near_dup_groups.csv").write_text("\n".join(rows) + "\n")

    rows = ["path,split,fine_id,fine_label,coarse_id,coarse_label,group"]
    for c, (name, size) in enumerate((("Kiwi", (36, 36)), ("Leek", (36, 48)), ("Lime", (36, 36)))):
        for n in range(1, 13):
            rel = f"dataset/train/Fruit/{name}/{name}_{n:03d}.jpg"
            save(root / "grocery_train" / rel, images.photo(100 * c + n, size))
            rows.append(f"{rel},train,{c},{name},{c},{name},Fruit")
    (root / "grocery_train" / "labels.csv").write_text("\n".join(rows) + "\n")

    rows = ["filename,group_id"]
    for k in range(16):
        save(root / "ukbench_0000_0499" / "images" / f"ukbench{k:05d}.jpg", images.photo(500 + k, (32, 24)))
        rows.append(f"ukbench{k:05d}.jpg,{k // 4}")
    (root / "ukbench_0000_0499" / "groups.csv").write_text("\n".join(rows) + "\n")

    rows = ["path,fine_id,fine_label,coarse_id,coarse_label"]
    for k, colour in enumerate(((200, 30, 30), (30, 160, 40), (240, 200, 20))):
        a = np.full((40, 40, 3), 255, np.uint8)
        a[8:32, 12:28] = colour
        save(root / "grocery_iconic" / "images" / f"Item{k}_Iconic.jpg", Image.fromarray(a))
        rows.append(f"images/Item{k}_Iconic.jpg,{k},Item{k},{k},Item")
    (root / "grocery_iconic" / "labels.csv").write_text("\n".join(rows) + "\n")


def test_build_a_tiny_bench(bench, tmp_path):
    data, out = tmp_path / "data", tmp_path / "bench"
    _write_shared(data)
    assert bench.main([str(data), str(out), "--sources", "10", "--workers", "1"]) == 0
    with open(out / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == bench.COLUMNS
        rows = list(reader)
    assert all((out / r["path"]).is_file() for r in rows)
    assert {r["kind"] for r in rows} == {"duplicate", "recolour", "negative"}
    assert {r["split"] for r in rows} == {"fit", "report"}

    originals = [r for r in rows if r["variant"] == "original"]
    categories = Counter(r["group"].split("-")[0] for r in originals)
    assert set(categories) == {"shop", "gro", "ukb"}
    for o in originals:
        group = [r for r in rows if r["group"] == o["group"]]
        assert len(group) == 15 and {r["kind"] for r in group} == {"duplicate"}
        family = [r for r in rows if r["group"].split("~")[0] == o["group"]]
        assert {r["split"] for r in family} == {o["split"]}  # a source's negatives share its split
        negatives = [r for r in family if r["kind"] == "negative"]
        if o["group"].startswith("gro-"):
            assert sorted(r["variant"] for r in negatives) == ["burst", "burst"]
        if o["group"].startswith("ukb-"):
            assert [r["variant"] for r in negatives] == ["ukbench-view"] * 3
        assert len({r["group"] for r in negatives}) == len(negatives)  # each negative its own group
    iconic = [r for r in rows if r["group"].startswith("iconic~")]
    assert Counter(r["kind"] for r in iconic) == {"negative": 3, "recolour": 9}
    # The shop's portrait originals and the portrait crops are portrait.
    sizes = {r["group"]: Image.open(out / r["path"]).size for r in originals}
    assert all(h > w for g, (w, h) in sizes.items() if g.startswith("shop-"))

    # Deterministic for a seed; --force replaces a bench, a non-empty folder is refused.
    again = tmp_path / "again"
    assert bench.main([str(data), str(again), "--sources", "10", "--workers", "1"]) == 0
    assert (again / "labels.csv").read_bytes() == (out / "labels.csv").read_bytes()
    assert all((again / r["path"]).read_bytes() == (out / r["path"]).read_bytes() for r in rows)
    with pytest.raises(SystemExit):
        bench.main([str(data), str(out), "--sources", "10", "--workers", "1"])
    assert bench.main([str(data), str(out), "--sources", "10", "--workers", "1", "--seed", "2", "--force"]) == 0
