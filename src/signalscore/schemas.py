"""Pieces shared by the request and response models of every feature."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

MAX_POINTS = 1_000_000


class RequestModel(BaseModel):
    """Unknown fields are rejected (422 naming the field) so a typo never passes silently.
    Text that cannot be stored (NUL, lone surrogates) is refused before validation, for
    every body, by `signalscore.body`."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


def _trimmed_name(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 200:
        raise PydanticCustomError("INVALID_NAME", "'name' must be 1-200 characters after trimming")
    return value


# What `str.strip()` removes (the characters of `str.isspace`), spelled out: JSON Schema's
# `\s` (ECMA-262) lacks U+001C-U+001F and U+0085, which Python strips, and has U+FEFF, which
# Python keeps, so a pattern written with `\s` admits names the validator refuses.
_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def trimmed_pattern(most: int) -> str:
    """A JSON Schema pattern for "1-`most` characters after trimming" (no NUL). It
    documents the rule for clients and fuzzers; the validators enforce it."""
    return rf"^[{_SPACE}]*[^{_SPACE}\x00](?:[^\x00]{{0,{most - 2}}}[^{_SPACE}\x00])?[{_SPACE}]*$"


NAME_PATTERN = trimmed_pattern(200)
Name = Annotated[
    str,
    AfterValidator(_trimmed_name),
    Field(
        json_schema_extra={"pattern": NAME_PATTERN}, description="1-200 characters after trimming"
    ),
]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00]*$")] | None


def whole_number(name: str, code: str, low: int, high: int) -> Callable[[Any], int]:
    """A validator of a JSON integer field from `low` to `high`. JSON has one number type,
    so `30.0` is the integer 30 (as JSON Schema's "integer" says); a boolean or a string is
    not a number. Errors `INVALID_<code>` and `<code>_OUT_OF_RANGE`."""

    def check(value: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise PydanticCustomError(f"INVALID_{code}", f"'{name}' must be a whole number")
        if not low <= value <= high:
            raise PydanticCustomError(
                f"{code}_OUT_OF_RANGE", f"'{name}' must be from {low:,} to {high:,}"
            )
        return int(value)

    return check


def unsigned_zero(value: int | float) -> int | float:
    """The number as stored: -0.0 becomes 0.0, because PostgreSQL's jsonb has no negative
    zero (it reads back 0.0 where SQLite reads back -0.0), and the two are equal anyway."""
    return value + 0.0 if isinstance(value, float) else value


def is_finite_number(value: Any) -> bool:
    """A JSON number that is neither a boolean nor NaN/±Infinity (and fits in a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


# Timestamps a client sends (`observedAt`): an RFC 3339 string with a UTC offset, from
# 1970-01-01T00:00:00Z to one day after the server's clock (a later one is a client's clock
# or time-zone bug, and would make decay and ordering meaningless).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$"
)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
FUTURE_TIMESTAMP_ALLOWANCE = timedelta(days=1)


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "INVALID_TIMESTAMP",
            "must be an RFC 3339 timestamp with an offset, e.g. '2026-11-30T12:00:00Z'",
        )
    try:
        # fromisoformat reads at most microseconds; RFC 3339 allows any fraction.
        head, dot, tail = value.partition(".")
        if dot:
            digits = len(tail) - len(tail.lstrip("0123456789"))
            value = f"{head}.{tail[: min(digits, 6)].ljust(6, '0')}{tail[digits:]}"
        moment = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise PydanticCustomError("INVALID_TIMESTAMP", "must be a real date and time") from None
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is in the year 10000 in UTC
        moment = EARLIEST_TIMESTAMP - FUTURE_TIMESTAMP_ALLOWANCE  # out of range below
    latest = datetime.now(UTC) + FUTURE_TIMESTAMP_ALLOWANCE
    if not EARLIEST_TIMESTAMP <= moment <= latest:
        raise PydanticCustomError(
            "TIMESTAMP_OUT_OF_RANGE",
            "must be from 1970-01-01T00:00:00Z to one day after the server's current time",
        )
    return moment


Timestamp = Annotated[
    datetime,
    PlainValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset, from 1970-01-01T00:00:00Z to one day "
            "after the server's current time.",
        }
    ),
]
