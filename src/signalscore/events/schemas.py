"""Score events (SPEC §10)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import Field

from signalscore.events.log import event_id
from signalscore.schemas import ResponseModel
from signalscore.vocabulary import Dimension, ObjectType

EventType = Literal["score.created", "score.changed", "score.deleted", "score.tier_changed"]


class ContributionSide(ResponseModel):
    matchedValue: str | None
    pointsEarned: int | float
    maxPoints: int | float
    observedAt: str | None = Field(
        default=None, description="The value's observedAt (SPEC §13): a value observed anew."
    )
    decayFactor: int | float = Field(
        default=1, description="The decay factor applied (SPEC §13): a step that passed."
    )


class Change(ResponseModel):
    ruleId: uuid.UUID
    signalTemplateId: str
    before: ContributionSide | None = Field(description="Null for a rule new in this version.")
    after: ContributionSide | None = Field(description="Null for a rule gone in this version.")


class Event(ResponseModel):
    id: uuid.UUID
    sequence: int = Field(description="Increases within the organisation; see GET /v1/events.")
    type: EventType
    createdAt: datetime
    profileId: uuid.UUID
    objectType: ObjectType
    objectId: str
    dimension: Dimension
    score: float | None = Field(description="Null on score.deleted.")
    previousScore: float | None
    tier: str | None
    previousTier: str | None
    version: int = Field(
        description="The row's version after the change (score.deleted: its last)."
    )
    changes: list[Change] = Field(description="One entry per rule whose contribution differs.")

    @classmethod
    def from_row(cls, row: Any) -> Event:
        """From a `score_events` row, written by the pipeline (not validated again)."""
        return cls.model_construct(
            id=event_id(row.organization_id, row.sequence),
            sequence=row.sequence,
            type=row.type,
            createdAt=row.created_at,
            profileId=row.profile_id,
            objectType=row.object_type,
            objectId=row.object_id,
            dimension=row.dimension,
            score=row.score,
            previousScore=row.previous_score,
            tier=row.tier,
            previousTier=row.previous_tier,
            version=row.version,
            changes=row.changes,
        )


class EventFeed(ResponseModel):
    data: list[Event]
    nextAfter: int = Field(description="The last sequence returned, or `after` when none.")


class EventPage(ResponseModel):
    data: list[Event]
    nextCursor: str | None


def event_json(row: Any, changes_text: str) -> tuple[uuid.UUID, bytes]:
    """An event's id and JSON, exactly as `Event` serialises it (a unit test holds the two
    together), built straight from its row with its `changes` passed through as the stored
    JSON text: webhook deliveries send thousands a second and need neither the decoded
    changes nor a model per event."""
    identifier = event_id(row.organization_id, row.sequence)
    document = {
        "id": identifier,
        "sequence": row.sequence,
        "type": row.type,
        "createdAt": row.created_at,
        "profileId": row.profile_id,
        "objectType": row.object_type,
        "objectId": row.object_id,
        "dimension": row.dimension,
        "score": row.score,
        "previousScore": row.previous_score,
        "tier": row.tier,
        "previousTier": row.previous_tier,
        "version": row.version,
        "changes": orjson.Fragment(changes_text),
    }
    return identifier, orjson.dumps(document, option=orjson.OPT_UTC_Z)
