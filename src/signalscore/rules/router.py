"""`/v1/scoring/profiles/{id}/rules`."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep
from signalscore.ids import uuid_or_404
from signalscore.rules import service
from signalscore.rules.schemas import Rule, RuleUpsert

router = APIRouter(
    prefix="/v1/scoring/profiles/{profile_id}/rules", tags=["rules"], route_class=V1Route
)


@router.get("", response_model=list[Rule])
def list_rules(profile_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> list[Rule]:
    """The profile's rules, ordered by `createdAt`, then `id`."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.read() as conn:
        return service.list_rules(conn, org_id, pid)


@router.put("", response_model=Rule)
def upsert_rule(profile_id: str, body: RuleUpsert, org_id: CurrentOrgId, db: DatabaseDep) -> Rule:
    """Create or replace the rule for (profile, signalTemplateId, dimension). Triggers a
    recompute of every object assigned to the profile."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.write(org=org_id, rule_template=body.signalTemplateId) as conn:
        return service.upsert_rule(conn, org_id, pid, body)


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_rule(profile_id: str, rule_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Response:
    """Remove a rule and recompute every object assigned to the profile."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    rid = uuid_or_404(rule_id, "scoring rule", "RULE_NOT_FOUND")
    with db.write(org=org_id) as conn:
        service.delete_rule(conn, org_id, pid, rid)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
