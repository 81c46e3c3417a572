"""Tiers through the API (SPEC §9): validation with paths, storage and the PUT semantics of
`tiers`, and tiers on score rows, assigned by the pipeline against the reference."""

from __future__ import annotations

import random
from typing import Any

import pytest

from signalscore.db.engine import Database
from tests.api.conftest import World, fit_rows, score_through_pipeline, snapshot
from tests.helpers import assert_error, drain, fan_out, reference_tier

ABC = {
    "fit": [
        {"name": "B", "minScore": 50},
        {"name": "A", "minScore": 80},
        {"name": "C", "minScore": 0},
    ]
}


def create(world: World, tiers: Any, **extra: Any) -> Any:
    body = {"profileType": "company", "name": "Tiered", **extra}
    if tiers is not ...:
        body["tiers"] = tiers
    return world.call("POST", "/v1/scoring/profiles", json=body)


# --- storage and the PUT semantics -------------------------------------------------------


def test_tiers_are_stored_and_returned_by_min_score_descending(world: World) -> None:
    response = create(world, {**ABC, "urgency": [{"name": " Hot ", "minScore": 60.5}]})
    assert response.status_code == 201, response.text
    profile = response.json()
    assert profile["tiers"] == {
        "fit": [
            {"name": "A", "minScore": 80},
            {"name": "B", "minScore": 50},
            {"name": "C", "minScore": 0},
        ],
        "urgency": [{"name": "Hot", "minScore": 60.5}],
    }
    again = world.call("GET", f"/v1/scoring/profiles/{profile['id']}").json()
    assert again == profile
    listed = world.call("GET", "/v1/scoring/profiles").json()
    assert [p["tiers"] for p in listed if p["id"] == profile["id"]] == [profile["tiers"]]


@pytest.mark.parametrize("tiers", [..., None, {}, {"fit": None, "urgency": None}])
def test_no_tiers_reads_as_null(world: World, tiers: Any) -> None:
    response = create(world, tiers)
    assert response.status_code == 201, response.text
    assert response.json()["tiers"] is None


def test_put_keeps_omitted_tiers_and_clears_null(world: World) -> None:
    pid = create(world, ABC).json()["id"]
    kept = world.call("PUT", f"/v1/scoring/profiles/{pid}", json={"name": "Renamed"})
    assert kept.status_code == 200
    assert [t["name"] for t in kept.json()["tiers"]["fit"]] == ["A", "B", "C"]
    replaced = world.call(
        "PUT",
        f"/v1/scoring/profiles/{pid}",
        json={"name": "Renamed", "tiers": {"urgency": [{"name": "Now", "minScore": 0}]}},
    )
    assert replaced.json()["tiers"] == {"urgency": [{"name": "Now", "minScore": 0}]}
    cleared = world.call("PUT", f"/v1/scoring/profiles/{pid}", json={"name": "R", "tiers": None})
    assert cleared.json()["tiers"] is None
    assert world.call("GET", f"/v1/scoring/profiles/{pid}").json()["tiers"] is None


# --- validation: every rule of SPEC §9, with paths ---------------------------------------

TIER = {"name": "A", "minScore": 10}


def _named(n: int) -> list[dict[str, Any]]:
    return [{"name": f"T{i}", "minScore": i} for i in range(n)]


