"""`GET /v1/organization`: which organisation does this key belong to?"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from signalscore.auth import service
from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep
from signalscore.errors import NotFound

router = APIRouter(prefix="/v1", tags=["organization"], route_class=V1Route)


class OrganizationOut(BaseModel):
    id: str
    name: str
    createdAt: datetime


@router.get("/organization", response_model=OrganizationOut)
def get_current_organization(org_id: CurrentOrgId, db: DatabaseDep) -> OrganizationOut:
    """The organisation the API key belongs to: a cheap way to check a key works."""
    with db.read() as conn:
        org = service.get_organization(conn, org_id)
    if org is None:  # deleted between authentication and now
        raise NotFound("organization not found")
    return OrganizationOut(id=org.id, name=org.name, createdAt=org.created_at)
