"""A dupes run: find pairs with the chosen stages, group them, save the run; read saved runs back.

``find`` is a sequence of named steps: check the options, run the hash stages, run the
embedding stage, combine the stages' pairs (dropping rejected ones, strongest first),
group them without chaining, annotate each group's members, save. Rejected pairs
(``reject``) are remembered in the store and dropped from every later run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imgdb.dedup.grouping import KEEP_POLICIES, group_without_chaining, pick_keep
from imgdb.dedup.hashes import cached_count, compute_hashes
from imgdb.dedup.pairs import embedding_pairs, equal_pairs, hash_pairs
from imgdb.dedup.results import DupeResult, Group, Member, Pair
from imgdb.dedup.screen import SCREEN, Screen
from imgdb.dedup.stages import (
    CERTAIN,
    COSINE_MIN,
    DEFAULT_METHODS,
    DHASH_MAX_DISTANCE,
    HASH_STAGES,
    PHASH_MAX_DISTANCE,
    RANK,
    SQUARE_MAX_DISTANCE,
    STAGES,
    STRICT_COSINE,
    STRICT_PHASH,
    Candidates,
)
from imgdb.dedup.verify import (
    MIN_OVERLAP,
    SIDE,
    SURE,
    SURE_COSINE,
    SURE_PHASH,
    VERIFIER,
    Evidence,
    Verifier,
    sure,
)
from imgdb.errors import DecodeError, UsageError
from imgdb.imaging.hashes import HASHER, ImageHashes, hamming
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
    square_max_distance: int = SQUARE_MAX_DISTANCE,
    dhash_max_distance: int = DHASH_MAX_DISTANCE,
    cosine_min: float = COSINE_MIN,
    keep: str = "largest",
    recolours: bool = False,
    again: bool = False,
    progress: Progress | None = None,
) -> DupeResult:
    """Find duplicate groups with the chosen stages, save them as a new run, return them.

    ``methods``: which of ``STAGES`` propose pairs; every proposed pair but identical
    pixels is verified (``verify``) and kept only as a ``duplicate`` or a ``recolour``.
    Recolours are reported apart and join groups only with ``recolours=True``.
    ``model_key``: whose vectors the embedding stage uses (default: the model most
    images were ingested with). ``keep``: which member each group marks to keep, one of
    ``KEEP_POLICIES``. Pairs rejected with ``reject`` are dropped. When nothing changed
    since the latest run (images, rejects, options), that run is returned as it was saved
    (``reused``) unless ``again``. Nothing on disk is deleted. The store must be writable.
    """
    store.require_write()
    methods = _check_options(methods, keep, phash_max_distance, square_max_distance, dhash_max_distance, cosine_min)
    started = time.perf_counter()
    run = _Run(sorted(store.image_ids()))
    params: dict[str, Any] = {
        "methods": list(methods),
        "phash_max_distance": phash_max_distance,
        "square_max_distance": square_max_distance,
        "dhash_max_distance": dhash_max_distance,
        "cosine_min": cosine_min,
        "keep": keep,
        "recolours": recolours,
        "model_key": (model_key or store.main_model()) if "embedding" in methods else None,
        "hasher": HASHER,
        "verifier": VERIFIER,
        "sure_zone": [SURE_PHASH, SURE_COSINE],
        "screen": SCREEN,
    }
    rejects = rejected_pairs(store)
    params["fingerprint"] = _fingerprint(run.ids, rejects, params)
    if not again:
        previous = _unchanged_run(store, params["fingerprint"])
        if previous is not None:
            return previous
    hashes: dict[str, ImageHashes] = {}
    found: dict[str, Candidates] = {}
    if any(m in methods for m in (*HASH_STAGES, "embedding")):  # the screen reads the hashes' thumbnails
        hashes = _hashes(store, run, progress)
        found.update(_hash_stages(run, hashes, methods, phash_max_distance, square_max_distance, dhash_max_distance))
    vectors = _Vectors({}, None)
    if "embedding" in methods and params["model_key"]:
        with run.timed("embedding"):
            vectors, found["embedding"] = _embedding_stage(store, run, params["model_key"], cosine_min)
    with run.timed("candidates"):
        candidates, rejected = _combine(run, found, rejects)
    verifier = Verifier(_loader(store), phash=_phash_distance(hashes))
    with run.timed("verify"):
        pairs = _decide(run, candidates, verifier, hashes, vectors)
    with run.timed("grouping"):
        allowed = ("duplicate", "recolour") if recolours else ("duplicate",)
        edges = [(run.index[p.a], run.index[p.b]) for p in pairs if p.kind in allowed]
        judge = _Judge(run, verifier, hashes, vectors, rejected, allowed, {(p.a, p.b): p for p in pairs})
        grouped = group_without_chaining(edges, judge.compatible)
        groups = _groups(store, run, grouped, judge, keep, exact="exact" in methods)
    pairs = sorted({(p.a, p.b): p for p in pairs + judge.extra}.values(), key=lambda p: (p.a, p.b))
    run.stats["verified_pairs"] = verifier.verified
    run.stats["verify_seconds"] = round(verifier.seconds, 3)
    run.stats["verify_ms_median"] = (
        round(1000 * float(np.median(verifier.pair_seconds)), 2) if verifier.verified else None
    )
    run.stats["prepared_images"] = verifier.prepared
    run.stats["prepare_seconds"] = round(verifier.prepare_seconds, 3)
    run.stats["kept_pairs"] = {kind: sum(p.kind == kind for p in pairs) for kind in ("duplicate", "recolour")}
    run.stats["groups"] = len(groups)
    run.stats["images"] = len(run.ids)
    run.timings["total"] = time.perf_counter() - started
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


@dataclass
class _Vectors:
    """The embedding stage's vectors: image index -> row of ``X``."""

    rows: dict[int, int]
    X: np.ndarray | None

    def cosine(self, i: int, j: int) -> float | None:
        if self.X is None or i not in self.rows or j not in self.rows:
            return None
        return float(self.X[self.rows[i]] @ self.X[self.rows[j]])


