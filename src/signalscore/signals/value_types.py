"""Typed validation of signal values by answer type (SPEC §5 Values)."""

from __future__ import annotations

from typing import Any

from signalscore.errors import FieldProblem
from signalscore.schemas import NAME_PATTERN, is_finite_number, unsigned_zero
from signalscore.vocabulary import MAX_EXACT_INT

MAX_LIST_ITEMS = 100
MAX_LIST_ITEM_LENGTH = 200


# The JSON Schema of a value: one of these, by the template's answer type.
VALUE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "number"},
        {
            "type": "array",
            "maxItems": MAX_LIST_ITEMS,
            "items": {"type": "string", "pattern": NAME_PATTERN},
        },
        {"type": "null"},
    ]
}


def _number(value: Any) -> int | float:
    if not is_finite_number(value):
        raise FieldProblem("INVALID_NUMBER", "value must be a finite number")
    if isinstance(value, int) and abs(value) > MAX_EXACT_INT:
        return float(value)
    return unsigned_zero(value)


def normalize_value(answer_type: str, value: Any) -> Any:
    """The value as stored, or `FieldProblem`. `None` (delete) is handled by the caller."""
    if answer_type == "boolean":
        if not isinstance(value, bool):
            raise FieldProblem("INVALID_BOOLEAN", "value must be true or false")
        return value
    if answer_type in ("number", "currency"):
        return _number(value)
    if answer_type == "percentage":
        number = _number(value)
        if not 0 <= number <= 100:
            raise FieldProblem("PERCENTAGE_OUT_OF_RANGE", "a percentage must be from 0 to 100")
        return number
    return _normalize_list(value)


def _normalize_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise FieldProblem("INVALID_LIST", "value must be an array of strings")
    if len(value) > MAX_LIST_ITEMS:
        raise FieldProblem("TOO_MANY_ITEMS", f"a list holds at most {MAX_LIST_ITEMS} strings")
    seen: set[str] = set()
    result: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise FieldProblem("INVALID_LIST_ITEM", "list items must be strings", f"[{index}]")
        item = item.strip()
        if not 1 <= len(item) <= MAX_LIST_ITEM_LENGTH:
            raise FieldProblem(
                "INVALID_LIST_ITEM",
                f"list items must be 1-{MAX_LIST_ITEM_LENGTH} characters after trimming",
                f"[{index}]",
            )
        folded = item.casefold()
        if folded not in seen:  # duplicates ignoring case are dropped, first spelling kept
            seen.add(folded)
            result.append(item)
    return result
