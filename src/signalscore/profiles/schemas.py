"""Profile request and response bodies (SPEC §4 Profiles, §9 tiers)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from signalscore.schemas import (
    Description,
    Name,
    RequestModel,
    ResponseModel,
    is_finite_number,
    trimmed_pattern,
    unsigned_zero,
)
from signalscore.vocabulary import Dimension, ObjectType

MAX_TIERS_PER_DIMENSION = 10
MAX_TIER_NAME_CHARS = 50


def _tier_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= MAX_TIER_NAME_CHARS:
        raise PydanticCustomError(
            "INVALID_TIER_NAME",
            f"a tier name must be 1-{MAX_TIER_NAME_CHARS} characters after trimming",
        )
    return value


def _min_score(value: Any) -> int | float:
    if not is_finite_number(value) or not 0 <= value <= 100:
        raise PydanticCustomError(
            "INVALID_MIN_SCORE", "'minScore' must be a finite number from 0 to 100"
        )
    return int(value) if isinstance(value, int) else unsigned_zero(float(value))


TierName = Annotated[
    str,
    AfterValidator(_tier_name),
    Field(
        json_schema_extra={"pattern": trimmed_pattern(MAX_TIER_NAME_CHARS)},
        description=f"1-{MAX_TIER_NAME_CHARS} characters after trimming; unique in its "
        "dimension ignoring case",
    ),
]
MinScore = Annotated[
    int | float,
    PlainValidator(_min_score),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": 100,
            "description": "Scores from this one up belong to the tier (unless a tier with a "
            "larger minScore holds them); unique in its dimension.",
        }
    ),
]


class TierSpec(RequestModel):
    name: TierName
    minScore: MinScore


TierList = Annotated[list[TierSpec], Field(min_length=1, max_length=MAX_TIERS_PER_DIMENSION)]


class TiersSpec(RequestModel):
    """Per dimension, 1-10 tiers; a dimension omitted or null has none."""

    fit: TierList | None = None
    urgency: TierList | None = None


class ProfileCreate(RequestModel):
    profileType: ObjectType = Field(description="Object type this profile will score")
    name: Name
    description: Description = None
    tiers: TiersSpec | None = None


class ProfileUpdate(RequestModel):
    """`name` is required; an omitted `description` keeps the old one, `null` clears it.
    The same for `tiers`: omitted keeps them, `null` clears them."""

    name: Name
    description: Description = None
    tiers: TiersSpec | None = None

    # Accepted only to be refused with a precise message; hidden from the OpenAPI document.
    profileType: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    type: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("profileType", "type", mode="before")
    @classmethod
    def _type_is_immutable(cls, value: Any, info: ValidationInfo) -> Any:
        raise PydanticCustomError(
            "IMMUTABLE_FIELD",
            "'{field}' cannot be changed: a profile's type is immutable",
            {"field": info.field_name},
        )


class Tier(ResponseModel):
    name: str
    minScore: int | float


class Profile(ResponseModel):
    id: uuid.UUID
    organizationId: str
    type: ObjectType
    name: str
    description: str | None
    tiers: dict[Dimension, list[Tier]] | None = Field(
        description="Per dimension that has tiers, ordered by minScore descending; null when "
        "no dimension has."
    )
    createdAt: datetime
    updatedAt: datetime

    @classmethod
    def from_row(cls, row: Any) -> Profile:
        """From a `scoring_profiles` row."""
        return cls(
            id=row.id,
            organizationId=row.organization_id,
            type=row.type,
            name=row.name,
            description=row.description,
            tiers=row.tiers,
            createdAt=row.created_at,
            updatedAt=row.updated_at,
        )
