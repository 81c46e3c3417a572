"""Pieces shared by the request and response models of every feature."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from signalscore.objects import ObjectType as ObjectType

MAX_POINTS = 1_000_000


class RequestModel(BaseModel):
    """Unknown fields are rejected (422 naming the field) so a typo never passes silently.

    Text containing NUL (U+0000) is rejected too: PostgreSQL can store it in neither `text`
    nor `jsonb`, and no real signal, name or id needs it."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        path = _nul_path(data, "")
        if path is not None:
            raise PydanticCustomError(
                "INVALID_CHARACTER",
                "text must not contain NUL (\\u0000) characters",
                {"path": path or "body"},
            )
        return data


def _nul_path(value: Any, path: str) -> str | None:
    """The JSON path of the first string (or key) containing NUL, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return child
            found = _nul_path(item, child)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _trimmed_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 200:
        raise PydanticCustomError("INVALID_NAME", "'name' must be 1-200 characters after trimming")
    return value


# The pattern documents "1-200 characters after trimming" for clients and fuzzers; the
# validator is what enforces it.
NAME_PATTERN = r"^\s*\S(?:[\s\S]{0,198}\S)?\s*$"
Name = Annotated[
    str,
    AfterValidator(_trimmed_name),
    Field(
        json_schema_extra={"pattern": NAME_PATTERN}, description="1-200 characters after trimming"
    ),
]
Description = Annotated[str | None, Field(max_length=1000)]


def is_finite_number(value: Any) -> bool:
    """A JSON number that is neither a boolean nor NaN/±Infinity (and fits in a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False
