"""`pointValues` validation as units: normalisation and problem lists."""

from __future__ import annotations

from typing import Any

import pytest

from signalscore.rules.point_values import validate_point_values


def codes(answer_type: str, document: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.field, p.code) for p in validate_point_values(answer_type, document)[1]]


def test_valid_documents_are_normalised() -> None:
    assert validate_point_values("boolean", {"false": -5}) == ({"false": -5}, [])
    normalized, problems = validate_point_values(
        "number",
        {
            "ranges": [
                {"max": 0, "points": 1},
                {"min": 0, "max": 10, "points": 2},
                {"min": 10, "points": 3},
            ]
        },
    )
    assert problems == []
    assert normalized["ranges"][0] == {"min": None, "max": 0, "points": 1}
    assert normalized["ranges"][2] == {"min": 10, "max": None, "points": 3}
    normalized, problems = validate_point_values("list", {"choices": {" A ": 1, "b": -2}})
    assert (normalized, problems) == ({"choices": {"A": 1, "b": -2}, "mode": "additive"}, [])


@pytest.mark.parametrize(
    ("ranges", "overlap_at"),
    [
        ([(0, 10), (10, 20)], None),  # touching is fine: max is exclusive
        ([(0, 10), (9, 20)], 1),
        ([(None, 10), (None, 5)], 1),
        ([(0, None), (100, 200)], 1),
        ([(100, 200), (0, None)], 1),
        ([(5, 6), (None, 5), (6, None)], None),
        ([(0, 1), (2, 3), (0.5, 2.5)], 2),
    ],
)
def test_overlap_detection(ranges: list[tuple[Any, Any]], overlap_at: int | None) -> None:
    document = {"ranges": [{"min": lo, "max": hi, "points": 1} for lo, hi in ranges]}
    found = [field for field, code in codes("number", document) if code == "OVERLAPPING_RANGES"]
    if overlap_at is None:
        assert found == []
    else:
        assert f"pointValues.ranges[{overlap_at}]" in found


def test_every_problem_is_listed() -> None:
    document = {
        "ranges": [{"min": 5, "max": 1, "points": "x"}, {"points": 2, "extra": 1}],
        "mode": "additive",
    }
    assert codes("percentage", document) == [
        ("pointValues.mode", "WRONG_SHAPE"),
        ("pointValues.ranges[0].points", "INVALID_POINTS"),
        ("pointValues.ranges[0].max", "INVALID_RANGE"),
        ("pointValues.ranges[1].extra", "UNKNOWN_FIELD"),
    ]


def test_points_limits() -> None:
    assert codes("boolean", {"true": 1_000_000, "false": -1_000_000}) == []
    assert codes("boolean", {"true": 1_000_000.5}) == [("pointValues.true", "POINTS_OUT_OF_RANGE")]
    assert codes("boolean", {"true": True}) == [("pointValues.true", "INVALID_POINTS")]
    assert codes("boolean", {"true": float("nan")}) == [("pointValues.true", "INVALID_POINTS")]