def _check_options(
    methods: Sequence[str], keep: str, phash: int, square: int, dhash: int, cosine_min: float
) -> tuple[str, ...]:
    """The methods without repeats; a UsageError for anything out of range."""
    methods = tuple(dict.fromkeys(methods))
    bad = [m for m in methods if m not in STAGES]
    if bad:
        raise UsageError(f"unknown dupes method {bad[0]!r} (choose from {', '.join(STAGES)})")
    if keep not in KEEP_POLICIES:
        raise UsageError(f"unknown keep policy {keep!r} (choose from {', '.join(KEEP_POLICIES)})")
    for name, t in (("phash", phash), ("square", square), ("dhash", dhash)):
        if name in methods and not 0 <= t <= 32:
            raise UsageError(f"{name} distance must be between 0 and 32 bits")
    if "embedding" in methods and not 0 < cosine_min <= 1:
        raise UsageError("cosine threshold must be in (0, 1]")
    return methods


def _fingerprint(ids: list[str], rejects: set[tuple[str, str]], params: dict[str, Any]) -> str:
    """What a run depends on: the images, the rejected pairs and the options."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    for image_id in ids:
        digest.update(image_id.encode())
    for a, b in sorted(rejects):
        digest.update(f"{a}{b}".encode())
    return digest.hexdigest()


def _unchanged_run(store: Store, fingerprint: str) -> DupeResult | None:
    latest = store.latest_run("dupes")
    if latest is None:
        return None
    params = json.loads(store.query("SELECT params FROM dupe_runs WHERE id = ?", [latest])[0][0] or "{}")
    if params.get("fingerprint") != fingerprint:
        return None
    result = load(store, latest)
    result.reused = True
    return result


def _hashes(store: Store, run: _Run, progress: Progress | None) -> dict[str, ImageHashes]:
    """Every image's hashes, computing (and caching) the missing ones."""
    with run.timed("hashes"):
        before = cached_count(store)
        hashes = compute_hashes(store, run.ids, progress=progress)
    run.stats["hashed_now"] = max(0, cached_count(store) - before)
    run.stats["undecodable"] = sum(1 for i in run.ids if hashes[i].error)
    return hashes


