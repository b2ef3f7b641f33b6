"""Scores of predictions against ground-truth labels.

* pairwise precision / recall / F1 of predicted same-label pairs or groups
  (:func:`pair_scores`, :func:`grouping_scores`);
* NMI and ARI of a clustering (:func:`nmi`, :func:`ari`, from scikit-learn);
* retrieval: the UKBench N-S score (:func:`ns_score`) and recall at k (:func:`recall_at_k`).

`labels` is always a mapping item -> label; items missing from it are ignored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from numpy.typing import ArrayLike

K = TypeVar("K", bound=Hashable)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def true_pairs(labels: Mapping[Any, Hashable]) -> int:
    """The number of unordered pairs of items with the same label."""
    return sum(_pairs(n) for n in Counter(labels.values()).values())


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


def pair_scores(pairs: Iterable[tuple[K, K]], labels: Mapping[K, Hashable]) -> PairScores:
    """Score predicted same-label pairs; give each unordered pair of distinct items once.

    Pairs with an item missing from `labels` are ignored.
    """
    found = correct = 0
    for a, b in pairs:
        if a in labels and b in labels:
            found += 1
            correct += labels[a] == labels[b]
    return PairScores(found, correct, true_pairs(labels))


def grouping_scores(groups: Iterable[Iterable[K]], labels: Mapping[K, Hashable]) -> PairScores:
    """Score a predicted grouping: every two labelled items of one group are a predicted pair.

    Groups must be disjoint; items in no group are singletons. Raises ValueError when an
    item is in two groups.
    """
    found = correct = 0
    seen: set[K] = set()
    for group in groups:
        members = [x for x in group if x in labels]
        if seen.intersection(members) or len(set(members)) < len(members):
            raise ValueError("an item is in more than one group")
        seen.update(members)
        found += _pairs(len(members))
        correct += sum(_pairs(n) for n in Counter(labels[x] for x in members).values())
    return PairScores(found, correct, true_pairs(labels))


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
