"""Where SQLite and PostgreSQL differ, in one module.

Everything else asks these functions instead of testing the dialect itself: the
organisation lock, `INSERT ... ON CONFLICT`, the collation rows are locked in, and how a list
of ids becomes a condition.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

# Bound parameters per IN list (SQLite): well under its limit.
IN_CHUNK = 900


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def lock_organization(conn: Connection, org_id: str, *, exclusive: bool) -> None:
    """The organisation's transaction-scoped lock (PostgreSQL: an advisory lock on the hash
    of its id). SQLite needs none: every write transaction starts with BEGIN IMMEDIATE, so
    writers are serialised anyway."""
    if not is_postgresql(conn):
        return
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    conn.execute(sa.text(f"SELECT {function}(hashtext(:org))"), {"org": "org:" + org_id})


def upsert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT on this backend."""
    if is_postgresql(conn):
        return postgresql.insert(table)
    return sqlite.insert(table)


def lock_order(conn: Connection, column: Any) -> Any:
    """`column` for an ORDER BY that locks rows: code-point order, on every backend.

    Every writer locks queue rows in one order, so two writers queueing overlapping objects
    cannot deadlock. Python sorts str by code point, SQLite's BINARY collation compares UTF-8
    bytes (the same order), and PostgreSQL's "C" collation does too; the database's default
    collation (en_US, ICU) may not (it can put "u_1" before "u1"), so it is never used here."""
    return column.collate("C") if is_postgresql(conn) else column


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def id_filters(
    conn: Connection, column: sa.ColumnElement[Any], ids: Sequence[Any]
) -> Iterator[sa.ColumnElement[bool]]:
    """`column` among `ids`, as few conditions as the backend likes: on PostgreSQL a single
    `column = ANY(:array)` (one parameter, so the statement text is always the same and
    psycopg/PostgreSQL parse and plan it once); elsewhere `IN` lists of at most `IN_CHUNK`."""
    if not ids:
        return
    if is_postgresql(conn):
        array = sa.bindparam(None, list(ids), type_=postgresql.ARRAY(column.type), unique=True)
        yield column == sa.any_(array)
        return
    for part in chunks(ids):
        yield column.in_(part)
