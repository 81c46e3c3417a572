"""Pieces shared by the request and response models of every feature."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from signalscore.objects import ObjectType as ObjectType

MAX_POINTS = 1_000_000


class RequestModel(BaseModel):
    """Unknown fields are rejected (422 naming the field) so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _trimmed_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 200:
        raise PydanticCustomError("INVALID_NAME", "'name' must be 1-200 characters after trimming")
    return value


Name = Annotated[str, AfterValidator(_trimmed_name)]
Description = Annotated[str | None, Field(max_length=1000)]


def is_finite_number(value: Any) -> bool:
    """A JSON number that is neither a boolean nor NaN/±Infinity (and fits in a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
