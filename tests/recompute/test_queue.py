"""Queue semantics (SPEC §7): one entry per object, rerun after a trigger that lands while an
object is computed, leases that expire and are reclaimed, disjoint claims."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from signalscore.config import Settings
from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue
from signalscore.db.types import utcnow
from signalscore.recompute import worker as worker_module
from signalscore.recompute.queue import enqueue_objects, queue_status
from signalscore.recompute.runner import EmbeddedWorker
from signalscore.recompute.worker import (
    Worker,
    WorkerConfig,
    claim_batch,
    compute_claimed,
    release_claims,
)
from tests.helpers import Tenant

q = recompute_queue


def queue_rows(database: Database) -> list[sa.Row]:  # type: ignore[type-arg]
    with database.read() as conn:
        return list(conn.execute(sa.select(q).order_by(q.c.object_id)))


def test_enqueue_merges_pending_entries(database: Database, tenant: Tenant) -> None:
    with database.write() as conn:
        assert enqueue_objects(conn, tenant.org_id, "company", ["a.com", "b.com", "a.com"]) == 2
    first = {r.object_id: r.enqueued_at for r in queue_rows(database)}
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", ["a.com"])
    rows = queue_rows(database)
    assert [r.object_id for r in rows] == ["a.com", "b.com"]
    assert rows[0].enqueued_at == first["a.com"]  # the oldest trigger's age is kept
    assert not any(r.rerun for r in rows)


def test_trigger_while_running_causes_one_more_computation(
    database: Database, tenant: Tenant
) -> None:
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", ["a.com"])
    with database.write() as conn:
        assert claim_batch(conn, "w1", 10, 60) == [(tenant.org_id, "company", "a.com")]
    # Two triggers land while w1 computes: they merge into one rerun.
    for _ in range(2):
        with database.write() as conn:
            enqueue_objects(conn, tenant.org_id, "company", ["a.com"])
    [row] = queue_rows(database)
    assert row.rerun is True
    assert row.claimed_by == "w1"
    compute_claimed(database, "w1", tenant.org_id, "company", ["a.com"])
    [row] = queue_rows(database)
    assert (row.rerun, row.claimed_by, row.lease_until) == (False, None, None)
    with database.write() as conn:
        assert claim_batch(conn, "w2", 10, 60) == [(tenant.org_id, "company", "a.com")]
    compute_claimed(database, "w2", tenant.org_id, "company", ["a.com"])
    assert queue_rows(database) == []


def test_claims_are_disjoint_and_leases_expire(database: Database, tenant: Tenant) -> None:
    ids = [f"c{i}.com" for i in range(10)]
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", ids)
    with database.write() as conn:
        first = claim_batch(conn, "w1", 6, 60)
    with database.write() as conn:
        second = claim_batch(conn, "w2", 6, 60)
    assert len(first) == 6
    assert len(second) == 4
    assert not set(first) & set(second)
    with database.write() as conn:
        assert claim_batch(conn, "w3", 6, 60) == []
        pending, running, _ = queue_status(conn, tenant.org_id)
    assert (pending, running) == (0, 10)
    # w1 dies: its leases expire, and w3 takes its entries over.
    with database.write() as conn:
        conn.execute(
            sa.update(q)
            .where(q.c.claimed_by == "w1")
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
        assert queue_status(conn, tenant.org_id)[:2] == (6, 4)
    with database.write() as conn:
        taken = claim_batch(conn, "w3", 10, 60)
    assert sorted(taken) == sorted(first)
    # The late w1 can no longer complete what it lost.
    stats = compute_claimed(database, "w1", tenant.org_id, "company", [k[2] for k in first])
    assert stats.objects == 0
    assert len(queue_rows(database)) == 10


def test_release_gives_entries_back(database: Database, tenant: Tenant) -> None:
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", ["a.com", "b.com"])
    with database.write() as conn:
        claim_batch(conn, "w1", 10, 60)
    assert release_claims(database, "w1") == 2
    with database.read() as conn:
        assert queue_status(conn, tenant.org_id)[:2] == (2, 0)


def test_worker_drains_and_status_reports_age(database: Database, tenant: Tenant) -> None:
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", [f"c{i}.com" for i in range(25)])
        conn.execute(sa.update(q).values(enqueued_at=utcnow() - timedelta(seconds=30)))
    with database.read() as conn:
        pending, running, oldest = queue_status(conn, tenant.org_id)
    assert (pending, running) == (25, 0)
    assert 29 <= oldest < 120
    worker = Worker(database, WorkerConfig(batch_size=10))
    assert [worker.run_once() for _ in range(4)] == [10, 10, 5, 0]
    with database.read() as conn:
        assert queue_status(conn, tenant.org_id) == (0, 0, 0.0)


def test_embedded_worker_idles_quietly_and_wakes_on_writes(
    database: Database, tenant: Tenant, settings: Settings
) -> None:
    """Its own empty claims must not wake it (that spun a core and starved SQLite writers);
    an application write must."""
    embedded = EmbeddedWorker(database, settings.model_copy(update={"worker_poll_seconds": 0.2}))
    # One worker thread on SQLite (one writer at a time), two on PostgreSQL.
    assert len(embedded.workers) == (2 if database.dialect == "postgresql" else 1)
    rounds = 0

    def counted(original: Callable[[], int]) -> Callable[[], int]:
        def run_once() -> int:
            nonlocal rounds
            rounds += 1
            return original()

        return run_once

    for worker in embedded.workers:
        worker.run_once = counted(worker.run_once)  # type: ignore[method-assign]
    embedded.start()
    try:
        time.sleep(1.0)
        idle_rounds = rounds
        most = 10 * len(embedded.workers)
        assert idle_rounds <= most, f"{idle_rounds} claims in 1 s on an empty queue"
        with database.write() as conn:
            enqueue_objects(conn, tenant.org_id, "company", ["a.com"])
        deadline = time.monotonic() + 5
        while queue_rows(database) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert queue_rows(database) == []
    finally:
        embedded.shutdown()


def test_overlapping_enqueues_in_opposite_orders_do_not_deadlock(
    backend: str, database: Database, tenant: Tenant
) -> None:
    """Found by the load test: unsorted enqueues from two writers deadlocked on PostgreSQL."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers; there is no lock order to get wrong")
    ids = [f"c{i:05d}.com" for i in range(3000)]
    failures: list[BaseException] = []

    def writer(order: list[str]) -> None:
        try:
            for _ in range(5):
                with database.write() as conn:
                    enqueue_objects(conn, tenant.org_id, "company", order)
                    conn.execute(sa.update(q).values(lease_until=utcnow() + timedelta(minutes=1)))
        except BaseException as exc:  # collected and re-raised in the test thread
            failures.append(exc)

    threads = [threading.Thread(target=writer, args=(order,)) for order in (ids, ids[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []


def test_worker_says_which_engine_loop_scores(
    database: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An install without a C compiler silently halves scoring speed; the worker log says so."""
    stop = threading.Event()
    stop.set()
    worker = Worker(database, WorkerConfig(batch_size=10))
    with caplog.at_level(logging.INFO, logger="signalscore.worker"):
        worker.run(stop)
        assert f"worker {worker.worker_id}: scoring with the C engine loop" in caplog.messages
        caplog.clear()
        monkeypatch.setattr(worker_module, "BACKENDS", ("python",))
        worker.run(stop)
    [record] = caplog.records
    assert record.levelname == "WARNING"
    assert "the C engine loop is not built" in record.getMessage()


def test_a_claim_after_a_large_enqueue_is_planned_for_the_full_queue(
    backend: str, database: Database, tenant: Tenant
) -> None:
    """An idle worker claims from an empty queue over and over; psycopg then prepares the
    claim and PostgreSQL may cache a generic plan made for an empty table. With 200,000
    entries queued at once, that plan kept a claim running for minutes."""
    if backend != "postgresql":
        pytest.skip("plan caching is PostgreSQL's")
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.exec_driver_sql("VACUUM ANALYZE recompute_queue")  # statistics: an empty table
    with database.engine.connect() as conn:
        for _ in range(12):  # an idle worker's polls, on one pooled connection
            with conn.begin():
                assert claim_batch(conn, "idle", 500, 30) == []
        with database.write() as other:
            other.execute(
                sa.text(
                    "INSERT INTO recompute_queue (organization_id, object_type, object_id, "
                    "enqueued_at, rerun) SELECT :org, 'company', 'c' || g || '.com', "
                    "now() AT TIME ZONE 'UTC', false FROM generate_series(1, 40000) AS g"
                ),
                {"org": tenant.org_id},
            )
        with conn.begin():
            conn.exec_driver_sql("SET LOCAL statement_timeout = '5s'")
            assert len(claim_batch(conn, "busy", 500, 30)) == 500
