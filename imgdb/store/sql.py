"""``imgdb sql``: one read-only statement over the store's tables and views.

The tables and views themselves are defined in ``schema.py``; a reader's connection has
DuckDB's external access switched off (``Store``), so no statement reaches files or the
network beyond the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imgdb.errors import ImgdbError, UsageError

if TYPE_CHECKING:
    from imgdb.store.store import Store


def check_single_statement(sql: str) -> None:
    """Refuse "x; COPY ... TO" and friends: exactly one statement."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise _sql_error(exc) from None
    if len(statements) != 1:
        raise UsageError(f"give exactly one SQL statement, not {len(statements)}")


def run_sql(store: Store, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names and rows of one query; a SQL error is a one-line UsageError."""
    import duckdb

    check_single_statement(sql)
    with store._db() as con:  # a damaged file is a StoreError; a bad statement a UsageError
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchall() if cursor.description else []
        except (duckdb.IOException, duckdb.SerializationException, duckdb.InternalException, duckdb.FatalException):
            raise
        except duckdb.Error as exc:
            raise _sql_error(exc) from None
    return columns, rows


def _sql_error(exc: Exception) -> ImgdbError:
    """DuckDB's message as the error, its hint lines ("Did you mean", candidate bindings, the
    caret under the bad token) kept as hints."""
    first, *rest = str(exc).splitlines() or [type(exc).__name__]
    return UsageError(f"SQL error: {first}").with_hints([line for line in rest if line.strip()])
