"""A score row's JSON as the API renders it (`scores.schemas.score_row_json`, straight from
the row, its documents passed through as stored text) is what the `ScoreRow` model
serialises: byte for byte when the stored text is compact, and the same JSON otherwise."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from signalscore.scores.schemas import ScoreRow, score_row_json

CONTRIBUTIONS = [
    {
        "ruleId": str(uuid.uuid4()),
        "signalTemplateId": "employees",
        "matchedValue": "874 (100–1000)",
        "pointsEarned": 10,
        "maxPoints": 25.5,
        "observedAt": "2026-12-07T07:15:58.566705Z",
        "decayFactor": 1,
    },
    {
        "ruleId": str(uuid.uuid4()),
        "signalTemplateId": "crm",
        "matchedValue": 'Hub"Spot, \\ ünïcode 😀',
        "pointsEarned": 4.0,
        "maxPoints": 10,
        "observedAt": None,
        "decayFactor": 0.5,
    },
]


def row(contributions_text: str, previous_text: str, **fields: Any) -> SimpleNamespace:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "profile_id": uuid.uuid4(),
        "organization_id": "a" * 24,
        "object_type": "company",
        "object_id": "acme.com",
        "dimension": "fit",
        "score": 51.43,
        "previous_score": None,
        "tier": "A",
        "previous_tier": None,
        "contributions_text": contributions_text,
        "previous_contributions_text": previous_text,
        "signal_coverage": 2,
        "total_rules": 2,
        "computed_at": datetime(2026, 12, 7, 7, 15, 58, 627995, tzinfo=UTC),
        "next_change_at": None,
        "version": 1,
    }
    return SimpleNamespace(**{**base, **fields})


def model_json(r: SimpleNamespace) -> bytes:
    model = ScoreRow.from_row(r)
    return model.__pydantic_serializer__.to_json(model, warnings=False)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"previous_score": 0.0, "tier": None, "previous_tier": "B", "version": 7},
        {"next_change_at": datetime(2027, 6, 1, tzinfo=UTC), "score": 100.0},
        {"computed_at": datetime(2026, 1, 1, tzinfo=UTC), "score": 0.01},
    ],
)
def test_compact_stored_text_renders_byte_for_byte(fields: dict[str, Any]) -> None:
    compact = json.dumps(CONTRIBUTIONS, separators=(",", ":"), ensure_ascii=False)
    r = row(compact, "[]", **fields)
    assert score_row_json(r) == model_json(r)


@pytest.mark.parametrize(
    "spell",
    [
        # PostgreSQL's jsonb output: spaces after `,` and `:`.
        lambda doc: json.dumps(doc, ensure_ascii=False),
        # A JSON column's text may escape everything.
        lambda doc: json.dumps(doc, ensure_ascii=True),
        # jsonb prints a number written with an exponent expanded: 1e25 and 1e-30 points.
        lambda doc: (
            json.dumps(doc)
            .replace('"pointsEarned": 10,', '"pointsEarned": 1' + "0" * 25 + ",")
            .replace('"maxPoints": 10', '"maxPoints": 0.' + "0" * 29 + "1")
        ),
    ],
)
def test_other_spellings_render_the_same_json(spell: Any) -> None:
    text = spell(CONTRIBUTIONS)
    r = row(text, spell(CONTRIBUTIONS[:1]))
    rendered = score_row_json(r)
    assert json.loads(rendered) == json.loads(model_json(r))
    assert b"0000000000" not in rendered  # expanded numbers are written short again
