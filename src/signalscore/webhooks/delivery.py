"""Delivering events to webhook subscriptions (SPEC §11), from the event log.

Each subscription is a cursor on its organisation's log (`delivered_through`). A worker
leases one subscription that has something due (`claim`), fixes its next batch if none is in
flight (up to 100 matching events; events that match no filter are skipped over), sends it
signed, and records the outcome (`settle`): a 2xx moves the cursor past the batch; anything
else keeps the batch (and its `webhook-id`) for a retry after 5 s, 30 s, 2 min, 10 min, 1 h,
6 h, then every 12 h, while later events wait behind it. After 3 days of failure the
subscription is disabled. The batch in flight is written before it is sent, so a worker that
dies mid-send leaves it to the next one after the lease: at least once, in order, and a
duplicate is only ever a retry of the same `webhook-id`.

Throughput (one subscription's batches go one at a time): while a batch is in flight, a
thread reads and renders the next ones (`_ReadAhead`; the log only grows at its end, so what
it read stays what comes next); once the batch is acknowledged, one transaction records the
attempt, moves the cursor past it and fixes the next one (`advance`: one statement on
PostgreSQL), and the next one goes out on the same HTTP connection (`Poster`).
"""

from __future__ import annotations

import http.client
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db import dialect
from signalscore.db.engine import Database
from signalscore.db.tables import (
    event_counters,
    score_events,
    webhook_deliveries,
    webhook_subscriptions,
)
from signalscore.db.types import utcnow
from signalscore.errors import Invalid
from signalscore.events.schemas import EVENT_JSON_COLUMNS, events_json
from signalscore.webhooks.signing import sign
from signalscore.webhooks.urls import check_url

w = webhook_subscriptions
e = score_events

MAX_BATCH = 100
SCAN = 1000  # events looked at per claim when the filters skip most of them
TIMEOUT_SECONDS = 10.0
# A lease covers one send (at most the timeout) and its settle, with room to spare: six times
# the timeout, 60 s at the default 10 s. It is what a batch waits when its worker dies
# mid-send, so a shorter timeout (SIGNALSCORE_WEBHOOK_TIMEOUT_SECONDS) shortens it too.
LEASE_PER_TIMEOUT = 6


def lease_for(timeout: float) -> timedelta:
    return timedelta(seconds=LEASE_PER_TIMEOUT * timeout)


LEASE = lease_for(TIMEOUT_SECONDS)
RETRY_DELAYS = [5, 30, 120, 600, 3600, 6 * 3600]
RETRY_EVERY = 12 * 3600
DISABLE_AFTER = timedelta(days=3)
MAX_ERROR_CHARS = 500


def retry_delay(failures: int, scale: float = 1.0) -> timedelta:
    """The wait after the `failures`-th failed attempt at a batch (`scale` < 1 only in
    drills and tests: SIGNALSCORE_WEBHOOK_RETRY_SCALE)."""
    seconds = RETRY_DELAYS[failures - 1] if failures <= len(RETRY_DELAYS) else RETRY_EVERY
    return timedelta(seconds=seconds * scale)


@dataclass
class Outcome:
    status_code: int | None
    duration_ms: float
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


Sender = Callable[[str, dict[str, str], bytes, float], Outcome]


