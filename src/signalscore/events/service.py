"""The event log's read side (SPEC §10): the ordered feed, an object's history, and
retention. Every function is scoped to one organisation in its SQL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from signalscore import cursors
from signalscore.db.engine import Database
from signalscore.db.tables import event_counters, score_events
from signalscore.errors import Gone

e = score_events
c = event_counters


def _counter(conn: Connection, org_id: str) -> tuple[int, int]:
    """(the last sequence handed out, the last one retention deleted)."""
    found = conn.execute(
        sa.select(c.c.last_sequence, c.c.expired_through).where(c.c.organization_id == org_id)
    ).one_or_none()
    return (0, 0) if found is None else (int(found[0]), int(found[1]))


# The first range a feed read looks at is `limit` sequences long (SPAN_MIN at least); each
# next one twice the last, up to SPAN_MAX: a filter that matches few events costs a few
# statements, not one per `limit` events.
SPAN_MIN = 100
SPAN_MAX = 1 << 20


def _range_page() -> sa.Select[Any]:
    return (
        sa.select(e)
        .where(
            e.c.organization_id == sa.bindparam("org"),
            e.c.sequence > sa.bindparam("low"),
            e.c.sequence <= sa.bindparam("high"),
        )
        .order_by(e.c.sequence)
        .limit(sa.bindparam("count"))
    )


def feed(
    conn: Connection,
    org_id: str,
    after: int,
    types: Sequence[str],
    profile_id: uuid.UUID | None,
    limit: int,
) -> tuple[list[Row[Any]], int]:
    """The events after `after`, in sequence order, and the next `after`. 410
    `EVENTS_EXPIRED` when retention has deleted events after `after`: the caller missed
    some.

    The log is read in ranges of sequences, (after, after + span], up to the last sequence
    handed out when the read began (every event up to it is committed: sequences are handed
    out under the counter's lock as their transaction commits), each range cut to what is
    still wanted. A range bounds what any plan reads: with the statistics of an empty log
    (a fresh database, autovacuum behind), PostgreSQL planned `sequence > after ... LIMIT`
    as a scan of the whole rest of the log and a sort of it, for every page."""
    last, expired = _counter(conn, org_id)
    if after < expired:
        raise Gone(
            f"events up to sequence {expired} are no longer kept; this read starts after "
            f"{after}, so some were missed. Read from after={expired} (and rebuild what the "
            "missed events would have told you from GET /v1/scoring/scores).",
            error_code="EVENTS_EXPIRED",
            details={"after": after, "expiredThrough": expired},
        )
    query = _range_page()
    if types:
        query = query.where(e.c.type.in_(sorted(set(types))))
    if profile_id is not None:
        query = query.where(e.c.profile_id == profile_id)
    rows: list[Row[Any]] = []
    low, span = after, max(limit, SPAN_MIN)
    while low < last and len(rows) < limit:
        high = min(last, low + span)
        parameters = {"org": org_id, "low": low, "high": high, "count": limit - len(rows)}
        rows += conn.execute(query, parameters)
        low, span = high, min(span * 2, SPAN_MAX)
    return rows, rows[-1].sequence if rows else after


@dataclass(frozen=True)
class HistoryRead:
    object_type: str
    object_id: str
    profile_id: uuid.UUID | None = None
    dimension: str | None = None
    limit: int = 100
    cursor: str | None = None

    def fingerprint(self) -> str:
        profile = None if self.profile_id is None else str(self.profile_id)
        return cursors.fingerprint(self.object_type, self.object_id, profile, self.dimension)


def history(conn: Connection, org_id: str, read: HistoryRead) -> tuple[list[Row[Any]], str | None]:
    """The object's events, newest first, a page at a time."""
    belongs = read.fingerprint()
    query = sa.select(e).where(
        e.c.organization_id == org_id,
        e.c.object_type == read.object_type,
        e.c.object_id == read.object_id,
    )
    if read.cursor is not None:
        (before,) = cursors.decode(read.cursor, belongs, 1)
        if isinstance(before, bool) or not isinstance(before, int) or before < 0:
            raise cursors.invalid()
        query = query.where(e.c.sequence < before)
    if read.profile_id is not None:
        query = query.where(e.c.profile_id == read.profile_id)
    if read.dimension is not None:
        query = query.where(e.c.dimension == read.dimension)
    rows = list(conn.execute(query.order_by(e.c.sequence.desc()).limit(read.limit + 1)))
    page = rows[: read.limit]
    more = len(rows) > read.limit
    return page, cursors.encode(belongs, page[-1].sequence) if more else None


def expire_events(db: Database, retention_days: float, now: datetime) -> int:
    """Delete every organisation's events older than the retention, recording how far
    (`expired_through`) so a feed read from before it answers 410. Returns how many went.
    Each organisation in its own short transaction; the counter row is locked, as when
    events are written, so this never races a write of the same organisation's events."""
    cutoff = now - timedelta(days=retention_days)
    with db.read() as conn:
        orgs = list(conn.execute(sa.select(c.c.organization_id)).scalars())
    deleted = 0
    for org_id in orgs:
        with db.write(notify=False) as conn:
            counter = conn.execute(
                sa.select(c.c.last_sequence, c.c.expired_through)
                .where(c.c.organization_id == org_id)
                .with_for_update()
            ).one_or_none()
            if counter is None:
                continue
            first_kept = conn.execute(
                sa.select(sa.func.min(e.c.sequence)).where(
                    e.c.organization_id == org_id,
                    e.c.sequence > counter.expired_through,
                    e.c.created_at >= cutoff,
                )
            ).scalar_one_or_none()
            through = counter.last_sequence if first_kept is None else first_kept - 1
            if through <= counter.expired_through:
                continue
            deleted += conn.execute(
                sa.delete(e).where(e.c.organization_id == org_id, e.c.sequence <= through)
            ).rowcount
            conn.execute(
                sa.update(c).where(c.c.organization_id == org_id).values(expired_through=through)
            )
    return deleted
