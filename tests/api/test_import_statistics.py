"""Bulk imports and the planner (docs/api.md, "Bulk imports", "How it runs"): on PostgreSQL an
import's transaction runs without JIT, the tables its merge joins are analysed when stale
before the merge, on the refresher's thread (`db.statistics`), and the tables it filled after
its commit, without holding up its response; an import goes on when statistics cannot be
refreshed. SQLite has neither JIT nor ANALYZE to run: there the same imports just load."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.db import dialect, statistics
from signalscore.db.engine import Database
from signalscore.db.statistics import StatisticsRefresher
from tests.api.conftest import World

NDJSON = {"content-type": "application/x-ndjson"}
VALUES_IMPORT = "/v1/signals/values/import"
ASSIGNMENTS_IMPORT = "/v1/scoring/assignments/import"


def values_body(count: int, template: str = "employees", prefix: str = "c") -> bytes:
    return b"".join(
        json.dumps(
            {
                "objectType": "company",
                "objectId": f"{prefix}{i}.com",
                "signalTemplateId": template,
                "value": i,
            }
        ).encode()
        + b"\n"
        for i in range(count)
    )


def import_values(world: World, body: bytes) -> Any:
    response = world.call("POST", VALUES_IMPORT, content=body, headers=NDJSON)
    assert response.status_code == 200, response.text
    return response.json()


def analyse_now(database: Database, table: str) -> None:
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"ANALYZE {table}")


def reltuples(database: Database, table: str) -> float:
    with database.read() as conn:
        return float(
            conn.execute(
                sa.text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                {"t": table},
            ).scalar_one()
        )


@pytest.fixture
def statements(database: Database) -> Iterator[list[tuple[float, str, str | None]]]:
    """(time, statement, the transaction's `jit` setting on PostgreSQL) of every statement the
    service runs."""
    seen: list[tuple[float, str, str | None]] = []
    postgresql = database.dialect == "postgresql"

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        jit = None
        if postgresql and not statement.lstrip().upper().startswith(("ANALYZE", "SELECT S.")):
            jit = conn.connection.driver_connection.execute("SHOW jit").fetchone()[0]
        seen.append((time.monotonic(), " ".join(statement.split()), jit))

    sa.event.listen(database.engine, "before_cursor_execute", before)
    yield seen
    sa.event.remove(database.engine, "before_cursor_execute", before)


def test_an_import_plans_without_jit_in_its_own_transaction_only(
    world: World, database: Database, statements: list[tuple[float, str, str | None]]
) -> None:
    """Every statement of a value import and of an assignment import runs with JIT off (on
    PostgreSQL, where it is on by default); the setting ends with the transaction."""
    assert import_values(world, values_body(50))["written"] == 50
    ids = "".join(f"c{i}.com\n" for i in range(50))
    response = world.call(
        "POST",
        ASSIGNMENTS_IMPORT + "?profileId={pid}",
        content=("objectId\n" + ids).encode(),
        headers={"content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["assigned"] == 50
    merges = [s for s in statements if "INSERT INTO signal_values" in s[1]]
    queueing = [s for s in statements if s[1].startswith("INSERT INTO recompute_queue")]
    assigning = [s for s in statements if s[1].startswith("INSERT INTO profile_assignments")]
    assert merges
    assert len(queueing) == 2
    assert assigning
    if database.dialect != "postgresql":
        return
    assert {jit for _, _, jit in merges + queueing + assigning} == {"off"}
    with database.read() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar_one() == "on"


def test_an_import_refreshes_the_statistics_of_the_tables_it_filled(
    world: World, database: Database
) -> None:
    """`signal_values` analysed while empty, then 3,000 values imported: once the refresher
    has settled, its statistics count them (the analysis after the commit). Ten more values
    leave them fresh enough (fewer than 50 + 10% of the rows changed): no analysis."""
    postgresql = database.dialect == "postgresql"
    if postgresql:
        analyse_now(database, "signal_values")
        assert reltuples(database, "signal_values") == 2  # the world's two values
    assert import_values(world, values_body(3_000))["written"] == 3_000
    assert database.statistics.settle(timeout=30)
    if not postgresql:
        assert database.statistics.refresh(["signal_values"]) == 0  # nothing to run
        return
    assert reltuples(database, "signal_values") == 3_000 + 2  # with the world's two values
    with database.read() as conn:
        analysed = conn.execute(
            sa.text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'signal_values'")
        ).scalar_one()
    assert import_values(world, values_body(10, prefix="d"))["written"] == 10
    assert database.statistics.settle(timeout=30)
    with database.read() as conn:
        assert (
            conn.execute(
                sa.text(
                    "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'signal_values'"
                )
            ).scalar_one()
            == analysed
        )


class Recording:
    """An `analyze_if_stale` that records each call's tables and end; a call for exactly
    `held_tables` (any call, if None) waits while `hold` is clear."""

    def __init__(self, delay: float = 0.0, held_tables: list[str] | None = None) -> None:
        self.delay = delay
        self.held_tables = held_tables
        self.calls: list[tuple[list[str], float]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.held = threading.Event()

    def __call__(self, engine: sa.Engine, tables: Sequence[str]) -> list[str]:
        if not self.hold.is_set() and self.held_tables in (None, list(tables)):
            self.held.set()
            assert self.hold.wait(30)
        time.sleep(self.delay)
        analysed = dialect.analyze_if_stale(engine, tables)
        self.calls.append((list(tables), time.monotonic()))
        return analysed


@pytest.fixture
def refresher(database: Database) -> Iterator[Any]:
    """Swap the database's refresher for one built with a given `analyze`."""
    original = database.statistics

    def install(analyze: Any) -> StatisticsRefresher:
        database.statistics = StatisticsRefresher(database.engine, analyze)
        return database.statistics

    yield install
    database.statistics.close()
    database.statistics = original


def test_the_merge_waits_for_its_refresh_and_the_response_does_not(
    world: World,
    database: Database,
    statements: list[tuple[float, str, str | None]],
    refresher: Any,
) -> None:
    """A refresh that takes 0.5 s: the import's merge runs only once the refresh it asked for
    (the tables the merge joins) has finished; the refresh after its commit is held, and the
    response comes all the same, then the refresh runs."""
    after_commit = ["recompute_queue", "signal_values"]
    recording = Recording(delay=0.5, held_tables=after_commit)
    refresher(recording)
    started = time.monotonic()
    assert import_values(world, values_body(20))["written"] == 20
    if database.dialect != "postgresql":
        assert recording.calls == []
        return
    merge_at = next(t for t, s, _ in statements if "INSERT INTO signal_values" in s)
    (before_tables, before_end), *_ = recording.calls
    assert set(before_tables) >= {"signal_values", "profile_assignments", "scoring_rules"}
    assert started < before_end < merge_at

    assert database.statistics.settle(timeout=30)
    recording.hold.clear()  # the next refresh after a commit waits (30 s) until released
    started = time.monotonic()
    assert import_values(world, values_body(20, prefix="d"))["written"] == 20
    assert time.monotonic() - started < 10  # the response did not wait for it
    assert recording.held.wait(30)  # the refresh after the commit was asked for, and waits
    assert not database.statistics.settle(timeout=0.1)
    recording.hold.set()
    assert database.statistics.settle(timeout=30)
    assert recording.calls[-1][0] == after_commit


def test_an_import_goes_on_when_statistics_cannot_be_refreshed(
    world: World,
    database: Database,
    refresher: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refresh that fails (the statistics query raises) or takes longer than the import
    waits (`WAIT_SECONDS`): the import loads all the same, and says why in the log; the
    refresher then works as before."""
    postgresql = database.dialect == "postgresql"
    failing = threading.Event()
    failing.set()

    def analyze(engine: sa.Engine, tables: Sequence[str]) -> list[str]:
        if failing.is_set():
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
        return dialect.analyze_if_stale(engine, tables)

    refresher(analyze)
    with caplog.at_level(logging.WARNING, logger="signalscore"):
        assert import_values(world, values_body(30))["written"] == 30
        assert database.statistics.settle(timeout=30)
    if postgresql:
        assert "refreshing" in caplog.text
        assert "OperationalError" in caplog.text

    failing.clear()
    if postgresql:
        analyse_now(database, "signal_values")
    assert import_values(world, values_body(3_000, "revenue"))["written"] == 3_000
    assert database.statistics.settle(timeout=30)
    if postgresql:
        assert reltuples(database, "signal_values") == 3_000 + 30 + 2

    slow = Recording()
    slow.hold.clear()
    refresher(slow)
    monkeypatch.setattr(statistics, "WAIT_SECONDS", 0.3)
    caplog.clear()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="signalscore"):
        assert import_values(world, values_body(30, prefix="e"))["written"] == 30
    assert time.monotonic() - started < 10
    if postgresql:
        assert slow.held.is_set()
        assert "still refreshing" in caplog.text
    slow.hold.set()
