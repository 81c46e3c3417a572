"""Workers that drain the recompute queue (SPEC §7).

A batch goes through three kinds of transaction:

1. **claim**: up to `batch_size` pending entries (no lease, or an expired one) get a lease
   (`lease_until`, `claimed_by`) and `rerun = false`: interactive entries before background
   ones, each lane shared fairly between the organisations with pending work in it, and each
   organisation's oldest first (`claim_batch`). On PostgreSQL the rows are picked with
   `FOR UPDATE SKIP LOCKED`, so any number of workers claim disjoint sets.
2. **read and score**, per (organisation, type) group, interactive entries first: the
   objects' rules, assignments and values are read and scored in a read transaction that
   takes no lock, so no writer waits for it (`compute_claimed`).
3. **store**, in a short write transaction on the same connection: the entries still leased
   to this worker are locked (`FOR UPDATE`), the changed score rows written, and the entries
   deleted, or released for one more round when a trigger set `rerun` meanwhile. A writer
   that queued one of these objects after the claim set `rerun`; one that queues it during
   this step waits for the row lock and then queues it afresh, so no change is ever missed
   (docs/architecture.md, "the lock protocol").

On PostgreSQL a second thread per worker serves the interactive lane while the worker
computes a batch (`Worker.serve_interactive`), so a value write never waits for a batch of
background work.

A worker that dies anywhere loses nothing: its leases expire and another worker claims them.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db import dialect
from signalscore.db.dialect import key_filters, rows_by_key
from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue
from signalscore.db.types import UTCDateTime, utcnow
from signalscore.engine import BACKENDS
from signalscore.events.service import expire_events
from signalscore.recompute.compute import (
    ProfileCache,
    RecomputeStats,
    compute_objects,
    store_results,
)
from signalscore.recompute.queue import (
    DECAY_SWEEP_CHUNK,
    Lane,
    queue_decayed,
    queue_next_profile_chunk,
)
from signalscore.webhooks.delivery import deliver_once, expire_deliveries, webhooks_due

log = logging.getLogger("signalscore.worker")

q = recompute_queue
QueueKey = tuple[str, str, str]  # (organization_id, object_type, object_id)
Audit = Callable[[str, str, str, float, float], None]


class Claim(list[QueueKey]):
    """The keys `claim_batch` leased: the interactive ones first (`claim[:interactive]`), each
    lane's grouped by (organisation, type)."""

    interactive: int = 0


def new_worker_id() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pending(now: datetime, table: Any = q) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.lease_until.is_(None), table.c.lease_until < now)


@dataclass(frozen=True)
class Waiting:
    """One organisation's pending entries in one lane, as the claim's survey saw them."""

    lane: int
    organization_id: str
    oldest: datetime  # enqueued_at of its oldest pending entry
    count: int  # how many are pending, counted up to the lane's even share (`_survey`)


def _even_share(batch_size: int, organizations: int) -> int:
    return (batch_size + organizations - 1) // organizations


def _survey(
    conn: Connection, now: datetime, batch_size: int, lanes: Sequence[Lane]
) -> list[Waiting]:
    """Every (lane, organisation) with pending entries, in one statement.

    Per lane, a recursive walk of `ix_recompute_queue_claim` (lane, organization_id,
    enqueued_at) jumps from one organisation to the next (one index probe each, however many
    entries each has). For each it reads the oldest entry and counts the entries up to the
    lane's even share of the batch (`_even_share` over the organisations found): enough to
    know which need less than that. So the work grows with the organisations and the batch,
    never with the length of the queue."""
    parts = []
    for lane in lanes:

        def next_organization(after: Any, lane: int = int(lane)) -> Any:
            where = [q.c.lane == lane, _pending(now)]
            if after is not None:
                where.append(q.c.organization_id > after)
            return (
                sa.select(q.c.organization_id)
                .where(*where)
                .order_by(q.c.organization_id)
                .limit(1)
                .scalar_subquery()
            )

        orgs = sa.select(next_organization(None).label("organization_id")).cte(
            f"{lane.name.lower()}_organizations", recursive=True
        )
        orgs = orgs.union_all(
            sa.select(next_organization(orgs.c.organization_id)).where(
                orgs.c.organization_id.is_not(None)
            )
        )
        found = orgs.c.organization_id.is_not(None)
        its_pending = (q.c.lane == int(lane), q.c.organization_id == orgs.c.organization_id,
                       _pending(now))  # fmt: skip
        oldest = (
            sa.select(q.c.enqueued_at)
            .where(*its_pending)
            .order_by(q.c.enqueued_at)
            .limit(1)
            .scalar_subquery()
        )
        even_share = sa.select(
            (sa.literal(batch_size, sa.Integer()) + sa.func.count() - 1) // sa.func.count()
        ).select_from(orgs).where(found)  # fmt: skip
        # ORDER BY as the index is ordered: without it, statistics that overestimate an
        # organisation's entries make a sequential scan that "stops early" look cheap, and
        # it reads the whole queue for an organisation with a handful.
        count = (
            sa.select(sa.func.count())
            .select_from(
                sa.select(sa.literal(1))
                .where(*its_pending)
                .order_by(q.c.enqueued_at)
                .limit(even_share.scalar_subquery())
                .correlate(orgs)
                .subquery()
            )
            .scalar_subquery()
        )
        parts.append(
            sa.select(
                sa.literal(int(lane), sa.SmallInteger()).label("lane"),
                orgs.c.organization_id,
                oldest.label("oldest"),
                count.label("pending"),
            ).where(found)
        )
    rows = conn.execute(sa.union_all(*parts)).all()
    return [Waiting(lane, org_id, oldest, pending) for lane, org_id, oldest, pending in rows]


