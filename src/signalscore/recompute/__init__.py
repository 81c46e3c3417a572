"""The recompute pipeline (SPEC §7): its public face. Features import only this module.

- **Queueing**, on the connection of the write that causes it, so the change and its queue
  entries commit together: `enqueue_objects` (named objects: `POST /compute`, assignments),
  `enqueue_value_changes` (objects whose changed values a rule reads), `enqueue_profile`
  (every object of a profile whose rules changed), and `compute_now` (an assignment's scores
  inside its own request).
- **Locking**: a write that can change scores opens its unit of work with
  `db.write(org=..., structure=...)`; the queueing functions that depend on that lock check
  it is held (`LockNotHeld` otherwise). Workers take no organisation lock.
- **Reading**: `queue_status` (one organisation, for `GET /compute/status`) and
  `queue_figures` (every organisation, counts only, for `/metrics`).
- **Running**: `Worker` (worker.py) and `EmbeddedWorker` / `run_workers` (runner.py).

docs/architecture.md explains the protocol and why no change is ever missed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.engine import Connection

from signalscore.db.engine import held_organization_lock
from signalscore.recompute import queue
from signalscore.recompute.compute import RecomputeStats, recompute_objects
from signalscore.recompute.queue import Lane, QueueFigures, queue_figures, queue_status

__all__ = [
    "Lane",
    "LockNotHeld",
    "QueueFigures",
    "compute_now",
    "enqueue_objects",
    "enqueue_profile",
    "enqueue_value_changes",
    "queue_figures",
    "queue_status",
]


class LockNotHeld(RuntimeError):
    """A programming error: a queueing decision made outside the unit of work's lock."""


def _require(conn: Connection, org_id: str, *, structure: bool) -> None:
    held = held_organization_lock(conn, org_id)
    if held is None or (structure and not held):
        kind = "db.write(org=..., structure=True)" if structure else "db.write(org=...)"
        raise LockNotHeld(f"this write must run in {kind}")


def enqueue_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Iterable[str],
    *,
    lane: Lane = Lane.INTERACTIVE,
) -> int:
    """Queue these objects (already normalised); how many distinct ids. Decides nothing from
    other rows, so it needs no lock."""
    return queue.enqueue_objects(conn, org_id, object_type, object_ids, lane=lane)


def enqueue_value_changes(
    conn: Connection, org_id: str, changed: Mapping[str, Mapping[str, set[str]]]
) -> None:
    """Queue (interactive lane) the objects whose changed values a rule of one of their
    profiles reads. `changed`: objectType → objectId → template ids whose value changed.
    Reads assignments and rules, so it needs the organisation lock (shared is enough)."""
    _require(conn, org_id, structure=False)
    queue.enqueue_objects_for_signal_changes(conn, org_id, changed, lane=Lane.INTERACTIVE)


def enqueue_profile(conn: Connection, org_id: str, profile_id: Any) -> None:
    """Queue every object assigned to the profile (background lane, in chunks): its rules
    changed. Needs the exclusive lock."""
    _require(conn, org_id, structure=True)
    queue.enqueue_profile_objects(conn, org_id, profile_id)


def compute_now(
    conn: Connection, org_id: str, object_type: str, object_ids: list[str]
) -> RecomputeStats:
    """Compute these objects' scores in this transaction (a new assignment: its response
    shows them), after queueing them: that locks their entries, so a worker that read them
    before this change stores nothing over it (it finds `rerun`), and a write queueing them
    meanwhile waits for this one. The entries this transaction could settle (not leased to a
    live worker) are removed again. Needs the exclusive lock."""
    _require(conn, org_id, structure=True)
    queue.enqueue_objects(conn, org_id, object_type, object_ids, lane=Lane.INTERACTIVE)
    stats = recompute_objects(conn, org_id, object_type, object_ids)
    queue.settle(conn, org_id, object_type, object_ids)
    return stats