_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Poster:
    """A `Sender` that keeps its connection to the receiver open from one delivery to the
    next (a burst of batches to one subscription). A kept connection that the receiver had
    closed meanwhile (it answers a new request with a reset, or closes without a response)
    is opened again and the request sent once more: the same delivery (same `webhook-id`),
    as any HTTP client does with a stale keep-alive connection. Call `close` when done."""

    def __init__(self) -> None:
        self._connection: http.client.HTTPConnection | None = None
        self._key: tuple[Any, ...] | None = None
        self._used = False

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._key, self._used = None, None, False

    def __call__(
        self, url: str, headers: dict[str, str], body: bytes, timeout: float = TIMEOUT_SECONDS
    ) -> Outcome:
        """POST `body`; a 2xx within 10 s is success. Redirects are not followed (a 3xx is
        a failure: it could point anywhere)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.hostname, parts.port, timeout)
        if key != self._key:
            self.close()
            connection_class = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            self._connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
            self._key = key
        assert self._connection is not None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        started = time.monotonic()
        for again in (self._used and self._connection.sock is not None, False):
            try:
                self._connection.request("POST", path, body=body, headers=headers)
                response = self._connection.getresponse()
                response.read(64 * 1024)
                if not response.isclosed():  # more than we read: the connection is spent
                    self._connection.close()
                status = response.status
                error = None if 200 <= status < 300 else f"HTTP {status}"
                self._used = True
                break
            except (OSError, http.client.HTTPException) as exc:
                self._connection.close()
                self._used = False
                if again and isinstance(exc, _STALE):
                    continue
                status, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                break
        return Outcome(status, (time.monotonic() - started) * 1000, error)


def post(
    url: str, headers: dict[str, str], body: bytes, timeout: float = TIMEOUT_SECONDS
) -> Outcome:
    """One delivery on a connection of its own (`Poster`)."""
    poster = Poster()
    try:
        return poster(url, headers, body, timeout)
    finally:
        poster.close()


def message(
    secret: str, message_id: str, events: list[bytes], now: datetime
) -> tuple[dict[str, str], bytes]:
    """The headers and body of one delivery; `events` are each event's JSON."""
    body = b'{"events":[' + b",".join(events) + b"]}"
    timestamp = int(now.timestamp())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "signalscore-webhooks",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }
    return headers, body


# An event row as `_events_after` reads it: `EVENT_JSON_COLUMNS`, then the changes' text.
_SEQUENCE = EVENT_JSON_COLUMNS.index("sequence")
_TYPE = EVENT_JSON_COLUMNS.index("type")
_PROFILE = EVENT_JSON_COLUMNS.index("profile_id")


def _matching(row: Any, event: Any) -> bool:
    if event[_TYPE] not in row.event_types:
        return False
    return row.profile_ids is None or str(event[_PROFILE]) in row.profile_ids


def _page(bounded: bool) -> sa.Select[Any]:
    """A page of an organisation's log: events after `low` (up to `high` when bounded), the
    first `count` in sequence order, each with its changes as their stored JSON text (passed
    through into deliveries). Built once: the statement is compiled once per connection."""
    changes_text = sa.cast(e.c.changes, sa.Text).label("changes_text")
    query = sa.select(*(e.c[name] for name in EVENT_JSON_COLUMNS), changes_text).where(
        e.c.organization_id == sa.bindparam("org"), e.c.sequence > sa.bindparam("low")
    )
    if bounded:
        query = query.where(e.c.sequence <= sa.bindparam("high"))
    return query.order_by(e.c.sequence).limit(sa.bindparam("count"))


_PAGES = {True: _page(True), False: _page(False)}


def _events_after(
    conn: Connection, org_id: str, after: int, through: int | None, limit: int = SCAN
) -> list[Any]:
    """The first `limit` events after `after` (and up to `through`), in sequence order, as
    rows of `EVENT_JSON_COLUMNS` and the changes' text.

    Sequences are dense above what retention deleted, so the first read is of the range
    (after, after + limit]: with stale statistics (a log that grew since its last ANALYZE)
    PostgreSQL would otherwise plan `sequence > after ... LIMIT` as a bitmap scan of the
    whole rest of the log and a sort, for every batch of a backlog. A short range is the
    log's end (or a gap retention left): the rest is read after its last event (the log only
    grows at its end, so nothing committed meanwhile is skipped)."""

    def page(low: int, high: int | None, count: int) -> list[Any]:
        parameters = {"org": org_id, "low": low, "high": high, "count": count}
        return list(conn.execute(_PAGES[high is not None], parameters))

    high = after + limit if through is None else min(through, after + limit)
    rows = page(after, high, limit)
    if len(rows) < limit and (through is None or high < through):
        rows += page(rows[-1][_SEQUENCE] if rows else after, through, limit - len(rows))
    return rows


def _next_batch(
    conn: Connection, row: Any, start: int | None = None
) -> tuple[int, list[Any]] | None:
    """The subscription's next batch after `start` (by default `delivered_through`): (the
    sequence it ends at, its matching events), reading pages of the log until 100 match or
    `SCAN` events were looked at. None when the log has nothing after it."""
    chosen: list[Any] = []
    start = row.delivered_through if start is None else start
    after, looked = start, 0
    while looked < SCAN:
        page = _events_after(conn, row.organization_id, after, None, MAX_BATCH)
        if not page:
            break
        looked += len(page)
        for event in page:
            if _matching(row, event):
                chosen.append(event)
                if len(chosen) == MAX_BATCH:
                    return event[_SEQUENCE], chosen
            after = event[_SEQUENCE]
        if len(page) < MAX_BATCH:
            break
    if after == start:
        return None
    return after, chosen


