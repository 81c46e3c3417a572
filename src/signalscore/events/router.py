"""`GET /v1/events` (the ordered feed) and `GET /v1/scoring/history` (an object's events)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from signalscore import cursors
from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep, ObjectIdQuery
from signalscore.errors import Invalid, error_responses
from signalscore.events import service
from signalscore.events.log import EVENT_TYPES
from signalscore.events.schemas import Event, EventFeed, EventPage
from signalscore.objects import normalize_object_ids
from signalscore.responses import json_page
from signalscore.vocabulary import Dimension, ObjectType

router = APIRouter(tags=["events"], route_class=V1Route)


def _types(values: list[str]) -> list[str]:
    """`types` repeated or comma-separated; each a known event type."""
    found = [t.strip() for value in values for t in value.split(",") if t.strip()]
    unknown = [t for t in found if t not in EVENT_TYPES]
    if unknown:
        raise Invalid.one(
            "types",
            "UNKNOWN_EVENT_TYPE",
            f"unknown event type {unknown[0][:100]!r}; known: {', '.join(EVENT_TYPES)}",
        )
    return found


@router.get("/v1/events", response_model=EventFeed, responses=error_responses(410))
def read_events(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    types: Annotated[
        list[str],
        Query(
            max_length=10,
            description="Event types, repeated or comma-separated; all when omitted.",
        ),
    ] = [],  # noqa: B006 (FastAPI copies defaults)
    profileId: Annotated[uuid.UUID | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    """The organisation's score events after sequence `after`, in sequence order. Follow
    `nextAfter` to see every event exactly once, in order, even while workers write new
    ones. 410 `EVENTS_EXPIRED` when some events after `after` are past their retention."""
    chosen = _types(types)
    with db.read() as conn:
        rows, next_after = service.feed(conn, org_id, after, chosen, profileId, limit)
    body = EventFeed.model_construct(data=[Event.from_row(r) for r in rows], nextAfter=next_after)
    return Response(
        body.__pydantic_serializer__.to_json(body, warnings=False), media_type="application/json"
    )


@router.get("/v1/scoring/history", response_model=EventPage)
def read_history(
    org_id: CurrentOrgId,
    db: DatabaseDep,
    objectType: Annotated[ObjectType, Query()],
    objectId: ObjectIdQuery,
    profileId: Annotated[uuid.UUID | None, Query()] = None,
    dimension: Annotated[Dimension | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Response:
    """The object's score events, newest first: its score over time, each step explained
    rule by rule. `nextCursor` continues."""
    (object_id,) = normalize_object_ids(objectType, [objectId], field="objectId")
    read = service.HistoryRead(objectType, object_id, profileId, dimension, limit, cursor)
    with db.read() as conn:
        rows, next_cursor = service.history(conn, org_id, read)
    return json_page(
        [Event.from_row(r) for r in rows],
        next_cursor,
        cursor_after=lambda event: cursors.encode(read.fingerprint(), event.sequence),
    )
