"""`/v1/scoring/profiles`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep
from signalscore.ids import uuid_or_404
from signalscore.profiles import service
from signalscore.profiles.schemas import Profile, ProfileCreate, ProfileUpdate

router = APIRouter(prefix="/v1/scoring/profiles", tags=["profiles"], route_class=V1Route)


@router.get("", response_model=list[Profile])
def list_profiles(org_id: CurrentOrgId, db: DatabaseDep) -> list[Profile]:
    """List the organisation's scoring profiles, ordered by `createdAt`, then `id`."""
    with db.read() as conn:
        return service.list_profiles(conn, org_id)


@router.post("", response_model=Profile, status_code=status.HTTP_201_CREATED)
def create_profile(body: ProfileCreate, org_id: CurrentOrgId, db: DatabaseDep) -> Profile:
    """Create a profile that scores objects of one type (company or contact), with optional
    tiers per dimension."""
    with db.write() as conn:
        return service.create_profile(conn, org_id, body)


@router.get("/{profile_id}", response_model=Profile)
def get_profile(profile_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Profile:
    """One profile; 404 for an unknown or malformed id."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.read() as conn:
        return service.get_profile(conn, org_id, pid)


@router.put("/{profile_id}", response_model=Profile)
def update_profile(
    profile_id: str, body: ProfileUpdate, org_id: CurrentOrgId, db: DatabaseDep
) -> Profile:
    """Rename, re-describe or re-tier a profile. The type is immutable: sending it is a 422.
    New tiers re-tier every score row of the profile through the recompute pipeline."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.write(org=org_id) as conn:
        return service.update_profile(conn, org_id, pid, body)


@router.delete("/{profile_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_profile(profile_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Response:
    """Delete a profile with its rules, assignments and scores, in one transaction."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.write(org=org_id, structure=True) as conn:
        service.delete_profile(conn, org_id, pid)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
