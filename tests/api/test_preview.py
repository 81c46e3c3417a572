"""Preview (SPEC §12) through HTTP.

The strongest check compares the preview with the real thing: after the preview, the same
rules and tiers are applied through the API, the pipeline recomputes, and `after` must equal
`GET .../distribution` field for field (and `before` the distribution read before applying),
with the tier transitions and top movers recomputed from the rows read before and after.
The preview itself must write nothing: every table is compared before and after it."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from signalscore.db.engine import Database
from signalscore.db.types import utcnow
from tests.api.conftest import World, snapshot
from tests.helpers import assert_error, drain, fan_out

PREVIEW = "/v1/scoring/profiles/{pid}/preview"
RULES = "/v1/scoring/profiles/{pid}/rules"
CHOICES = ["Salesforce", "HubSpot", "Pipedrive", "Zoho"]
NUMERIC = {"employees": "number", "growth": "percentage", "revenue": "currency"}


def _ranges(rnd: random.Random) -> dict[str, Any]:
    cuts = sorted(rnd.sample(range(0, 2000, 25), rnd.randint(1, 4)))
    ranges: list[dict[str, Any]] = [{"max": cuts[0], "points": rnd.randint(-5, 10)}]
    ranges += [
        {"min": low, "max": high, "points": rnd.choice([0, 3, 7.5, -2, 20])}
        for low, high in itertools.pairwise(cuts)
    ]
    if rnd.random() < 0.7:
        ranges.append({"min": cuts[-1], "points": rnd.randint(0, 30)})
    return {"ranges": ranges}


def random_rule(rnd: random.Random, template: str, dimension: str) -> dict[str, Any]:
    if template in NUMERIC:
        answer_type, point_values = NUMERIC[template], _ranges(rnd)
    elif template == "is_b2b":
        answer_type, point_values = "boolean", {"true": rnd.randint(0, 20), "false": -3}
    else:
        modes = ["additive", "best-match", "contains-all", "contains-none", "exact-match"]
        answer_type = "list"
        point_values = {
            "choices": {c: rnd.randint(-2, 9) for c in rnd.sample(CHOICES, rnd.randint(1, 4))},
            "mode": rnd.choice(modes),
        }
    rule = {
        "signalTemplateId": template,
        "dimension": dimension,
        "answerType": answer_type,
        "pointValues": point_values,
    }
    if rnd.random() < 0.4:  # time decay (SPEC §13): steps in whole days
        first = rnd.randint(1, 60)
        rule["decay"] = {
            "steps": [
                {"afterDays": first, "factor": rnd.choice([1, 0.75, 0.5])},
                {"afterDays": first + rnd.randint(1, 120), "factor": rnd.choice([0.25, 0])},
            ]
        }
    return rule


def random_rules(rnd: random.Random) -> list[dict[str, Any]]:
    pairs = [(t, d) for t in [*NUMERIC, "is_b2b", "crm"] for d in ("fit", "urgency")]
    return [random_rule(rnd, t, d) for t, d in rnd.sample(pairs, rnd.randint(1, 6))]


def random_tiers(rnd: random.Random) -> dict[str, Any]:
    tiers: dict[str, Any] = {}
    for dimension in ("fit", "urgency"):
        if rnd.random() < 0.7:
            floors = sorted(rnd.sample([0, 10, 25, 33.33, 50, 66.67, 80, 95], rnd.randint(1, 4)))
            tiers[dimension] = [{"name": f"T{f}", "minScore": f} for f in floors]
    return tiers


def random_value(rnd: random.Random, template: str) -> Any:
    if template == "is_b2b":
        return rnd.random() < 0.5
    if template == "crm":
        return rnd.sample(CHOICES, rnd.randint(0, 3))
    if template == "growth":
        return rnd.choice([0, 12.5, 50, 99.9, 100])
    return rnd.choice([0, 10, 24.99, 25, 100, 500, 1999, 2500])


def load_objects(world: World, database: Database, rnd: random.Random, count: int) -> list[str]:
    objects = [f"o{i:03d}.com" for i in range(count)]
    # Observed whole days and 12 hours ago: half a day from any decay step's boundary, so no
    # step passes between the preview and the recompute it is compared with.
    now = utcnow()
    values = [
        {
            "objectType": "company",
            "objectId": o,
            "signalTemplateId": t,
            "value": v,
            "observedAt": (now - timedelta(days=rnd.randint(0, 200), hours=12)).isoformat(),
        }
        for o in objects
        for t in [*NUMERIC, "is_b2b", "crm"]
        if rnd.random() < 0.8 and (v := random_value(rnd, t)) is not None
    ]
    assert world.call("PUT", "/v1/signals/values", json={"values": values}).status_code == 200
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": objects},
    )
    assert bulk.status_code == 201, bulk.text
    return objects


def settle(database: Database) -> None:
    fan_out(database)
    drain(database)


def rows_by_object(world: World, dimension: str) -> dict[str, dict[str, Any]]:
    page = world.call(
        "GET", "/v1/scoring/profiles/{pid}/scores", params={"dimension": dimension, "limit": 1000}
    ).json()
    assert page["nextCursor"] is None
    return {row["objectId"]: row for row in page["data"]}


def distribution(world: World, dimension: str) -> dict[str, Any]:
    response = world.call(
        "GET", "/v1/scoring/profiles/{pid}/distribution", params={"dimension": dimension}
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def apply(world: World, database: Database, rules: list[dict[str, Any]], tiers: Any) -> None:
    """Make the profile's rules exactly `rules` (and its tiers `tiers`, unless "keep")."""
    wanted = {(r["signalTemplateId"], r["dimension"]) for r in rules}
    for rule in world.call("GET", RULES).json():
        if (rule["signalTemplateId"], rule["dimension"]) not in wanted:
            deleted = world.call("DELETE", RULES + "/" + rule["id"])
            assert deleted.status_code == 204
    for rule in rules:
        assert world.call("PUT", RULES, json=rule).status_code == 200
    if tiers != "keep":
        put = world.call("PUT", "/v1/scoring/profiles/{pid}", json={"name": "ICP", "tiers": tiers})
        assert put.status_code == 200, put.text
    settle(database)