def _hash_stages(
    run: _Run, hashes: dict[str, ImageHashes], methods: Sequence[str], phash: int, square: int, dhash: int
) -> dict[str, Candidates]:
    """The pairs of the pixels, phash, square and dhash stages that are in ``methods``."""
    found: dict[str, Candidates] = {}
    if "pixels" in methods:
        with run.timed("pixels"):
            a, b = equal_pairs([hashes[i].pixel_sha256 for i in run.ids])
            found["pixels"] = Candidates.found("pixels", a, b, np.ones(len(a), np.float32))
    for stage, attr, t in (("phash", "phash", phash), ("square", "square_phash", square), ("dhash", "dhash", dhash)):
        if stage not in methods:
            continue
        with run.timed(stage):
            # Images without that hash (undecodable) take no part; ``have`` maps back to ids.
            have = np.asarray([k for k, i in enumerate(run.ids) if getattr(hashes[i], attr) is not None], np.int64)
            values = np.asarray([getattr(hashes[run.ids[k]], attr) for k in have], dtype=np.uint64)
            a, b, d = hash_pairs(values, t)
            found[stage] = Candidates.found(stage, have[a], have[b], (1 - d / 64).astype(np.float32), d)
    return found


def _embedding_stage(store: Store, run: _Run, model_key: str, cosine_min: float) -> tuple[_Vectors, Candidates]:
    """The model's vectors and the embedding stage's pairs."""
    vec_ids, X = load_vectors(store, model_key, run.index)
    run.stats["without_vectors"] = len(run.ids) - len(vec_ids)
    search: dict[str, Any] = {}
    a, b, s = embedding_pairs(X, cosine_min, stats=search)
    run.stats["embedding_search"] = search
    rows = {int(i): row for row, i in enumerate(vec_ids)}
    return _Vectors(rows, X), Candidates.found("embedding", vec_ids[a], vec_ids[b], np.minimum(s, 1.0))


def load_vectors(store: Store, model_key: str, index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``ids``, float32 matrix) of the images that have a vector for the model."""
    vid, X = store.all_vectors(model_key)  # sorted by id, as ``index`` is
    keep = [row for row, v in enumerate(vid) if v in index]
    return np.asarray([index[vid[row]] for row in keep], dtype=np.int64), X[keep]


def _combine(
    run: _Run, found: dict[str, Candidates], rejects: set[tuple[str, str]]
) -> tuple[Candidates, set[tuple[int, int]]]:
    """Every stage's pairs without the rejected ones, strongest first; and the rejected index pairs."""
    n, index = len(run.ids), run.index
    rejected = {(min(index[a], index[b]), max(index[a], index[b])) for a, b in rejects if a in index and b in index}
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


def _loader(store: Store) -> Any:
    """Reads and decodes a stored image for verification (None when it cannot)."""
    from imgdb.imaging.decode import decode

    def load(image_id: str) -> tuple[Any, Any] | None:
        try:
            decoded = decode(store.read_blob(image_id), target=(SIDE, SIDE))
        except (OSError, DecodeError):
            return None
        return decoded.image, decoded.alpha

    return load


def _phash_distance(hashes: dict[str, ImageHashes]) -> Any:
    """Two images' pHash distance (None when either has no hash), for the verifier."""

    def distance(a: str, b: str) -> int | None:
        ha, hb = hashes.get(a), hashes.get(b)
        if ha is None or hb is None or ha.phash is None or hb.phash is None:
            return None
        return hamming(ha.phash, hb.phash)

    return distance


def _decide(
    run: _Run, candidates: Candidates, verifier: Verifier, hashes: dict[str, ImageHashes], vectors: _Vectors
) -> list[Pair]:
    """One pair per candidate pair with its evidence; only duplicates and recolours are kept.

    Identical pixels are certain; a pair in the sure zone (``verify.sure``: a resize or
    re-encode of one frame) is a duplicate on its cheap evidence, marked ``SURE`` in its
    stages, with no verification fields; a pair only the embedding stage found must pass
    the screen (``dedup.screen``: one thumbnail placed inside the other); the rest are verified.
    """
    by_pair: dict[tuple[int, int], list[tuple[str, float, int | None]]] = {}
    for a, b, r, s, d in zip(
        candidates.a.tolist(),
        candidates.b.tolist(),
        candidates.rank.tolist(),
        candidates.score.tolist(),
        candidates.distance.tolist(),
    ):
        by_pair.setdefault((a, b), []).append((STAGES[r], s, d if d >= 0 else None))
    pairs, unsure, sure_pairs, screened = [], [], 0, 0
    screen = Screen(hashes)
    for (a, b), found in by_pair.items():
        stage, score, distance = found[0]  # candidates are ordered strongest first
        pair = _pair(run, a, b, stage, score, distance, [s for s, _x, _y in found], hashes, vectors)
        if any(s in CERTAIN for s, _x, _y in found):
            pairs.append(pair)
        elif sure(pair.phash_distance, pair.cosine):
            pair.stages.append(SURE)  # decided on the cheap evidence: no verification fields
            pairs.append(pair)
            sure_pairs += 1
        elif screen.turns_away(pair.a, pair.b, pair.stages):
            screened += 1
        else:
            unsure.append(pair)
    run.stats["candidate_pairs"] = len(by_pair)
    run.stats["sure_pairs"] = sure_pairs
    run.stats["screened"] = screen.screened
    run.stats["screened_out"] = screened
    run.stats["screen_seconds"] = round(screen.seconds, 3)
    run.stats["to_verify"] = len(unsure)
    evidence = verifier.check_many([(p.a, p.b) for p in unsure])
    pairs += [pair for pair, ev in zip(unsure, evidence) if _judge(pair, ev)]
    run.stats["unverifiable"] = sum(1 for ev in evidence if ev is None)
    order = {key: n for n, key in enumerate(by_pair)}  # grouping takes the strongest pairs first
    return sorted(pairs, key=lambda p: order[(run.index[p.a], run.index[p.b])])


