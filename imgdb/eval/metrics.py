"""Scores of predictions against ground-truth labels.

* pairwise precision / recall / F1 of predicted same-label pairs or groups
  (:func:`pair_scores`, :func:`grouping_scores`), optionally with some items' same-label
  pairs scored apart (``apart``: e.g. recolours, which are neither duplicates nor errors);
* breakdowns of predicted pairs: recall of chosen true pairs (:func:`pair_recall`, per key
  :func:`recall_by`), wrong pairs within a subset (:func:`false_pairs`), and how often pairs
  of a kind carry that kind's label (:func:`kind_scores`); :func:`group_pairs` turns a
  grouping into its pairs;
* NMI and ARI of a clustering (:func:`nmi`, :func:`ari`, from scikit-learn);
* retrieval: the UKBench N-S score (:func:`ns_score`) and recall at k (:func:`recall_at_k`).

`labels` is always a mapping item -> label; items missing from it are ignored.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from numpy.typing import ArrayLike

K = TypeVar("K", bound=Hashable)
H = TypeVar("H", bound=Hashable)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def true_pairs(labels: Mapping[Any, Hashable], *, apart: Collection[Any] = ()) -> int:
    """The number of unordered pairs of items with the same label, neither of them in `apart`."""
    return sum(_pairs(n) for n in Counter(v for k, v in labels.items() if k not in apart).values())


@dataclass(frozen=True)
class PairScores:
    """Pairwise counts, and the precision / recall / F1 they give."""

    found: int  #: predicted pairs
    correct: int  #: predicted pairs whose two items have the same label
    true: int  #: pairs of labelled items with the same label

    @property
    def precision(self) -> float:
        """correct / found; 1.0 when nothing was predicted."""
        return self.correct / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        """correct / true; 1.0 when no two items share a label."""
        return self.correct / self.true if self.true else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 0.0 when both are 0."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self, digits: int | None = 4) -> dict[str, float]:
        """precision, recall, f1 (rounded to `digits` unless None), found, correct, true."""

        def rnd(x: float) -> float:
            return x if digits is None else round(x, digits)

        return {
            "precision": rnd(self.precision),
            "recall": rnd(self.recall),
            "f1": rnd(self.f1),
            "found": self.found,
            "correct": self.correct,
            "true": self.true,
        }


def pair_scores(pairs: Iterable[tuple[K, K]], labels: Mapping[K, Hashable], *, apart: Collection[K] = ()) -> PairScores:
    """Score predicted same-label pairs; give each unordered pair of distinct items once.

    Pairs with an item missing from `labels` are ignored. A same-label pair with an item in
    `apart` is scored apart: it counts neither as found nor as true; a pair of two labels
    with an item in `apart` still counts as found (and wrong).
    """
    found = correct = 0
    for a, b in pairs:
        if a in labels and b in labels:
            same = labels[a] == labels[b]
            if same and (a in apart or b in apart):
                continue
            found += 1
            correct += same
    return PairScores(found, correct, true_pairs(labels, apart=apart))


def grouping_scores(
    groups: Iterable[Iterable[K]], labels: Mapping[K, Hashable], *, apart: Collection[K] = ()
) -> PairScores:
    """Score a predicted grouping: every two labelled items of one group are a predicted pair.

    Groups must be disjoint; items in no group are singletons. Raises ValueError when an
    item is in two groups. `apart` as in :func:`pair_scores`.
    """
    found = correct = 0
    seen: set[K] = set()
    for group in groups:
        members = [x for x in group if x in labels]
        if seen.intersection(members) or len(set(members)) < len(members):
            raise ValueError("an item is in more than one group")
        seen.update(members)
        per_label = Counter(labels[x] for x in members)
        kept = Counter(labels[x] for x in members if x not in apart)
        skipped = sum(_pairs(n) - _pairs(kept[label]) for label, n in per_label.items())
        found += _pairs(len(members)) - skipped
        correct += sum(_pairs(n) for n in kept.values())
    return PairScores(found, correct, true_pairs(labels, apart=apart))


def group_pairs(groups: Iterable[Iterable[K]]) -> Iterator[tuple[K, K]]:
    """Every unordered pair of two distinct items of one group, once per group."""
    for group in groups:
        yield from itertools.combinations(dict.fromkeys(group), 2)


# ---------------------------------------------------------------------------------------
# breakdowns of predicted pairs


def _key(a: K, b: K) -> frozenset[K]:
    return frozenset((a, b))


@dataclass(frozen=True)
class Rate:
    """``hit`` of ``total``: e.g. the true pairs of one variant that were found."""

    hit: int
    total: int

    @property
    def value(self) -> float | None:
        """hit / total; None when there is nothing to count."""
        return self.hit / self.total if self.total else None

    def as_dict(self, digits: int | None = 4) -> dict[str, Any]:
        v = self.value
        return {"rate": v if v is None or digits is None else round(v, digits), "hit": self.hit, "total": self.total}


def pair_recall(found: Iterable[tuple[K, K]], wanted: Iterable[tuple[K, K]]) -> Rate:
    """How many of the `wanted` unordered pairs (each once) are among the `found` ones, in either order."""
    return recall_by(found, {0: wanted})[0]


def recall_by(found: Iterable[tuple[K, K]], wanted: Mapping[H, Iterable[tuple[K, K]]]) -> dict[H, Rate]:
    """:func:`pair_recall` for each key of `wanted` (e.g. one entry per variant)."""
    have = {_key(a, b) for a, b in found}
    out: dict[H, Rate] = {}
    for key, pairs in wanted.items():
        keys = {_key(a, b) for a, b in pairs}
        out[key] = Rate(len(keys & have), len(keys))
    return out


def false_pairs(
    found: Iterable[tuple[K, K]], labels: Mapping[K, Hashable], among: Collection[K] | None = None
) -> list[tuple[K, K]]:
    """The found pairs whose two items are labelled differently, both in `among` when given.

    Pairs with an unlabelled item are ignored; order is kept.
    """
    return [
        (a, b)
        for a, b in found
        if a in labels and b in labels and labels[a] != labels[b] and (among is None or (a in among and b in among))
    ]


@dataclass(frozen=True)
class KindScores:
    """How the pairs of one kind (e.g. ``recolour``) were found and labelled."""

    kind: str
    true: int  #: wanted pairs of the kind
    found: int  #: of them, found as a pair (labelled anything)
    labelled: int  #: of them, found and labelled with the kind
    claimed: int  #: found pairs labelled with the kind, wanted or not

    @property
    def found_rate(self) -> float:
        """found / true; 1.0 when nothing is wanted."""
        return self.found / self.true if self.true else 1.0

    @property
    def labelled_rate(self) -> float:
        """labelled / found: of the pairs found, the share labelled with the kind; 1.0 when none found."""
        return self.labelled / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        """labelled / true: found *and* labelled; 1.0 when nothing is wanted."""
        return self.labelled / self.true if self.true else 1.0

    @property
    def precision(self) -> float:
        """labelled / claimed: of the pairs given the kind, the share that are of it; 1.0 when none."""
        return self.labelled / self.claimed if self.claimed else 1.0

    def as_dict(self, digits: int | None = 4) -> dict[str, Any]:
        def rnd(x: float) -> float:
            return x if digits is None else round(x, digits)

        return {
            "kind": self.kind,
            "true": self.true,
            "found": self.found,
            "labelled": self.labelled,
            "claimed": self.claimed,
            "found_rate": rnd(self.found_rate),
            "labelled_rate": rnd(self.labelled_rate),
            "recall": rnd(self.recall),
            "precision": rnd(self.precision),
        }


def kind_scores(found: Mapping[tuple[K, K], str | None], wanted: Iterable[tuple[K, K]], kind: str) -> KindScores:
    """Score the labelling of the `wanted` pairs of `kind`.

    `found` maps each found pair (either order, each once) to the kind it was labelled
    with, or None when the pipeline gives none.
    """
    labelled_as = {_key(a, b): k for (a, b), k in found.items()}
    want = {_key(a, b) for a, b in wanted}
    hits = [labelled_as[p] for p in want if p in labelled_as]
    claimed = sum(1 for k in labelled_as.values() if k == kind)
    return KindScores(kind, len(want), len(hits), sum(1 for k in hits if k == kind), claimed)


def nmi(truth: ArrayLike, predicted: ArrayLike) -> float:
    """Normalised mutual information of two labellings of the same items (scikit-learn's)."""
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(truth, predicted))


