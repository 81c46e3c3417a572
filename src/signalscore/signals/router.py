"""`/v1/signals/templates` and `/v1/signals/values`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from signalscore import imports
from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep, ObjectIdsQuery
from signalscore.errors import error_responses
from signalscore.objects import normalize_object_ids
from signalscore.responses import bounded_json_list
from signalscore.signals import bulk, service
from signalscore.signals.schemas import (
    SignalValue,
    SignalValuesImportResult,
    SignalValuesWrite,
    SignalValuesWriteResult,
    Template,
    TemplateCreate,
    TemplatePatch,
)
from signalscore.vocabulary import ObjectType

router = APIRouter(prefix="/v1/signals", tags=["signals"], route_class=V1Route)


@router.get("/templates", response_model=list[Template])
def list_templates(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    objectType: Annotated[ObjectType | None, Query()] = None,
) -> list[Template]:
    """List signal templates, optionally of one object type, ordered by `createdAt`, then `id`."""
    with db.read() as conn:
        return service.list_templates(conn, org_id, objectType)


@router.post(
    "/templates",
    response_model=Template,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
def create_template(body: TemplateCreate, org_id: CurrentOrgId, db: DatabaseDep) -> Template:
    """Create a signal template; `id` is optional and chosen by the client (409 if taken)."""
    with db.write() as conn:
        return service.create_template(conn, org_id, body)


@router.get("/templates/{template_id}", response_model=Template)
def get_template(template_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Template:
    """One signal template."""
    with db.read() as conn:
        return service.get_template(conn, org_id, template_id)


@router.patch("/templates/{template_id}", response_model=Template)
def patch_template(
    template_id: str, body: TemplatePatch, org_id: CurrentOrgId, db: DatabaseDep
) -> Template:
    """Change a template's name or description; its id and types are immutable."""
    with db.write() as conn:
        return service.patch_template(conn, org_id, template_id, body)


@router.delete(
    "/templates/{template_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(409),
)
def delete_template(template_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Response:
    """Delete a template and all its values (409 while rules use it)."""
    with db.write(org=org_id, structure=True) as conn:
        service.delete_template(conn, org_id, template_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/values", response_model=SignalValuesWriteResult)
def write_values(
    body: SignalValuesWrite, org_id: CurrentOrgId, db: DatabaseDep
) -> SignalValuesWriteResult:
    """Write 1-1000 signal values atomically (`null` deletes). One bad item rejects the batch,
    with every bad item listed. Affected scores are queued for recomputation."""
    items, templates = service.shape_items(body.values)
    with db.write(org=org_id, value_templates=templates) as conn:
        return service.write_values(conn, org_id, items)


@router.post(
    "/values/import",
    response_model=SignalValuesImportResult,
    responses=error_responses(409, 413, 415),
    openapi_extra=imports.openapi_body(
        "One value item per line (NDJSON, as the items of `PUT /values`), or CSV with the "
        "header `objectType,objectId,signalTemplateId,value[,observedAt]` (`value` as JSON)."
    ),
)
async def import_values(
    request: Request, org_id: CurrentOrgId, db: DatabaseDep
) -> SignalValuesImportResult:
    """Write any number of signal values from a streamed NDJSON or CSV body, all or nothing:
    one bad line rejects the import, with the bad lines listed (`lines[7].value`). The last
    record wins for a repeated key. Affected scores are queued (background lane)."""
    fmt = imports.body_format(request)
    return await run_in_threadpool(
        bulk.import_values, db, org_id, fmt, imports.body_chunks(request)
    )


@router.get("/values", response_model=list[SignalValue])
def read_values(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    objectType: Annotated[ObjectType, Query()],
    object_ids: ObjectIdsQuery,
) -> Response:
    """Current values of 1-100 objects, in request order of `objectId`, then template id."""
    normalized = normalize_object_ids(objectType, object_ids, field="objectId")
    with db.read() as conn:
        values = service.read_values(conn, org_id, objectType, normalized)
    return bounded_json_list(values, narrow="ask for fewer objectIds")
