"""Enqueueing recomputations (SPEC §7).

Every write that can change a score calls one of the `enqueue_*` functions on the connection
of its own transaction, so the change and the queue entries it causes commit together or not
at all. The queue holds at most one entry per (organisation, objectType, objectId): a trigger
for an object that is already pending merges into it; a trigger for an object a worker is
computing right now sets `rerun`, so it is computed once more afterwards.

Every entry is in a lane (`Lane`): interactive for what a caller is waiting to see (value
writes, assignments, `POST /compute`), background for a rule change's fan-out over a whole
profile. Workers claim interactive entries first (`worker.claim_batch`). An interactive trigger
for an object already queued in the background lane moves that entry to the interactive lane.
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.dialect import changed_values, id_filters, lock_order, rows_by_key, upsert
from signalscore.db.tables import (
    profile_assignments,
    recompute_profiles,
    recompute_queue,
    score_results,
    scoring_rules,
)
from signalscore.db.types import UTCDateTime, utcnow

_QUEUE_KEY = ["organization_id", "object_type", "object_id"]


class Lane(enum.IntEnum):
    """A queue entry's lane (`recompute_queue.lane`): workers claim every pending interactive
    entry before any background one, each lane fairly across organisations."""

    INTERACTIVE = 0  # a value write, an assignment, POST /compute: someone waits for it
    BACKGROUND = 1  # a rule change's fan-out over every object of a profile


def _merge_on_conflict(insert: Any, lane: Lane) -> Any:
    # A running entry (lease held) gets `rerun`. A pending one is not rewritten, unless an
    # interactive trigger moves it out of the background lane: it keeps its original
    # `enqueued_at` (so the oldest-pending age stays honest), and a rule change over many
    # pending objects writes nothing for them. A lane only ever moves up, so the round a
    # `rerun` asks for is interactive if any of its triggers was.
    q = recompute_queue
    if lane is Lane.BACKGROUND:
        return insert.on_conflict_do_update(
            index_elements=_QUEUE_KEY,
            set_={"rerun": sa.true()},
            where=q.c.lease_until.is_not(None),
        )
    return insert.on_conflict_do_update(
        index_elements=_QUEUE_KEY,
        set_={
            "rerun": sa.case((q.c.lease_until.is_not(None), sa.true()), else_=q.c.rerun),
            "lane": int(Lane.INTERACTIVE),
        },
        where=sa.or_(q.c.lease_until.is_not(None), q.c.lane != int(Lane.INTERACTIVE)),
    )


def _running(table: Any, now: datetime) -> sa.ColumnElement[bool]:
    """A queue entry a live worker holds (an unexpired lease)."""
    return sa.and_(table.c.lease_until.is_not(None), table.c.lease_until >= now)


def enqueue_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Iterable[str],
    *,
    lane: Lane = Lane.INTERACTIVE,
) -> int:
    """Queue the given objects (already normalised). Returns how many distinct ids."""
    now = utcnow()
    rows: list[Mapping[str, Any]] = [
        {
            "organization_id": org_id,
            "object_type": object_type,
            "object_id": object_id,
            "enqueued_at": now,
            "lane": int(lane),
        }
        # Sorted by code point: every writer takes queue-row locks in this order (lock_order).
        for object_id in sorted(set(object_ids))
    ]
    if rows:
        conn.execute(_merge_on_conflict(upsert(conn, recompute_queue), lane), rows)
    return len(rows)


def _now_literal() -> sa.BindParameter[Any]:
    return sa.literal(utcnow(), UTCDateTime())


def _enqueue_from_select(conn: Connection, select: sa.Select[Any], lane: Lane) -> None:
    """`select` gives (organization_id, object_type, object_id, enqueued_at, lane) rows."""
    insert = upsert(conn, recompute_queue).from_select(
        ["organization_id", "object_type", "object_id", "enqueued_at", "lane"], select
    )
    conn.execute(_merge_on_conflict(insert, lane))


def _fan_out_chunk(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ValueError(f"SIGNALSCORE_FAN_OUT_CHUNK must be a whole number >= 1, got {raw!r}")
    return int(raw)


#: How many of a profile's objects a worker queues per batch after a rule change
#: (`queue_next_profile_chunk`): one chunk per batch, in its own short transaction.
FAN_OUT_CHUNK = _fan_out_chunk(os.environ.get("SIGNALSCORE_FAN_OUT_CHUNK", "2000"))

_START = ("", "")  # before every (object_type, object_id)


def _queue_profile_chunk(
    conn: Connection, org_id: str, profile_id: Any, after: tuple[str, str]
) -> tuple[int, tuple[str, str] | None]:
    """Queue the profile's next FAN_OUT_CHUNK objects after `after`, in (type, id) order.

    Returns how many were queued and the cursor to continue from (None: that was the last)."""
    a = profile_assignments
    rows = conn.execute(
        sa.select(a.c.object_type, a.c.object_id)
        .where(
            a.c.organization_id == org_id,
            a.c.profile_id == profile_id,
            sa.tuple_(a.c.object_type, a.c.object_id) > sa.tuple_(*map(sa.literal, after)),
        )
        .order_by(a.c.object_type, a.c.object_id)
        .limit(FAN_OUT_CHUNK + 1)  # one more tells whether this chunk is the last
    ).all()
    more, rows = len(rows) > FAN_OUT_CHUNK, rows[:FAN_OUT_CHUNK]
    by_type: dict[str, list[str]] = defaultdict(list)
    for object_type, object_id in rows:
        by_type[object_type].append(object_id)
    for object_type in sorted(by_type):  # sorted, like every other writer's lock order
        enqueue_objects(conn, org_id, object_type, by_type[object_type], lane=Lane.BACKGROUND)
    if not more:
        return len(rows), None
    return len(rows), (rows[-1].object_type, rows[-1].object_id)


def _save_cursor(
    conn: Connection, org_id: str, profile_id: Any, cursor: tuple[str, str] | None
) -> None:
    m = recompute_profiles
    where = (m.c.organization_id == org_id, m.c.profile_id == profile_id)
    if cursor is None:
        conn.execute(sa.delete(m).where(*where))
    else:
        conn.execute(sa.update(m).where(*where).values(cursor_type=cursor[0], cursor_id=cursor[1]))


def enqueue_profile_objects(conn: Connection, org_id: str, profile_id: Any) -> None:
    """Queue every object assigned to a profile (its rules changed), in the background lane.

    This records the profile in `recompute_profiles` with a cursor at the start, and workers
    queue its objects, FAN_OUT_CHUNK per batch (`queue_next_profile_chunk`), after this
    commits. So the rule write stays one small statement however large the profile, and the
    fan-out sees every assignment committed before it reads them (an assignment committed
    later queues its object itself): a rule write needs no lock against assignment writes. A
    new change restarts the cursor: every object must then be computed with the newest
    rules, including those an earlier fan-out already queued. An older row keeps its
    `enqueued_at`.
    """
    insert = upsert(conn, recompute_profiles)
    conn.execute(
        insert.values(
            organization_id=org_id,
            profile_id=profile_id,
            cursor_type=_START[0],
            cursor_id=_START[1],
            enqueued_at=utcnow(),
        ).on_conflict_do_update(
            index_elements=["organization_id", "profile_id"],
            set_={"cursor_type": _START[0], "cursor_id": _START[1]},
        )
    )


def queue_next_profile_chunk(conn: Connection) -> int | None:
    """Continue the oldest unfinished profile fan-out by one chunk (a worker's step).

    Returns how many objects it queued, or None when no fan-out is waiting. Rows another
    worker (or a rule write) holds are skipped."""
    m = recompute_profiles
    row = conn.execute(
        sa.select(m).order_by(m.c.enqueued_at).limit(1).with_for_update(skip_locked=True)
    ).first()
    if row is None:
        return None
    after = (row.cursor_type, row.cursor_id)
    queued, cursor = _queue_profile_chunk(conn, row.organization_id, row.profile_id, after)
    _save_cursor(conn, row.organization_id, row.profile_id, cursor)
    return queued


def enqueue_objects_for_signal_changes(
    conn: Connection,
    org_id: str,
    changed: Mapping[str, Mapping[str, set[str]]],
    *,
    lane: Lane = Lane.INTERACTIVE,
) -> None:
    """Queue the objects whose changed signal values a rule of one of their profiles reads.

    `changed` maps objectType → objectId → the template ids whose value changed.
    """
    a, r = profile_assignments, scoring_rules
    for object_type, by_object in changed.items():
        if not by_object:
            continue
        template_ids = set().union(*by_object.values())
        # Each object with the templates whose value changed for it: an object is queued
        # only for a rule on one of its own changed templates, not on another object's.
        pairs = sorted(
            (o, t) for o, changed_templates in by_object.items() for t in changed_templates
        )
        # The objects' assignments, each object's looked up with the full key (`rows_by_key`).
        for select in rows_by_key(
            conn,
            a,
            "object_id",
            list(by_object),
            [a.c.organization_id, a.c.object_type, a.c.object_id, a.c.profile_id],
            match={"organization_id": org_id, "object_type": object_type},
        ):
            assigned = select.subquery("assigned")
            object_id = lock_order(conn, assigned.c.object_id).label("object_id")
            _enqueue_from_select(
                conn,
                sa.select(
                    assigned.c.organization_id,
                    assigned.c.object_type,
                    object_id,
                    _now_literal(),
                    sa.literal(int(lane), sa.SmallInteger()),
                )
                .join(
                    r,
                    sa.and_(
                        r.c.organization_id == assigned.c.organization_id,
                        r.c.profile_id == assigned.c.profile_id,
                    ),
                )
                .where(
                    r.c.signal_template_id.in_(sorted(template_ids)),
                    sa.tuple_(assigned.c.object_id, r.c.signal_template_id).in_(pairs),
                )
                .distinct()
                .order_by(object_id),
                lane,
            )


def enqueue_objects_for_changed_values(conn: Connection, org_id: str, *, lane: Lane) -> None:
    """Queue the objects of a bulk import's changed values (`dialect.changed_values`) that a
    rule of one of their profiles reads: one statement, whatever the size of the import. It
    is driven from the changed values, each probing its object's assignments by their full
    key, so no backend can plan it as a scan of every assignment per changed value (SQLite
    did, without statistics: 4 s at 10,000 rows)."""
    a, r, c = profile_assignments, scoring_rules, changed_values
    object_id = lock_order(conn, c.c.object_id).label("object_id")
    read_by_a_rule = (
        sa.select(sa.literal(1))
        .select_from(a)
        .join(
            r,
            sa.and_(
                r.c.organization_id == org_id,
                r.c.profile_id == a.c.profile_id,
                r.c.signal_template_id == c.c.signal_template_id,
            ),
        )
        .where(
            a.c.organization_id == org_id,
            a.c.object_type == c.c.object_type,
            a.c.object_id == c.c.object_id,
        )
    )
    _enqueue_from_select(
        conn,
        sa.select(
            sa.literal(org_id, a.c.organization_id.type),
            c.c.object_type,
            object_id,
            _now_literal(),
            sa.literal(int(lane), sa.SmallInteger()),
        )
        .where(sa.exists(read_by_a_rule))
        .distinct()
        .order_by(c.c.object_type, object_id),
        lane,
    )


def enqueue_selected(
    conn: Connection, org_id: str, object_type: str, object_ids: sa.Select[Any], *, lane: Lane
) -> None:
    """Queue the objects whose ids `object_ids` selects (one column, distinct), in one
    statement: a bulk import's new assignments."""
    selected = object_ids.subquery("selected")
    object_id = lock_order(conn, selected.c[0]).label("object_id")
    _enqueue_from_select(
        conn,
        sa.select(
            sa.literal(org_id, recompute_queue.c.organization_id.type),
            sa.literal(object_type, recompute_queue.c.object_type.type),
            object_id,
            _now_literal(),
            sa.literal(int(lane), sa.SmallInteger()),
        ).order_by(object_id),
        lane,
    )


@dataclass(frozen=True)
class QueueFigures:
    """The queue across every organisation, counts only (for /metrics)."""

    pending: int
    running: int
    oldest_pending_seconds: float
    fan_outs: int


def queue_figures(conn: Connection) -> QueueFigures:
    q = recompute_queue
    now = utcnow()
    running = _running(q, now)
    pending, leased, oldest = conn.execute(
        sa.select(
            sa.func.count().filter(sa.not_(running)),
            sa.func.count().filter(running),
            sa.func.min(q.c.enqueued_at).filter(sa.not_(running)),
        )
    ).one()
    fan_outs = conn.execute(sa.select(sa.func.count()).select_from(recompute_profiles)).scalar_one()
    if isinstance(oldest, str):  # SQLite returns aggregates as text
        oldest = UTCDateTime().process_result_value(oldest, conn.dialect)
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return QueueFigures(int(pending), int(leased), round(age, 3), int(fan_outs))


def queue_status(conn: Connection, org_id: str) -> tuple[int, int, float]:
    """(pending, running, age in seconds of the oldest pending entry) for one organisation.

    Pending counts each object once: queued and not running, or assigned to a profile whose
    fan-out has not reached it yet (and not queued). One statement, so one snapshot: a
    fan-out step committing meanwhile cannot make work vanish between two reads."""
    q, m, a = recompute_queue, recompute_profiles, profile_assignments
    now = utcnow()
    running = _running(q, now)
    waiting = sa.and_(q.c.organization_id == org_id, sa.not_(running))
    queued_elsewhere = q.alias("queued")
    not_fanned_out = (
        sa.select(sa.func.count())
        .select_from(a.join(m, sa.and_(m.c.organization_id == a.c.organization_id,
                                       m.c.profile_id == a.c.profile_id)))
        .where(
            a.c.organization_id == org_id,
            sa.tuple_(a.c.object_type, a.c.object_id) > sa.tuple_(m.c.cursor_type, m.c.cursor_id),
            ~sa.exists().where(
                queued_elsewhere.c.organization_id == a.c.organization_id,
                queued_elsewhere.c.object_type == a.c.object_type,
                queued_elsewhere.c.object_id == a.c.object_id,
                sa.not_(_running(queued_elsewhere, now)),
            ),
        )
        .scalar_subquery()
    )  # fmt: skip
    row = conn.execute(
        sa.select(
            sa.select(sa.func.count()).where(waiting).scalar_subquery(),
            sa.select(sa.func.count())
            .where(q.c.organization_id == org_id, running)
            .scalar_subquery(),
            sa.select(sa.func.min(q.c.enqueued_at)).where(waiting).scalar_subquery(),
            not_fanned_out,
            sa.select(sa.func.min(m.c.enqueued_at))
            .where(m.c.organization_id == org_id)
            .scalar_subquery(),
        )
    ).one()
    queued, running_count, oldest_queued, fanned_later, oldest_fan_out = row
    starts: list[datetime] = []
    for start in (oldest_queued, oldest_fan_out):
        if isinstance(start, str):  # SQLite returns aggregates as text
            start = UTCDateTime().process_result_value(start, conn.dialect)
        if start is not None:
            starts.append(start)
    oldest = min(starts) if starts else None
    age = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
    return int(queued) + int(fanned_later), int(running_count), round(age, 3)


#: Score rows one step of the decay sweep looks at.
DECAY_SWEEP_CHUNK = 5_000


def queue_decayed(conn: Connection, now: datetime) -> int:
    """One step of the decay sweep (SPEC §13): queue (background lane) the objects of up to
    `DECAY_SWEEP_CHUNK` score rows whose `next_change_at` has passed, earliest first, and
    clear it on those rows, in this transaction; returns how many rows it found.

    Their recomputation stores a new `next_change_at` (the next step, or NULL). Clearing is
    what moves the sweep on to later rows without holding any lock while it reads: the read
    takes none, the queue rows are written first (the order in which a worker's store step
    takes them, so the two cannot deadlock), and a row recomputed since the read, whose
    `next_change_at` is no longer past, keeps it (the UPDATE checks the condition again on
    the row's current version)."""
    s = score_results
    due = conn.execute(
        sa.select(s.c.id, s.c.organization_id, s.c.object_type, s.c.object_id)
        .where(s.c.next_change_at < now)
        .order_by(s.c.next_change_at)
        .limit(DECAY_SWEEP_CHUNK)
    ).all()
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    for _, org_id, object_type, object_id in due:
        groups[(org_id, object_type)].add(object_id)
    for (org_id, object_type), object_ids in sorted(groups.items()):
        enqueue_objects(conn, org_id, object_type, object_ids, lane=Lane.BACKGROUND)
    for among in id_filters(conn, s.c.id, [row.id for row in due]):
        conn.execute(
            sa.update(s).where(among, s.c.next_change_at < now).values(next_change_at=None)
        )
    return len(due)