def _pair(
    run: _Run,
    a: int,
    b: int,
    stage: str,
    score: float,
    distance: int | None,
    stages: list[str],
    hashes: dict[str, ImageHashes],
    vectors: _Vectors,
) -> Pair:
    """A pair with what the cheap stages know about it (verification fills in the rest)."""
    ha, hb = hashes.get(run.ids[a]), hashes.get(run.ids[b])
    bits = hamming(ha.phash, hb.phash) if ha and hb and ha.phash is not None and hb.phash is not None else None
    square = (
        hamming(ha.square_phash, hb.square_phash)
        if ha and hb and ha.square_phash is not None and hb.square_phash is not None
        else None
    )
    cosine = vectors.cosine(a, b)
    return Pair(
        run.ids[a],
        run.ids[b],
        stage,
        float(score),
        distance,
        stages=list(dict.fromkeys(stages)),
        phash_distance=bits,
        square_distance=square,
        cosine=round(cosine, 4) if cosine is not None else None,
    )


def _judge(pair: Pair, evidence: Evidence | None) -> bool:
    """Fill in a pair's verdict from its evidence; False when it is no pair at all.

    A pair that cannot be verified (an image no longer decodes) is kept only when the
    cheap evidence alone is strict enough.
    """
    if evidence is None:
        strict = (pair.phash_distance is not None and pair.phash_distance <= STRICT_PHASH) or (
            pair.cosine is not None and pair.cosine >= STRICT_COSINE
        )
        pair.kind = "duplicate"
        return strict
    pair.container = pair.a if evidence.first_contains else pair.b  # the verifier saw (a, b) in this order
    pair.inliers, pair.matched_area = evidence.inliers, round(evidence.matched_area, 4)
    pair.changed, pair.recoloured = round(evidence.changed, 4), round(evidence.recoloured, 4)
    pair.verified = evidence.method
    if evidence.kind is None:
        return False
    pair.kind = evidence.kind
    return True