def fair_shares(capacity: int, demands: Sequence[int]) -> list[int]:
    """Split `capacity` between `demands` max-min fairly: every demand gets the same share,
    except those that need less, whose rest is shared among the others the same way. Capacity
    that does not divide evenly goes one each to the first demands in list order (the caller
    lists the longest-waiting first). Never more than a demand asks, never more than
    `capacity` in all, and all of `capacity` when the demands add up to at least that."""
    shares = [0] * len(demands)
    left = capacity
    unmet = [i for i, demand in enumerate(demands) if demand > 0]
    while left > 0 and unmet:
        level = left // len(unmet)
        if level == 0:
            for i in unmet[:left]:
                shares[i] += 1
            break
        still = []
        for i in unmet:
            take = min(level, demands[i] - shares[i])
            shares[i] += take
            left -= take
            if shares[i] < demands[i]:
                still.append(i)
        unmet = still
    return shares


def _plan(batch_size: int, waiting: Sequence[Waiting]) -> list[tuple[int, str, int]]:
    """(lane, organisation, how many) to claim: the interactive lane first, fairly between its
    organisations; what it leaves of the batch goes to the background lane the same way.

    An organisation whose count reached the lane's even share may have any number more: it
    asks for the whole batch, and gets what the others leave. If it turns out to have fewer
    than it was given, that batch is smaller than it could have been, nothing worse."""
    plan: list[tuple[int, str, int]] = []
    capacity = batch_size
    for lane in Lane:
        groups = sorted(
            (w for w in waiting if w.lane == lane), key=lambda w: (w.oldest, w.organization_id)
        )
        if not groups:
            continue
        even = _even_share(batch_size, len(groups))
        demands = [w.count if w.count < even else batch_size for w in groups]
        shares = fair_shares(capacity, demands)
        plan.extend(
            (int(lane), w.organization_id, n) for w, n in zip(groups, shares, strict=True) if n
        )
        capacity -= sum(shares)
    return plan


def claim_batch(
    conn: Connection,
    worker_id: str,
    batch_size: int,
    lease_seconds: float,
    *,
    lanes: Sequence[Lane] = tuple(Lane),
) -> Claim:
    """Lease up to `batch_size` pending entries to this worker.

    Interactive entries first, then background ones. Within a lane the batch is shared
    max-min fairly between the organisations with pending entries (`fair_shares`), and each
    organisation's share is its oldest entries. So neither another organisation's backlog nor
    a rule change's fan-out (background) stands between an interactive trigger and the next
    claim. Two statements: who is waiting (`_survey`), then the lease of each share. `lanes`
    limits the claim to some lanes (a busy worker's look at the interactive lane)."""
    dialect.plan_each_claim(conn)
    now = utcnow()
    plan = _plan(batch_size, _survey(conn, now, batch_size, lanes))
    if not plan:
        return Claim()
    lease = {
        "lease_until": sa.literal(now + timedelta(seconds=lease_seconds), UTCDateTime()),
        "claimed_by": worker_id,
        "rerun": False,
    }
    returning = (q.c.organization_id, q.c.object_type, q.c.object_id, q.c.lane)
    rows = dialect.lease_shares(conn, plan, lambda table: _pending(now, table), lease, returning)
    rows.sort(key=lambda r: (r.lane, r.organization_id, r.object_type))
    claim = Claim((r.organization_id, r.object_type, r.object_id) for r in rows)
    claim.interactive = sum(r.lane == Lane.INTERACTIVE for r in rows)
    return claim


