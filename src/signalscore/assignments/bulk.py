"""`POST /v1/scoring/assignments/import`: assignments in bulk (docs/api.md, "Bulk imports").

The body lists objects, one record per line (`objectId`, and optionally `objectType`, which
must be the profile's). Every record is checked as it is read and staged; once the whole
body is valid, the objects not yet assigned to the profile are assigned in one statement and
queued, in the request's one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from signalscore import imports
from signalscore.assignments.schemas import AssignmentsImportResult
from signalscore.assignments.service import a as assignments_table
from signalscore.db import dialect
from signalscore.db.engine import Database, Locks, declare_locks
from signalscore.db.types import utcnow
from signalscore.errors import FieldProblem
from signalscore.objects import normalize_object_id
from signalscore.profiles.service import get_profile
from signalscore.recompute import enqueue_new_assignments
from signalscore.scores import counts as score_counts

CSV_REQUIRED = ("objectId",)
CSV_OPTIONAL = ("objectType",)
_READS = ("profile_assignments", "recompute_queue")


def _object_id(record: dict[str, Any], object_type: str) -> str:
    """The record's canonical object id, or `FieldProblem` (suffix: the field)."""
    unknown = sorted(set(record) - {"objectId", "objectType"})
    if unknown:
        raise FieldProblem("UNKNOWN_FIELD", "unknown field; allowed: objectId, objectType",
                           f".{unknown[0]}")  # fmt: skip
    given_type = record.get("objectType", object_type)
    if given_type != object_type:
        raise FieldProblem(
            "OBJECT_TYPE_MISMATCH",
            f"this profile scores {object_type} objects, not {given_type}"
            if isinstance(given_type, str)
            else "objectType must be a string",
            ".objectType",
        )
    raw = record.get("objectId")
    if not isinstance(raw, str):
        raise FieldProblem("INVALID_OBJECT_ID", "objectId is required and must be a string",
                           ".objectId")  # fmt: skip
    try:
        return normalize_object_id(object_type, raw)
    except FieldProblem as problem:
        raise FieldProblem(problem.code, problem.message, ".objectId") from None


def import_assignments(
    db: Database,
    org_id: str,
    profile_id: uuid.UUID,
    fmt: imports.Format,
    chunks: Iterable[bytes],
) -> AssignmentsImportResult:
    """Validate every record, then assign every object not yet assigned, in one transaction,
    or nothing (422 with the bad lines; 404 for an unknown profile)."""
    now = utcnow()
    problems = imports.LineProblems()
    records = imports.read_records(
        chunks, fmt, problems, csv_required=CSV_REQUIRED, csv_optional=CSV_OPTIONAL
    )
    fresh = db.statistics.refresh(_READS)  # see signals/bulk.py
    with db.write() as conn:
        object_type = get_profile(conn, org_id, profile_id).type
        dialect.create_assignment_staging(conn)
        lines = 0
        staging = imports.Staging[tuple[int, uuid.UUID, str]](
            lambda rows: dialect.stage_assignments(conn, rows), problems
        )
        for line, record in records:
            lines += 1
            try:
                staging.add((line, uuid.uuid4(), _object_id(record, object_type)))
            except FieldProblem as problem:
                problems.add(line, problem.suffix.lstrip("."), problem.code, problem.message)
        staging.finish(lines)
        db.statistics.wait(fresh)
        declare_locks(conn, Locks(org_id, assignments=True))
        a = assignments_table
        staged = dialect.staged_assignments_source(conn)
        objects = conn.execute(sa.select(sa.func.count()).select_from(staged)).scalar_one()
        already = sa.exists().where(
            a.c.organization_id == org_id,
            a.c.profile_id == profile_id,
            a.c.object_type == object_type,
            a.c.object_id == staged.c.object_id,
        )
        # Under the assignments lock nothing else assigns meanwhile: the objects not assigned
        # yet are counted and queued first, then assigned.
        new = sa.select(staged.c.object_id).where(~already)
        assigned = conn.execute(sa.select(sa.func.count()).select_from(new.subquery())).scalar_one()
        enqueue_new_assignments(conn, org_id, object_type, new)
        conn.execute(
            a.insert().from_select(
                ["organization_id", "id", "profile_id", "object_type", "object_id", "assigned_at"],
                sa.select(
                    sa.literal(org_id, a.c.organization_id.type),
                    staged.c.id,
                    sa.literal(profile_id, a.c.profile_id.type),
                    sa.literal(object_type, a.c.object_type.type),
                    staged.c.object_id,
                    sa.literal(now, a.c.assigned_at.type),
                ).where(~already),
            )
        )
        score_counts.add_assigned(conn, org_id, profile_id, int(assigned))
        dialect.drop_staging(conn)
    db.statistics.refresh(_READS)
    return AssignmentsImportResult(
        records=lines, assigned=int(assigned), alreadyAssigned=int(objects) - int(assigned)
    )
