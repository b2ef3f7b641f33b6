"""What a dupes run returns: the pairs each stage found and the groups made from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from imgdb.store import ImageInfo


@dataclass
class Pair:
    """Two images a run decided are the same photograph (``kind`` duplicate) or a recolour
    of it, with the evidence: which stages proposed the pair and what verification saw."""

    a: str  # a < b
    b: str
    stage: str  # the strongest stage that found it ("verified": found while grouping)
    score: float  # similarity in [0, 1] at that stage
    distance: int | None = None  # Hamming bits for hash stages
    kind: str = "duplicate"  # duplicate | recolour
    stages: list[str] = field(default_factory=list)  # every stage that found it; then "sure": not verified
    phash_distance: int | None = None
    square_distance: int | None = None
    cosine: float | None = None
    inliers: int | None = None  # keypoint matches that agree with one transform
    matched_area: float | None = None  # share of the smaller image the inliers span
    changed: float | None = None  # share of compared blocks whose content differs
    recoloured: float | None = None  # share of the overlap whose hue turned
    verified: str | None = None  # how verification aligned them: keypoints | frame | None
    container: str | None = None  # the image that shows all the other does (the other is a crop of it)


@dataclass
class Member:
    image_id: str
    width: int
    height: int
    bytes: int
    format: str
    added_at: datetime | None
    sources: list[str]  # every place it was found, first seen first
    stage: str | None = None  # how this member matches the kept one; None for the kept one
    score: float | None = None
    kind: str | None = None  # duplicate | recolour, to the kept one; None for the kept one
    source: str | None = None  # the representative source every command shows

    @classmethod
    def from_info(cls, info: ImageInfo) -> Member:
        """A member as ``Store.describe(..., all_sources=True)`` describes the image."""
        return cls(
            info.id,
            info.width,
            info.height,
            info.bytes,
            info.format,
            info.added_at,
            list(info.sources),
            source=info.source,
        )

    @classmethod
    def unknown(cls, image_id: str) -> Member:
        """A member whose image row is gone: still shown by its id."""
        return cls(image_id, 0, 0, 0, "", None, [])

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class Group:
    group_id: int
    stage: str  # the weakest stage linking a member to the kept image ("exact": one image, many sources)
    best_score: float  # the best member-to-kept score at that stage
    keep_id: str
    members: list[Member]  # the kept member first

    @property
    def size(self) -> int:
        return len(self.members)

    @property
    def ids(self) -> list[str]:
        return [m.image_id for m in self.members]

    @property
    def copies(self) -> int:
        """Files / URLs in the group (an image found at two paths counts twice)."""
        return sum(max(1, len(m.sources)) for m in self.members)


@dataclass
class DupeResult:
    run_id: int
    groups: list[Group]
    pairs: list[Pair]  # every kept pair, duplicates and recolours, with evidence
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    reused: bool = False  # nothing changed since this saved run, so it was shown again

    @property
    def recolours(self) -> list[Pair]:
        return [p for p in self.pairs if p.kind == "recolour"]

    def pair(self, a: str, b: str) -> Pair | None:
        """The kept pair of two images (either order) with its evidence; None if not paired."""
        return self._by_ids.get((min(a, b), max(a, b)))

    @cached_property
    def _by_ids(self) -> dict[tuple[str, str], Pair]:
        return {(p.a, p.b): p for p in self.pairs}


def evidence_line(pair: Pair | None, kind: str) -> str:
    """A pair's evidence in one line, for tables and galleries."""
    if pair is None:
        return kind
    parts = [kind, "+".join(pair.stages) or pair.stage]
    if pair.phash_distance is not None:
        parts.append(f"pHash {pair.phash_distance}")
    if pair.square_distance is not None:
        parts.append(f"square {pair.square_distance}")
    if pair.cosine is not None:
        parts.append(f"cos {pair.cosine:.3f}")
    if pair.inliers:
        parts.append(f"{pair.inliers} inliers over {pair.matched_area:.0%}")
    if pair.changed is not None and pair.verified:
        parts.append(f"{pair.changed:.0%} changed")
    return ", ".join(parts)
