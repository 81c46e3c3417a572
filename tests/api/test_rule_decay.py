"""`decay` on rules (SPEC §13) through HTTP: stored and returned as sent, replaced by a PUT
without it, and every rule of its validation reported at its path with nothing written."""

from __future__ import annotations

from typing import Any

import pytest

from signalscore.db.engine import Database
from tests.api.conftest import World, snapshot
from tests.helpers import assert_error

RULES = "/v1/scoring/profiles/{pid}/rules"


def rule(decay: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "signalTemplateId": "is_b2b",
        "dimension": "urgency",
        "answerType": "boolean",
        "pointValues": {"true": 10},
        **extra,
    }
    if decay is not None:
        body["decay"] = decay
    return body


def test_decay_is_stored_returned_and_replaced(world: World) -> None:
    decay = {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0}]}
    put = world.call("PUT", RULES, json=rule(decay))
    assert put.status_code == 200, put.text
    assert put.json()["decay"] == decay
    listed = {r["id"]: r for r in world.call("GET", RULES).json()}
    assert listed[put.json()["id"]]["decay"] == decay
    # The rule without decay (the seeded one) says null.
    assert listed[world.rule_id]["decay"] is None
    # A PUT replaces the whole rule: without `decay` the rule has none.
    again = world.call("PUT", RULES, json=rule())
    assert again.json()["id"] == put.json()["id"]
    assert again.json()["decay"] is None
    listed = {r["id"]: r for r in world.call("GET", RULES).json()}
    assert listed[put.json()["id"]]["decay"] is None
    explicit_null = world.call("PUT", RULES, json={**rule(), "decay": None})
    assert explicit_null.status_code == 200
    assert explicit_null.json()["decay"] is None


def test_one_step_with_factor_one_and_integer_factors_are_kept(world: World) -> None:
    decay = {"steps": [{"afterDays": 1, "factor": 1}, {"afterDays": 2, "factor": 1}]}
    put = world.call("PUT", RULES, json=rule(decay))
    assert put.status_code == 200, put.text
    assert put.json()["decay"] == decay
    # 7.0 is the JSON integer 7 (JSON Schema's "integer"), stored as 7.
    put = world.call("PUT", RULES, json=rule({"steps": [{"afterDays": 7.0, "factor": 0.5}]}))
    assert put.status_code == 200, put.text
    assert put.json()["decay"] == {"steps": [{"afterDays": 7, "factor": 0.5}]}


@pytest.mark.parametrize(
    ("decay", "fields"),
    [
        ({"steps": []}, ["decay.steps"]),
        ({"steps": [{"afterDays": d, "factor": 0.5} for d in range(1, 12)]}, ["decay.steps"]),
        ({}, ["decay.steps"]),
        ({"steps": [{"afterDays": 0, "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": -3, "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": 1.5, "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": True, "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": "30", "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": 36_501, "factor": 0.5}]}, ["decay.steps[0].afterDays"]),
        ({"steps": [{"afterDays": 30, "factor": 1.01}]}, ["decay.steps[0].factor"]),
        ({"steps": [{"afterDays": 30, "factor": -0.1}]}, ["decay.steps[0].factor"]),
        ({"steps": [{"afterDays": 30, "factor": "0.5"}]}, ["decay.steps[0].factor"]),
        ({"steps": [{"afterDays": 30}]}, ["decay.steps[0].factor"]),
        ({"steps": [{"afterDays": 30, "factor": 0.5, "x": 1}]}, ["decay.steps[0].x"]),
        ({"steps": [{"afterDays": 30, "factor": 0.5}], "mode": "x"}, ["decay.mode"]),
        (
            {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 30, "factor": 0.2}]},
            ["decay.steps[1].afterDays"],
        ),
        (
            {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 10, "factor": 0.7}]},
            ["decay.steps[1].afterDays", "decay.steps[1].factor"],
        ),
        (
            {
                "steps": [
                    {"afterDays": 10, "factor": 0.9},
                    {"afterDays": 20, "factor": 0.5},
                    {"afterDays": 30, "factor": 0.6},
                ]
            },
            ["decay.steps[2].factor"],
        ),
    ],
)
def test_invalid_decay_is_refused_at_its_path_and_changes_nothing(
    world: World, database: Database, decay: Any, fields: list[str]
) -> None:
    before = snapshot(database)
    response = world.call("PUT", RULES, json=rule(decay))
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert sorted(f["field"] for f in error["fields"]) == sorted(fields)
    assert snapshot(database) == before


def test_decay_and_point_value_problems_are_listed_together(world: World) -> None:
    body = rule(
        {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 20, "factor": 0.5}]},
        pointValues={"true": "x"},
    )
    error = assert_error(world.call("PUT", RULES, json=body), 422, "VALIDATION_ERROR")
    assert sorted(f["field"] for f in error["fields"]) == [
        "decay.steps[1].afterDays",
        "pointValues.true",
    ]
    # Point-value problems alone keep their own code (SPEC §4).
    alone = rule(pointValues={"true": "x"})
    assert_error(world.call("PUT", RULES, json=alone), 422, "INVALID_POINT_VALUES")