def expected_moves(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Tier transitions and top movers from scratch, from the rows before and after."""
    moves: Counter[tuple[str | None, str | None]] = Counter()
    movers = []
    for object_id in before.keys() | after.keys():
        old, new = before.get(object_id), after.get(object_id)
        old_tier = old["tier"] if old else None
        new_tier = new["tier"] if new else None
        if old_tier != new_tier:
            moves[(old_tier, new_tier)] += 1
        if old and new and round(new["score"] - old["score"], 2) != 0:
            delta = round(new["score"] - old["score"], 2)
            movers.append((-abs(delta), object_id, old["score"], new["score"], delta))
    nulls_first = lambda v: (v is not None, v or "")  # noqa: E731
    transitions = [
        {"from": a, "to": b, "count": n}
        for (a, b), n in sorted(
            moves.items(), key=lambda m: (-m[1], nulls_first(m[0][0]), nulls_first(m[0][1]))
        )
    ]
    top = [
        {"objectId": o, "before": b, "after": a, "delta": d} for _, o, b, a, d in sorted(movers)
    ][:20]
    return transitions, top


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_preview_equals_applying_the_change(world: World, database: Database, seed: int) -> None:
    rnd = random.Random(seed)
    load_objects(world, database, rnd, 45)
    apply(world, database, random_rules(rnd), random_tiers(rnd))
    proposed = random_rules(rnd)
    tiers: Any = rnd.choice(["keep", None, random_tiers(rnd)])
    body: dict[str, Any] = {"rules": proposed}
    if tiers != "keep":
        body["tiers"] = tiers

    before_tables = snapshot(database)
    response = world.call("POST", PREVIEW, json=body)
    assert response.status_code == 200, response.text
    assert snapshot(database) == before_tables  # nothing written, nothing queued
    preview = response.json()
    assert preview["objects"] == 45
    assert preview["sampled"] is False

    before = {d: (distribution(world, d), rows_by_object(world, d)) for d in ("fit", "urgency")}
    apply(world, database, proposed, tiers)
    decayed: set[float] = set()
    for dimension in ("fit", "urgency"):
        after_distribution = distribution(world, dimension)
        after_rows = rows_by_object(world, dimension)
        if dimension not in preview["dimensions"]:
            assert before[dimension][0]["scored"] == 0
            assert after_distribution["scored"] == 0
            continue
        shown = preview["dimensions"][dimension]
        assert shown["before"] == before[dimension][0]
        assert shown["after"] == after_distribution
        decayed.update(
            c["decayFactor"] for row in after_rows.values() for c in row["contributions"]
        )
        transitions, movers = expected_moves(before[dimension][1], after_rows)
        assert shown["tierTransitions"] == transitions
        assert shown["topMovers"] == movers
    # A proposal with decay scored some values past a step (ages reach 200 days).
    assert (decayed != {1}) == any("decay" in rule for rule in proposed), decayed


def test_a_sample_scores_that_many_objects(world: World, database: Database) -> None:
    rnd = random.Random(7)
    load_objects(world, database, rnd, 30)
    apply(world, database, random_rules(rnd), "keep")
    proposed = [random_rule(rnd, "employees", "fit"), random_rule(rnd, "crm", "urgency")]
    full = world.call("POST", PREVIEW, json={"rules": proposed}).json()
    sample = world.call("POST", PREVIEW, json={"rules": proposed, "sampleSize": 10})
    assert sample.status_code == 200, sample.text
    sampled = sample.json()
    assert (sampled["objects"], sampled["sampled"]) == (10, True)
    for dimension in ("fit", "urgency"):
        after = sampled["dimensions"][dimension]["after"]
        assert (after["assigned"], after["scored"]) == (10, 10)
        assert sum(bucket["count"] for bucket in after["histogram"]) == 10
        assert sampled["dimensions"][dimension]["before"]["scored"] <= 10
    # Every mover of the sample is a mover of the whole, with the same figures.
    movers = {
        (name, m["objectId"]): m for name, d in full["dimensions"].items() for m in d["topMovers"]
    }
    everything = world.call("POST", PREVIEW, json={"rules": proposed, "sampleSize": 1000}).json()
    assert everything["objects"] == 30
    assert everything["sampled"] is True
    assert everything["dimensions"] == full["dimensions"]
    assert len(movers) > 10
    for name, dimension in sampled["dimensions"].items():
        for mover in dimension["topMovers"]:
            if (name, mover["objectId"]) in movers:
                assert movers[(name, mover["objectId"])] == mover


def test_no_rules_and_no_objects(world: World, client: Any) -> None:
    # The world's profile has one fit rule and no assignments.
    response = world.call("POST", PREVIEW, json={"rules": []})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["objects"], body["sampled"]) == (0, False)
    assert list(body["dimensions"]) == ["fit"]  # the current rules' dimension only
    fit = body["dimensions"]["fit"]
    for side in ("before", "after"):
        assert fit[side]["scored"] == fit[side]["assigned"] == 0
        assert fit[side]["mean"] is None
    assert fit["tierTransitions"] == []
    assert fit["topMovers"] == []


def _bad_range_rule() -> dict[str, Any]:
    return {
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "pointValues": {"ranges": [{"min": 0, "max": 10, "points": 1}, {"min": 5, "max": 1}]},
    }


@pytest.mark.parametrize(
    ("body", "code", "fields"),
    [
        (
            {"rules": [random_rule(random.Random(1), "is_b2b", "fit"), _bad_range_rule()]},
            "INVALID_POINT_VALUES",
            ["rules[1].pointValues.ranges[1].max", "rules[1].pointValues.ranges[1].points"],
        ),
        (
            {"rules": [{**_bad_range_rule(), "signalTemplateId": "nope"}]},
            "VALIDATION_ERROR",
            ["rules[0].signalTemplateId"],
        ),
        (
            {"rules": [{**_bad_range_rule(), "signalTemplateId": "seniority"}]},
            "VALIDATION_ERROR",
            ["rules[0].signalTemplateId"],
        ),
        (
            {
                "rules": [
                    {
                        **random_rule(random.Random(1), "is_b2b", "fit"),
                        "decay": {
                            "steps": [
                                {"afterDays": 5, "factor": 0.5},
                                {"afterDays": 9, "factor": 1},
                            ]
                        },
                    }
                ]
            },
            "VALIDATION_ERROR",
            ["rules[0].decay.steps[1].factor"],
        ),
        (
            {"rules": [_bad_range_rule() | {"answerType": "boolean"}]},
            "INVALID_POINT_VALUES",
            None,
        ),
        (
            {
                "rules": [
                    random_rule(random.Random(1), "is_b2b", "fit"),
                    random_rule(random.Random(2), "is_b2b", "fit"),
                ]
            },
            "VALIDATION_ERROR",
            ["rules[1]"],
        ),
        (
            {
                "rules": [],
                "tiers": {"fit": [{"name": "A", "minScore": 5}, {"name": "a", "minScore": 9}]},
            },
            "VALIDATION_ERROR",
            ["tiers.fit[1].name"],
        ),
        ({"rules": [], "sampleSize": 0}, "VALIDATION_ERROR", ["sampleSize"]),
        ({"rules": [], "sampleSize": 100_001}, "VALIDATION_ERROR", ["sampleSize"]),
        ({"rules": [], "sampleSize": "5"}, "VALIDATION_ERROR", ["sampleSize"]),
        ({"rules": [], "sampleSize": 5.5}, "VALIDATION_ERROR", ["sampleSize"]),
        ({"rules": [], "sampleSize": True}, "VALIDATION_ERROR", ["sampleSize"]),
        ({"tiers": None}, "VALIDATION_ERROR", ["rules"]),
        ({"rules": [], "extra": 1}, "VALIDATION_ERROR", ["extra"]),
    ],
)
def test_invalid_previews_are_refused_at_their_path(
    world: World, database: Database, body: Any, code: str, fields: list[str] | None
) -> None:
    before = snapshot(database)
    error = assert_error(world.call("POST", PREVIEW, json=body), 422, code)
    if fields is not None:
        assert sorted(f["field"] for f in error["fields"]) == sorted(fields)
    assert snapshot(database) == before


def test_preview_of_an_unknown_profile_is_404(world: World) -> None:
    missing = "/v1/scoring/profiles/00000000-0000-4000-8000-000000000000/preview"
    response = world.call("POST", missing, json={"rules": []})
    assert_error(response, 404, "NOT_FOUND", error_code="PROFILE_NOT_FOUND")


def test_a_large_profile_is_sampled_uniformly(world: World, database: Database) -> None:
    """The sample of a profile with more than twice `sampleSize` assignments (a Bernoulli
    draw, then a subset of it: `preview.service._sample`): always exactly that many distinct
    assigned objects, and over many draws every object about equally often (a chi-square
    test of the inclusion counts; a biased or fixed sampler fails it by far)."""
    from signalscore.db.tables import profile_assignments as a
    from signalscore.preview.service import _sample
    from signalscore.scores import counts

    objects = [f"u{i:03}.com" for i in range(300)]
    assigned = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": objects},
    )
    assert assigned.status_code == 201, assigned.text
    draws, size = 300, 15
    seen: Counter[str] = Counter()
    profile_id = uuid.UUID(world.profile_id)
    with database.read() as conn:
        org_id = world.tenant.org_id
        total = counts.assigned(conn, org_id, profile_id)
        assert total == 300
        mine = (
            a.c.organization_id == org_id,
            a.c.profile_id == profile_id,
            a.c.object_type == "company",
        )
        for _ in range(draws):
            sample = _sample(conn, mine, size, total)
            assert len(set(sample)) == size
            assert sample == sorted(sample)
            seen.update(sample)
    assert set(seen) <= set(objects)
    expected = draws * size / len(objects)
    chi2 = sum((seen[o] - expected) ** 2 / expected for o in objects)
    # 299 degrees of freedom: mean 299, standard deviation about 24.5; six of them each way.
    assert 152 < chi2 < 446, chi2
