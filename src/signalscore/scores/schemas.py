"""Score rows (SPEC §4 Scores, §6)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from signalscore.schemas import ResponseModel
from signalscore.vocabulary import Dimension, ObjectType


class Contribution(ResponseModel):
    ruleId: uuid.UUID
    signalTemplateId: str
    matchedValue: str | None = Field(
        description="The value that earned the points, e.g. `874 (100–1000)`; null when the "
        "object has no value for the rule's template."
    )
    # int | float keeps integral points as JSON integers (`10`, not `10.0`).
    pointsEarned: int | float
    maxPoints: int | float


class ScoreRow(ResponseModel):
    id: uuid.UUID
    profileId: uuid.UUID
    organizationId: str
    objectType: ObjectType
    objectId: str
    dimension: Dimension
    score: float = Field(ge=0, le=100)
    previousScore: float | None
    contributions: list[Contribution]
    previousContributions: list[Contribution]
    signalCoverage: int
    totalRules: int
    computedAt: datetime
    version: int
