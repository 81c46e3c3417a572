"""Score rows (SPEC §4 Scores, §6, §9), ranked pages and distributions (SPEC §9)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
from pydantic import Field

from signalscore.db.engine import load_json
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
    observedAt: str | None = Field(
        default=None,
        description="When the value was observed (SPEC §13), UTC with microseconds; null "
        "when the object has no value for the rule's template.",
    )
    decayFactor: int | float = Field(
        default=1,
        description="The factor of the rule's largest decay step that has passed for the "
        "value (pointsEarned is the points times it, rounded to 2 decimals); 1 when none has.",
    )


class ScoreRow(ResponseModel):
    id: uuid.UUID
    profileId: uuid.UUID
    organizationId: str
    objectType: ObjectType
    objectId: str
    dimension: Dimension
    score: float = Field(ge=0, le=100)
    previousScore: float | None
    tier: str | None = Field(
        description="The profile's tier for this score (SPEC §9); null when none holds it or "
        "the dimension has no tiers."
    )
    previousTier: str | None
    contributions: list[Contribution]
    previousContributions: list[Contribution]
    signalCoverage: int
    totalRules: int
    computedAt: datetime
    nextChangeAt: datetime | None = Field(
        description="When a decay step of one of the row's rules next passes for its values "
        "(SPEC §13), so that time alone changes the score; null when none will."
    )
    version: int

    @classmethod
    def from_row(cls, row: Any) -> ScoreRow:
        """From a `score_results` row (`scores.service.SCORE_COLUMNS`, the two documents as
        their JSON text). Built without validation: the row was validated on its way in,
        and validating 100 rows of contributions again cost a ranked page more than its SQL
        (about 15 ms against 1.5). Serialise with `warnings=False` (`responses.py`): the
        contributions stay the stored dicts. The API's answers do not build these: they
        are rendered straight from the rows (`score_row_json`)."""
        return cls.model_construct(
            id=row.id,
            profileId=row.profile_id,
            organizationId=row.organization_id,
            objectType=row.object_type,
            objectId=row.object_id,
            dimension=row.dimension,
            score=row.score,
            previousScore=row.previous_score,
            tier=row.tier,
            previousTier=row.previous_tier,
            contributions=load_json(row.contributions_text),
            previousContributions=load_json(row.previous_contributions_text),
            signalCoverage=row.signal_coverage,
            totalRules=row.total_rules,
            computedAt=row.computed_at,
            nextChangeAt=row.next_change_at,
            version=row.version,
        )


def _document(text: str) -> orjson.Fragment:
    # PostgreSQL's jsonb prints a number written with an exponent expanded (`1e25` as 26
    # digits, `1e-300` with 300 zeros): a document with a run of ten zeros is decoded and
    # encoded again (the same numbers, in their short form) instead of passed on as it is.
    if "0000000000" in text:
        return orjson.Fragment(orjson.dumps(load_json(text)))
    return orjson.Fragment(text)


def score_row_json(row: Any) -> bytes:
    """A score row's JSON, exactly as `ScoreRow.from_row(row)` serialises it (a unit test
    holds the two together), built straight from the row with its two documents passed
    through as the stored JSON text: a page of 100 rows holds 200 documents of about 2 kB,
    and decoding them to dicts only to encode them again was a fifth of its time."""
    return orjson.dumps(
        {
            "id": row.id,
            "profileId": row.profile_id,
            "organizationId": row.organization_id,
            "objectType": row.object_type,
            "objectId": row.object_id,
            "dimension": row.dimension,
            "score": row.score,
            "previousScore": row.previous_score,
            "tier": row.tier,
            "previousTier": row.previous_tier,
            "contributions": _document(row.contributions_text),
            "previousContributions": _document(row.previous_contributions_text),
            "signalCoverage": row.signal_coverage,
            "totalRules": row.total_rules,
            "computedAt": row.computed_at,
            "nextChangeAt": row.next_change_at,
            "version": row.version,
        },
        option=orjson.OPT_UTC_Z,
    )


class ScorePage(ResponseModel):
    """A page of a ranked read: `nextCursor` continues exactly after its last row, null on
    the last page."""

    data: list[ScoreRow]
    nextCursor: str | None


class Bucket(ResponseModel):
    min: int | float
    max: int | float
    count: int


class TierCount(ResponseModel):
    name: str
    minScore: int | float
    count: int


class Distribution(ResponseModel):
    dimension: Dimension
    assigned: int = Field(description="The profile's assignments.")
    scored: int = Field(description="The profile's score rows in this dimension.")
    mean: float | None = Field(
        description="The exact mean of the scored rows' scores, rounded to 2 decimals (half "
        "to even); null when none is scored."
    )
    p50: float | None = Field(description="Nearest-rank median; null when none is scored.")
    p90: float | None = Field(description="Nearest-rank 90th percentile.")
    histogram: list[Bucket] = Field(
        description="Equal widths over [0, 100]: each bucket holds min <= score < max, the "
        "last one also 100."
    )
    tiers: list[TierCount] = Field(
        description="The dimension's tiers (minScore descending) with how many rows have each."
    )
