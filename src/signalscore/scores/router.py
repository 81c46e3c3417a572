"""`GET /v1/scoring/scores`: reading never computes."""

from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Response

from signalscore.body import V1Route
from signalscore.db.tables import score_results
from signalscore.deps import CurrentOrgId, DatabaseDep, ObjectIdsQuery
from signalscore.objects import normalize_object_ids
from signalscore.responses import bounded_json_list
from signalscore.scores.schemas import ScoreRow
from signalscore.vocabulary import Dimension, ObjectType

router = APIRouter(prefix="/v1/scoring", tags=["scores"], route_class=V1Route)

s = score_results


@router.get("/scores", response_model=list[ScoreRow])
def read_scores(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    objectType: Annotated[ObjectType, Query()],
    object_ids: ObjectIdsQuery,
    profileId: Annotated[uuid.UUID | None, Query()] = None,
    dimension: Annotated[Dimension | None, Query()] = None,
) -> Response:
    """One row per (profile, object, dimension with rules), ordered by the request's
    `objectId` order, then `profileId`, then `dimension` (fit before urgency). Each row
    explains its score with per-rule contributions."""
    normalized = normalize_object_ids(objectType, object_ids, field="objectId")
    order = {object_id: i for i, object_id in enumerate(dict.fromkeys(normalized))}
    query = sa.select(
        s.c.id,
        s.c.profile_id,
        s.c.organization_id,
        s.c.object_type,
        s.c.object_id,
        s.c.dimension,
        s.c.score,
        s.c.previous_score,
        s.c.contributions,
        s.c.previous_contributions,
        s.c.signal_coverage,
        s.c.total_rules,
        s.c.computed_at,
        s.c.version,
    ).where(
        s.c.organization_id == org_id,
        s.c.object_type == objectType,
        s.c.object_id.in_(list(order)),
    )
    if profileId is not None:
        query = query.where(s.c.profile_id == profileId)
    if dimension is not None:
        query = query.where(s.c.dimension == dimension)
    with db.read() as conn:
        rows = list(conn.execute(query))
    rows.sort(key=lambda r: (order[r.object_id], str(r.profile_id), r.dimension))
    return bounded_json_list(
        (
            ScoreRow(
                id=r.id,
                profileId=r.profile_id,
                organizationId=r.organization_id,
                objectType=r.object_type,
                objectId=r.object_id,
                dimension=r.dimension,
                score=r.score,
                previousScore=r.previous_score,
                contributions=r.contributions,
                previousContributions=r.previous_contributions,
                signalCoverage=r.signal_coverage,
                totalRules=r.total_rules,
                computedAt=r.computed_at,
                version=r.version,
            )
            for r in rows
        ),
        narrow="ask for fewer objectIds, or filter by profileId or dimension",
    )
