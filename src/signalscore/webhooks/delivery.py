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
"""

from __future__ import annotations

import http.client
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
from signalscore.events.schemas import event_json
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


def post(
    url: str, headers: dict[str, str], body: bytes, timeout: float = TIMEOUT_SECONDS
) -> Outcome:
    """POST `body`; a 2xx within 10 s is success. Redirects are not followed (a 3xx is a
    failure: it could point anywhere)."""
    parts = urlsplit(url)
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.monotonic()
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        status = response.status
        error = None if 200 <= status < 300 else f"HTTP {status}"
    except (OSError, http.client.HTTPException) as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    finally:
        connection.close()
    return Outcome(status, (time.monotonic() - started) * 1000, error)


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


def _matching(row: Any, event: Any) -> bool:
    if event.type not in row.event_types:
        return False
    return row.profile_ids is None or str(event.profile_id) in row.profile_ids


def _events_after(
    conn: Connection, org_id: str, after: int, through: int | None, limit: int = SCAN
) -> list[Any]:
    # Each event's changes also as their stored JSON text, passed through into deliveries.
    changes_text = sa.cast(e.c.changes, sa.Text).label("changes_text")
    columns = [column for column in e.c if column.name != "changes"]
    query = sa.select(*columns, changes_text).where(
        e.c.organization_id == org_id, e.c.sequence > after
    )
    if through is not None:
        query = query.where(e.c.sequence <= through)
    return list(conn.execute(query.order_by(e.c.sequence).limit(limit)))


def _next_batch(conn: Connection, row: Any) -> tuple[int, list[Any]] | None:
    """The subscription's next batch after `delivered_through`: (the sequence it ends at,
    its matching events), reading pages of the log until 100 match or `SCAN` events were
    looked at. None when the log has nothing after the cursor."""
    chosen: list[Any] = []
    after, looked = row.delivered_through, 0
    while looked < SCAN:
        page = _events_after(conn, row.organization_id, after, None, MAX_BATCH)
        if not page:
            break
        looked += len(page)
        for event in page:
            if _matching(row, event):
                chosen.append(event)
                if len(chosen) == MAX_BATCH:
                    return event.sequence, chosen
            after = event.sequence
        if len(page) < MAX_BATCH:
            break
    if after == row.delivered_through:
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


def record_attempt(
    conn: Connection,
    row: Any,
    message_id: uuid.UUID,
    event_ids: list[str],
    attempt: int,
    outcome: Outcome,
    now: datetime,
) -> None:
    conn.execute(
        webhook_deliveries.insert().values(
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
    )


def settle(
    conn: Connection,
    row: Any,
    outcome: Outcome,
    event_ids: list[str],
    now: datetime,
    retry_scale: float = 1.0,
) -> None:
    """Record an attempt at the subscription's batch in flight, and move on or wait."""
    attempt = row.attempt + 1
    record_attempt(conn, row, row.pending_message_id, event_ids, attempt, outcome, now)
    same = sa.and_(
        w.c.organization_id == row.organization_id,
        w.c.id == row.id,
        w.c.pending_message_id == row.pending_message_id,
    )
    if outcome.ok:
        conn.execute(
            sa.update(w)
            .where(same)
            .values(
                delivered_through=row.pending_through,
                pending_through=None,
                pending_message_id=None,
                attempt=0,
                next_attempt_at=None,
                failing_since=None,
                lease_until=None,
            )
        )
        return
    failing_since = row.failing_since or now
    values: dict[str, Any] = {
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
    conn.execute(sa.update(w).where(same).values(**values))


def deliver_once(
    db: Database,
    *,
    allow_private: bool,
    now: Callable[[], datetime] = utcnow,
    send: Sender = post,
    timeout: float = TIMEOUT_SECONDS,
    retry_scale: float = 1.0,
    max_batches: int = 50,
) -> int:
    """Lease one due subscription and deliver its batches one after the other while they
    succeed (at most `max_batches`, then the lease goes back for fairness): each outcome
    is settled, and the next batch fixed, in one transaction. How many events were sent (0:
    nothing was due)."""
    lease = lease_for(timeout)
    with db.write(notify=False) as conn:
        dialect.derived_commit(conn)
        leased = claim(conn, now(), lease)
    sent = 0
    for _ in range(max_batches):
        if leased is None:
            break
        row, events = leased
        rendered = [event_json(event, event.changes_text) for event in events]
        event_ids = [str(identifier) for identifier, _ in rendered]
        payload = [document for _, document in rendered]
        headers, body = message(row.secret, str(row.pending_message_id), payload, now())
        try:
            check_url(row.url, allow_private=allow_private)
        except Invalid as refused:
            outcome = Outcome(None, 0.0, refused.fields[0].message[:MAX_ERROR_CHARS])
        else:
            outcome = send(row.url, headers, body, timeout)
        sent += max(len(events), 1)
        # A settle whose lease was lost (a worker that slept past it) changes nothing: the
        # other worker owns the batch now, under the same webhook-id.
        with db.write(notify=False) as conn:
            dialect.derived_commit(conn)
            settle(conn, row, outcome, event_ids, now(), retry_scale)
            leased = None
            if outcome.ok:
                current = conn.execute(
                    sa.select(w)
                    .where(w.c.organization_id == row.organization_id, w.c.id == row.id)
                    .with_for_update()
                ).one_or_none()
                # Still ours (our settle released the lease; nobody took it since).
                if current is not None and current.enabled and current.lease_until is None:
                    leased = _lease(conn, current, now(), lease)
    if leased is not None:  # the batch budget is spent: give the lease back
        with db.write(notify=False) as conn:
            conn.execute(
                sa.update(w)
                .where(w.c.organization_id == leased[0].organization_id, w.c.id == leased[0].id)
                .values(lease_until=None)
            )
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
