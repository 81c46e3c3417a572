"""Scoring rule bodies (SPEC §4 Rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from signalscore.rules.point_values import POINT_VALUES_SCHEMA
from signalscore.schemas import (
    RequestModel,
    ResponseModel,
    is_finite_number,
    unsigned_zero,
    whole_number,
)
from signalscore.signals.schemas import TemplateRef
from signalscore.vocabulary import AnswerType, Dimension

MAX_DECAY_STEPS = 10
#: The largest `afterDays` (about 100 years): any older value has long decayed, and the
#: instant `observedAt + afterDays` must stay a representable date.
MAX_AFTER_DAYS = 36_500


def _factor(value: Any) -> int | float:
    if not is_finite_number(value) or not 0 <= value <= 1:
        raise PydanticCustomError("INVALID_FACTOR", "'factor' must be a number from 0 to 1")
    return int(value) if isinstance(value, int) else unsigned_zero(float(value))


AfterDays = Annotated[
    int,
    PlainValidator(whole_number("afterDays", "AFTER_DAYS", 1, MAX_AFTER_DAYS)),
    WithJsonSchema(
        {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_AFTER_DAYS,
            "description": "The step applies once the value is more than this many days old; "
            "strictly increasing from step to step.",
        }
    ),
]
Factor = Annotated[
    int | float,
    PlainValidator(_factor),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "pointsEarned is multiplied by this; non-increasing from step to step.",
        }
    ),
]


class DecayStep(RequestModel):
    afterDays: AfterDays
    factor: Factor


class Decay(RequestModel):
    """SPEC §13: step factors on a value's age, applied when the score is computed."""

    steps: list[DecayStep] = Field(min_length=1, max_length=MAX_DECAY_STEPS)


class RuleUpsert(RequestModel):
    signalTemplateId: TemplateRef
    dimension: Dimension
    answerType: AnswerType = Field(
        description="Must match the referenced signal template's answer type; a mismatch is "
        "a 422 INVALID_POINT_VALUES at write time rather than a silent compute failure later."
    )
    pointValues: Annotated[dict[str, Any], WithJsonSchema(POINT_VALUES_SCHEMA)] = Field(
        description='Exactly one shape, by answer type. boolean: `{"true": 20, "false": -5}`; '
        'number/percentage/currency: `{"ranges": [{"min": 0, "max": 500, "points": 15}]}` '
        "(min inclusive, max exclusive, either may be null for an open end); list: "
        '`{"choices": {"Salesforce": 10}, "mode": "additive"}` with mode one of '
        "additive, best-match, contains-all, contains-none, exact-match."
    )
    decay: Decay | None = Field(
        default=None,
        description="Optional time decay (SPEC §13); omitted or null: none. A PUT replaces "
        "the whole rule, so a PUT without it removes the rule's decay.",
    )


class Rule(ResponseModel):
    id: uuid.UUID
    profileId: uuid.UUID
    signalTemplateId: str
    dimension: Dimension
    selector: None = Field(
        default=None, description="Reserved for picking a field out of a structured answer."
    )
    answerType: AnswerType
    pointValues: dict[str, Any]
    decay: dict[str, Any] | None = Field(
        default=None, description='`{"steps": [{"afterDays", "factor"}]}`, or null.'
    )
    createdAt: datetime
    updatedAt: datetime
