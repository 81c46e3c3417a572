"""Webhook subscriptions and deliveries (SPEC §11)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from signalscore.events.schemas import EventType
from signalscore.schemas import Description, RequestModel, ResponseModel

MAX_PROFILE_FILTERS = 100

Url = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r"^[^\x00]*$")]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=4)]
ProfileIds = Annotated[list[uuid.UUID], Field(max_length=MAX_PROFILE_FILTERS)]


class WebhookCreate(RequestModel):
    url: Url = Field(description="http:// or https://; private addresses need the server's consent")
    eventTypes: EventTypes
    profileIds: ProfileIds | None = Field(
        default=None, description="Only events of these profiles; all when omitted or null."
    )
    description: Description = None


class WebhookPatch(RequestModel):
    """Every field optional; `enabled: true` on a disabled subscription resumes delivery
    from where it stopped."""

    url: Url | None = None
    eventTypes: EventTypes | None = None
    profileIds: ProfileIds | None = None
    description: Description = None
    enabled: bool | None = None


class Webhook(ResponseModel):
    id: uuid.UUID
    url: str
    eventTypes: list[EventType]
    profileIds: list[uuid.UUID] | None
    description: str | None
    enabled: bool
    disabledReason: str | None
    createdAt: datetime
    updatedAt: datetime

    @classmethod
    def from_row(cls, row: Any) -> Webhook:
        return cls(
            id=row.id,
            url=row.url,
            eventTypes=row.event_types,
            profileIds=row.profile_ids,
            description=row.description,
            enabled=row.enabled,
            disabledReason=row.disabled_reason,
            createdAt=row.created_at,
            updatedAt=row.updated_at,
        )


class WebhookWithSecret(Webhook):
    secret: str = Field(description="`whsec_...`: shown only when created or rotated.")


class Delivery(ResponseModel):
    id: uuid.UUID = Field(description="The `webhook-id` sent: the same on every retry of it.")
    eventIds: list[uuid.UUID]
    attempt: int
    statusCode: int | None
    durationMs: float
    error: str | None
    createdAt: datetime

    @classmethod
    def from_row(cls, row: Any) -> Delivery:
        return cls(
            id=row.message_id,
            eventIds=row.event_ids,
            attempt=row.attempt,
            statusCode=row.status_code,
            durationMs=row.duration_ms,
            error=row.error,
            createdAt=row.created_at,
        )