def _due() -> sa.ColumnElement[bool]:
    waiting = sa.exists().where(
        e.c.organization_id == w.c.organization_id, e.c.sequence > w.c.delivered_through
    )
    return sa.and_(w.c.enabled, sa.or_(w.c.pending_through.is_not(None), waiting))


def _due_now(now: datetime) -> list[sa.ColumnElement[bool]]:
    return [
        _due(),
        sa.or_(w.c.lease_until.is_(None), w.c.lease_until < now),
        sa.or_(w.c.next_attempt_at.is_(None), w.c.next_attempt_at <= now),
    ]


def webhooks_due(db: Database, now: datetime) -> bool:
    """Whether some subscription has a batch due now: a read that takes no lock, so idle
    workers look often without writing."""
    with db.read() as conn:
        return conn.execute(sa.select(w.c.id).where(*_due_now(now)).limit(1)).first() is not None


def _lease(
    conn: Connection, row: Any, now: datetime, lease: timedelta = LEASE
) -> tuple[Any, list[Any]] | None:
    """Hold the (locked) subscription for this worker and fix its batch if none is in
    flight; (the row, the batch's events), or None when it has nothing to send (the cursor
    then moves past events no filter matched, and the lease is released)."""
    key = sa.and_(w.c.organization_id == row.organization_id, w.c.id == row.id)
    if row.pending_through is not None:
        events = [
            event
            for event in _events_after(
                conn, row.organization_id, row.delivered_through, row.pending_through
            )
            if _matching(row, event)
        ]
        values: dict[str, Any] = {"lease_until": now + lease}
    else:
        batch = _next_batch(conn, row)
        if batch is None or not batch[1]:
            values = {"lease_until": None}
            if batch is not None:  # nothing for this subscription among them: skip past
                values["delivered_through"] = batch[0]
            conn.execute(sa.update(w).where(key).values(**values))
            return None
        through, events = batch
        values = {
            "lease_until": now + lease,
            "pending_through": through,
            "pending_message_id": uuid.uuid4(),
            "attempt": 0,
        }
    leased = conn.execute(sa.update(w).where(key).values(**values).returning(*w.c)).one()
    return leased, events


def claim(
    conn: Connection, now: datetime, lease: timedelta = LEASE
) -> tuple[Any, list[Any]] | None:
    """Lease one subscription with a batch due now (skipping those another worker holds),
    with the batch's events; None when nothing is due."""
    row = conn.execute(
        sa.select(w)
        .where(*_due_now(now))
        .order_by(w.c.next_attempt_at.nulls_first(), w.c.created_at)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).one_or_none()
    return None if row is None else _lease(conn, row, now, lease)


def attempt_row(
    row: Any,
    message_id: uuid.UUID,
    event_ids: list[str],
    attempt: int,
    outcome: Outcome,
    now: datetime,
) -> sa.Insert:
    """The delivery log's row for one attempt (an INSERT to execute)."""
    return webhook_deliveries.insert().values(
        organization_id=row.organization_id,
        id=uuid.uuid4(),
        subscription_id=row.id,
        message_id=message_id,
        event_ids=event_ids,
        attempt=attempt,
        status_code=outcome.status_code,
        duration_ms=round(outcome.duration_ms, 2),
        error=outcome.error,
        created_at=now,
    )


@dataclass
class Batch:
    """A subscription's next batch, read and rendered ahead: the sequence it ends at, and
    its events' ids and JSON (none: the events up to `through` match no filter)."""

    through: int
    event_ids: list[str]
    events: list[bytes]


def _ours(row: Any) -> sa.ColumnElement[bool]:
    """The subscription's row still holds the batch in flight (`row`'s)."""
    return sa.and_(
        w.c.organization_id == row.organization_id,
        w.c.id == row.id,
        w.c.pending_message_id == row.pending_message_id,
    )


