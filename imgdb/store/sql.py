"""``imgdb sql``: read-only SQL over the metadata, with views a newcomer can guess.

Tables: images, sources, pages, runs, failures, models. Views added here:

* ``image_sources``: one row per image and place it was found (image columns + source);
* ``clusters`` / ``clusters_all``: cluster assignments of the latest / every clustering run;
* ``dupes`` / ``dupes_all``: duplicate-group members of the latest / every dupes run.

Views over tables that a store does not have yet (no clustering run so far) are left out.
"""

from __future__ import annotations

from typing import Any

from imgdb.errors import UsageError
from imgdb.store import Store

VIEWS = {
    "image_sources": """
        SELECT i.id, i.width, i.height, i.format, i.bytes, i.added_at,
               s.source, s.kind, s.page_url, s.site, s.alt, s.title, s.http_status,
               s.content_type, s.fetched_at
        FROM images i JOIN sources s ON s.image_id = i.id""",
    "clusters_all": "SELECT * FROM cluster_members",
    "clusters": "SELECT * FROM cluster_members WHERE run_id = (SELECT max(id) FROM cluster_runs)",
    "dupes_all": "SELECT * FROM dupe_groups",
    "dupes": "SELECT * FROM dupe_groups WHERE run_id = (SELECT max(id) FROM dupe_runs)",
}


def add_views(store: Store) -> None:
    """Temporary views on the (read-only) connection; skips those whose tables are absent."""
    import duckdb

    for name, body in VIEWS.items():
        try:
            store.query(f"CREATE OR REPLACE TEMP VIEW {name} AS {body}")
        except duckdb.CatalogException:
            pass


def check_single_statement(sql: str) -> None:
    """Refuse "x; COPY ... TO" and friends: one statement, and read-only (see Store)."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise UsageError(f"give exactly one SQL statement, not {len(statements)}")


def run_sql(store: Store, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of one query; a SQL error is a one-line UsageError."""
    import duckdb

    check_single_statement(sql)
    add_views(store)
    try:
        with store._lock:
            cursor = store.con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall() if cursor.description else []
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
    return columns, rows
