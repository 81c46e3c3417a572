"""Validation of a rule's `pointValues` against its template's answer type (SPEC §4).

Every violation is collected with its JSON path and a specific `errorCode`, so one 422
INVALID_POINT_VALUES response tells the client everything to fix. The returned document is
normalised: open range ends are explicit `null`s and a list rule always carries its `mode`.
"""

from __future__ import annotations

import itertools
import math
import re
from typing import Any

from signalscore.errors import FieldError, Problems
from signalscore.schemas import MAX_POINTS, NAME_PATTERN, is_finite_number, unsigned_zero
from signalscore.vocabulary import LIST_MODES

MAX_RANGES = 50
MAX_CHOICES = 200
MAX_CHOICE_LENGTH = 200

_SHAPE_KEYS = {"true": "boolean", "false": "boolean", "ranges": "numeric", "choices": "list"}
_SHAPE_EXAMPLE = {
    "boolean": '{"true": 20, "false": -5}',
    "numeric": '{"ranges": [{"min": 0, "max": 500, "points": 15}]}',
    "list": '{"choices": {"Salesforce": 10}, "mode": "additive"}',
}
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_POINTS_SCHEMA = {"type": "number", "minimum": -MAX_POINTS, "maximum": MAX_POINTS}
_BOUND_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "null"}]}

# The JSON Schema of `pointValues`: one shape per kind of answer type. What it cannot state,
# the validator below checks: that the shape fits the template's answer type, `min < max`,
# that ranges do not overlap, and that choices are unique ignoring case.
POINT_VALUES_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "title": "boolean",
            "type": "object",
            "properties": {"true": _POINTS_SCHEMA, "false": _POINTS_SCHEMA},
            "additionalProperties": False,
            "minProperties": 1,
        },
        {
            "title": "number, percentage, currency",
            "type": "object",
            "properties": {
                "ranges": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_RANGES,
                    "items": {
                        "type": "object",
                        "properties": {
                            "min": _BOUND_SCHEMA,
                            "max": _BOUND_SCHEMA,
                            "points": _POINTS_SCHEMA,
                        },
                        "required": ["points"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["ranges"],
            "additionalProperties": False,
        },
        {
            "title": "list",
            "type": "object",
            "properties": {
                "choices": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_CHOICES,
                    "propertyNames": {"pattern": NAME_PATTERN},
                    "additionalProperties": _POINTS_SCHEMA,
                },
                "mode": {"type": "string", "enum": list(LIST_MODES)},
            },
            "required": ["choices"],
            "additionalProperties": False,
        },
    ]
}


def shape_of(answer_type: str) -> str:
    if answer_type == "boolean":
        return "boolean"
    if answer_type == "list":
        return "list"
    return "numeric"


def key_path(base: str, key: str) -> str:
    """The JSON path of `key` under `base`: `base.key`, or `base["some key"]`."""
    return f"{base}.{key}" if _PLAIN_KEY.match(key) else f'{base}["{key}"]'


