"""A dupes run: find pairs with the chosen stages, group them, save the run; read saved runs back.

``find`` is a sequence of named steps: check the options, run the hash stages, run the
embedding stage, combine the stages' pairs (dropping rejected ones, strongest first),
group them without chaining, annotate each group's members, save. Rejected pairs
(``reject``) are remembered in the store and dropped from every later run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.dedup.grouping import KEEP_POLICIES, LooseBounds, group_without_chaining, pick_keep
from imgdb.dedup.hashes import HASHER, ImageHashes, cached_count, compute_hashes
from imgdb.dedup.pairs import embedding_pairs, equal_pairs, hash_pairs
from imgdb.dedup.results import DupeResult, Group, Member, Pair
from imgdb.dedup.stages import (
    COSINE_MIN,
    DEFAULT_METHODS,
    DHASH_MAX_DISTANCE,
    HASH_STAGES,
    PHASH_MAX_DISTANCE,
    RANK,
    STAGES,
    Candidates,
)
from imgdb.errors import UsageError
from imgdb.progress import Progress
from imgdb.store import ImageInfo, Store, utcnow

# ---------------------------------------------------------------------------------------
# image references and rejected pairs


def resolve_image(store: Store, ref: str) -> str:
    """An image id from a full id, a unique id prefix (>= 6 hex chars) or a source path/URL."""
    ref = ref.strip()
    rows = store.query("SELECT DISTINCT image_id FROM sources WHERE source IN (?, ?)", [ref, str(Path(ref).resolve())])
    if len(rows) == 1:
        return rows[0][0]
    image_id = store.image_by_prefix(ref)
    if image_id is not None:
        return image_id
    raise UsageError(f"no image {ref!r} in {store.path} (give an image id, an id prefix or a source path/URL)")


def reject(store: Store, a: str, b: str) -> tuple[str, str]:
    """Remember that ``a`` and ``b`` are not duplicates; every later run keeps them apart.

    ``a``/``b`` may be ids, unique id prefixes or source paths/URLs. Returns the canonical
    (smaller id, larger id) pair that was stored.
    """
    store.require_write()
    ia, ib = resolve_image(store, a), resolve_image(store, b)
    if ia == ib:
        raise UsageError("an image cannot be rejected as a duplicate of itself")
    lo, hi = min(ia, ib), max(ia, ib)
    store.query(
        "INSERT INTO dupe_rejects (a, b, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [lo, hi, utcnow()]
    )
    return lo, hi


def rejected_pairs(store: Store) -> set[tuple[str, str]]:
    """Every rejected pair, as (smaller id, larger id)."""
    return {(a, b) for a, b in store.query("SELECT a, b FROM dupe_rejects")}


# ---------------------------------------------------------------------------------------
# the run


def find(
    store: Store,
    *,
    model_key: str | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    phash_max_distance: int = PHASH_MAX_DISTANCE,
    dhash_max_distance: int = DHASH_MAX_DISTANCE,
    cosine_min: float = COSINE_MIN,
    keep: str = "largest",
    progress: Progress | None = None,
) -> DupeResult:
    """Find duplicate groups with the chosen stages, save them as a new run, return them.

    ``methods``: which of ``STAGES`` run. ``model_key``: whose vectors the embedding stage
    uses (default: the model most images were ingested with). ``keep``: which member each
    group marks to keep, one of ``KEEP_POLICIES`` (see ``grouping.pick_keep``). Pairs
    rejected with ``reject`` are dropped. Nothing on disk is deleted: groups only mark a
    member to keep. The store must be writable (``ReadOnlyStore`` otherwise).
    """
    store.require_write()
    methods = _check_options(methods, keep, phash_max_distance, dhash_max_distance, cosine_min)
    started = time.perf_counter()
    run = _Run(sorted(store.image_ids()))
    loose = LooseBounds(run.ids)
    found: dict[str, Candidates] = {}
    if any(m in methods for m in HASH_STAGES):
        loose.hashes = _hashes(store, run, progress)
        found.update(_hash_stages(run, loose.hashes, methods, phash_max_distance, dhash_max_distance))
    if "embedding" in methods:
        with run.timed("embedding"):
            key = model_key or store.main_model()
            if key is None:
                run.stats["embedding"] = "no model in the store"
            else:
                model_key = key
                loose.vec_rows, loose.X, found["embedding"] = _embedding_stage(store, run, key, cosine_min)
    with run.timed("grouping"):
        candidates, loose.rejected = _combine(store, run, found)
        grouped = group_without_chaining(candidates.edges(), loose.compatible)
    groups = _groups(store, run, grouped, candidates, loose, keep, exact="exact" in methods)
    pairs = candidates.pairs(run.ids)
    run.stats["groups"] = len(groups)
    run.stats["images"] = len(run.ids)
    run.timings["total"] = time.perf_counter() - started
    params = {
        "methods": list(methods),
        "phash_max_distance": phash_max_distance,
        "dhash_max_distance": dhash_max_distance,
        "cosine_min": cosine_min,
        "keep": keep,
        "model_key": model_key if "embedding" in methods else None,
        "hasher": HASHER,
    }
    run_id = _save_run(store, params, run.stats, pairs, groups)
    return DupeResult(run_id, groups, pairs, params, run.stats)


@dataclass
class _Run:
    """What the steps of one run share: the store's image ids (sorted) and the stats they fill in."""

    ids: list[str]
    index: dict[str, int] = field(init=False)  # id -> its position in ids
    timings: dict[str, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(init=False)  # saved with the run

    def __post_init__(self) -> None:
        self.index = {image_id: k for k, image_id in enumerate(self.ids)}
        self.stats = {"timings": self.timings}

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[step] = time.perf_counter() - t0


def _check_options(
    methods: Sequence[str], keep: str, phash_max_distance: int, dhash_max_distance: int, cosine_min: float
) -> tuple[str, ...]:
    """The methods without repeats; a UsageError for anything out of range."""
    methods = tuple(dict.fromkeys(methods))
    bad = [m for m in methods if m not in STAGES]
    if bad:
        raise UsageError(f"unknown dupes method {bad[0]!r} (choose from {', '.join(STAGES)})")
    if keep not in KEEP_POLICIES:
        raise UsageError(f"unknown keep policy {keep!r} (choose from {', '.join(KEEP_POLICIES)})")
    for name, t in (("phash", phash_max_distance), ("dhash", dhash_max_distance)):
        if name in methods and not 0 <= t <= 32:
            raise UsageError(f"{name} distance must be between 0 and 32 bits")
    if "embedding" in methods and not 0 < cosine_min <= 1:
        raise UsageError("cosine threshold must be in (0, 1]")
    return methods


def _hashes(store: Store, run: _Run, progress: Progress | None) -> dict[str, ImageHashes]:
    """Every image's hashes, computing (and, when writable, caching) the missing ones."""
    with run.timed("hashes"):
        before = cached_count(store)
        hashes = compute_hashes(store, run.ids, progress=progress)
    run.stats["hashed_now"] = max(0, cached_count(store) - before) if store.write else None
    run.stats["undecodable"] = sum(1 for i in run.ids if hashes[i].error)
    return hashes


def _hash_stages(
    run: _Run, hashes: dict[str, ImageHashes], methods: Sequence[str], phash_max_distance: int, dhash_max_distance: int
) -> dict[str, Candidates]:
    """The pairs of the pixels, phash and dhash stages that are in ``methods``."""
    found: dict[str, Candidates] = {}
    if "pixels" in methods:
        with run.timed("pixels"):
            a, b = equal_pairs([hashes[i].pixel_sha256 for i in run.ids])
            found["pixels"] = Candidates.found("pixels", a, b, np.ones(len(a), np.float32))
    for stage, t in (("phash", phash_max_distance), ("dhash", dhash_max_distance)):
        if stage not in methods:
            continue
        with run.timed(stage):
            # Images without that hash (undecodable) take no part; ``have`` maps back to ids.
            have = np.asarray([k for k, i in enumerate(run.ids) if getattr(hashes[i], stage) is not None], np.int64)
            values = np.asarray([getattr(hashes[run.ids[k]], stage) for k in have], dtype=np.uint64)
            a, b, d = hash_pairs(values, t)
            found[stage] = Candidates.found(stage, have[a], have[b], (1 - d / 64).astype(np.float32), d)
    return found


def _embedding_stage(
    store: Store, run: _Run, model_key: str, cosine_min: float
) -> tuple[dict[int, int], np.ndarray, Candidates]:
    """(image index -> row of X, the model's vectors X, the embedding stage's pairs)."""
    vec_ids, X = load_vectors(store, model_key, run.index)
    run.stats["without_vectors"] = len(run.ids) - len(vec_ids)
    search: dict[str, Any] = {}
    a, b, s = embedding_pairs(X, cosine_min, stats=search)
    run.stats["embedding_search"] = search
    vec_rows = {int(i): row for row, i in enumerate(vec_ids)}
    return vec_rows, X, Candidates.found("embedding", vec_ids[a], vec_ids[b], np.minimum(s, 1.0))


def load_vectors(store: Store, model_key: str, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``ids``, float32 matrix) of the images that have a vector for the model."""
    vid, X = store.all_vectors(model_key)  # sorted by id, as ``index`` is
    keep = [row for row, v in enumerate(vid) if v in index]
    return np.asarray([index[vid[row]] for row in keep], dtype=np.int64), X[keep]


def _combine(store: Store, run: _Run, found: dict[str, Candidates]) -> tuple[Candidates, set[tuple[int, int]]]:
    """Every stage's pairs without the rejected ones, strongest first; and the rejected index pairs."""
    n, index = len(run.ids), run.index
    rejected = {
        (min(index[a], index[b]), max(index[a], index[b]))
        for a, b in rejected_pairs(store)
        if a in index and b in index
    }
    keys = np.asarray([i * n + j for i, j in rejected], dtype=np.int64)
    run.stats["pairs"] = {}
    run.stats["rejected_dropped"] = 0
    kept = []
    for stage, candidates in found.items():
        ok = candidates.drop(keys, n)
        run.stats["rejected_dropped"] += len(candidates) - len(ok)
        run.stats["pairs"][stage] = len(ok)
        kept.append(ok)
    return Candidates.concat(kept).ordered(), rejected


def _groups(
    store: Store,
    run: _Run,
    grouped: list[list[int]],
    candidates: Candidates,
    loose: LooseBounds,
    keep: str,
    *,
    exact: bool,
) -> list[Group]:
    """The near-duplicate groups, plus (``exact``) one-image groups of images with several sources."""
    in_group = {i for g in grouped for i in g}
    links = _best_links(candidates, in_group)
    exact_ids = _exact_images(store) if exact else []
    run.stats["exact_images"] = len(exact_ids)
    grouped_ids = {run.ids[i] for i in in_group}
    info = store.describe(sorted(grouped_ids | set(exact_ids)), all_sources=True)
    groups = [_near_group(run, [info[run.ids[i]] for i in g], keep, links, loose) for g in grouped]
    groups += [Group(0, "exact", 1.0, i, [Member.from_info(info[i])]) for i in exact_ids if i not in grouped_ids]
    groups.sort(key=lambda g: (RANK[g.stage], -g.size, -g.copies, -g.best_score, g.keep_id))
    for k, g in enumerate(groups, 1):
        g.group_id = k
    return groups


def _best_links(candidates: Candidates, in_group: set[int]) -> dict[tuple[int, int], tuple[str, float]]:
    """(stage, score) of the strongest found pair for every pair of grouped images (candidates are ordered)."""
    best: dict[tuple[int, int], tuple[str, float]] = {}
    for a, b, r, s in zip(
        candidates.a.tolist(), candidates.b.tolist(), candidates.rank.tolist(), candidates.score.tolist()
    ):
        if a in in_group and (a, b) not in best:
            best[(a, b)] = (STAGES[r], s)
    return best


def _exact_images(store: Store) -> list[str]:
    """Images stored at several distinct sources (the same bytes at two paths / URLs)."""
    rows = store.query(
        "SELECT image_id FROM sources GROUP BY image_id HAVING count(DISTINCT source) > 1 ORDER BY image_id"
    )
    return [r[0] for r in rows]


def _near_group(
    run: _Run,
    infos: list[ImageInfo],
    keep: str,
    links: dict[tuple[int, int], tuple[str, float]],
    loose: LooseBounds,
) -> Group:
    """One group: the kept member first, then the others by how strongly they match it.

    The group's stage is the weakest member-to-kept stage, its score the best score at that stage.
    """
    members = [Member.from_info(info) for info in infos]
    kept = pick_keep(members, keep)
    k = run.index[kept.image_id]
    others: list[tuple[int, float, Member]] = []  # (stage rank, score, member)
    for m in members:
        if m is kept:
            continue
        i = run.index[m.image_id]
        stage, score = links.get((min(i, k), max(i, k))) or loose.link(i, k)
        m.stage, m.score = stage, float(score)
        others.append((RANK[stage], m.score, m))
    others.sort(key=lambda o: (o[0], -o[1], o[2].image_id))
    weakest = max(r for r, _s, _m in others)
    best_score = max(s for r, s, _m in others if r == weakest)
    return Group(0, STAGES[weakest], float(best_score), kept.image_id, [kept, *(m for _r, _s, m in others)])


# ---------------------------------------------------------------------------------------
# saved runs


def _save_run(
    store: Store, params: dict[str, Any], stats: dict[str, Any], pairs: list[Pair], groups: list[Group]
) -> int:
    """One transaction: a Ctrl-C never leaves a half-saved run as the latest."""
    with store.transaction():
        return _insert_run(store, params, stats, pairs, groups)


def _insert_run(
    store: Store, params: dict[str, Any], stats: dict[str, Any], pairs: list[Pair], groups: list[Group]
) -> int:
    run_id = int(
        store.query(
            "INSERT INTO dupe_runs (created_at, params, stats) VALUES (?, ?, ?) RETURNING id",
            [utcnow(), json.dumps(params), json.dumps(stats, default=str)],
        )[0][0]
    )
    step = 200_000  # bounded parameter lists for very large runs
    for s in range(0, len(pairs), step):
        part = pairs[s : s + step]
        store.query(
            "INSERT INTO dupe_pairs (run_id, a, b, stage, score, distance) "
            "SELECT ?, unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
            "unnest(?::DOUBLE[]), unnest(?::INTEGER[])",
            [
                run_id,
                [p.a for p in part],
                [p.b for p in part],
                [p.stage for p in part],
                [p.score for p in part],
                [p.distance for p in part],
            ],
        )
    rows = [
        (
            g.group_id,
            m.image_id,
            m.image_id == g.keep_id,
            g.stage if m.image_id == g.keep_id else m.stage,
            g.best_score if m.image_id == g.keep_id else m.score,
        )
        for g in groups
        for m in g.members
    ]
    for s in range(0, len(rows), step):
        chunk = rows[s : s + step]
        store.query(
            "INSERT INTO dupe_groups (run_id, group_id, image_id, is_keep, stage, score) "
            "SELECT ?, unnest(?::INTEGER[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]), "
            "unnest(?::VARCHAR[]), unnest(?::DOUBLE[])",
            [run_id, *[list(c) for c in zip(*chunk)]],
        )
    return run_id


def latest_groups(store: Store, run_id: int | None = None) -> list[Group]:
    """The groups of the latest run (or of ``run_id``), as saved, with current sources."""
    if run_id is None:
        run_id = store.latest_run("dupes")
        if run_id is None:
            return []
    rows = store.query(
        "SELECT group_id, image_id, is_keep, stage, score FROM dupe_groups WHERE run_id = ? "
        "ORDER BY group_id, is_keep DESC, score DESC, image_id",
        [run_id],
    )
    info = store.describe(sorted({r[1] for r in rows}), all_sources=True)
    groups: dict[int, Group] = {}
    for gid, image_id, is_keep, stage, score in rows:
        m = Member.from_info(info[image_id]) if image_id in info else Member.unknown(image_id)
        if is_keep:
            groups[gid] = Group(gid, stage, float(score), image_id, [m])
        else:
            m.stage, m.score = stage, float(score)
            groups[gid].members.append(m)
    for g in groups.values():
        g.members[1:] = sorted(g.members[1:], key=lambda m: (RANK.get(m.stage or "", 9), -(m.score or 0.0), m.image_id))
    return [groups[k] for k in sorted(groups)]
