"""Turning framework validation errors into the `fields` list of the envelope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from signalscore.errors import BadRequest, Invalid, Problems

_LOCATIONS = {"body", "query", "path", "header", "cookie"}

# errorCode for pydantic's built-in error types; our own validators raise
# PydanticCustomError with an UPPER_SNAKE_CASE type that is used as is.
_BUILTIN_ERROR_CODES = {
    "missing": "MISSING_FIELD",
    "extra_forbidden": "UNKNOWN_FIELD",
    "too_short": "TOO_FEW_ITEMS",
    "too_long": "TOO_MANY_ITEMS",
    "string_too_short": "STRING_TOO_SHORT",
    "string_too_long": "STRING_TOO_LONG",
    "literal_error": "INVALID_ENUM_VALUE",
    "enum": "INVALID_ENUM_VALUE",
    "uuid_parsing": "INVALID_UUID",
    "uuid_type": "INVALID_UUID",
    "finite_number": "NON_FINITE_NUMBER",
}


def json_path(loc: Sequence[int | str]) -> str:
    """`('body', 'values', 7, 'value')` → `values[7].value`."""
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _message(error: Mapping[str, Any], path: str) -> str:
    kind = error.get("type")
    name = path.rsplit(".", 1)[-1]
    if kind == "missing":
        return f"'{name}' is required"
    if kind == "extra_forbidden":
        return f"unknown field '{name}'"
    return str(error.get("msg", "invalid value"))


def error_code_for(kind: str) -> str:
    if kind.isupper():
        return kind
    return _BUILTIN_ERROR_CODES.get(kind, "INVALID_FIELD")


def validation_error(errors: Iterable[Mapping[str, Any]]) -> BadRequest | Invalid:
    """One envelope-ready error for a list of pydantic/FastAPI error dicts."""
    problems = Problems()
    seen: set[tuple[str, str]] = set()
    for error in errors:
        kind = str(error.get("type", ""))
        if kind == "json_invalid":
            return BadRequest("request body is not valid JSON")
        path = json_path(error.get("loc", ()))
        message = _message(error, path)
        if (path, message) not in seen:
            seen.add((path, message))
            problems.add(path, error_code_for(kind), message)
    if not problems:
        return Invalid("validation failed")
    return Invalid.listing(problems.fields)
