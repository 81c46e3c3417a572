"""Scoring rule bodies (SPEC §4 Rules)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, WithJsonSchema

from signalscore.rules.point_values import POINT_VALUES_SCHEMA
from signalscore.schemas import RequestModel, ResponseModel
from signalscore.signals.schemas import TemplateRef
from signalscore.vocabulary import AnswerType, Dimension


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
    createdAt: datetime
    updatedAt: datetime
