"""`/v1/scoring/scores` and a profile's ranked scores and distribution: HTTP only, the
reads are in `scores.service`. Reading never computes."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep, ObjectIdsQuery
from signalscore.errors import Invalid
from signalscore.ids import uuid_or_404
from signalscore.objects import normalize_object_ids
from signalscore.responses import MAX_RESPONSE_BYTES, bounded_json_list, json_page
from signalscore.scores import service
from signalscore.scores.schemas import Distribution, ScorePage, ScoreRow, score_row_json
from signalscore.vocabulary import Dimension, ObjectType

router = APIRouter(prefix="/v1/scoring", tags=["scores"], route_class=V1Route)

ScoreBound = Annotated[
    float | None, Query(ge=0, le=100, allow_inf_nan=False, description="Inclusive.")
]


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
    with db.read(transaction=False) as conn:  # one statement
        rows = service.read_scores(conn, org_id, objectType, normalized, profileId, dimension)
    return bounded_json_list(
        rows,
        narrow="ask for fewer objectIds, or filter by profileId or dimension",
        render=score_row_json,
    )


@router.get("/profiles/{profile_id}/scores", response_model=ScorePage)
def ranked_scores(
    profile_id: str,
    org_id: CurrentOrgId,
    db: DatabaseDep,
    dimension: Annotated[Dimension, Query()],
    tier: Annotated[
        str | None,
        Query(min_length=1, max_length=50, description="A tier name of this dimension."),
    ] = None,
    minScore: ScoreBound = None,
    maxScore: ScoreBound = None,
    order: Annotated[service.Order, Query()] = "desc",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    """The profile's score rows in one dimension, ranked by `score` (`desc` by default),
    then `objectId` ascending; `limit` rows a page (1-1000, default 100) and `nextCursor` to
    continue. A page stops early, with a cursor, rather than pass 16 MiB."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    if minScore is not None and maxScore is not None and minScore > maxScore:
        raise Invalid.one(
            "minScore", "INVALID_RANGE", "'minScore' must not be larger than 'maxScore'"
        )
    read = service.RankedRead(
        dimension=dimension,
        order=order,
        tier=tier.strip() if tier is not None else None,
        min_score=minScore,
        max_score=maxScore,
        limit=limit,
        cursor=cursor,
    )
    with db.read(transaction=False) as conn:  # one statement, two with a tier
        rows, next_cursor = service.ranked_page(conn, org_id, pid, read)
    return json_page(
        rows,
        next_cursor,
        cursor_after=lambda row: service.encode_cursor(
            read.fingerprint(pid), row.score, row.object_id
        ),
        max_bytes=MAX_RESPONSE_BYTES,
        render=score_row_json,
    )


@router.get("/profiles/{profile_id}/distribution", response_model=Distribution)
def score_distribution(
    profile_id: str,
    org_id: CurrentOrgId,
    db: DatabaseDep,
    dimension: Annotated[Dimension, Query()],
    buckets: Annotated[int, Query(ge=1, le=100)] = 10,
) -> Distribution:
    """How the profile's scores in one dimension are spread: a histogram of `buckets` equal
    widths over [0, 100], mean, nearest-rank p50 and p90, and the rows of each tier."""
    pid = uuid_or_404(profile_id, "scoring profile", "PROFILE_NOT_FOUND")
    with db.read() as conn:
        return service.distribution(conn, org_id, pid, dimension, buckets)
