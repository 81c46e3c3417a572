"""`/v1/scoring/assignments` and `/v1/scoring/compute`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from signalscore import imports, recompute
from signalscore.assignments import bulk, service
from signalscore.assignments.schemas import (
    Assignment,
    AssignmentCreate,
    AssignmentsImportResult,
    BulkAssignmentCreate,
    ObjectIdBatch,
)
from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep, ObjectIdQuery
from signalscore.errors import error_responses
from signalscore.ids import uuid_or_404
from signalscore.objects import normalize_object_ids
from signalscore.schemas import ResponseModel
from signalscore.vocabulary import ObjectType

router = APIRouter(prefix="/v1/scoring", tags=["assignments"], route_class=V1Route)


@router.get("/assignments", response_model=list[Assignment])
def list_assignments(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    objectType: Annotated[ObjectType, Query()],
    objectId: ObjectIdQuery,
) -> list[Assignment]:
    """Every profile the object is assigned to, ordered by `assignedAt`."""
    [object_id] = normalize_object_ids(objectType, [objectId], field="objectId")
    with db.read() as conn:
        return service.list_assignments(conn, org_id, objectType, object_id)


@router.post(
    "/assignments",
    response_model=Assignment,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": Assignment, "description": "Already assigned: the existing row"}},
)
def assign(
    body: AssignmentCreate, response: Response, org_id: CurrentOrgId, db: DatabaseDep
) -> Assignment:
    """Assign a profile to one object and compute its score before answering (201), or
    return the existing assignment (200). 422 `OBJECT_TYPE_MISMATCH` if the types differ."""
    with db.write(org=org_id, assignments=True) as conn:
        assignment, created = service.assign(
            conn, org_id, body.profileId, body.objectType, body.objectId
        )
    if not created:
        response.status_code = status.HTTP_200_OK
    return assignment


@router.post(
    "/assignments/bulk", response_model=list[Assignment], status_code=status.HTTP_201_CREATED
)
def assign_many(
    body: BulkAssignmentCreate, org_id: CurrentOrgId, db: DatabaseDep
) -> list[Assignment]:
    """Assign a profile to 1-500 objects. Returns only the new assignments, in request order;
    ids already assigned or repeated are skipped. One invalid id rejects the whole request.
    The new objects' scores are queued."""
    object_ids = normalize_object_ids(body.objectType, body.objectIds, field="objectIds")
    with db.write(org=org_id, assignments=True) as conn:
        return service.assign_many(conn, org_id, body.profileId, body.objectType, object_ids)


@router.post(
    "/assignments/import",
    response_model=AssignmentsImportResult,
    responses=error_responses(404, 413, 415),
    openapi_extra=imports.openapi_body(
        'One object per line: NDJSON (`{"objectId": "acme.com"}`, optionally with '
        "`objectType`, which must be the profile's) or CSV with the header `objectId` "
        "(optionally `objectType`)."
    ),
)
async def import_assignments(
    request: Request,
    org_id: CurrentOrgId,
    db: DatabaseDep,
    profileId: Annotated[str, Query(description="The profile to assign the objects to.")],
) -> AssignmentsImportResult:
    """Assign any number of objects to a profile from a streamed NDJSON or CSV body, all or
    nothing: one bad line rejects the import, with the bad lines listed. Objects already
    assigned, or repeated, are skipped. The new objects' scores are queued (background
    lane)."""
    profile_id = uuid_or_404(profileId, "scoring profile", "PROFILE_NOT_FOUND")
    fmt = imports.body_format(request)
    return await run_in_threadpool(
        bulk.import_assignments, db, org_id, profile_id, fmt, imports.body_chunks(request)
    )


@router.delete("/assignments/{assignment_id}", status_code=status.HTTP_204_NO_CONTENT)
def unassign(assignment_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Response:
    """Remove an assignment and the score rows of that (profile, object)."""
    aid = uuid_or_404(assignment_id, "assignment", "ASSIGNMENT_NOT_FOUND")
    with db.write(org=org_id, assignments=True) as conn:
        service.unassign(conn, org_id, aid)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


class ComputeAccepted(ResponseModel):
    queued: int
    failed: int


class ComputeStatus(ResponseModel):
    pending: int
    running: int
    oldestPendingSeconds: float


@router.post(
    "/compute",
    response_model=ComputeAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(502),
)
def compute(body: ObjectIdBatch, org_id: CurrentOrgId, db: DatabaseDep) -> ComputeAccepted:
    """Queue 1-500 objects for recomputation against the latest data. Triggers for an object
    already waiting merge into one computation. Objects with no assignment compute to
    nothing. Results appear in `GET /v1/scoring/scores`."""
    object_ids = normalize_object_ids(body.objectType, body.objectIds, field="objectIds")
    with db.write() as conn:
        queued = recompute.enqueue_objects(conn, org_id, body.objectType, object_ids)
    return ComputeAccepted(queued=queued, failed=0)


@router.get("/compute/status", response_model=ComputeStatus)
def compute_status(org_id: CurrentOrgId, db: DatabaseDep) -> ComputeStatus:
    """How much of your organisation's work is waiting or running, so a client can wait
    until its scores are fresh (`pending == running == 0`)."""
    with db.read() as conn:
        pending, running, oldest = recompute.queue_status(conn, org_id)
    return ComputeStatus(pending=pending, running=running, oldestPendingSeconds=oldest)
