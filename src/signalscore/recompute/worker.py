"""Workers that drain the recompute queue (SPEC §7).

A batch goes through two transactions:

1. **claim**: up to `batch_size` pending entries (no lease, or an expired one), oldest first,
   get a lease (`lease_until`, `claimed_by`) and `rerun = false`. On PostgreSQL the candidate
   rows are picked with `FOR UPDATE SKIP LOCKED`, so any number of workers claim disjoint sets.
2. **compute**: the entries still leased to this worker are locked (`FOR UPDATE`), their
   objects recomputed from the rules, assignments and values current now, the changed score
   rows written, and the entries deleted, or released for one more round when a trigger set
   `rerun` meanwhile. A writer that queues one of these objects during this transaction waits
   for the row lock and then queues it afresh, so no change is ever missed.

A worker that dies anywhere loses nothing: its leases expire and another worker claims them.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue
from signalscore.db.types import UTCDateTime, utcnow
from signalscore.engine import BACKENDS
from signalscore.recompute.compute import (
    ProfileCache,
    RecomputeStats,
    id_filters,
    recompute_objects,
)
from signalscore.recompute.locks import lock_organization
from signalscore.recompute.queue import lock_order, queue_next_profile_chunk

log = logging.getLogger("signalscore.worker")

q = recompute_queue
QueueKey = tuple[str, str, str]  # (organization_id, object_type, object_id)
Audit = Callable[[str, str, str, float, float], None]


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pending(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(q.c.lease_until.is_(None), q.c.lease_until < now)


def claim_batch(
    conn: Connection, worker_id: str, batch_size: int, lease_seconds: float
) -> list[QueueKey]:
    """Lease up to `batch_size` pending entries to this worker (oldest first)."""
    if conn.dialect.name == "postgresql":
        # psycopg prepares a statement run five times, and PostgreSQL may then cache a
        # generic plan. An idle worker runs this claim on an empty queue often enough for
        # that plan to be made for an empty table; after a large enqueue it ran for minutes.
        # Plan each claim for the queue as it is now.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    now = utcnow()
    key = sa.tuple_(q.c.organization_id, q.c.object_type, q.c.object_id)
    candidates = (
        sa.select(q.c.organization_id, q.c.object_type, q.c.object_id)
        .where(_pending(now))
        .order_by(q.c.enqueued_at)
        .limit(batch_size)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(
        sa.update(q)
        .where(key.in_(candidates))
        .values(
            lease_until=sa.literal(now + timedelta(seconds=lease_seconds), UTCDateTime()),
            claimed_by=worker_id,
            rerun=False,
        )
        .returning(q.c.organization_id, q.c.object_type, q.c.object_id)
    ).all()
    return [(r.organization_id, r.object_type, r.object_id) for r in rows]


def _owned(
    conn: Connection, worker_id: str, org_id: str, object_type: str, ids: list[str]
) -> list[Any]:
    owned: list[Any] = []
    for among in id_filters(conn, q.c.object_id, ids):
        query = (
            sa.select(q.c.object_id, q.c.rerun)
            .where(
                q.c.organization_id == org_id,
                q.c.object_type == object_type,
                among,
                q.c.claimed_by == worker_id,
            )
            .order_by(lock_order(conn, q.c.object_id))  # the order every writer locks in
            .with_for_update()
        )
        owned.extend(conn.execute(query))
    return owned


def compute_claimed(
    conn: Connection,
    worker_id: str,
    org_id: str,
    object_type: str,
    object_ids: list[str],
    *,
    profiles: ProfileCache | None = None,
    audit: Audit | None = None,
) -> RecomputeStats:
    """Transaction 2 for one (organisation, object type) group of a claimed batch.

    `audit` is told, per object, the interval in which this worker held the object's queue
    row locked and computed it: the concurrency tests check no two such intervals overlap."""
    lock_organization(conn, org_id, exclusive=False)
    owned = _owned(conn, worker_id, org_id, object_type, object_ids)
    mine = [row.object_id for row in owned]
    if not mine:  # every lease expired and was taken over: the new owner computes them
        return RecomputeStats()
    started = time.monotonic()
    stats = recompute_objects(conn, org_id, object_type, mine, profiles=profiles)
    finished = [row.object_id for row in owned if not row.rerun]
    again = [row.object_id for row in owned if row.rerun]
    where = (q.c.organization_id == org_id, q.c.object_type == object_type)
    for among in id_filters(conn, q.c.object_id, finished):
        conn.execute(sa.delete(q).where(*where, among))
    for among in id_filters(conn, q.c.object_id, again):
        # A trigger arrived while this object was being computed: once more, from the top.
        conn.execute(
            sa.update(q).where(*where, among).values(lease_until=None, claimed_by=None, rerun=False)
        )
    if audit is not None:
        ended = time.monotonic()  # still inside the transaction: the locks are held
        for object_id in mine:
            audit(org_id, object_type, object_id, started, ended)
    return stats


def release_claims(db: Database, worker_id: str) -> int:
    """Give back every entry leased to this worker (graceful shutdown)."""
    with db.write(notify=False) as conn:
        return conn.execute(
            sa.update(q)
            .where(q.c.claimed_by == worker_id)
            .values(lease_until=None, claimed_by=None)
        ).rowcount


@dataclass
class WorkerConfig:
    batch_size: int = 500
    lease_seconds: float = 60.0
    poll_seconds: float = 0.1


class Worker:
    """One queue consumer. `run_once` processes at most one batch; `run` loops until stopped."""

    def __init__(
        self,
        db: Database,
        config: WorkerConfig | None = None,
        *,
        worker_id: str | None = None,
        audit: Audit | None = None,
    ) -> None:
        self.db = db
        self.config = config or WorkerConfig()
        self.worker_id = worker_id or new_worker_id()
        self.audit = audit
        self.profiles: ProfileCache = {}
        self.computed = 0
        self.wakeup = threading.Event()

    def run_once(self) -> int:
        """Continue one profile fan-out by a chunk, then claim and process one batch.

        Returns how many queue entries it claimed; when it claimed none but continued a
        fan-out, how many objects that queued (at least 1). 0 means there was nothing to do."""
        with self.db.write(notify=False) as conn:  # one transaction: fan-out step and claim
            fanned_out = queue_next_profile_chunk(conn)
            claimed = claim_batch(
                conn, self.worker_id, self.config.batch_size, self.config.lease_seconds
            )
        if not claimed:
            return 0 if fanned_out is None else max(fanned_out, 1)
        groups: dict[tuple[str, str], list[str]] = defaultdict(list)
        for org_id, object_type, object_id in claimed:
            groups[(org_id, object_type)].append(object_id)
        for (org_id, object_type), object_ids in groups.items():
            with self.db.write(notify=False) as conn:
                stats = compute_claimed(
                    conn,
                    self.worker_id,
                    org_id,
                    object_type,
                    object_ids,
                    profiles=self.profiles,
                    audit=self.audit,
                )
            self.computed += stats.objects
        return len(claimed)

    def run(self, stop: threading.Event) -> None:
        """Drain the queue until `stop` is set; back off while the database is unreachable."""
        if "native" in BACKENDS:
            log.info("worker %s: scoring with the C engine loop", self.worker_id)
        else:
            log.warning(
                "worker %s: the C engine loop is not built (no C compiler at install?); "
                "scoring with the Python loop, about half the speed",
                self.worker_id,
            )
        backoff = self.config.poll_seconds
        while not stop.is_set():
            try:
                processed = self.run_once()
                backoff = self.config.poll_seconds
            except sa.exc.OperationalError as exc:
                log.warning(
                    "worker %s: database unavailable (%s)", self.worker_id, type(exc).__name__
                )
                processed = 0
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.exception("worker %s: batch failed; its leases will expire", self.worker_id)
                processed = 0
                backoff = min(backoff * 2, 5.0)
            if processed == 0:
                self.wakeup.wait(backoff)
                self.wakeup.clear()
        try:
            release_claims(self.db, self.worker_id)
        except sa.exc.SQLAlchemyError:
            log.warning("worker %s: could not release leases; they will expire", self.worker_id)
