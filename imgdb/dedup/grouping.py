"""Grouping pairs without chaining, and which member of a group is marked to keep.

Grouping is complete linkage over the pairs, taken strongest first: two groups merge only
if *every* cross pair is a found pair or passes the looser test of ``LooseBounds``, so A~B
and B~C never put A with C unless A and C are at least loosely alike (no chaining). A pair
the user rejected never passes the loose test, so its two images never share a group.

The price of no chaining: a member linked to the original by one stage only, next to a
member linked by another stage only, joins only if the two members are loosely alike;
otherwise it forms a group of its own or stays out.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from imgdb.dedup.hashes import ImageHashes, hamming
from imgdb.dedup.results import Member

#: Looser bounds a member must meet with every *other* member of its group (it must meet
#: the strict ones with at least one), so that, e.g., a crop found by the embedding and a
#: thumbnail found by pHash can both join their original although they are not strict
#: duplicates of each other. Calibrated: see docs/evaluation.md.
LOOSE_PHASH = 12
LOOSE_COSINE = 0.80

#: Which member a group marks to keep (``pick_keep``).
KEEP_POLICIES = ("largest", "smallest", "earliest", "latest")

T = TypeVar("T", bound=Hashable)


def group_without_chaining(
    edges: Iterable[tuple[T, T]], compatible: Callable[[T, T], bool] | None = None
) -> list[list[T]]:
    """Complete-linkage groups from pairs given strongest first.

    Each pair may merge the two groups its ends are in only if every cross pair of the two
    groups is itself one of ``edges`` or passes ``compatible`` (a looser "still looks like
    the same picture" test); so A~B and B~C never group A with C unless A and C are also
    at least compatible. Groups of two or more, each in order of first appearance, are
    returned in order of creation.
    """
    edge_list = [(a, b) for a, b in edges if a != b]
    adj: dict[T, set[T]] = {}
    for a, b in edge_list:
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)

    def linked(x: T, y: T) -> bool:
        return y in adj[x] or (compatible is not None and compatible(x, y))

    group_of: dict[T, int] = {}
    members: dict[int, list[T]] = {}
    fresh = itertools.count()  # group ids in order of creation, never reused
    for a, b in edge_list:
        for x in (a, b):
            if x not in group_of:
                group_of[x] = g = next(fresh)
                members[g] = [x]
        ga, gb = group_of[a], group_of[b]
        if ga == gb:
            continue
        # Fold the smaller group into the larger (the older one on a tie): cheaper checks.
        big, small = (ga, gb) if (len(members[ga]), -ga) >= (len(members[gb]), -gb) else (gb, ga)
        if all(linked(x, y) for x in members[big] for y in members[small]):
            for x in members[small]:
                group_of[x] = big
            members[big].extend(members.pop(small))
    order = sorted(members.items(), key=lambda kv: kv[0])
    return [m for _g, m in order if len(m) > 1]


@dataclass
class LooseBounds:
    """The loose test for completing a group: pHash within ``LOOSE_PHASH`` or cosine >= ``LOOSE_COSINE``.

    Images are indices into ``ids``; ``hashes`` is None when no hash stage ran, and
    ``vec_rows`` maps an index to its row of ``X`` (images without a vector are absent).
    ``rejected`` holds (smaller, larger) index pairs that never pass.
    """

    ids: list[str]
    hashes: dict[str, ImageHashes] | None = None
    vec_rows: dict[int, int] = field(default_factory=dict)
    X: np.ndarray | None = None
    rejected: set[tuple[int, int]] = field(default_factory=set)

    def compatible(self, i: int, j: int) -> bool:
        if (min(i, j), max(i, j)) in self.rejected:
            return False
        bits = self._phash_bits(i, j)
        if bits is not None and bits <= LOOSE_PHASH:
            return True
        if self.X is not None and i in self.vec_rows and j in self.vec_rows:
            return self._cosine(i, j) >= LOOSE_COSINE
        return False

    def link(self, i: int, j: int) -> tuple[str, float]:
        """(stage, score) of a member that joined through the loose test, measured to the kept one."""
        bits = self._phash_bits(i, j)
        if bits is not None and bits <= LOOSE_PHASH:
            return "phash", 1 - bits / 64
        return "embedding", self._cosine(i, j)

    def _phash_bits(self, i: int, j: int) -> int | None:
        if self.hashes is None:
            return None
        a, b = self.hashes[self.ids[i]].phash, self.hashes[self.ids[j]].phash
        return hamming(a, b) if a is not None and b is not None else None

    def _cosine(self, i: int, j: int) -> float:
        assert self.X is not None
        return float(self.X[self.vec_rows[i]] @ self.X[self.vec_rows[j]])


def pick_keep(members: list[Member], policy: str) -> Member:
    """The member to keep under one of ``KEEP_POLICIES``.

    ``largest``: most pixels, then most bytes; ``smallest``: fewest pixels, then fewest
    bytes (ties: the earliest, then the smaller id). ``earliest`` / ``latest``: by when the
    store first saw it (ties: the most pixels, then the smaller id).
    """

    def when(m: Member) -> float:
        return m.added_at.timestamp() if m.added_at is not None else 0.0

    keys: dict[str, Callable[[Member], tuple[Any, ...]]] = {
        "largest": lambda m: (-m.pixels, -m.bytes, when(m), m.image_id),
        "smallest": lambda m: (m.pixels, m.bytes, when(m), m.image_id),
        "earliest": lambda m: (when(m), -m.pixels, m.image_id),
        "latest": lambda m: (-when(m), -m.pixels, m.image_id),
    }
    return min(members, key=keys[policy])