class _Checker:
    def __init__(self, answer_type: str) -> None:
        self.answer_type = answer_type
        self.problems = Problems()

    def problem(self, field: str, error_code: str, message: str) -> None:
        self.problems.add(field, error_code, message)

    def points(self, path: str, value: Any) -> Any:
        if not is_finite_number(value):
            self.problem(path, "INVALID_POINTS", "points must be a finite number")
        elif abs(value) > MAX_POINTS:
            self.problem(path, "POINTS_OUT_OF_RANGE", f"|points| must be at most {MAX_POINTS:,}")
        else:
            return unsigned_zero(value)
        return value

    def extra_keys(self, document: dict[str, Any], allowed: set[str]) -> None:
        expected = shape_of(self.answer_type)
        for key in document:
            if key in allowed:
                continue
            path = key_path("pointValues", key)
            if key in _SHAPE_KEYS or key == "mode":
                self.problem(
                    path,
                    "WRONG_SHAPE",
                    f"'{key}' does not belong to a {self.answer_type} rule; "
                    f"use {_SHAPE_EXAMPLE[expected]}",
                )
            else:
                self.problem(path, "UNKNOWN_FIELD", f"unknown field '{key}'")

    def boolean(self, document: dict[str, Any]) -> dict[str, Any]:
        self.extra_keys(document, {"true", "false"})
        present = [k for k in ("true", "false") if k in document]
        if not present:
            self.problem(
                "pointValues",
                "MISSING_POINTS",
                "a boolean rule needs points for 'true', 'false' or both",
            )
        return {k: self.points(f"pointValues.{k}", document[k]) for k in present}

    def ranges(self, document: dict[str, Any]) -> dict[str, Any]:
        self.extra_keys(document, {"ranges"})
        if "ranges" not in document:
            self.problem("pointValues.ranges", "MISSING_RANGES", "'ranges' is required")
            return {}
        ranges = document["ranges"]
        if not isinstance(ranges, list):
            self.problem("pointValues.ranges", "INVALID_RANGES", "'ranges' must be an array")
            return {}
        if not 1 <= len(ranges) <= MAX_RANGES:
            code = "TOO_FEW_RANGES" if not ranges else "TOO_MANY_RANGES"
            self.problem("pointValues.ranges", code, f"'ranges' must hold 1-{MAX_RANGES} ranges")
            return {}
        normalized: list[dict[str, Any]] = []
        sound = True
        for index, item in enumerate(ranges):
            path = f"pointValues.ranges[{index}]"
            before = len(self.problems)
            normalized.append(self._range(path, item))
            sound = sound and len(self.problems) == before
        if sound:
            self._overlaps(normalized)
        return {"ranges": normalized}

    def _range(self, path: str, item: Any) -> dict[str, Any]:
        if not isinstance(item, dict):
            self.problem(path, "INVALID_RANGE", "a range must be an object {min, max, points}")
            return {}
        for key in item:
            if key not in ("min", "max", "points"):
                self.problem(key_path(path, key), "UNKNOWN_FIELD", f"unknown field '{key}'")
        bounds: dict[str, Any] = {}
        for key in ("min", "max"):
            bound = item.get(key)
            if bound is not None and not is_finite_number(bound):
                self.problem(
                    f"{path}.{key}", "INVALID_BOUND", f"'{key}' must be a finite number or null"
                )
                bound = None
            bounds[key] = None if bound is None else unsigned_zero(bound)
        if "points" not in item:
            self.problem(f"{path}.points", "MISSING_POINTS", "'points' is required")
            points = None
        else:
            points = self.points(f"{path}.points", item["points"])
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and not low < high:
            self.problem(f"{path}.max", "INVALID_RANGE", "'min' must be less than 'max'")
        return {"min": low, "max": high, "points": points}

    def _overlaps(self, ranges: list[dict[str, Any]]) -> None:
        def low(r: dict[str, Any]) -> float:
            return -math.inf if r["min"] is None else float(r["min"])

        def high(r: dict[str, Any]) -> float:
            return math.inf if r["max"] is None else float(r["max"])

        order = sorted(range(len(ranges)), key=lambda i: (low(ranges[i]), high(ranges[i])))
        for previous, current in itertools.pairwise(order):
            if high(ranges[previous]) > low(ranges[current]):
                first, second = sorted((previous, current))
                self.problem(
                    f"pointValues.ranges[{second}]",
                    "OVERLAPPING_RANGES",
                    f"ranges[{first}] and ranges[{second}] overlap (a range holds min <= v < max)",
                )

    def choices(self, document: dict[str, Any]) -> dict[str, Any]:
        self.extra_keys(document, {"choices", "mode"})
        mode = document.get("mode", "additive")
        if mode not in LIST_MODES:
            self.problem(
                "pointValues.mode", "INVALID_MODE", f"'mode' must be one of {', '.join(LIST_MODES)}"
            )
        if "choices" not in document:
            self.problem("pointValues.choices", "MISSING_CHOICES", "'choices' is required")
            return {}
        choices = document["choices"]
        if not isinstance(choices, dict):
            self.problem(
                "pointValues.choices", "INVALID_CHOICES", "'choices' must be an object of points"
            )
            return {}
        if not 1 <= len(choices) <= MAX_CHOICES:
            code = "TOO_FEW_CHOICES" if not choices else "TOO_MANY_CHOICES"
            self.problem(
                "pointValues.choices", code, f"'choices' must hold 1-{MAX_CHOICES} choices"
            )
            return {}
        normalized: dict[str, Any] = {}
        seen: dict[str, str] = {}
        for key, points in choices.items():
            path = key_path("pointValues.choices", key)
            label = key.strip()
            if not 1 <= len(label) <= MAX_CHOICE_LENGTH:
                self.problem(
                    path,
                    "INVALID_CHOICE",
                    f"a choice must be 1-{MAX_CHOICE_LENGTH} characters after trimming",
                )
                continue
            folded = label.casefold()
            if folded in seen:
                self.problem(
                    path,
                    "DUPLICATE_CHOICE",
                    f"choice {key!r} repeats {seen[folded]!r} (choices are compared ignoring case)",
                )
                continue
            seen[folded] = key
            normalized[label] = self.points(path, points)
        return {"choices": normalized, "mode": mode}


def validate_point_values(
    answer_type: str, document: dict[str, Any]
) -> tuple[dict[str, Any], list[FieldError]]:
    """Check `document` against `answer_type`; return it normalised and every problem."""
    checker = _Checker(answer_type)
    shape = shape_of(answer_type)
    if shape == "boolean":
        normalized = checker.boolean(document)
    elif shape == "numeric":
        normalized = checker.ranges(document)
    else:
        normalized = checker.choices(document)
    return normalized, checker.problems.fields