def settle(
    conn: Connection,
    row: Any,
    outcome: Outcome,
    event_ids: list[str],
    now: datetime,
    retry_scale: float = 1.0,
) -> None:
    """Record an attempt at the subscription's batch in flight, and move on or wait (the
    lease is released either way)."""
    attempt = row.attempt + 1
    if outcome.ok:
        values: dict[str, Any] = {
            "delivered_through": row.pending_through,
            "pending_through": None,
            "pending_message_id": None,
            "attempt": 0,
            "next_attempt_at": None,
            "failing_since": None,
            "lease_until": None,
        }
    else:
        failing_since = row.failing_since or now
        values = {
            "attempt": attempt,
            "next_attempt_at": now + retry_delay(attempt, retry_scale),
            "failing_since": failing_since,
            "lease_until": None,
        }
        if now - failing_since >= DISABLE_AFTER * retry_scale:
            values |= {
                "enabled": False,
                "disabled_reason": f"every delivery failed for 3 days; last: {outcome.error}"[
                    :MAX_ERROR_CHARS
                ],
            }
    dialect.insert_then(
        conn,
        attempt_row(row, row.pending_message_id, event_ids, attempt, outcome, now),
        sa.update(w).where(_ours(row)).values(**values),
    )


def advance(
    conn: Connection,
    row: Any,
    outcome: Outcome,
    event_ids: list[str],
    now: datetime,
    following: Batch | None,
    lease: timedelta = LEASE,
    retry_scale: float = 1.0,
) -> Any | None:
    """Settle the batch in flight (`settle`) and, when it was delivered and `following` (read
    ahead after it) has events, fix that batch as the one in flight under a new `webhook-id`
    and keep the lease: one statement on PostgreSQL. The subscription's row when the next
    batch is ours to send, else None (the lease is released). The next batch is fixed only
    if nobody changed the subscription meanwhile (`updated_at`: its filters, URL, secret or
    `enabled`); a batch of events that match no filter is skipped over likewise."""
    if not outcome.ok or following is None:
        settle(conn, row, outcome, event_ids, now, retry_scale)
        return None
    unchanged = sa.and_(w.c.enabled, w.c.updated_at == row.updated_at)

    def when_unchanged(column: sa.Column[Any], value: Any, otherwise: Any = None) -> Any:
        return sa.case(
            (unchanged, sa.bindparam(None, value, type_=column.type)),
            else_=sa.null() if otherwise is None else sa.bindparam(None, otherwise, column.type),
        )

    message_id = uuid.uuid4()
    values: dict[str, Any] = {
        "attempt": 0,
        "next_attempt_at": None,
        "failing_since": None,
    }
    if following.events:
        values |= {
            "delivered_through": row.pending_through,
            "pending_through": when_unchanged(w.c.pending_through, following.through),
            "pending_message_id": when_unchanged(w.c.pending_message_id, message_id),
            "lease_until": when_unchanged(w.c.lease_until, now + lease),
        }
    else:  # nothing for this subscription up to `through`: skip past, and let go
        values |= {
            "delivered_through": when_unchanged(
                w.c.delivered_through, following.through, row.pending_through
            ),
            "pending_through": None,
            "pending_message_id": None,
            "lease_until": None,
        }
    updated = dialect.insert_then(
        conn,
        attempt_row(row, row.pending_message_id, event_ids, row.attempt + 1, outcome, now),
        sa.update(w).where(_ours(row)).values(**values).returning(*w.c),
    ).one_or_none()
    if updated is None or updated.pending_message_id != message_id:
        return None
    return updated


READ_AHEAD = 2  # batches read and rendered ahead of the one in flight


class _ReadAhead:
    """Reads and renders a subscription's batches after the one in flight, one after the
    other, on a thread and a connection of their own, at most `READ_AHEAD` ahead of what was
    sent: `next()` gives them in order (None: the log has nothing more). A batch read ahead
    stays the next one (the log only grows at its end, and retention only deletes below the
    cursor); the settle that fixes it checks that the subscription did not change since
    (`advance`)."""

    def __init__(self, db: Database, row: Any, count: int) -> None:
        self.queue: queue.Queue[Batch | BaseException | None] = queue.Queue(READ_AHEAD)
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(db, row, count), name="signalscore-webhook-read", daemon=True
        )
        self.thread.start()

    def _put(self, item: Batch | BaseException | None) -> bool:
        while not self.stopping.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, db: Database, row: Any, count: int) -> None:
        try:
            with db.engine.connect() as conn:
                conn = dialect.autocommit_reads(conn)
                after = row.pending_through
                for _ in range(count):
                    with conn.begin():
                        found = _next_batch(conn, row, after)
                    batch = (
                        None
                        if found is None
                        else Batch(found[0], *events_json(row.organization_id, found[1]))
                    )
                    if not self._put(batch) or batch is None or not batch.events:
                        return
                    after = batch.through
        except BaseException as exc:  # for the sender to raise, once it settled
            self._put(exc)

    def next(self) -> Batch | None:
        item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stopping.set()
        self.thread.join()


