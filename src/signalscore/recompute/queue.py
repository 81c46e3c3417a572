"""Enqueueing recomputations (SPEC §7).

Every write that can change a score calls one of the `enqueue_*` functions on the connection
of its own transaction, so the change and the queue entries it causes commit together or not
at all. The queue holds at most one entry per (organisation, objectType, objectId): a trigger
for an object that is already pending merges into it; a trigger for an object a worker is
computing right now sets `rerun`, so it is computed once more afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from signalscore.db.tables import profile_assignments, recompute_queue, scoring_rules
from signalscore.db.types import UTCDateTime, utcnow

_QUEUE_KEY = ["organization_id", "object_type", "object_id"]


def _merge_on_conflict(insert: Any) -> Any:
    # A running entry (lease held) gets `rerun`. A pending one is not rewritten at all: it keeps
    # its original `enqueued_at` (so the oldest-pending age stays honest) and a rule change
    # over many pending objects writes nothing for them.
    return insert.on_conflict_do_update(
        index_elements=_QUEUE_KEY,
        set_={"rerun": sa.true()},
        where=recompute_queue.c.lease_until.is_not(None),
    )


def _dialect_insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(recompute_queue)
    return sqlite.insert(recompute_queue)


def enqueue_objects(
    conn: Connection, org_id: str, object_type: str, object_ids: Iterable[str]
) -> int:
    """Queue the given objects (already normalised). Returns how many distinct ids."""
    now = utcnow()
    rows: list[Mapping[str, Any]] = [
        {
            "organization_id": org_id,
            "object_type": object_type,
            "object_id": object_id,
            "enqueued_at": now,
        }
        # Sorted: every writer takes queue-row locks in the same order, so two writers
        # queueing overlapping objects can never deadlock.
        for object_id in sorted(set(object_ids))
    ]
    if rows:
        conn.execute(_merge_on_conflict(_dialect_insert(conn)), rows)
    return len(rows)


def _now_literal() -> sa.BindParameter[Any]:
    return sa.literal(utcnow(), UTCDateTime())


def _enqueue_from_select(conn: Connection, select: sa.Select[Any]) -> None:
    insert = _dialect_insert(conn).from_select(
        ["organization_id", "object_type", "object_id", "enqueued_at"], select
    )
    conn.execute(_merge_on_conflict(insert))


def enqueue_profile_objects(conn: Connection, org_id: str, profile_id: Any) -> None:
    """Queue every object assigned to a profile (its rules changed)."""
    a = profile_assignments
    _enqueue_from_select(
        conn,
        sa.select(a.c.organization_id, a.c.object_type, a.c.object_id, _now_literal())
        .where(a.c.organization_id == org_id, a.c.profile_id == profile_id)
        .distinct()
        .order_by(a.c.object_id),  # same lock order as every other enqueue
    )


def enqueue_objects_for_signal_changes(
    conn: Connection, org_id: str, changed: Mapping[str, Mapping[str, set[str]]]
) -> None:
    """Queue the objects whose changed signal values a rule of one of their profiles reads.

    `changed` maps objectType → objectId → the template ids whose value changed.
    """
    a, r = profile_assignments, scoring_rules
    for object_type, by_object in changed.items():
        if not by_object:
            continue
        template_ids = set().union(*by_object.values())
        _enqueue_from_select(
            conn,
            sa.select(a.c.organization_id, a.c.object_type, a.c.object_id, _now_literal())
            .join(
                r,
                sa.and_(
                    r.c.organization_id == a.c.organization_id, r.c.profile_id == a.c.profile_id
                ),
            )
            .where(
                a.c.organization_id == org_id,
                a.c.object_type == object_type,
                a.c.object_id.in_(list(by_object)),
                r.c.signal_template_id.in_(sorted(template_ids)),
            )
            .distinct()
            .order_by(a.c.object_id),
        )


def queue_status(conn: Connection, org_id: str) -> tuple[int, int, float]:
    """(pending, running, age in seconds of the oldest pending entry) for one organisation."""
    q = recompute_queue
    now = utcnow()
    running_condition = sa.and_(q.c.lease_until.is_not(None), q.c.lease_until >= now)
    row = conn.execute(
        sa.select(
            sa.func.count().filter(sa.not_(running_condition)),
            sa.func.count().filter(running_condition),
            sa.func.min(q.c.enqueued_at).filter(sa.not_(running_condition)),
        ).where(q.c.organization_id == org_id)
    ).one()
    pending, running, oldest = row
    if isinstance(oldest, str):  # SQLite returns aggregate timestamps as text
        oldest = UTCDateTime().process_result_value(oldest, conn.dialect)
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return int(pending), int(running), round(age, 3)