@pytest.mark.parametrize(
    ("tiers", "fields"),
    [
        ([TIER], [("tiers", None)]),
        ("A", [("tiers", None)]),
        ({"fit": []}, [("tiers.fit", None)]),
        ({"fit": _named(11)}, [("tiers.fit", None)]),
        ({"fit": [{"name": "", "minScore": 1}]}, [("tiers.fit[0].name", "INVALID_TIER_NAME")]),
        ({"fit": [{"name": "   ", "minScore": 1}]}, [("tiers.fit[0].name", "INVALID_TIER_NAME")]),
        ({"fit": [{"name": "x" * 51, "minScore": 1}]}, [("tiers.fit[0].name", None)]),
        ({"fit": [{"name": 5, "minScore": 1}]}, [("tiers.fit[0].name", None)]),
        ({"fit": [{"name": "A"}]}, [("tiers.fit[0].minScore", "MISSING_FIELD")]),
        ({"fit": [{"minScore": 1}]}, [("tiers.fit[0].name", "MISSING_FIELD")]),
        ({"fit": [{"name": "A", "minScore": -0.01}]}, [("tiers.fit[0].minScore", None)]),
        ({"fit": [{"name": "A", "minScore": 100.01}]}, [("tiers.fit[0].minScore", None)]),
        ({"fit": [{"name": "A", "minScore": "80"}]}, [("tiers.fit[0].minScore", None)]),
        ({"fit": [{"name": "A", "minScore": True}]}, [("tiers.fit[0].minScore", None)]),
        ({"fit": [{"name": "A", "minScore": None}]}, [("tiers.fit[0].minScore", None)]),
        ({"intent": [TIER]}, [("tiers.intent", "UNKNOWN_FIELD")]),
        ({"fit": [{**TIER, "colour": "red"}]}, [("tiers.fit[0].colour", "UNKNOWN_FIELD")]),
        (
            {"fit": [TIER, {"name": "a", "minScore": 20}, {"name": " A ", "minScore": 30}]},
            [
                ("tiers.fit[1].name", "DUPLICATE_TIER_NAME"),
                ("tiers.fit[2].name", "DUPLICATE_TIER_NAME"),
            ],
        ),
        (
            {"fit": [TIER, {"name": "B", "minScore": 10.0}]},
            [("tiers.fit[1].minScore", "DUPLICATE_MIN_SCORE")],
        ),
        (
            # Each dimension is checked on its own, and every problem is listed.
            {
                "fit": [TIER, {"name": "B", "minScore": 10}],
                "urgency": [TIER, {"name": "a", "minScore": 5}],
            },
            [
                ("tiers.fit[1].minScore", "DUPLICATE_MIN_SCORE"),
                ("tiers.urgency[1].name", "DUPLICATE_TIER_NAME"),
            ],
        ),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_invalid_tiers_are_refused_with_their_path_and_change_nothing(
    world: World,
    database: Database,
    method: str,
    tiers: Any,
    fields: list[tuple[str, str | None]],
) -> None:
    before = snapshot(database)
    if method == "POST":
        response = create(world, tiers)
    else:
        response = world.call(
            "PUT", "/v1/scoring/profiles/{pid}", json={"name": "Changed", "tiers": tiers}
        )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [f["field"] for f in error["fields"]] == [path for path, _ in fields]
    for got, (_, code) in zip(error["fields"], fields, strict=True):
        if code is not None:
            assert got["code"] == code
    assert snapshot(database) == before


def test_the_same_tiers_in_the_same_dimension_of_the_other_are_fine(world: World) -> None:
    both = {"fit": [TIER], "urgency": [TIER]}
    assert create(world, both).status_code == 201
    assert create(world, {"fit": _named(10)}).status_code == 201


# --- tiers on score rows ------------------------------------------------------------------


def _scored_world(world: World, database: Database, values: dict[str, Any]) -> str:
    """A profile whose fit score is each object's `growth` value rounded down to an even
    number (one range per 2 points, the most 50 ranges allow; 98 and up score 100), with
    the objects assigned and scored."""
    pid = create(world, ...).json()["id"]
    ranges: list[dict[str, Any]] = [{"min": i, "max": i + 2, "points": i} for i in range(0, 98, 2)]
    ranges.append({"min": 98, "points": 100})
    rule = {
        "signalTemplateId": "growth",
        "dimension": "fit",
        "answerType": "percentage",
        "pointValues": {"ranges": ranges},
    }
    score_through_pipeline(world, database, pid, rule, values)
    return str(pid)


def _set_tiers(world: World, database: Database, pid: str, tiers: Any) -> None:
    response = world.call("PUT", f"/v1/scoring/profiles/{pid}", json={"name": "T", "tiers": tiers})
    assert response.status_code == 200, response.text
    fan_out(database)
    drain(database)


def test_changing_tiers_re_tiers_every_row_and_moves_version(
    world: World, database: Database
) -> None:
    values = {"a.com": 90, "b.com": 50, "c.com": 10, "d.com": 0}
    pid = _scored_world(world, database, values)
    before = fit_rows(world, pid, list(values))
    assert {o: (r["score"], r["tier"], r["version"]) for o, r in before.items()} == {
        "a.com": (90, None, 1),
        "b.com": (50, None, 1),
        "c.com": (10, None, 1),
        "d.com": (0, None, 1),
    }
    _set_tiers(world, database, pid, ABC)
    after = fit_rows(world, pid, list(values))
    assert {o: (r["tier"], r["previousTier"], r["version"]) for o, r in after.items()} == {
        "a.com": ("A", None, 2),
        "b.com": ("B", None, 2),
        "c.com": ("C", None, 2),
        "d.com": ("C", None, 2),
    }
    # Only the tier moved: the score and contributions are the same, moved into previous_*.
    for row in after.values():
        assert row["previousScore"] == row["score"] == before[row["objectId"]]["score"]
        assert row["previousContributions"] == row["contributions"]
    # C starts at 20 now: d.com (0) and c.com (10) fall out of every tier; a.com stays A.
    _set_tiers(
        world,
        database,
        pid,
        {"fit": [{"name": "A", "minScore": 80}, {"name": "C", "minScore": 20}]},
    )
    last = fit_rows(world, pid, list(values))
    assert {o: (r["tier"], r["previousTier"], r["version"]) for o, r in last.items()} == {
        "a.com": ("A", None, 2),
        "b.com": ("C", "B", 3),
        "c.com": (None, "C", 3),
        "d.com": (None, "C", 3),
    }
    _set_tiers(world, database, pid, None)
    assert all(r["tier"] is None for r in fit_rows(world, pid, list(values)).values())


def test_the_same_tiers_again_queue_nothing(world: World, database: Database) -> None:
    pid = _scored_world(world, database, {"a.com": 90})
    _set_tiers(world, database, pid, ABC)
    response = world.call("PUT", f"/v1/scoring/profiles/{pid}", json={"name": "T", "tiers": ABC})
    assert response.status_code == 200
    assert fan_out(database) == 0
    assert world.call("GET", "/v1/scoring/compute/status").json()["pending"] == 0
    # A rename without tiers queues nothing either.
    world.call("PUT", f"/v1/scoring/profiles/{pid}", json={"name": "Other"})
    assert fan_out(database) == 0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stored_tiers_equal_the_reference_for_random_tiers(
    world: World, database: Database, seed: int
) -> None:
    rng = random.Random(seed)
    values = {f"co{i}.com": rng.choice([0, 100, 50, rng.randint(0, 100)]) for i in range(25)}
    pid = _scored_world(world, database, values)
    scores = {o: r["score"] for o, r in fit_rows(world, pid, list(values)).items()}
    for _ in range(3):
        # Floors drawn from the scores themselves, so some land exactly on a minScore.
        pool = sorted({*scores.values(), 0, 12.5, 100, rng.uniform(0, 100)})
        floors = rng.sample(pool, rng.randint(1, min(10, len(pool))))
        tiers = [{"name": f"T{i}", "minScore": f} for i, f in enumerate(floors)]
        _set_tiers(world, database, pid, {"fit": tiers})
        rows = fit_rows(world, pid, list(values))
        for object_id, row in rows.items():
            assert row["tier"] == reference_tier(tiers, row["score"]), (object_id, row["score"])
