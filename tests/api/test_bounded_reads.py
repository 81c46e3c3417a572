"""Reads whose size the client controls only through its filters stay bounded: the largest
possible score row, and the refusal of an answer that would pass the response bound."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signalscore import responses
from signalscore.engine import MAX_MATCHED_VALUE_CHARS
from tests.api.conftest import World
from tests.helpers import assert_error, drain

RULES = 100  # the most a profile holds
TEMPLATE_ID_LENGTH = 100  # the longest template id
# The worst text for JSON: every character a control character, escaped as `\u00XX`.
WORST = "\x01" * 200
# A contribution at its largest, as JSON: a UUID, the longest template id, the longest
# matchedValue with every character escaped, the longest points, observedAt and decay
# factor; then the row around the two lists of them (contributions and
# previousContributions).
CONTRIBUTION_BOUND = len(
    json.dumps(
        {
            "ruleId": "00000000-0000-0000-0000-000000000000",
            "signalTemplateId": "t" * TEMPLATE_ID_LENGTH,
            "matchedValue": "\x01" * MAX_MATCHED_VALUE_CHARS,
            "pointsEarned": -1.2345678901234567e-300,
            "maxPoints": -1.2345678901234567e-300,
            "observedAt": "2026-12-07T07:15:58.566705Z",
            "decayFactor": 0.3333333333333333,
        }
    )
)
ROW_BOUND = 2 * RULES * (CONTRIBUTION_BOUND + 1) + 2_000


def _template_id(i: int) -> str:
    return f"t{i:03d}".ljust(TEMPLATE_ID_LENGTH, "x")


def _largest_rows(world: World, database: Any, objects: list[str]) -> None:
    """A profile of 100 list rules and objects whose every answer is as long as it gets,
    changed once, so `previousContributions` is full too."""
    created = world.call(
        "POST", "/v1/scoring/profiles", json={"profileType": "company", "name": "Largest"}
    )
    profile_id = created.json()["id"]
    for i in range(RULES):
        response = world.call(
            "POST",
            "/v1/signals/templates",
            json={
                "id": _template_id(i),
                "name": f"T{i}",
                "objectType": "company",
                "answerType": "list",
            },
        )
        assert response.status_code == 201, response.text
        response = world.call(
            "PUT",
            f"/v1/scoring/profiles/{profile_id}/rules",
            json={
                "signalTemplateId": _template_id(i),
                "dimension": "urgency",
                "answerType": "list",
                "pointValues": {"choices": {"a": 1}, "mode": "best-match"},
            },
        )
        assert response.status_code == 200, response.text
    for object_id in objects:
        assign = world.call(
            "POST",
            "/v1/scoring/assignments",
            json={"profileId": profile_id, "objectType": "company", "objectId": object_id},
        )
        assert assign.status_code == 201, assign.text
        for version in range(2):
            values = [
                {
                    "objectType": "company",
                    "objectId": object_id,
                    "signalTemplateId": _template_id(i),
                    # 100 items; only the first ~200 characters of their text are kept.
                    "value": [f"{version}{WORST[:199]}", *(f"v{k}" for k in range(99))],
                }
                for i in range(RULES)
            ]
            response = world.call("PUT", "/v1/signals/values", json={"values": values})
            assert response.status_code == 200, response.text
            drain(database)


def test_the_largest_possible_score_row_is_bounded(world: World, database: Any) -> None:
    _largest_rows(world, database, ["big.example"])
    response = world.call(
        "GET",
        "/v1/scoring/scores?objectType=company&objectId=big.example&dimension=urgency",
    )
    assert response.status_code == 200, response.text
    [row] = response.json()
    assert row["version"] >= 2
    for key in ("contributions", "previousContributions"):
        assert len(row[key]) == RULES
        for contribution in row[key]:
            text = contribution["matchedValue"]
            assert len(text) == MAX_MATCHED_VALUE_CHARS
            assert text.endswith("…")
    # The row is as large as rows get (every text at its cut), and within the bound.
    assert ROW_BOUND * 0.6 < len(response.content) <= ROW_BOUND
    assert ROW_BOUND < 400_000


def test_a_read_larger_than_the_bound_is_refused_and_a_narrower_one_answers(
    world: World, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = ["a.example", "b.example", "c.example"]
    _largest_rows(world, database, objects)
    one_row = len(
        world.call(
            "GET", "/v1/scoring/scores?objectType=company&objectId=a.example&dimension=urgency"
        ).content
    )
    monkeypatch.setattr(responses, "MAX_RESPONSE_BYTES", int(one_row * 2.5))
    everything = "&".join(f"objectId={o}" for o in objects)
    response = world.call("GET", f"/v1/scoring/scores?objectType=company&{everything}")
    error = assert_error(response, 422, "VALIDATION_ERROR", error_code="RESPONSE_TOO_LARGE")
    assert error["details"] == {"maxBytes": int(one_row * 2.5)}
    assert "profileId" in error["message"]
    narrower = world.call(
        "GET", "/v1/scoring/scores?objectType=company&objectId=a.example&objectId=b.example"
    )
    assert narrower.status_code == 200
    assert len(narrower.json()) == 2  # one urgency row per object
    # The same bound holds for values.
    one_object = len(
        world.call("GET", "/v1/signals/values?objectType=company&objectId=a.example").content
    )
    monkeypatch.setattr(responses, "MAX_RESPONSE_BYTES", int(one_object * 2.5))
    values = world.call("GET", f"/v1/signals/values?objectType=company&{everything}")
    assert values.status_code == 422, values.status_code
    assert values.json()["error"]["errorCode"] == "RESPONSE_TOO_LARGE"
    narrower = world.call(
        "GET", "/v1/signals/values?objectType=company&objectId=a.example&objectId=b.example"
    )
    assert narrower.status_code == 200


def test_text_stored_before_surrogates_were_refused_still_reads(
    world: World, database: Any, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("PostgreSQL never stored a lone surrogate: jsonb refuses it")
    import sqlalchemy as sa

    with database.write() as conn:
        conn.execute(
            sa.text(
                "UPDATE signal_values SET value = :v "
                "WHERE object_id = 'acme.com' AND signal_template_id = 'crm'"
            ),
            {"v": '["\\ud800x"]'},  # the JSON text as the old code stored it
        )
    response = world.call("GET", "/v1/signals/values?objectType=company&objectId=acme.com")
    assert response.status_code == 200
    crm = next(v for v in response.json() if v["signalTemplateId"] == "crm")
    assert crm["value"] == ["\ud800x"]
