"""Assignments: which objects a profile scores. Scoped to one organisation in every statement."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.assignments.schemas import Assignment
from signalscore.db.dialect import chunks
from signalscore.db.tables import profile_assignments
from signalscore.db.types import utcnow
from signalscore.errors import Invalid, NotFound
from signalscore.profiles.schemas import Profile
from signalscore.profiles.service import get_profile
from signalscore.recompute import Lane, compute_now, enqueue_objects
from signalscore.scores import counts as score_counts

a = profile_assignments

_COLUMNS = (
    a.c.id,
    a.c.profile_id.label("profileId"),
    a.c.organization_id.label("organizationId"),
    a.c.object_type.label("objectType"),
    a.c.object_id.label("objectId"),
    a.c.assigned_at.label("assignedAt"),
)


def list_assignments(
    conn: Connection, org_id: str, object_type: str, object_id: str
) -> list[Assignment]:
    rows = conn.execute(
        sa.select(*_COLUMNS)
        .where(
            a.c.organization_id == org_id,
            a.c.object_type == object_type,
            a.c.object_id == object_id,
        )
        .order_by(a.c.assigned_at, a.c.id)
    ).mappings()
    return [Assignment.model_validate(dict(r)) for r in rows]


def _profile_for(conn: Connection, org_id: str, profile_id: uuid.UUID, object_type: str) -> Profile:
    profile = get_profile(conn, org_id, profile_id)
    if profile.type != object_type:
        raise Invalid.one(
            "objectType",
            "OBJECT_TYPE_MISMATCH",
            f"this profile scores {profile.type} objects, not {object_type}",
        )
    return profile


def assign(
    conn: Connection, org_id: str, profile_id: uuid.UUID, object_type: str, object_id: str
) -> tuple[Assignment, bool]:
    """Assign one object; returns (assignment, created). A new assignment's scores are
    computed in this transaction, so a read right after the response sees them."""
    _profile_for(conn, org_id, profile_id, object_type)
    existing = (
        conn.execute(
            sa.select(*_COLUMNS).where(
                a.c.organization_id == org_id,
                a.c.profile_id == profile_id,
                a.c.object_type == object_type,
                a.c.object_id == object_id,
            )
        )
        .mappings()
        .one_or_none()
    )
    if existing is not None:
        return Assignment.model_validate(dict(existing)), False
    assignment = Assignment(
        id=uuid.uuid4(),
        profileId=profile_id,
        organizationId=org_id,
        objectType=object_type,
        objectId=object_id,
        assignedAt=utcnow(),
    )
    conn.execute(
        a.insert().values(
            organization_id=org_id,
            id=assignment.id,
            profile_id=profile_id,
            object_type=object_type,
            object_id=object_id,
            assigned_at=assignment.assignedAt,
        )
    )
    score_counts.add_assigned(conn, org_id, profile_id, 1)
    compute_now(conn, org_id, object_type, [object_id])
    return assignment, True


def assign_many(
    conn: Connection,
    org_id: str,
    profile_id: uuid.UUID,
    object_type: str,
    object_ids: Sequence[str],
) -> list[Assignment]:
    """Assign many objects (already normalised); returns only the new assignments, in request
    order, and queues their scores."""
    _profile_for(conn, org_id, profile_id, object_type)
    wanted = list(dict.fromkeys(object_ids))
    already: set[str] = set()
    for part in chunks(wanted):
        already.update(
            conn.execute(
                sa.select(a.c.object_id).where(
                    a.c.organization_id == org_id,
                    a.c.profile_id == profile_id,
                    a.c.object_type == object_type,
                    a.c.object_id.in_(part),
                )
            ).scalars()
        )
    now = utcnow()
    created = [
        Assignment(
            id=uuid.uuid4(),
            profileId=profile_id,
            organizationId=org_id,
            objectType=object_type,
            objectId=object_id,
            assignedAt=now,
        )
        for object_id in wanted
        if object_id not in already
    ]
    if created:
        conn.execute(
            a.insert(),
            [
                {
                    "organization_id": org_id,
                    "id": c.id,
                    "profile_id": profile_id,
                    "object_type": object_type,
                    "object_id": c.objectId,
                    "assigned_at": now,
                }
                for c in created
            ],
        )
        score_counts.add_assigned(conn, org_id, profile_id, len(created))
        enqueue_objects(
            conn, org_id, object_type, [c.objectId for c in created], lane=Lane.INTERACTIVE
        )
    return created


def unassign(conn: Connection, org_id: str, assignment_id: uuid.UUID) -> None:
    """Delete an assignment and that (profile, object)'s score rows: the object is computed
    again in this transaction (`compute_now`), which removes the rows no assignment justifies
    any more. So a worker that read the object before this change stores nothing over it."""
    row = conn.execute(
        sa.select(a.c.profile_id, a.c.object_type, a.c.object_id).where(
            a.c.organization_id == org_id, a.c.id == assignment_id
        )
    ).one_or_none()
    if row is None:
        raise NotFound("assignment not found", error_code="ASSIGNMENT_NOT_FOUND")
    removed = conn.execute(
        sa.delete(a).where(a.c.organization_id == org_id, a.c.id == assignment_id)
    ).rowcount
    score_counts.add_assigned(conn, org_id, row.profile_id, -removed)
    compute_now(conn, org_id, row.object_type, [row.object_id])
