"""A delivery's event JSON (`events.schemas.event_json`, built straight from the row) is
exactly what the `Event` model serialises for the feed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from signalscore.events.log import event_id, event_id_text
from signalscore.events.schemas import Event, event_json

CHANGES = [
    {
        "ruleId": str(uuid.uuid4()),
        "signalTemplateId": "employees",
        "before": None,
        "after": {"matchedValue": "874 (100–1000)", "pointsEarned": 10, "maxPoints": 25.5},
    }
]


@pytest.mark.parametrize(
    "fields",
    [
        {"score": 51.43, "previous_score": None, "tier": "A", "previous_tier": None},
        {"score": None, "previous_score": 100.0, "tier": None, "previous_tier": "B"},
        {"score": 0.0, "previous_score": 0.01, "tier": None, "previous_tier": None},
    ],
)
@pytest.mark.parametrize(
    "created_at",
    [datetime(2026, 12, 7, 4, 25, 50, 143547, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)],
)
def test_the_delivery_json_is_the_feed_json(
    fields: dict[str, object], created_at: datetime
) -> None:
    row = SimpleNamespace(
        organization_id="a" * 24,
        sequence=12345,
        type="score.changed",
        created_at=created_at,
        profile_id=uuid.uuid4(),
        object_type="company",
        object_id="acme.com",
        dimension="fit",
        version=3,
        changes=CHANGES,
        **fields,
    )
    model = Event.from_row(row)
    expected = model.__pydantic_serializer__.to_json(model, warnings=False)
    compact = json.dumps(CHANGES, separators=(",", ":"), ensure_ascii=False)
    identifier, rendered = event_json(row, compact)
    assert rendered == expected
    assert identifier == str(model.id)
    # Stored text in another spelling (PostgreSQL's jsonb output has spaces; a JSON column
    # may hold escapes): the same JSON.
    _, spaced = event_json(row, json.dumps(CHANGES))
    assert json.loads(spaced) == json.loads(expected)


def test_the_event_id_text_is_the_uuid5() -> None:
    for sequence in [0, 1, 9, 12345, 2**40 + 7, *range(100, 400)]:
        org_id = uuid.uuid4().hex[:24]
        assert event_id_text(org_id, sequence) == str(event_id(org_id, sequence))