def interactive_waiting(conn: Connection) -> bool:
    """Whether an interactive entry is pending: one probe of `ix_recompute_queue_claim`."""
    found = conn.execute(
        sa.select(q.c.organization_id)
        .where(q.c.lane == int(Lane.INTERACTIVE), _pending(utcnow()))
        .order_by(q.c.organization_id)  # the index's order: no plan reads more than it must
        .limit(1)
    ).first()
    return found is not None


#: A result computed before a trigger that arrived meanwhile (`rerun`) is not stored: the
#: trigger may have been a change (an assignment computed in its own request, an
#: unassignment) that the result would undo until the next round. Unless the entry has been
#: waiting longer than this, so an object triggered faster than it computes still moves.
STALE_RESULT_GRACE_SECONDS = 5.0


def _owned(
    conn: Connection, worker_id: str, org_id: str, object_type: str, ids: Sequence[str]
) -> list[Any]:
    """The entries among `ids` still leased to this worker, locked (`FOR UPDATE`) in the
    order every writer locks queue rows in (`rows_by_key` with `lock`)."""
    owned: list[Any] = []
    for query in rows_by_key(
        conn,
        q,
        "object_id",
        list(ids),
        [q.c.object_id, q.c.rerun, q.c.enqueued_at],
        match={"organization_id": org_id, "object_type": object_type},
        where=[q.c.claimed_by == worker_id],
        lock=True,
    ):
        owned.extend(conn.execute(query))
    return owned


def compute_claimed(
    db: Database,
    worker_id: str,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    *,
    profiles: ProfileCache | None = None,
    audit: Audit | None = None,
    now: datetime | None = None,
) -> RecomputeStats:
    """Compute one (organisation, object type) group of a claimed batch, at `now` (default:
    the current time; decay, SPEC §13), in two steps:

    1. **read and score**, in a read transaction that takes no lock (`compute_objects`): a
       writer never waits for this part, however long the batch;
    2. **store**, in a short write transaction: lock the entries still leased to this worker
       (a writer queueing one of these objects now waits for this step only), store the
       results of the objects no trigger reached since the claim (`store_results`, which
       reads the stored rows here), then delete those entries and give back the others for
       one more round.

    Why nothing is missed: every write that changes an object's score queues the object in
    its own transaction. One that committed before step 1's reads is in them. One whose
    queueing ran after the claim set `rerun` on the leased entry (or waits for step 2 and
    then queues a fresh entry). One whose queueing ran before the claim still held the
    entry's row lock, and the claim skipped the entry (`SKIP LOCKED`).

    `audit` is told, per object stored, the interval from this group's read to its store,
    inside which no other worker may compute it: the concurrency tests check that no two
    such intervals overlap."""
    started = time.monotonic()
    with db.read_then_write() as (read, write):
        with read() as conn:
            computed = compute_objects(
                conn, org_id, object_type, object_ids, profiles=profiles, now=now
            )
        with write() as conn:
            dialect.derived_commit(conn)
            owned = _owned(conn, worker_id, org_id, object_type, object_ids)
            if not owned:  # every lease expired and was taken over: the new owner computes them
                return RecomputeStats()
            grace = utcnow() - timedelta(seconds=STALE_RESULT_GRACE_SECONDS)
            store = [row.object_id for row in owned if not row.rerun or row.enqueued_at < grace]
            stats = store_results(conn, org_id, object_type, computed, only=store)
            finished = [row.object_id for row in owned if not row.rerun]
            again = [row.object_id for row in owned if row.rerun]
            # Entries this transaction has locked (`_owned`): nobody else changes them.
            match = {"organization_id": org_id, "object_type": object_type}
            for among in key_filters(conn, q, "object_id", finished, match=match):
                conn.execute(sa.delete(q).where(among))
            for among in key_filters(conn, q, "object_id", again, match=match):
                # A trigger arrived while this object was being computed: once more, from the top.
                conn.execute(
                    sa.update(q).where(among).values(lease_until=None, claimed_by=None, rerun=False)
                )
            if audit is not None:
                ended = time.monotonic()  # still inside the transaction: the locks are held
                for object_id in store:
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
    # Housekeeping, between batches: events past their retention are deleted this often.
    event_retention_days: float = 30.0
    housekeeping_seconds: float = 60.0
    # The decay sweep (SPEC §13), between batches: rows past their nextChangeAt are queued.
    decay_sweep_seconds: float = 10.0
    # The time scores are computed at and the sweep compares with: the wall clock, or a
    # test's own (the time-aware invariant of SPEC §13 is tested by moving it).
    clock: Callable[[], datetime] = utcnow
    # Webhook deliveries (a thread of their own): may a URL resolve to a private address?
    webhook_allow_private: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_scale: float = 1.0
    deliver_webhooks: bool = True


