"""Score events (SPEC §10)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import Field

from signalscore.events.log import event_id, event_id_texts
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


# The `score_events` columns an event's JSON is built from (`events_json`), in this order;
# the changes' stored JSON text follows them.
EVENT_JSON_COLUMNS = (
    "sequence",
    "type",
    "created_at",
    "profile_id",
    "object_type",
    "object_id",
    "dimension",
    "score",
    "previous_score",
    "tier",
    "previous_tier",
    "version",
)


def events_json(org_id: str, rows: Iterable[Sequence[Any]]) -> tuple[list[str], list[bytes]]:
    """The ids (as text) and JSON of an organisation's events, each exactly as `Event`
    serialises it (a unit test holds the two together), built straight from its row: the
    values of `EVENT_JSON_COLUMNS` in order, then its `changes` as the stored JSON text,
    passed through. Webhook deliveries send thousands a second and need neither the decoded
    changes, nor a model, nor a `uuid.UUID` per event; rows taken apart as tuples, not by
    name."""
    identifiers: list[str] = []
    documents: list[bytes] = []
    event_id_text = event_id_texts(org_id)
    for (
        sequence,
        type_,
        created_at,
        profile_id,
        object_type,
        object_id,
        dimension,
        score,
        previous_score,
        tier,
        previous_tier,
        version,
        changes_text,
    ) in rows:
        identifier = event_id_text(sequence)
        identifiers.append(identifier)
        document = {
            "id": identifier,
            "sequence": sequence,
            "type": type_,
            "createdAt": created_at,
            "profileId": profile_id,
            "objectType": object_type,
            "objectId": object_id,
            "dimension": dimension,
            "score": score,
            "previousScore": previous_score,
            "tier": tier,
            "previousTier": previous_tier,
            "version": version,
            "changes": orjson.Fragment(changes_text),
        }
        documents.append(orjson.dumps(document, option=orjson.OPT_UTC_Z))
    return identifiers, documents


def event_json(row: Any, changes_text: str) -> tuple[str, bytes]:
    """One event's id and JSON (`events_json`) from a row with the columns by name."""
    values = (*(getattr(row, column) for column in EVENT_JSON_COLUMNS), changes_text)
    [identifier], [document] = events_json(row.organization_id, [values])
    return identifier, document
