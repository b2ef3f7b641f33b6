"""Duplicate finding on real stores: staged pairs, grouping without chaining, rejects, DuckDB."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgdb import dedup
from imgdb.acquire.ingest import ingest
from imgdb.dedup.pairs import popcount64
from imgdb.store import Store
from tests import images


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def webp_lossless(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "WEBP", lossless=True)
    return buf.getvalue()


# Seeds whose 5% crop stays within the default pHash distance or embedding cosine (the test
# images have sensor-like grain; a few seeds crop further, as real photos can).
NEAR_SEEDS = (2, 3)
DISTINCT_SEEDS = (10, 11)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, model):
    """One store: two photos with four near-duplicates each, two unrelated photos, a PNG and a
    lossless WebP of one picture, and one file stored at two paths."""
    root = tmp_path_factory.mktemp("dedup")
    files: dict[str, bytes] = {}
    near: dict[int, dict[str, str]] = {}
    for seed in NEAR_SEEDS:
        v = images.variants(images.photo(seed, (320, 240)))
        for kind, data in v.items():
            files[f"near{seed}/{kind}.jpg"] = data
        near[seed] = {kind: sha(data) for kind, data in v.items()}
    distinct = {}
    for seed in DISTINCT_SEEDS:
        data = images.jpeg_bytes(images.photo(seed, (320, 240)))
        files[f"other/{seed}.jpg"] = data
        distinct[seed] = sha(data)
    files["copies/again.jpg"] = files[f"other/{DISTINCT_SEEDS[0]}.jpg"]
    pic = images.photo(12, (200, 150))
    files["lossless/pic.png"] = images.png_bytes(pic)
    files["lossless/pic.webp"] = webp_lossless(pic)
    write(root / "pics", files)
    store = Store.open(root / "db", write=True)
    ingest(store, [str(root / "pics")], model)
    result = dedup.find(store)
    yield {
        "store": store,
        "result": result,
        "near": near,
        "distinct": distinct,
        "png": sha(files["lossless/pic.png"]),
        "webp": sha(files["lossless/pic.webp"]),
    }
    store.close()


def group_of(result: dedup.DupeResult, image_id: str) -> dedup.Group | None:
    return next((g for g in result.groups if image_id in g.ids), None)


# ---------------------------------------------------------------------------------- stages


def test_reencoded_resized_and_cropped_copies_are_grouped_with_their_original(collection):
    result = collection["result"]
    for seed, ids in collection["near"].items():
        g = group_of(result, ids["original"])
        assert g is not None, f"photo {seed} has no group"
        assert set(g.ids) == set(ids.values())  # q60, half size, 5% crop and grayscale
        assert g.keep_id == ids["original"]  # largest: most pixels, then most bytes
        stages = {m.image_id: m.stage for m in g.members[1:]}
        assert stages[ids["reencode_q60"]] == "phash" and stages[ids["half_size"]] == "phash"


def test_distinct_photos_are_not_grouped(collection):
    result = collection["result"]
    grouped = {i for g in result.groups if g.stage != "exact" for i in g.ids}
    for image_id in collection["distinct"].values():
        assert image_id not in grouped
    near_groups = [g for g in result.groups if g.stage != "exact"]
    assert len(near_groups) == len(NEAR_SEEDS) + 1  # + the PNG / WebP pair


def test_identical_pixels_in_png_and_lossless_webp(collection):
    result = collection["result"]
    g = group_of(result, collection["png"])
    assert g is not None and set(g.ids) == {collection["png"], collection["webp"]}
    assert g.stage == "pixels" and g.best_score == 1.0
    (pair,) = [p for p in result.pairs if {p.a, p.b} == {collection["png"], collection["webp"]}]
    assert pair.stage == "pixels" and "phash" in pair.stages  # every stage that found it is recorded
    # The pixels stage alone finds exactly that pair.
    alone = dedup.find(collection["store"], methods=("pixels",))
    assert [set(g.ids) for g in alone.groups] == [{collection["png"], collection["webp"]}]


def test_same_bytes_at_two_paths_is_an_exact_group(collection):
    image_id = collection["distinct"][DISTINCT_SEEDS[0]]
    g = group_of(collection["result"], image_id)
    assert g is not None and g.stage == "exact" and g.ids == [image_id]
    assert sorted(Path(s).name for s in g.members[0].sources) == ["10.jpg", "again.jpg"]
    assert g.copies == 2


def test_a_crop_phash_misses_is_found_by_the_embedding_stage(tmp_path, model):
    # Photo 8's 5% crop moves its pHash ~18 bits; the embedding still sees the same picture.
    v = images.variants(images.photo(8, (320, 240)))
    write(tmp_path / "pics", {"orig.jpg": v["original"], "crop.jpg": v["crop_5pct"]})
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        assert dedup.find(store, methods=("phash",)).groups == []
        (g,) = dedup.find(store).groups
        assert g.keep_id == sha(v["original"]) and g.ids[1] == sha(v["crop_5pct"])
        assert g.stage == "embedding" and g.best_score >= dedup.COSINE_MIN


def test_results_and_hashes_are_in_duckdb(collection):
    store, result = collection["store"], collection["result"]
    n_images = len(store.image_ids())
    assert store.query("SELECT count(*) FROM image_hashes WHERE phash IS NOT NULL")[0][0] == n_images
    params = json.loads(store.query("SELECT params FROM dupe_runs WHERE id = ?", [result.run_id])[0][0])
    assert params["methods"] == list(dedup.DEFAULT_METHODS) and params["cosine_min"] == dedup.COSINE_MIN
    assert store.query("SELECT count(*) FROM dupe_pairs WHERE run_id = ?", [result.run_id])[0][0] == len(result.pairs)
    keeps = store.query(
        "SELECT group_id, count(*) FILTER (is_keep), count(*) FROM dupe_groups WHERE run_id = ? GROUP BY 1 ORDER BY 1",
        [result.run_id],
    )
    assert [(k, n) for _g, k, n in keeps] == [(1, g.size) for g in result.groups]
    saved = dedup.latest_groups(store, result.run_id)
    assert [(g.keep_id, g.ids, g.stage) for g in saved] == [(g.keep_id, g.ids, g.stage) for g in result.groups]
    # Unchanged, the store shows its last run; run again, it reuses the cached hashes.
    latest = dedup.find(store)  # other tests of this module ran other methods since
    assert dedup.find(store).reused and dedup.find(store).run_id == latest.run_id
    again = dedup.find(store, again=True)
    assert again.stats["hashed_now"] == 0 and not again.reused
    assert [g.ids for g in again.groups] == [g.ids for g in result.groups]
    assert [g.ids for g in dedup.latest_groups(store)] == [g.ids for g in again.groups]


# ---------------------------------------------------------------------------------- grouping


def test_grouping_does_not_chain():
    # A~B and B~C but not A~C: A and C never share a group.
    assert dedup.group_without_chaining([("A", "B"), ("B", "C")]) == [["A", "B"]]
    assert dedup.group_without_chaining([("B", "C"), ("A", "B")]) == [["B", "C"]]
    # A clique grows; a member that matches only part of it stays out.
    groups = dedup.group_without_chaining([("A", "B"), ("A", "C"), ("B", "C"), ("C", "D"), ("D", "E")])
    assert sorted(map(sorted, groups)) == [["A", "B", "C"], ["D", "E"]]


def test_a_blend_of_two_photos_is_a_candidate_but_never_a_duplicate(tmp_path, model):
    # B is a 50/50 blend of two unrelated photos: 18 bits from each, they are 36 apart.
    # Hashes alone would link A~B and B~C; verification sees new content everywhere.
    a, c = images.photo(30, (320, 240)), images.photo(31, (320, 240))
    b = Image.blend(a, c, 0.5)
    files = {"a.png": images.png_bytes(a), "b.png": images.png_bytes(b), "c.png": images.png_bytes(c)}
    write(tmp_path / "pics", files)
    ids = {k: sha(v) for k, v in files.items()}
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        hashes = dedup.compute_hashes(store)

        def dist(x: str, y: str) -> int:
            a, b = hashes[ids[x]].phash, hashes[ids[y]].phash
            assert a is not None and b is not None
            return bin(a ^ b).count("1")

        t = max(dist("a.png", "b.png"), dist("b.png", "c.png"))
        assert dist("a.png", "c.png") > t
        result = dedup.find(store, methods=("phash",), phash_max_distance=t)
        assert result.stats["to_verify"] == 2 and result.pairs == [] and result.groups == []


# ---------------------------------------------------------------------------------- decisions


def test_rejected_pair_stays_apart_in_later_runs(tmp_path, model):
    v = images.variants(images.photo(3, (320, 240)))
    write(tmp_path / "pics", {"orig.jpg": v["original"], "q60.jpg": v["reencode_q60"]})
    a, b = sha(v["original"]), sha(v["reencode_q60"])
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "pics")], model)
        first = dedup.find(store)
        assert [set(g.ids) for g in first.groups] == [{a, b}]
        assert dedup.reject(store, str(tmp_path / "pics" / "q60.jpg"), a[:10]) == (min(a, b), max(a, b))
        second = dedup.find(store)
        assert second.groups == [] and second.pairs == []
        assert second.stats["rejected_dropped"] >= 1
    with Store.open(tmp_path / "db", write=True) as store:  # remembered across sessions
        assert store.query("SELECT count(*) FROM dupe_rejects")[0][0] == 1
        assert dedup.find(store).groups == []
        assert dedup.latest_groups(store) == []


def test_keep_policies(tmp_path, model):
    big = images.photo(2, (640, 480))
    small = big.resize((320, 240), Image.Resampling.LANCZOS)
    write(tmp_path / "first", {"small.jpg": images.jpeg_bytes(small)})
    write(tmp_path / "later", {"big.jpg": images.jpeg_bytes(big)})
    small_id, big_id = sha(images.jpeg_bytes(small)), sha(images.jpeg_bytes(big))
    with Store.open(tmp_path / "db", write=True) as store:
        ingest(store, [str(tmp_path / "first")], model)
        ingest(store, [str(tmp_path / "later")], model)  # added later
        keep = {k: dedup.find(store, keep=k).groups[0].keep_id for k in dedup.KEEP_POLICIES}
        assert keep == {"largest": big_id, "smallest": small_id, "earliest": small_id, "latest": big_id}
        rows = store.query("SELECT image_id FROM dupe_groups WHERE is_keep ORDER BY run_id")
        assert [r[0] for r in rows] == [big_id, small_id, small_id, big_id]


def test_bad_arguments_are_usage_errors(collection):
    from imgdb.errors import UsageError

    store = collection["store"]
    with pytest.raises(UsageError, match="method"):
        dedup.find(store, methods=("phash", "nope"))
    with pytest.raises(UsageError, match="keep"):
        dedup.find(store, keep="prettiest")
    image_id = collection["png"]
    with pytest.raises(UsageError, match="itself"):
        dedup.reject(store, image_id, image_id[:8])
    with pytest.raises(UsageError, match="no image"):
        dedup.reject(store, image_id, "/no/such/file.jpg")


# ---------------------------------------------------------------------------------- the searches


def test_hash_search_matches_brute_force():
    rng = np.random.default_rng(7)
    h = rng.integers(0, 2**63, size=3000, dtype=np.int64).astype(np.uint64)
    h[10:20] = h[5]  # a class of equal hashes
    for k in range(100, 400):  # planted neighbours, 0..12 bits away
        x = int(h[k - 100])
        for bit in rng.choice(64, size=int(rng.integers(0, 13)), replace=False).tolist():
            x ^= 1 << bit
        h[k] = x
    full = popcount64(h[:, None] ^ h[None, :]).reshape(len(h), len(h))
    for t in (0, 3, 8, 12):
        a, b, d = dedup.hash_pairs(h, t)
        want = set(zip(*np.nonzero(np.triu(full <= t, 1))))
        assert set(zip(a.tolist(), b.tolist())) == {(int(i), int(j)) for i, j in want}
        assert len(a) == len(want) and (full[a, b] == d).all()


def test_embedding_search_is_exact():
    # Enough rows for the projected (bounded) search; low-rank plus noise, like real features.
    rng = np.random.default_rng(3)
    n, dim = 2600, 1280
    X = rng.standard_normal((n, 40)).astype(np.float32) @ rng.standard_normal((40, dim)).astype(np.float32)
    X += 0.3 * rng.standard_normal((n, dim)).astype(np.float32) * np.abs(X).mean()
    X[n // 2 :] = X[: n - n // 2] + 0.15 * rng.standard_normal((n - n // 2, dim)).astype(np.float32) * np.abs(X).mean()
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    full = X @ X.T
    for t in (0.9, 0.97):
        stats: dict = {}
        a, b, s = dedup.embedding_pairs(X, t, stats=stats)
        assert stats["reduced_dim"] == 129
        want = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(full >= t, 1)))}
        assert set(zip(a.tolist(), b.tolist())) == want and len(want) > 100
        assert np.allclose(s, full[a, b], atol=1e-5)


def test_a_member_needs_only_a_loose_match_with_the_others():
    # A crop (B) and a thumbnail (C) of A: each a strict duplicate of A, not of each other.
    edges = [("A", "B"), ("A", "C")]
    assert dedup.group_without_chaining(edges) == [["A", "B"]]
    assert dedup.group_without_chaining(edges, lambda x, y: {x, y} == {"B", "C"}) == [["A", "B", "C"]]
