"""Distributions (SPEC §9): every field equals a from-scratch computation over the rows,
written here from the SPEC's words (exact arithmetic, nearest rank), including empty
profiles, single rows, scores of exactly 100 and scores on bucket edges."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

import pytest

from signalscore.db.engine import Database
from tests.api.conftest import World, score_through_pipeline
from tests.api.test_ranked_reads import TIERS, insert_rows, make_profile
from tests.helpers import assert_error, reference_tier


def reference(
    scores: list[float], tiers: list[dict[str, Any]], buckets: int, assigned: int
) -> dict[str, Any]:
    n = len(scores)
    ordered = sorted(scores)

    def rank(p: int) -> float | None:
        # Nearest rank: the smallest value with at least p% of the values at or below it.
        return ordered[max(1, math.ceil(Fraction(p, 100) * n)) - 1] if n else None

    histogram = []
    for i in range(buckets):
        low, high = 100 * i / buckets, (100 * (i + 1) / buckets if i + 1 < buckets else 100.0)
        last = i == buckets - 1
        count = sum(1 for s in scores if low <= s < high or (last and s == 100))
        histogram.append({"min": low, "max": high, "count": count})
    return {
        "assigned": assigned,
        "scored": n,
        "mean": float(round(sum(map(Fraction, scores), Fraction(0)) / n, 2)) if n else None,
        "p50": rank(50),
        "p90": rank(90),
        "histogram": histogram,
        "tiers": [
            {
                "name": t["name"],
                "minScore": t["minScore"],
                "count": sum(1 for s in scores if reference_tier(tiers, s) == t["name"]),
            }
            for t in sorted(tiers, key=lambda t: -t["minScore"])
        ],
    }


def read(world: World, profile_id: str, dimension: str = "fit", **params: Any) -> Any:
    response = world.call(
        "GET",
        f"/v1/scoring/profiles/{profile_id}/distribution",
        params={"dimension": dimension, **params},
    )
    assert response.status_code == 200, response.text
    return response.json()


def check(
    world: World,
    database: Database,
    scores: list[float],
    buckets: int | None,
    tiers: list[dict[str, Any]] | None = TIERS,
) -> None:
    profile_id = make_profile(world, tiers)
    rows = {(f"co{i}.com", "fit"): s for i, s in enumerate(scores)}
    # Rows in the other dimension and assigned objects without a row: neither is scored.
    rows.update({(f"co{i}.com", "urgency"): 100.0 - s for i, s in enumerate(scores)})
    rows.update({(f"unscored{i}.com", "urgency"): 1.0 for i in range(3)})
    if rows:
        insert_rows(database, world.tenant.org_id, profile_id, rows, tiers)
    assigned = len({object_id for object_id, _ in rows})
    params: dict[str, Any] = {} if buckets is None else {"buckets": buckets}
    got = read(world, profile_id, **params)
    expected = reference(scores, tiers or [], buckets or 10, assigned)
    assert got == {"dimension": "fit", **expected}


@pytest.mark.parametrize("buckets", [None, 1, 3, 7, 10, 16, 100])
def test_random_rows_equal_the_reference(world: World, database: Database, buckets: Any) -> None:
    rng = random.Random(buckets)
    scores = [
        rng.choice([0.0, 100.0, 12.5, 50.0, 33.33, 33.34, round(rng.uniform(0, 100), 2)])
        for _ in range(rng.randint(40, 120))
    ]
    check(world, database, scores, buckets)


@pytest.mark.parametrize("buckets", [3, 7, 8, 16, 40, 100])
def test_scores_on_and_next_to_every_bucket_edge(
    world: World, database: Database, buckets: int
) -> None:
    edges = [100 * i / buckets for i in range(buckets + 1)]
    scores = []
    for edge in edges:
        cents = round(edge * 100)
        scores += [c / 100 for c in (cents - 1, cents, cents + 1) if 0 <= c <= 10_000]
    check(world, database, scores, buckets)


@pytest.mark.parametrize(
    "scores",
    [[], [100.0], [0.0], [42.42], [100.0] * 5, [0.0, 100.0], [80.0, 50.0, 12.5, 12.49]],
    ids=["empty", "one-100", "one-0", "one", "all-100", "edges", "tier-floors"],
)
def test_small_cases(world: World, database: Database, scores: list[float]) -> None:
    check(world, database, scores, None)


def test_no_tiers_and_no_rows(world: World, database: Database) -> None:
    profile_id = make_profile(world)
    got = read(world, profile_id, "urgency", buckets=4)
    assert got == {
        "dimension": "urgency",
        "assigned": 0,
        "scored": 0,
        "mean": None,
        "p50": None,
        "p90": None,
        "histogram": [
            {"min": 0, "max": 25, "count": 0},
            {"min": 25, "max": 50, "count": 0},
            {"min": 50, "max": 75, "count": 0},
            {"min": 75, "max": 100, "count": 0},
        ],
        "tiers": [],
    }


def test_a_profile_scored_by_the_pipeline(world: World, database: Database) -> None:
    """End to end: values, a rule and tiers through the API; the distribution agrees with
    the reference over what GET /scores returns."""
    profile_id = make_profile(world, TIERS)
    rule = {
        "signalTemplateId": "growth",
        "dimension": "fit",
        "answerType": "percentage",
        "pointValues": {
            "ranges": [
                {"max": 30, "points": 1},
                {"min": 30, "max": 60, "points": 5},
                {"min": 60, "points": 8},
            ]
        },
    }
    objects = [f"g{i}.com" for i in range(30)]
    values = {o: 3 * i for i, o in enumerate(objects[:25])}  # five have no value: score 0
    rows = score_through_pipeline(world, database, profile_id, rule, values, objects)
    scores = [row["score"] for row in rows.values()]
    assert len(scores) == 30
    got = read(world, profile_id, buckets=5)
    assert got == {"dimension": "fit", **reference(scores, TIERS, 5, 30)}
    assert [t["count"] for t in got["tiers"]] != [0, 0, 0]  # tiers were really counted


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "dimension"),
        ({"dimension": "both"}, "dimension"),
        ({"dimension": "fit", "buckets": 0}, "buckets"),
        ({"dimension": "fit", "buckets": 101}, "buckets"),
        ({"dimension": "fit", "buckets": "ten"}, "buckets"),
        ({"dimension": "fit", "bucket": 5}, "bucket"),
    ],
)
def test_bad_parameters_are_refused(world: World, params: dict[str, Any], field: str) -> None:
    response = world.call("GET", "/v1/scoring/profiles/{pid}/distribution", params=params)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert field in [f["field"] for f in error["fields"]]