@dataclass
class _Judge:
    """Decides, while grouping, whether two images may share a group: a kept pair of an
    allowed kind, or a pair verified now (never a rejected one). Pairs verified here are
    remembered (``extra``) and saved with the run."""

    run: _Run
    verifier: Verifier
    hashes: dict[str, ImageHashes]
    vectors: _Vectors
    rejected: set[tuple[int, int]]
    allowed: tuple[str, ...]
    kept: dict[tuple[str, str], Pair]
    extra: list[Pair] = field(default_factory=list)
    _containers: dict[str, set[str]] | None = None  # image -> the images that contain it
    _ancestors: dict[str, set[str]] = field(default_factory=dict)  # _above's answers, per image

    def compatible(self, i: int, j: int) -> bool:
        """Whether i and j may share a group: a kept pair; or two renditions of one image
        that contains both (parts of one photograph, even where they do not overlap or one
        carries a badge); or a pair verified now. Never a rejected pair."""
        lo, hi = min(i, j), max(i, j)
        if (lo, hi) in self.rejected:
            return False
        a, b = self.run.ids[lo], self.run.ids[hi]
        kept = self.kept.get((a, b))
        if kept is not None and kept.kind in self.allowed:
            return True
        # Two renditions of one image that contains both are one photograph even where they
        # disagree directly (a badge covers more of a small crop than of the photograph; a
        # tiny thumbnail's colours against a tinted copy's).
        if self._common_container(a, b):
            return True
        if kept is not None:
            return False
        known = self.verifier.known(a, b)
        if isinstance(known, Evidence) and known.overlap >= MIN_OVERLAP:
            return False  # lined up and compared: different content
        pair = self.pair(i, j)
        return pair is not None and pair.kind in self.allowed

    def _common_container(self, a: str, b: str) -> bool:
        """Whether some image contains both (containment is transitive: a crop of a crop of
        a photograph is a crop of the photograph)."""
        if self._containers is None:
            self._containers = {}
            for p in self.kept.values():
                if p.kind in self.allowed and p.container is not None:
                    part = p.b if p.container == p.a else p.a
                    self._containers.setdefault(part, set()).add(p.container)
        above_a, above_b = self._above(a), self._above(b)
        return bool(above_a & above_b) or a in above_b or b in above_a

    def _above(self, image_id: str) -> set[str]:
        """Every image that contains ``image_id``, directly or through others (remembered:
        grouping asks about every cross pair of two groups)."""
        assert self._containers is not None
        if image_id in self._ancestors:
            return self._ancestors[image_id]
        seen: set[str] = set()
        todo = list(self._containers.get(image_id, ()))
        while todo:
            x = todo.pop()
            if x not in seen and x != image_id:
                seen.add(x)
                todo.extend(self._containers.get(x, ()))
        self._ancestors[image_id] = seen
        return seen

    def pair(self, i: int, j: int) -> Pair | None:
        """The kept pair of images i and j, verifying it now if no stage proposed it."""
        i, j = min(i, j), max(i, j)
        if (i, j) in self.rejected:
            return None
        a, b = self.run.ids[i], self.run.ids[j]
        if (a, b) in self.kept:
            return self.kept[(a, b)]
        if self.verifier.known(a, b) is not False:  # proposed and verified: not a pair
            return None
        pair = _pair(self.run, i, j, "verified", 0.0, None, ["verified"], self.hashes, self.vectors)
        evidence = self.verifier.check(a, b)
        if evidence is None or not _judge(pair, evidence):
            return None
        pair.score = round(1.0 - (pair.changed or 0.0), 4)
        self.kept[(a, b)] = pair
        self.extra.append(pair)
        self._containers = None
        self._ancestors.clear()
        return pair


def _groups(store: Store, run: _Run, grouped: list[list[int]], judge: _Judge, keep: str, *, exact: bool) -> list[Group]:
    """The near-duplicate groups, plus (``exact``) one-image groups of images with several sources."""
    in_group = {i for g in grouped for i in g}
    exact_ids = _exact_images(store) if exact else []
    run.stats["exact_images"] = len(exact_ids)
    grouped_ids = {run.ids[i] for i in in_group}
    info = store.describe(sorted(grouped_ids | set(exact_ids)), all_sources=True)
    groups = [_near_group(run, [info[run.ids[i]] for i in g], keep, judge) for g in grouped]
    groups += [Group(0, "exact", 1.0, i, [Member.from_info(info[i])]) for i in exact_ids if i not in grouped_ids]
    groups.sort(key=lambda g: (RANK.get(g.stage, len(RANK)), -g.size, -g.copies, -g.best_score, g.keep_id))
    for k, g in enumerate(groups, 1):
        g.group_id = k
    return groups


def _exact_images(store: Store) -> list[str]:
    """Images stored at several distinct sources (the same bytes at two paths / URLs)."""
    rows = store.query(
        "SELECT image_id FROM sources GROUP BY image_id HAVING count(DISTINCT source) > 1 ORDER BY image_id"
    )
    return [r[0] for r in rows]


