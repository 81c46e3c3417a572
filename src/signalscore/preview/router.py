"""`POST /v1/scoring/profiles/{id}/preview` (SPEC §12): HTTP only, see `preview.service`."""

from __future__ import annotations

from fastapi import APIRouter

from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep
from signalscore.ids import uuid_or_404
from signalscore.preview import service
from signalscore.preview.schemas import Preview, PreviewRequest

router = APIRouter(prefix="/v1/scoring/profiles", tags=["preview"], route_class=V1Route)


@router.post("/{profile_id}/preview", response_model=Preview)
def preview(
    profile_id: str, body: PreviewRequest, org_id: CurrentOrgId, db: DatabaseDep
) -> Preview:
    """Score the profile's assigned objects (or a random `sampleSize` of them) with a
    proposed complete rule set (and tiers), against their stored rows: before/after
    distributions, tier transitions and the top movers. Writes nothing."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.read() as conn:
        return service.preview(conn, org_id, pid, body)
