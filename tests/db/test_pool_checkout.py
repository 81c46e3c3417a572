"""Pooled connections on PostgreSQL are checked on checkout without a round trip
(`db/engine.py`, `_check_on_checkout`), and `Database.read(transaction=False)` sends no BEGIN
or COMMIT. A connection whose backend went away is still replaced before it is used."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.db import engine as engine_module
from signalscore.db.engine import Database, create_db_engine
from tests.conftest import POSTGRES_ADMIN_URL, postgres_unavailable_reason


@pytest.fixture
def pg() -> Iterator[Database]:
    reason = postgres_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    db = Database(create_db_engine(POSTGRES_ADMIN_URL, connect_timeout=3))
    yield db
    db.dispose()


@pytest.fixture
def pings(pg: Database, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every ping the pool sends (the dialect's `do_ping`), by call."""
    calls: list[int] = []
    ping = pg.engine.dialect.do_ping

    def counted(dbapi_conn: Any) -> bool:
        calls.append(1)
        return bool(ping(dbapi_conn))

    monkeypatch.setattr(pg.engine.dialect, "do_ping", counted)
    return calls


def _backend_pid(db: Database) -> int:
    with db.read(transaction=False) as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_busy_connection_is_not_pinged(pg: Database, pings: list[int]) -> None:
    first = _backend_pid(pg)
    for _ in range(5):
        assert _backend_pid(pg) == first
    assert pings == []


def test_an_idle_connection_is_pinged(
    pg: Database, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(pg)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert _backend_pid(pg) == first
    assert len(pings) == 1


def test_a_terminated_backend_is_replaced_before_use(pg: Database, pings: list[int]) -> None:
    first = _backend_pid(pg)
    admin = create_db_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
            deadline = time.monotonic() + 10
            while conn.execute(
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": first}
            ).scalar_one():
                assert time.monotonic() < deadline, "the backend did not exit"
                time.sleep(0.05)
    finally:
        admin.dispose()
    # The pooled connection's socket now has the server's goodbye to read: it is pinged,
    # fails, and the pool connects afresh; the read itself never sees the dead connection.
    second = _backend_pid(pg)
    assert second != first
    assert len(pings) == 1
    with pg.write() as conn:  # a transaction on the new connection works as well
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_a_read_without_a_transaction_sends_no_begin(pg: Database) -> None:
    with pg.read(transaction=False) as conn:
        conn.execute(sa.text("SELECT 1")).scalar_one()
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        assert dbapi_conn.info.transaction_status.name == "IDLE"  # autocommit: no BEGIN sent
    with pg.read() as conn:  # and the connection is back to transactions for the next unit
        conn.execute(sa.text("SELECT 1")).scalar_one()
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None
        assert dbapi_conn.info.transaction_status.name == "INTRANS"
