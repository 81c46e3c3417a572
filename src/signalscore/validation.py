"""Turning framework validation errors into the `fields` list of the envelope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from signalscore.errors import BadRequest, FieldError, Invalid

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
    errors = list(errors)
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("request body is not valid JSON")
    fields: list[FieldError] = []
    seen: set[tuple[str, str]] = set()
    for error in errors:
        path = json_path(error.get("loc", ()))
        inner = (error.get("ctx") or {}).get("path")
        if error.get("type") == "INVALID_CHARACTER" and inner:
            # The check runs on the whole body and knows the exact place: report that.
            path = (
                inner if path == "body" else f"{path}{'' if inner.startswith('[') else '.'}{inner}"
            )
        message = _message(error, path)
        if (path, message) not in seen:
            seen.add((path, message))
            fields.append(FieldError(field=path, message=message))
    if not fields:
        return Invalid("validation failed")
    first_kind = str(errors[0].get("type", ""))
    return Invalid.listing(fields, error_code_for(first_kind), what="fields")