def _near_group(run: _Run, infos: list[ImageInfo], keep: str, judge: _Judge) -> Group:
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
        pair = judge.pair(run.index[m.image_id], k)
        if pair is None:  # another part of an image that contains both
            m.stage, m.score, m.kind = "shared", 0.0, "duplicate"
        else:
            m.stage, m.score, m.kind = pair.stage, float(pair.score), pair.kind
        others.append((RANK.get(m.stage, len(RANK)), m.score, m))
    others.sort(key=lambda o: (o[0], -o[1], o[2].image_id))
    weakest = max(r for r, _s, _m in others)
    best_score = max(s for r, s, _m in others if r == weakest)
    stage = STAGES[weakest] if weakest < len(STAGES) else "verified"
    return Group(0, stage, float(best_score), kept.image_id, [kept, *(m for _r, _s, m in others)])


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
    columns = [
        "a", "b", "stage", "score", "distance", "kind", "stages", "phash_distance", "square_distance", "cosine",
        "inliers", "matched_area", "changed", "recoloured",
    ]  # fmt: skip
    types = [
        "VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "INTEGER", "VARCHAR", "VARCHAR", "INTEGER", "INTEGER", "DOUBLE",
        "INTEGER", "DOUBLE", "DOUBLE", "DOUBLE",
    ]  # fmt: skip
    for s in range(0, len(pairs), step):
        part = pairs[s : s + step]
        values = [[",".join(p.stages) if c == "stages" else getattr(p, c) for p in part] for c in columns]
        store.query(
            f"INSERT INTO dupe_pairs (run_id, {', '.join(columns)}) SELECT ?, "
            + ", ".join(f"unnest(?::{kind}[])" for kind in types),
            [run_id, *values],
        )
    rows = [
        (
            g.group_id,
            m.image_id,
            m.image_id == g.keep_id,
            g.stage if m.image_id == g.keep_id else m.stage,
            g.best_score if m.image_id == g.keep_id else m.score,
            None if m.image_id == g.keep_id else m.kind,
        )
        for g in groups
        for m in g.members
    ]
    for s in range(0, len(rows), step):
        chunk = rows[s : s + step]
        store.query(
            "INSERT INTO dupe_groups (run_id, group_id, image_id, is_keep, stage, score, kind) "
            "SELECT ?, unnest(?::INTEGER[]), unnest(?::VARCHAR[]), unnest(?::BOOLEAN[]), "
            "unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), unnest(?::VARCHAR[])",
            [run_id, *[list(c) for c in zip(*chunk)]],
        )
    return run_id


def load(store: Store, run_id: int | None = None) -> DupeResult:
    """A saved run (default: the latest) as ``find`` returned it."""
    if run_id is None:
        run_id = store.latest_run("dupes")
    row = store.query("SELECT params, stats FROM dupe_runs WHERE id = ?", [run_id]) if run_id is not None else []
    if not row:
        raise UsageError(
            "no dupes run in this store: run `imgdb dupes` first" if run_id is None else f"no dupes run {run_id}"
        )
    params, stats = (json.loads(x) if isinstance(x, str) else dict(x or {}) for x in row[0])
    pairs = [
        Pair(
            a, b, stage, float(score), distance, kind or "duplicate", (stages or stage).split(","), phash, square,
            cosine, inliers, area, changed, recoloured, None,
        )
        for a, b, stage, score, distance, kind, stages, phash, square, cosine, inliers, area, changed, recoloured in
        store.query(
            "SELECT a, b, stage, score, distance, kind, stages, phash_distance, square_distance, cosine, inliers, "
            "matched_area, changed, recoloured FROM dupe_pairs WHERE run_id = ? ORDER BY a, b, stage",
            [run_id],
        )
    ]  # fmt: skip
    assert run_id is not None
    return DupeResult(run_id, latest_groups(store, run_id), pairs, params, stats)


def latest_groups(store: Store, run_id: int | None = None) -> list[Group]:
    """The groups of the latest run (or of ``run_id``), as saved, with current sources."""
    if run_id is None:
        run_id = store.latest_run("dupes")
        if run_id is None:
            return []
    rows = store.query(
        "SELECT group_id, image_id, is_keep, stage, score, kind FROM dupe_groups WHERE run_id = ? "
        "ORDER BY group_id, is_keep DESC, score DESC, image_id",
        [run_id],
    )
    info = store.describe(sorted({r[1] for r in rows}), all_sources=True)
    groups: dict[int, Group] = {}
    for gid, image_id, is_keep, stage, score, kind in rows:
        m = Member.from_info(info[image_id]) if image_id in info else Member.unknown(image_id)
        if is_keep:
            groups[gid] = Group(gid, stage, float(score), image_id, [m])
        else:
            m.stage, m.score, m.kind = stage, float(score), kind or "duplicate"
            groups[gid].members.append(m)
    for g in groups.values():
        g.members[1:] = sorted(g.members[1:], key=lambda m: (RANK.get(m.stage or "", 9), -(m.score or 0.0), m.image_id))
    return [groups[k] for k in sorted(groups)]
