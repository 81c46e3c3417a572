"""The recompute pipeline (SPEC §7): its public face. Features import only this module.

- **Queueing**, on the connection of the write that causes it, so the change and its queue
  entries commit together: `enqueue_objects` (named objects: `POST /compute`, assignments),
  `enqueue_value_changes` (objects whose changed values a rule reads), `enqueue_profile`
  (every object of a profile whose rules changed), and `compute_now` (an assignment's scores
  inside its own request).
- **Locking**: a write that can change scores opens its unit of work with
  `db.write(org=..., ...)`, declaring what it changes (`db.engine.Locks`), and the unit of
  work takes the locks; the queueing functions check the declaration covers what they
  decide on (`LockNotHeld` otherwise). Workers take no organisation lock.
- **Reading**: `queue_status` (one organisation, for `GET /compute/status`) and
  `queue_figures` (every organisation, counts only, for `/metrics`).
- **Running**: `Worker` (worker.py) and `EmbeddedWorker` / `run_workers` (runner.py).

docs/architecture.md explains the protocol and why no change is ever missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.engine import Locks, declared_locks, hold_assignments, hold_rule_template
from signalscore.recompute import queue
from signalscore.recompute.compute import RecomputeStats, recompute_objects
from signalscore.recompute.queue import Lane, QueueFigures, queue_figures, queue_status

__all__ = [
    "Lane",
    "LockNotHeld",
    "QueueFigures",
    "compute_now",
    "enqueue_changed_values",
    "enqueue_new_assignments",
    "enqueue_objects",
    "enqueue_profile",
    "enqueue_value_changes",
    "queue_figures",
    "queue_status",
]


class LockNotHeld(RuntimeError):
    """A programming error: queueing outside a unit of work that declared what it changes."""


def _declared(conn: Connection, org_id: str, what: str) -> Locks:
    locks = declared_locks(conn, org_id)
    if locks is None:
        raise LockNotHeld(f"{what} must run in db.write(org=...) for its organisation")
    return locks


def enqueue_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Iterable[str],
    *,
    lane: Lane = Lane.INTERACTIVE,
) -> int:
    """Queue these objects (already normalised); how many distinct ids. Decides nothing from
    other rows, so it needs no lock of its own (`POST /compute`); in a unit of work that
    declared one, it is held first: the organisation lock comes before queue rows."""
    locks = declared_locks(conn, org_id)
    if locks is not None and not locks.covers_assignments():
        raise LockNotHeld("queueing assigned objects needs db.write(org=..., assignments=True)")
    return queue.enqueue_objects(conn, org_id, object_type, object_ids, lane=lane)


def enqueue_value_changes(
    conn: Connection, org_id: str, changed: Mapping[str, Mapping[str, set[str]]]
) -> None:
    """Queue (interactive lane) the objects whose changed values a rule of one of their
    profiles reads. `changed`: objectType → objectId → template ids whose value changed.
    Reads assignments and rules: the unit of work holds these templates' rules (shared,
    `value_templates`), and the assignments are held shared from here to the commit."""
    locks = _declared(conn, org_id, "queueing after value changes")
    templates = {t for by_object in changed.values() for ids in by_object.values() for t in ids}
    if not locks.covers_values(templates):
        raise LockNotHeld("the unit of work must declare value_templates for every template")
    hold_assignments(conn, locks)
    queue.enqueue_objects_for_signal_changes(conn, org_id, changed, lane=Lane.INTERACTIVE)


def enqueue_changed_values(conn: Connection, org_id: str, templates: set[str]) -> None:
    """A bulk import's `enqueue_value_changes`: queue (background lane: a bulk load is not
    something a caller waits to see object by object) the objects whose values it changed
    (`db.dialect.changed_values`, of these templates) that a rule of theirs reads."""
    locks = _declared(conn, org_id, "queueing after value changes")
    if not locks.covers_values(templates):
        raise LockNotHeld("the unit of work must declare value_templates for every template")
    hold_assignments(conn, locks)
    queue.enqueue_objects_for_changed_values(conn, org_id, lane=Lane.BACKGROUND)


def enqueue_new_assignments(
    conn: Connection, org_id: str, object_type: str, object_ids: sa.Select[Any]
) -> None:
    """A bulk import's new assignments: queue the objects `object_ids` selects (background
    lane). Needs the assignments lock, as every assignment write."""
    if not _declared(conn, org_id, "queueing assigned objects").covers_assignments():
        raise LockNotHeld("queueing assigned objects needs the assignments lock")
    queue.enqueue_selected(conn, org_id, object_type, object_ids, lane=Lane.BACKGROUND)


def enqueue_profile(conn: Connection, org_id: str, profile_id: Any) -> None:
    """Queue every object assigned to the profile (background lane): its rules changed. The
    workers queue them, in chunks, after this commits (`queue.enqueue_profile_objects`), so
    they see every assignment committed by then. The rule's template lock, if the unit of
    work declared one, is taken right after (value writes to that template decide what to
    queue from its rules): call this before changing the rule."""
    locks = _declared(conn, org_id, "queueing a profile")
    queue.enqueue_profile_objects(conn, org_id, profile_id)
    hold_rule_template(conn, locks)


def compute_now(
    conn: Connection, org_id: str, object_type: str, object_ids: list[str]
) -> RecomputeStats:
    """Compute these objects' scores in this transaction (a new assignment: its response
    shows them), after queueing them: that locks their entries, so a worker that read them
    before this change stores nothing over it (it finds `rerun`), and a write queueing them
    meanwhile waits for this one. The entries stay: a worker computes the objects once more
    after this commits, seeing any rule change this computation could not. Needs the
    assignments lock."""
    if not _declared(conn, org_id, "computing now").covers_assignments():
        raise LockNotHeld("computing now needs db.write(org=..., assignments=True)")
    queue.enqueue_objects(conn, org_id, object_type, object_ids, lane=Lane.INTERACTIVE)
    return recompute_objects(conn, org_id, object_type, object_ids)