def _groups(keys: Sequence[QueueKey]) -> list[tuple[str, str, list[str]]]:
    """(organisation, type, ids) runs of `keys`, in order."""
    return [
        (org_id, object_type, [object_id for _, _, object_id in run])
        for (org_id, object_type), run in itertools.groupby(keys, key=lambda k: k[:2])
    ]


class Wakeup(threading.Event):
    """A worker's wake-up call (every committed write sets it in embedded mode): it wakes the
    worker's loop when idle, and its interactive thread when the loop is busy."""

    def __init__(self) -> None:
        super().__init__()
        self.interactive = threading.Event()

    def set(self) -> None:
        self.interactive.set()
        super().set()


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
        self.wakeup = Wakeup()
        self.busy = threading.Event()  # set while `run_once` computes a batch
        self._counting = threading.Lock()
        self._interactive_profiles: ProfileCache = {}  # the interactive thread's own cache

    def run_once(self) -> int:
        """Continue one profile fan-out by a chunk, then claim and process one batch.

        Returns how many queue entries it claimed; when it claimed none but continued a
        fan-out, how many objects that queued (at least 1). 0 means there was nothing to do."""
        with self.db.write(notify=False) as conn:  # one transaction: fan-out step and claim
            dialect.derived_commit(conn)
            fanned_out = queue_next_profile_chunk(conn)
            claimed = claim_batch(
                conn, self.worker_id, self.config.batch_size, self.config.lease_seconds
            )
        if not claimed:
            return 0 if fanned_out is None else max(fanned_out, 1)
        # One transaction per (organisation, type), interactive entries first and apart: a
        # value write is computed neither behind nor together with the background entries
        # that filled the rest of the batch.
        split = getattr(claimed, "interactive", 0)
        self.busy.set()
        try:
            for org_id, object_type, object_ids in [
                *_groups(claimed[:split]),
                *_groups(claimed[split:]),
            ]:
                self._compute(self.worker_id, self.profiles, org_id, object_type, object_ids)
        finally:
            self.busy.clear()
        return len(claimed)

    def run_interactive_once(self, worker_id: str) -> int:
        """Claim and compute interactive entries only, as `worker_id` (the interactive
        thread's lease holder id); how many it claimed. One read when none is pending."""
        with self.db.read() as conn:
            if not interactive_waiting(conn):
                return 0
        with self.db.write(notify=False) as conn:
            claimed = claim_batch(
                conn,
                worker_id,
                self.config.batch_size,
                self.config.lease_seconds,
                lanes=(Lane.INTERACTIVE,),
            )
        for org_id, object_type, object_ids in _groups(claimed):
            self._compute(worker_id, self._interactive_profiles, org_id, object_type, object_ids)
        return len(claimed)

    def _compute(
        self,
        worker_id: str,
        profiles: ProfileCache,
        org_id: str,
        object_type: str,
        object_ids: list[str],
    ) -> None:
        stats = compute_claimed(
            self.db,
            worker_id,
            org_id,
            object_type,
            object_ids,
            profiles=profiles,
            audit=self.audit,
            now=self.config.clock(),
        )
        with self._counting:
            self.computed += stats.objects

    def serve_interactive(self, stop: threading.Event) -> None:
        """The interactive lane's own capacity (PostgreSQL): while this worker computes a
        batch, which may be minutes of another organisation's backlog or of a rule change's
        fan-out, this loop (a second thread, with its own lease holder id and connection)
        claims and computes interactive entries only, looking every `poll_seconds` and on
        every wake-up. While the worker is idle it waits: the worker's own loop claims
        interactive entries first."""
        worker_id = f"{self.worker_id}+i"
        backoff = self.config.poll_seconds
        while not stop.is_set():
            if not self.busy.wait(self.config.poll_seconds):
                continue
            self.wakeup.interactive.clear()  # a write from here on ends the wait below
            try:
                taken = self.run_interactive_once(worker_id)
                backoff = self.config.poll_seconds
            except sa.exc.OperationalError as exc:
                log.warning("worker %s: database unavailable (%s)", worker_id, type(exc).__name__)
                taken, backoff = 0, min(backoff * 2, 5.0)
            except Exception:
                log.exception("worker %s: interactive batch failed; leases expire", worker_id)
                taken, backoff = 0, min(backoff * 2, 5.0)
            if not taken and not stop.is_set():
                self.wakeup.interactive.wait(backoff)
        try:
            release_claims(self.db, worker_id)
        except sa.exc.SQLAlchemyError:
            log.warning("worker %s: could not release leases; they will expire", worker_id)

    def housekeeping(self, now: datetime | None = None) -> int:
        """What a worker does besides batches: delete events (and webhook delivery attempts)
        past their retention (every worker may; each organisation's deletion holds its event
        counter, so two workers never delete the same events twice). How many events went."""
        now = now or utcnow()
        days = self.config.event_retention_days
        expired = expire_events(self.db, days, now)
        expire_deliveries(self.db, days, now)  # the delivery log is kept as long
        return expired

    def sweep_decayed(self, now: datetime | None = None, *, steps: int = 20) -> int:
        """Queue the objects whose score rows' `nextChangeAt` has passed (SPEC §13), a chunk
        per transaction (`queue.queue_decayed`), at most `steps` chunks per call (the next
        sweep continues). Every worker may sweep: two sweeps queue an object once. How many
        rows were due."""
        now = now or self.config.clock()
        found = 0
        for _ in range(steps):
            with self.db.write() as conn:
                step = queue_decayed(conn, now)
            found += step
            if step < DECAY_SWEEP_CHUNK:
                break
        return found

    def serve_webhooks(self, stop: threading.Event) -> None:
        """Deliver webhook batches (webhooks/delivery.py) until `stop` is set: a thread of
        its own, so a slow receiver (10 s at most per attempt) never holds up scoring. Looks
        for due work every `poll_seconds`, with a read that takes no lock."""
        backoff = self.config.poll_seconds
        while not stop.is_set():
            try:
                sent = 0
                if webhooks_due(self.db, utcnow()):
                    sent = deliver_once(
                        self.db,
                        allow_private=self.config.webhook_allow_private,
                        timeout=self.config.webhook_timeout_seconds,
                        retry_scale=self.config.webhook_retry_scale,
                    )
                backoff = self.config.poll_seconds
            except sa.exc.OperationalError as exc:
                log.warning(
                    "worker %s: database unavailable (%s)", self.worker_id, type(exc).__name__
                )
                sent, backoff = 0, min(backoff * 2, 5.0)
            except Exception:
                log.exception(
                    "worker %s: a webhook delivery failed; its lease expires", self.worker_id
                )
                sent, backoff = 0, min(backoff * 2, 5.0)
            if not sent:
                stop.wait(backoff)

    def _join(self, *threads: threading.Thread | None) -> None:
        """Wait for this worker's other threads to finish what they hold, for one lease
        period at most: a thread stuck past it (a database call that never returns, say)
        is left behind, a daemon, and what it leased expires as after a crash."""
        deadline = time.monotonic() + self.config.lease_seconds
        for thread in threads:
            if thread is None:
                continue
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "worker %s: %s did not stop within %d s; its leases will expire",
                    self.worker_id,
                    thread.name,
                    self.config.lease_seconds,
                )

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
        # SQLite has one writer at a time: a second thread would only queue behind the first.
        helper = None
        if dialect.concurrent_writers(self.db.dialect):
            helper = threading.Thread(
                target=self.serve_interactive,
                args=(stop,),
                name="signalscore-interactive",
                daemon=True,
            )
            helper.start()
        deliveries = None
        if self.config.deliver_webhooks:
            deliveries = threading.Thread(
                target=self.serve_webhooks, args=(stop,), name="signalscore-webhooks", daemon=True
            )
            deliveries.start()
        backoff = self.config.poll_seconds
        housekeeping = sweep = 0.0  # monotonic times of the next housekeeping and sweep
        while not stop.is_set():
            try:
                if time.monotonic() >= housekeeping:
                    housekeeping = time.monotonic() + self.config.housekeeping_seconds
                    self.housekeeping()
                if time.monotonic() >= sweep:
                    sweep = time.monotonic() + self.config.decay_sweep_seconds
                    self.sweep_decayed()
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
        if helper is not None:
            self.wakeup.interactive.set()
        self._join(helper, deliveries)
        try:
            release_claims(self.db, self.worker_id)
        except sa.exc.SQLAlchemyError:
            log.warning("worker %s: could not release leases; they will expire", self.worker_id)