def ari(truth: ArrayLike, predicted: ArrayLike) -> float:
    """Adjusted Rand index of two labellings of the same items (scikit-learn's)."""
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(truth, predicted))


def ns_score(results: Mapping[K, Sequence[K]], labels: Mapping[K, Hashable], top: int = 4) -> float:
    """UKBench N-S score: the mean, over queries, of how many of the first `top` results
    have the query's label (the query itself counts when it is among its results).

    `results` maps each query to its results, best first; with groups of 4 and `top` 4,
    4.0 is perfect. Returns 0.0 for no queries.
    """
    counts = [
        sum(1 for r in res[:top] if r in labels and labels[r] == labels[q]) for q, res in results.items() if q in labels
    ]
    return sum(counts) / len(counts) if counts else 0.0


def recall_at_k(results: Mapping[K, Sequence[K]], labels: Mapping[K, Hashable], k: int) -> float:
    """The mean, over queries, of the share of the query's other same-label items among its
    first `k` results (0 for a query whose label has no other item). 0.0 for no queries.
    """
    members: dict[Hashable, set[K]] = {}
    for item, label in labels.items():
        members.setdefault(label, set()).add(item)
    recalls = []
    for q, res in results.items():
        if q not in labels:
            continue
        others = members.get(labels[q], set()) - {q}
        recalls.append(len(others.intersection(res[:k])) / max(1, len(others)))
    return sum(recalls) / len(recalls) if recalls else 0.0
