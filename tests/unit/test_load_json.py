"""`db.engine.load_json`: every JSON document read from either backend."""

from __future__ import annotations

import json

import pytest

from signalscore.db.engine import load_json

CASES = [
    '[{"ruleId": "r", "maxPoints": 25, "matchedValue": "212 (200–1000)", "pointsEarned": 20}]',
    '{"n": 9007199254740992}',  # 2**53: stays an integer
    '{"n": 9007199254740993}',  # past 2**53: the float, as it was written
    "12345678901234567890",
    "1" + "0" * 308,  # how jsonb prints 1e308
    "0.30000000000000004",
    "[1e308, -0.0, 1.5]",
    '"\\ud800"',  # an escaped lone surrogate, stored before the API refused them
    '"é\\u00e9"',
    "[]",
]


def _reference(text: str) -> object:
    def as_int(raw: str) -> int | float:
        number = int(raw)
        return float(number) if abs(number) > 2**53 else number

    return json.loads(text, parse_int=as_int)


@pytest.mark.parametrize("text", CASES)
@pytest.mark.parametrize("kind", [str, bytes, memoryview])
def test_every_form_reads_as_the_exact_reference(text: str, kind: type) -> None:
    raw = text if kind is str else kind(text.encode("utf-8"))
    got, expected = load_json(raw), _reference(text)
    assert got == expected
    assert type(got) is type(expected)
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("number", [5, 2.5])
def test_a_number_raises_type_error_as_the_sqlite_json_type_expects(number: float) -> None:
    """SQLite hands over a JSON number already as a number; SQLAlchemy's JSON type catches
    the TypeError and keeps it. Anything else (a number read as bytes) broke value reads."""
    with pytest.raises(TypeError):
        load_json(number)  # type: ignore[arg-type]
