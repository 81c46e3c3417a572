"""Tier assignment (SPEC §9) as properties: the engine's `TierTable` against the reference
written from the SPEC's words (`tests.helpers.reference_tier`)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from signalscore.engine import TierTable, tier_tables
from tests.helpers import reference_tier

# Scores as the engine stores them: 2 decimals in [0, 100].
scores = st.integers(0, 10_000).map(lambda cents: round(cents / 100, 2))
floors = st.one_of(scores, st.floats(0, 100, allow_nan=False), st.sampled_from([0, 100, 50]))


@st.composite
def tier_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    unique = draw(st.lists(floors, min_size=1, max_size=10, unique=True))
    return [{"name": f"tier{i}", "minScore": floor} for i, floor in enumerate(unique)]


@settings(max_examples=400)
@given(tier_lists(), scores)
def test_a_score_gets_the_tier_with_the_largest_floor_at_or_below_it(
    tiers: list[dict[str, Any]], score: float
) -> None:
    assert TierTable(tiers).tier_of(score) == reference_tier(tiers, score)


@settings(max_examples=200)
@given(tier_lists())
def test_a_score_exactly_on_a_floor_belongs_to_that_tier(tiers: list[dict[str, Any]]) -> None:
    table = TierTable(tiers)
    for tier in tiers:
        assert table.tier_of(tier["minScore"]) == tier["name"]


@given(tier_lists())
def test_below_every_floor_there_is_no_tier(tiers: list[dict[str, Any]]) -> None:
    lowest = min(t["minScore"] for t in tiers)
    if lowest > 0:
        assert TierTable(tiers).tier_of(0.0) is None
        assert reference_tier(tiers, 0.0) is None


@given(tier_lists(), scores)
def test_a_tier_at_zero_holds_every_score(tiers: list[dict[str, Any]], score: float) -> None:
    with_zero = (
        [*tiers, {"name": "floor", "minScore": 0}]
        if all(t["minScore"] != 0 for t in tiers)
        else tiers
    )
    assert TierTable(with_zero).tier_of(score) is not None
    assert TierTable(with_zero).tier_of(score) == reference_tier(with_zero, score)


@given(scores)
def test_no_tiers_means_no_tier(score: float) -> None:
    assert tier_tables(None) == {}
    assert tier_tables({}) == {}
    assert TierTable([]).tier_of(score) is None
    assert reference_tier(None, score) is None


def test_the_order_tiers_are_given_in_does_not_matter() -> None:
    tiers = [
        {"name": "B", "minScore": 50},
        {"name": "A", "minScore": 80},
        {"name": "C", "minScore": 0},
    ]
    table = TierTable(tiers)
    assert [table.tier_of(s) for s in (0, 49.99, 50, 79.99, 80, 100)] == [
        "C",
        "C",
        "B",
        "B",
        "A",
        "A",
    ]
