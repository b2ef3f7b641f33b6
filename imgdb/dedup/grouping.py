"""Grouping pairs without chaining, and which member of a group is marked to keep.

Grouping is complete linkage over the pairs, taken strongest first: two groups merge only
if *every* cross pair is a kept pair or passes ``compatible`` (in a dupes run: verified as
the same photograph now), so A~B and B~C never put A with C unless A~C too (no chaining).
A pair the user rejected never passes, so its two images never share a group.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

from imgdb.dedup.results import Member

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
