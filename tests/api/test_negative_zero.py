"""-0.0 is stored and read back as 0.0 in every number field a client writes: PostgreSQL's
jsonb has no negative zero (it reads back 0.0 where SQLite kept -0.0), so without this the
two backends answered differently, and a write's answer differed from the later read."""

from __future__ import annotations

import json
import math
from typing import Any

from tests.api.conftest import World


def _raw(body: str) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": "application/json"}}


def _zeros(document: Any) -> list[float]:
    """Every float 0 in a JSON document (as parsed), to check its sign."""
    if isinstance(document, dict):
        return [z for value in document.values() for z in _zeros(value)]
    if isinstance(document, list):
        return [z for value in document for z in _zeros(value)]
    return [document] if isinstance(document, float) and document == 0 else []


def _assert_unsigned(answer: Any, count: int) -> None:
    zeros = _zeros(answer.json())
    assert len(zeros) >= count, answer.text
    assert all(math.copysign(1, z) == 1 for z in zeros), answer.text


def test_rule_numbers_read_back_without_a_negative_zero(world: World) -> None:
    rule = (
        '{"signalTemplateId": "employees", "dimension": "urgency", "answerType": "number",'
        ' "pointValues": {"ranges": [{"min": -0.0, "max": 10, "points": -0.0},'
        ' {"min": 10, "max": null, "points": 3}]},'
        ' "decay": {"steps": [{"afterDays": 30, "factor": -0.0}]}}'
    )
    written = world.call("PUT", "/v1/scoring/profiles/{pid}/rules", **_raw(rule))
    assert written.status_code in (200, 201), written.text
    _assert_unsigned(written, 3)
    rules = world.call("GET", "/v1/scoring/profiles/{pid}/rules")
    _assert_unsigned(rules, 3)
    boolean = (
        '{"signalTemplateId": "is_b2b", "dimension": "fit", "answerType": "boolean",'
        ' "pointValues": {"true": -0.0, "false": 1}}'
    )
    listed = (
        '{"signalTemplateId": "crm", "dimension": "fit", "answerType": "list",'
        ' "pointValues": {"choices": {"Salesforce": -0.0}, "mode": "additive"}}'
    )
    for body in (boolean, listed):
        answer = world.call("PUT", "/v1/scoring/profiles/{pid}/rules", **_raw(body))
        assert answer.status_code in (200, 201), answer.text
        _assert_unsigned(answer, 1)
    _assert_unsigned(world.call("GET", "/v1/scoring/profiles/{pid}/rules"), 5)


def test_tier_floors_and_values_read_back_without_a_negative_zero(world: World) -> None:
    tiers = (
        '{"name": "ICP", "tiers": {"fit": [{"name": "A", "minScore": 50},'
        ' {"name": "B", "minScore": -0.0}]}}'
    )
    answer = world.call("PUT", "/v1/scoring/profiles/{pid}", **_raw(tiers))
    assert answer.status_code == 200, answer.text
    _assert_unsigned(answer, 1)
    _assert_unsigned(world.call("GET", "/v1/scoring/profiles/{pid}"), 1)

    values = json.dumps(
        {
            "values": [
                {"objectType": "company", "objectId": "z.com", "signalTemplateId": "employees"}
            ]
        }
    ).replace("}]}", ', "value": -0.0}]}')
    written = world.call("PUT", "/v1/signals/values", **_raw(values))
    assert written.status_code == 200, written.text
    read = world.call("GET", "/v1/signals/values?objectType=company&objectId=z.com")
    assert read.status_code == 200, read.text
    [value] = [v["value"] for v in read.json()]
    # SQLite's JSON reads 0.0 back as 0 (docs/api.md: 5 and 5.0 are the same value).
    assert value == 0
    assert math.copysign(1, value) == 1, read.text
