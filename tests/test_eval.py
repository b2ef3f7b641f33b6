"""imgdb.eval: reading label CSVs, and the metrics on hand-computed cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgdb.eval.labels import read_labels
from imgdb.eval.metrics import (
    PairScores,
    ari,
    grouping_scores,
    nmi,
    ns_score,
    pair_scores,
    recall_at_k,
    true_pairs,
)


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