def _send(
    row: Any,
    body: bytes,
    headers: dict[str, str],
    send: Sender,
    allow_private: bool,
    timeout: float,
) -> Outcome:
    try:
        check_url(row.url, allow_private=allow_private)
    except Invalid as refused:
        return Outcome(None, 0.0, refused.fields[0].message[:MAX_ERROR_CHARS])
    return send(row.url, headers, body, timeout)


def deliver_once(
    db: Database,
    *,
    allow_private: bool,
    now: Callable[[], datetime] = utcnow,
    send: Sender | None = None,
    timeout: float = TIMEOUT_SECONDS,
    retry_scale: float = 1.0,
    max_batches: int = 50,
) -> int:
    """Lease one due subscription and deliver its batches one after the other while they
    succeed (at most `max_batches`, then the lease goes back for fairness): while a batch is
    in flight the next one is read ahead; each outcome is settled, and the next batch fixed,
    in one transaction. How many events were sent (0: nothing was due)."""
    lease = lease_for(timeout)
    with db.read_then_write() as (_, write):
        with write() as conn:
            dialect.derived_commit(conn)
            leased = claim(conn, now(), lease)
        if leased is None:
            return 0
        row, events = leased
        event_ids, documents = events_json(row.organization_id, events)
        poster = Poster()
        ahead = _ReadAhead(db, row, max_batches - 1)
        sent = 0
        try:
            for number in range(max_batches):
                headers, body = message(row.secret, str(row.pending_message_id), documents, now())
                outcome = _send(row, body, headers, send or poster, allow_private, timeout)
                sent += max(len(event_ids), 1)
                following, failure = None, None
                if outcome.ok and number + 1 < max_batches:
                    try:
                        following = ahead.next()
                    except Exception as exc:  # settle what was sent first
                        failure = exc
                # A settle whose lease was lost (a worker that slept past it) changes nothing:
                # the other worker owns the batch now, under the same webhook-id.
                with write() as conn:
                    dialect.derived_commit(conn)
                    row = advance(
                        conn, row, outcome, event_ids, now(), following, lease, retry_scale
                    )
                if failure is not None:
                    raise failure
                if row is None or following is None:
                    break
                event_ids, documents = following.event_ids, following.events
        finally:
            ahead.close()
            poster.close()
    return sent


@dataclass
class DeliveryFigures:
    """For /metrics: counts and ages only, no tenant content."""

    events_written: int
    attempts: dict[str, int]  # outcome ("delivered" / "failed") -> attempts in the log
    oldest_undelivered_seconds: dict[str, float]  # subscription id -> age (0: none waiting)


def delivery_figures(conn: Connection, now: datetime) -> DeliveryFigures:
    d = webhook_deliveries
    written = conn.execute(
        sa.select(sa.func.coalesce(sa.func.sum(event_counters.c.last_sequence), 0))
    ).scalar_one()
    attempts = {"delivered": 0, "failed": 0}
    for status, count in conn.execute(
        sa.select(d.c.status_code, sa.func.count()).group_by(d.c.status_code)
    ):
        delivered = status is not None and 200 <= status < 300
        attempts["delivered" if delivered else "failed"] += count
    oldest = (
        sa.select(e.c.created_at)
        .where(e.c.organization_id == w.c.organization_id, e.c.sequence > w.c.delivered_through)
        .order_by(e.c.sequence)
        .limit(1)
        .scalar_subquery()
    )
    ages = {}
    for subscription_id, created_at in conn.execute(sa.select(w.c.id, oldest).where(w.c.enabled)):
        ages[str(subscription_id)] = (
            0.0 if created_at is None else max(0.0, (now - created_at).total_seconds())
        )
    return DeliveryFigures(int(written), attempts, ages)


def expire_deliveries(db: Database, retention_days: float, now: datetime) -> int:
    """Delete delivery log rows older than the events' retention; how many went."""
    with db.write(notify=False) as conn:
        return int(
            conn.execute(
                sa.delete(webhook_deliveries).where(
                    webhook_deliveries.c.created_at < now - timedelta(days=retention_days)
                )
            ).rowcount
        )
