"""Near-duplicate detection: staged pair finding, grouping without chaining, runs kept in the store.

A dupes run (``find``) looks at every image in the store, finds pairs with the chosen
stages, groups the pairs and saves pairs and groups as a new run (``latest_groups`` reads
it back). Stages, strongest first (``STAGES``; ``DEFAULT_METHODS`` leaves out ``dhash``):
``exact`` (same bytes at several sources: a one-image group listing every source),
``pixels`` (identical decoded pixels), ``phash``, ``square`` (the centre square's pHash)
and ``dhash`` (64-bit hashes within a Hamming distance) and ``embedding`` (cosine of the
model vectors).

Every pair but identical pixels is verified (``verify``: keypoints and a geometric fit,
then a block-by-block comparison and a colour check): a pair is kept as a ``duplicate``
(the same photograph: resized, re-encoded, cropped to at least about half, tinted, with a
small overlay) or a ``recolour`` (the same photograph with the product's colour changed),
with its evidence; anything else (another shot, another product in the same pose) is
dropped. Recolours are reported apart and join groups only when asked.

No chaining: two groups merge only if every cross pair is a kept pair (or verifies as one
now), so A~B and B~C never put A with C on their own. A pair rejected with ``reject`` is dropped from every later run and its two
images never share a group. Nothing on disk is deleted: each group only marks one member
to keep (``KEEP_POLICIES``).

Modules: ``hashes`` (per-image hashes, cached), ``pairs`` (pair search on arrays),
``stages`` (stage names, default bounds, candidate pairs), ``verify`` (the decision),
``grouping`` (no-chaining groups, keep policies), ``runs`` (``find``, saved runs, rejects) and
``results`` (the returned types).
"""

from imgdb.dedup.grouping import KEEP_POLICIES, group_without_chaining
from imgdb.dedup.hashes import compute_hashes
from imgdb.dedup.pairs import embedding_pairs, equal_pairs, hash_pairs
from imgdb.dedup.results import DupeResult, Group, Member, Pair
from imgdb.dedup.runs import find, latest_groups, load, reject, rejected_pairs, resolve_image
from imgdb.dedup.stages import (
    COSINE_MIN,
    DEFAULT_METHODS,
    DHASH_MAX_DISTANCE,
    PHASH_MAX_DISTANCE,
    SQUARE_MAX_DISTANCE,
    STAGES,
)
from imgdb.dedup.verify import DUPLICATE, RECOLOUR, Evidence
from imgdb.imaging.hashes import HASHER, ImageHashes, hash_bytes, hash_image

__all__ = [
    "COSINE_MIN",
    "DEFAULT_METHODS",
    "DHASH_MAX_DISTANCE",
    "DUPLICATE",
    "HASHER",
    "KEEP_POLICIES",
    "PHASH_MAX_DISTANCE",
    "RECOLOUR",
    "SQUARE_MAX_DISTANCE",
    "STAGES",
    "DupeResult",
    "Evidence",
    "Group",
    "ImageHashes",
    "Member",
    "Pair",
    "compute_hashes",
    "embedding_pairs",
    "equal_pairs",
    "find",
    "group_without_chaining",
    "hash_bytes",
    "hash_image",
    "hash_pairs",
    "latest_groups",
    "load",
    "reject",
    "rejected_pairs",
    "resolve_image",
]
