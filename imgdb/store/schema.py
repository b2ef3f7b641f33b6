"""The one owner of the store's DuckDB schema: versioned migrations and the views.

Every table and view is created here and nowhere else. A store records the migrations it
has had in ``_imgdb_migrations`` (like ``sqlite_utils.Migrations`` and llm's
``_llm_migrations``); ``migrate`` applies the missing ones in order, each in its own
transaction, when a writer opens the store. To change the schema, append a function
decorated with ``@migration``; never edit one that has shipped.

Migration 1 is the schema release 0.1.0 created (``CREATE ... IF NOT EXISTS``), so a
0.1.0 store, which has those tables but no ``_imgdb_migrations``, passes through it
unchanged and is then brought up to date by the later ones.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

Migration = Callable[[Any], None]
MIGRATIONS: list[tuple[str, Migration]] = []

_LEDGER = """
CREATE TABLE IF NOT EXISTS _imgdb_migrations (
    name       VARCHAR PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL
)"""


def migration(fn: Migration) -> Migration:
    """Register ``fn(con)`` as the next migration; its name is its identity."""
    MIGRATIONS.append((fn.__name__, fn))
    return fn


def applied(con: Any) -> list[str]:
    """Names of the migrations this store has had, oldest first ([] for a 0.1.0 store)."""
    exists = con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_imgdb_migrations'").fetchone()[0]
    if not exists:
        return []
    return [r[0] for r in con.execute("SELECT name FROM _imgdb_migrations ORDER BY applied_at, name").fetchall()]


def pending(con: Any) -> list[str]:
    done = set(applied(con))
    return [name for name, _ in MIGRATIONS if name not in done]


def migrate(con: Any) -> list[str]:
    """Apply every pending migration, each with its ledger row in one transaction."""
    con.execute(_LEDGER)
    done = set(applied(con))
    ran = []
    for name, fn in MIGRATIONS:
        if name in done:
            continue
        con.execute("BEGIN")
        try:
            fn(con)
            con.execute(
                "INSERT INTO _imgdb_migrations (name, applied_at) VALUES (?, ?)", [name, datetime.now(timezone.utc)]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        ran.append(name)
    return ran


@migration
def m001_initial(con: Any) -> None:
    """The schema of release 0.1.0: ingest, dupes and clustering tables."""
    con.execute(_INITIAL)


@migration
def m002_views(con: Any) -> None:
    """Views a newcomer can guess, stored so that read-only connections see them too."""
    views = {  # as they were then; later migrations replace them
        "image_sources": VIEWS["image_sources"],
        "clusters_all": VIEWS["clusters_all"],
        "clusters": VIEWS["clusters"],
        "dupes_all": "SELECT * FROM dupe_groups",
        "dupes": "SELECT * FROM dupe_groups WHERE run_id = (SELECT max(id) FROM dupe_runs)",
    }
    for name, body in views.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")


@migration
def m003_dupes_evidence(con: Any) -> None:
    """Dupes pairs carry their evidence and kind; hashes gain the centre square's pHash."""
    con.execute("ALTER TABLE image_hashes ADD COLUMN IF NOT EXISTS square_phash UBIGINT")
    for column, kind in (
        ("kind", "VARCHAR"),  # duplicate | recolour
        ("stages", "VARCHAR"),  # every stage that found the pair, comma-separated
        ("phash_distance", "INTEGER"),
        ("square_distance", "INTEGER"),  # pHash bits between the centre squares
        ("cosine", "DOUBLE"),
        ("inliers", "INTEGER"),  # keypoint matches that agree with one transform
        ("matched_area", "DOUBLE"),  # share of the smaller image the inliers span
        ("changed", "DOUBLE"),  # share of compared blocks whose content differs
        ("recoloured", "DOUBLE"),  # share of the overlap whose hue turned
    ):
        con.execute(f"ALTER TABLE dupe_pairs ADD COLUMN IF NOT EXISTS {column} {kind}")
    con.execute("ALTER TABLE dupe_groups ADD COLUMN IF NOT EXISTS kind VARCHAR")
    for name in ("dupes_all", "dupes"):
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {VIEWS[name]}")


@migration
def m004_sources_by_image(con: Any) -> None:
    """An index on sources(image_id): an image's sources are read on every image page and
    every search result, and DuckDB's composite primary key does not serve a prefix lookup."""
    con.execute("CREATE INDEX IF NOT EXISTS sources_image_id ON sources (image_id)")


