"""What a dupes run returns: the pairs each stage found and the groups made from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imgdb.store import ImageInfo


@dataclass
class Pair:
    a: str  # a < b
    b: str
    stage: str
    score: float  # similarity in [0, 1]
    distance: int | None = None  # Hamming bits for hash stages


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
    pairs: list[Pair]
    params: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
