"""Profile request and response bodies (SPEC §4 Profiles)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from signalscore.schemas import Description, Name, RequestModel, ResponseModel
from signalscore.vocabulary import ObjectType


class ProfileCreate(RequestModel):
    profileType: ObjectType = Field(description="Object type this profile will score")
    name: Name
    description: Description = None


class ProfileUpdate(RequestModel):
    """`name` is required; an omitted `description` keeps the old one, `null` clears it."""

    name: Name
    description: Description = None

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


class Profile(ResponseModel):
    id: uuid.UUID
    organizationId: str
    type: ObjectType
    name: str
    description: str | None
    createdAt: datetime
    updatedAt: datetime
