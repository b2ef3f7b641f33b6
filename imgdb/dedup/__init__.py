"""Near-duplicate detection: staged pair finding, grouping without chaining, runs kept in the store.

A dupes run (``find``) looks at every image in the store, finds pairs with the chosen
stages, groups the pairs and saves pairs and groups as a new run (``latest_groups`` reads
it back). Stages, strongest first (``STAGES``; ``DEFAULT_METHODS`` leaves out ``dhash``):
``exact`` (same bytes at several sources: a one-image group listing every source),
``pixels`` (identical decoded pixels), ``phash`` and ``dhash`` (64-bit hashes within a
Hamming distance) and ``embedding`` (cosine of the model vectors). Every pair is recorded
once per stage that found it, with a score in [0, 1].

No chaining: two groups merge only if every cross pair is a found pair or at least
loosely alike (``LOOSE_PHASH``, ``LOOSE_COSINE``), so A~B and B~C never put A with C on
their own. A pair rejected with ``reject`` is dropped from every later run and its two
images never share a group. Nothing on disk is deleted: each group only marks one member
to keep (``KEEP_POLICIES``).

Modules: ``hashes`` (per-image hashes, cached), ``pairs`` (pair search on arrays),
``stages`` (stage names, default thresholds, candidate pairs), ``grouping`` (no-chaining
groups, loose bounds, keep policies), ``runs`` (``find``, saved runs, rejects) and
``results`` (the returned types).
"""

from imgdb.dedup.grouping import KEEP_POLICIES, LOOSE_COSINE, LOOSE_PHASH, group_without_chaining
from imgdb.dedup.hashes import HASHER, ImageHashes, compute_hashes, hash_bytes, hash_image
from imgdb.dedup.pairs import embedding_pairs, equal_pairs, hash_pairs
from imgdb.dedup.results import DupeResult, Group, Member, Pair
from imgdb.dedup.runs import find, latest_groups, reject, rejected_pairs, resolve_image
from imgdb.dedup.stages import COSINE_MIN, DEFAULT_METHODS, DHASH_MAX_DISTANCE, PHASH_MAX_DISTANCE, STAGES

__all__ = [
    "COSINE_MIN",
    "DEFAULT_METHODS",
    "DHASH_MAX_DISTANCE",
    "HASHER",
    "KEEP_POLICIES",
    "LOOSE_COSINE",
    "LOOSE_PHASH",
    "PHASH_MAX_DISTANCE",
    "STAGES",
    "DupeResult",
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
    "reject",
    "rejected_pairs",
    "resolve_image",
]