@migration
def m005_hash_thumbnails(con: Any) -> None:
    """Hashes gain a tiny grey thumbnail (raw uint8 rows and their width) for the dupes screen."""
    con.execute("ALTER TABLE image_hashes ADD COLUMN IF NOT EXISTS thumb BLOB")
    con.execute("ALTER TABLE image_hashes ADD COLUMN IF NOT EXISTS thumb_width SMALLINT")


#: What ``imgdb sql`` documents beside the tables. ``image_sources``: an image with each
#: place it was found; ``clusters`` / ``dupes``: the latest run; ``*_all``: every run.
VIEWS = {
    "image_sources": """
        SELECT i.id, i.width, i.height, i.format, i.bytes, i.added_at,
               s.source, s.kind, s.page_url, s.site, s.alt, s.title, s.http_status,
               s.content_type, s.fetched_at
        FROM images i JOIN sources s ON s.image_id = i.id""",
    "clusters_all": "SELECT * FROM cluster_members",
    "clusters": "SELECT * FROM cluster_members WHERE run_id = (SELECT max(id) FROM cluster_runs)",
    # One row per member, with the evidence of its link to the group's kept image.
    "dupes_all": """
        WITH kept AS (SELECT run_id, group_id, image_id AS keep_id FROM dupe_groups WHERE is_keep)
        SELECT g.run_id, g.group_id, g.image_id, g.is_keep, k.keep_id, coalesce(g.kind, 'duplicate') AS kind,
               g.stage, g.score, p.stages, p.phash_distance, p.square_distance, p.cosine, p.inliers,
               p.matched_area, p.changed, p.recoloured
        FROM dupe_groups g JOIN kept k USING (run_id, group_id)
        LEFT JOIN dupe_pairs p ON p.run_id = g.run_id AND p.stages IS NOT NULL
             AND p.a = least(g.image_id, k.keep_id) AND p.b = greatest(g.image_id, k.keep_id)""",
    "dupes": "SELECT * FROM dupes_all WHERE run_id = (SELECT max(id) FROM dupe_runs)",
}

_INITIAL = """
CREATE SEQUENCE IF NOT EXISTS run_ids START 1;
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY DEFAULT nextval('run_ids'),
    command     VARCHAR NOT NULL,
    args        JSON,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    status      VARCHAR NOT NULL,      -- running | done | interrupted | failed
    counts      JSON
);
CREATE TABLE IF NOT EXISTS models (
    key        VARCHAR PRIMARY KEY,    -- name + sha256 prefix
    name       VARCHAR NOT NULL,
    sha256     VARCHAR NOT NULL,
    dim        INTEGER NOT NULL,
    spec       JSON,
    added_at   TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id        VARCHAR PRIMARY KEY,     -- sha256 of the bytes
    width     INTEGER NOT NULL,
    height    INTEGER NOT NULL,
    format    VARCHAR NOT NULL,
    bytes     BIGINT NOT NULL,
    model     VARCHAR NOT NULL,        -- model key the image was first embedded with
    added_at  TIMESTAMPTZ NOT NULL,
    run_id    INTEGER
);
CREATE TABLE IF NOT EXISTS sources (
    image_id     VARCHAR NOT NULL,
    source       VARCHAR NOT NULL,     -- URL, or absolute path for files
    kind         VARCHAR NOT NULL,     -- url | file
    page_url     VARCHAR NOT NULL,     -- '' when not found on a page
    site         VARCHAR,              -- host[:port] of the URL
    alt          VARCHAR,
    title        VARCHAR,
    http_status  INTEGER,
    content_type VARCHAR,
    file_size    BIGINT,
    file_mtime   DOUBLE,
    fetched_at   TIMESTAMPTZ NOT NULL,
    run_id       INTEGER,
    PRIMARY KEY (image_id, source, page_url)
);
CREATE TABLE IF NOT EXISTS pages (
    url          VARCHAR PRIMARY KEY,
    final_url    VARCHAR,
    status       INTEGER,
    fetched_at   TIMESTAMPTZ NOT NULL,
    images_found INTEGER,
    error        VARCHAR,
    etag         VARCHAR,
    last_modified VARCHAR,
    parsed       JSON,                 -- what the page linked to, reused on 304
    run_id       INTEGER
);
CREATE TABLE IF NOT EXISTS failures (
    run_id    INTEGER,
    source    VARCHAR NOT NULL,
    page_url  VARCHAR,
    reason    VARCHAR NOT NULL,
    detail    VARCHAR,
    failed_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS image_hashes (
    image_id     VARCHAR PRIMARY KEY,
    phash        UBIGINT,              -- imagehash.phash, 8x8 bits, row-major, MSB first
    dhash        UBIGINT,              -- imagehash.dhash (horizontal), same bit order
    pixel_sha256 VARCHAR,              -- sha256 of "WxH:RGB:" + decoded RGB pixels
    hasher       VARCHAR NOT NULL,     -- dedup.HASHER when computed
    error        VARCHAR,              -- decode failure reason (hashes are NULL then)
    computed_at  TIMESTAMPTZ NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS dupe_run_ids START 1;
CREATE TABLE IF NOT EXISTS dupe_runs (
    id         INTEGER PRIMARY KEY DEFAULT nextval('dupe_run_ids'),
    created_at TIMESTAMPTZ NOT NULL,
    params     JSON,                   -- methods, thresholds, keep policy, model key
    stats      JSON                    -- pairs per stage, timings, skipped images
);
CREATE TABLE IF NOT EXISTS dupe_pairs (
    run_id   INTEGER NOT NULL,
    a        VARCHAR NOT NULL,         -- image ids, a < b
    b        VARCHAR NOT NULL,
    stage    VARCHAR NOT NULL,         -- pixels | phash | dhash | embedding
    score    DOUBLE NOT NULL,          -- similarity in [0, 1], higher is closer
    distance INTEGER                   -- Hamming bits for hash stages, else NULL
);
CREATE TABLE IF NOT EXISTS dupe_groups (
    run_id   INTEGER NOT NULL,
    group_id INTEGER NOT NULL,
    image_id VARCHAR NOT NULL,
    is_keep  BOOLEAN NOT NULL,
    stage    VARCHAR NOT NULL,         -- member: its link to the kept image; kept: the group's
    score    DOUBLE NOT NULL,          -- member: that link's score; kept: the group's best
    PRIMARY KEY (run_id, image_id)
);
CREATE TABLE IF NOT EXISTS dupe_rejects (
    a          VARCHAR NOT NULL,       -- a < b: "these two are not duplicates"
    b          VARCHAR NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE SEQUENCE IF NOT EXISTS cluster_run_ids START 1;
CREATE TABLE IF NOT EXISTS cluster_runs (
    id           INTEGER PRIMARY KEY DEFAULT nextval('cluster_run_ids'),
    created_at   TIMESTAMPTZ NOT NULL,
    model        VARCHAR NOT NULL,     -- model key of the vectors clustered
    method       VARCHAR NOT NULL,     -- kmeans | agglomerative | minibatch
    pca          INTEGER NOT NULL,     -- PCA components used, 0 = off
    k            INTEGER NOT NULL,
    select_rule  VARCHAR NOT NULL,     -- fixed | peak | silhouette | elbow
    seed         INTEGER NOT NULL,
    n_images     INTEGER NOT NULL,
    params       JSON,                 -- k_range, samples, linkage, choices per rule, timings
    scores       JSON,                 -- [{"k": 2, "distortion": .., "silhouette": ..}, ...]
    silhouette   DOUBLE,               -- at the chosen k (on the silhouette sample)
    distortion   DOUBLE                -- at the chosen k (on the sweep sample)
);
CREATE TABLE IF NOT EXISTS cluster_members (
    run_id    INTEGER NOT NULL,
    image_id  VARCHAR NOT NULL,
    cluster   INTEGER NOT NULL,        -- 0 = largest cluster
    distance  DOUBLE NOT NULL,         -- to the cluster mean, in the clustering (PCA) space
    PRIMARY KEY (run_id, image_id)
);
CREATE TABLE IF NOT EXISTS cluster_info (
    run_id    INTEGER NOT NULL,
    cluster   INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    medoid    VARCHAR NOT NULL,        -- member nearest the mean = least sum of squared distances
    centroid  FLOAT[],                 -- mean of the members' vectors, in the model's space
    PRIMARY KEY (run_id, cluster)
);
"""
