"""Ranked reads (SPEC §9): every walk of the pages, with random filters, both orders and many
equal scores, returns every matching row exactly once and in order, as a from-scratch sort
of the rows says. The rows are written straight into `score_results` (the read is what is
tested here; tests/api/test_tiers.py and the invariant test cover how rows get there), plus
one walk over rows the pipeline computed."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from signalscore.db.engine import Database
from signalscore.db.tables import profile_assignments, score_results
from signalscore.db.types import utcnow
from signalscore.scores import counts as score_counts
from tests.api.conftest import World, score_through_pipeline
from tests.helpers import Tenant, assert_error, reference_tier

TIERS = [
    {"name": "A", "minScore": 80},
    {"name": "B", "minScore": 50},
    {"name": "C", "minScore": 12.5},
]
# Few distinct scores, so most rows tie with others; 0 and 100 are the edges.
TIED = [0.0, 0.0, 0.0, 12.5, 12.5, 50.0, 79.99, 80.0, 99.99, 100.0, 100.0]


def make_profile(world: World, tiers: Any = None) -> str:
    body: dict[str, Any] = {"profileType": "company", "name": "Ranked"}
    if tiers is not None:
        body["tiers"] = {"fit": tiers}
    response = world.call("POST", "/v1/scoring/profiles", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def insert_rows(
    database: Database,
    org_id: str,
    profile_id: str,
    scores: dict[tuple[str, str], float],
    tiers: list[dict[str, Any]] | None = None,
) -> None:
    """Score rows (and their assignments) as the pipeline would store them: tier by the
    reference over `tiers` (fit only)."""
    now = utcnow()
    pid = uuid.UUID(profile_id)
    objects = sorted({object_id for object_id, _ in scores})
    with database.write() as conn:
        conn.execute(
            profile_assignments.insert(),
            [
                {
                    "organization_id": org_id,
                    "id": uuid.uuid4(),
                    "profile_id": pid,
                    "object_type": "company",
                    "object_id": object_id,
                    "assigned_at": now,
                }
                for object_id in objects
            ],
        )
        conn.execute(
            score_results.insert(),
            [
                {
                    "organization_id": org_id,
                    "id": uuid.uuid4(),
                    "profile_id": pid,
                    "object_type": "company",
                    "object_id": object_id,
                    "dimension": dimension,
                    "score": score,
                    "previous_score": None,
                    "tier": reference_tier(tiers, score) if dimension == "fit" else None,
                    "previous_tier": None,
                    "contributions": [],
                    "contributions_hash": None,
                    "previous_contributions": [],
                    "signal_coverage": 0,
                    "total_rules": 1,
                    "computed_at": now,
                    "version": 1,
                }
                for (object_id, dimension), score in scores.items()
            ],
        )
        score_counts.rebuild(conn, org_id)  # as a direct load must


def random_scores(rng: random.Random, n: int, prefix: str = "") -> dict[tuple[str, str], float]:
    """Rows in fit and urgency; object ids that sort differently by length, case of the
    prefix and punctuation ("a-b.com" before "ab.com" in code point order)."""
    names = [f"{prefix}{rng.choice(['a', 'a-b', 'ab', 'b', 'z', '0'])}{i}.com" for i in range(n)]
    rows = {}
    for name in names:
        for dimension in ("fit", "urgency"):
            if rng.random() < 0.9:
                rows[(name, dimension)] = (
                    rng.choice(TIED) if rng.random() < 0.7 else round(rng.uniform(0, 100), 2)
                )
    return rows


def walk(world: World, profile_id: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page from the first, following nextCursor; checks each page's shape."""
    rows: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        query = dict(params) if cursor is None else {**params, "cursor": cursor}
        response = world.call("GET", f"/v1/scoring/profiles/{profile_id}/scores", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "nextCursor"}
        assert len(page["data"]) <= params.get("limit", 100)
        rows += page["data"]
        cursor = page["nextCursor"]
        if cursor is None:
            return rows
        # A page that is not the last one is full (none of these rows is near 16 MiB).
        assert len(page["data"]) == params.get("limit", 100)
    raise AssertionError("the walk did not end")


def from_scratch(
    scores: dict[tuple[str, str], float], tiers: list[dict[str, Any]], params: dict[str, Any]
) -> list[tuple[str, float]]:
    """The rows the read should return, in order, by a plain sort."""
    dimension = params["dimension"]
    chosen = []
    for (object_id, dim), score in scores.items():
        if dim != dimension:
            continue
        if "minScore" in params and score < params["minScore"]:
            continue
        if "maxScore" in params and score > params["maxScore"]:
            continue
        if "tier" in params:
            tier = reference_tier(tiers, score) if dim == "fit" else None
            if tier is None or tier.casefold() != params["tier"].casefold():
                continue
        chosen.append((object_id, score))
    sign = -1 if params.get("order", "desc") == "desc" else 1
    return sorted(chosen, key=lambda row: (sign * row[1], row[0]))


def random_params(rng: random.Random) -> dict[str, Any]:
    params: dict[str, Any] = {"dimension": rng.choice(["fit", "fit", "urgency"])}
    if rng.random() < 0.7:
        params["order"] = rng.choice(["desc", "asc"])
    if rng.random() < 0.8:
        params["limit"] = rng.choice([1, 2, 3, 7, 10, 33, 100, 1000])
    if params["dimension"] == "fit" and rng.random() < 0.4:
        params["tier"] = rng.choice(["A", "b", " C", "a"])
    if rng.random() < 0.4:
        params["minScore"] = rng.choice([0, 12.5, 50, rng.uniform(0, 100)])
    if rng.random() < 0.4:
        params["maxScore"] = rng.choice(
            [100, 80, 12.5, rng.uniform(params.get("minScore", 0), 100)]
        )
    return params


@pytest.fixture
def ranked(world: World, database: Database, other_tenant: Tenant) -> tuple[str, dict[Any, float]]:
    """A profile with 260 objects' rows in two dimensions, mostly tied, next to rows that
    must never appear: another profile's, and another organisation's."""
    rng = random.Random(7)
    profile_id = make_profile(world, TIERS)
    scores = random_scores(rng, 260)
    insert_rows(database, world.tenant.org_id, profile_id, scores, TIERS)
    insert_rows(database, world.tenant.org_id, world.profile_id, random_scores(rng, 30, "p"))
    other = World(world.client, other_tenant, "", "", "")
    other_profile = make_profile(other, TIERS)
    insert_rows(database, other_tenant.org_id, other_profile, random_scores(rng, 30, "o"), TIERS)
    return profile_id, scores


@pytest.mark.parametrize("seed", range(4))
def test_every_walk_returns_every_matching_row_once_in_order(
    world: World, ranked: tuple[str, dict[Any, float]], seed: int
) -> None:
    profile_id, scores = ranked
    rng = random.Random(seed)
    for _ in range(8):
        params = random_params(rng)
        if "tier" in params:
            params["tier"] = params["tier"].strip()
        got = walk(world, profile_id, params)
        assert all(row["profileId"] == profile_id for row in got)
        assert all(row["dimension"] == params["dimension"] for row in got)
        assert [(row["objectId"], row["score"]) for row in got] == from_scratch(
            scores, TIERS, params
        ), params


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_a_walk_through_one_big_tie_goes_by_object_id(
    world: World, database: Database, order: str
) -> None:
    profile_id = make_profile(world)
    scores = {(f"co{i:03}.com", "fit"): 0.0 for i in range(120)}
    scores.update({(f"top{i}.com", "fit"): 100.0 for i in range(5)})
    insert_rows(database, world.tenant.org_id, profile_id, scores)
    for limit in (1, 7, 50):
        got = walk(world, profile_id, {"dimension": "fit", "order": order, "limit": limit})
        assert [row["objectId"] for row in got] == [
            object_id
            for object_id, _ in from_scratch(scores, [], {"dimension": "fit", "order": order})
        ]


def test_the_first_page_is_the_top_and_rows_are_whole(world: World, database: Database) -> None:
    profile_id = make_profile(world, TIERS)
    insert_rows(
        database,
        world.tenant.org_id,
        profile_id,
        {("low.com", "fit"): 3.5, ("top.com", "fit"): 91.25, ("mid.com", "fit"): 50.0},
        TIERS,
    )
    response = world.call(
        "GET", f"/v1/scoring/profiles/{profile_id}/scores", params={"dimension": "fit", "limit": 2}
    )
    page = response.json()
    assert [(r["objectId"], r["score"], r["tier"]) for r in page["data"]] == [
        ("top.com", 91.25, "A"),
        ("mid.com", 50.0, "B"),
    ]
    row = page["data"][0]
    for key in (
        "id",
        "organizationId",
        "objectType",
        "previousScore",
        "previousTier",
        "contributions",
        "previousContributions",
        "signalCoverage",
        "totalRules",
        "computedAt",
        "version",
    ):
        assert key in row
    assert page["nextCursor"]
    last = world.call(
        "GET",
        f"/v1/scoring/profiles/{profile_id}/scores",
        params={"dimension": "fit", "limit": 2, "cursor": page["nextCursor"]},
    ).json()
    assert [r["objectId"] for r in last["data"]] == ["low.com"]
    assert last["nextCursor"] is None


def test_rows_the_pipeline_computed_walk_the_same(world: World, database: Database) -> None:
    """End to end: values, a rule and tiers through the API, the pipeline computes, and
    the ranked read agrees with a sort of what GET /scores returns."""
    profile_id = make_profile(world, TIERS)
    rule = {
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "pointValues": {
            "ranges": [
                {"max": 10, "points": 0},
                {"min": 10, "max": 100, "points": 5},
                {"min": 100, "max": 1000, "points": 8},
                {"min": 1000, "points": 10},
            ]
        },
    }
    values = {f"e{i}.com": 7 ** (i % 5) for i in range(40)}
    by_id = score_through_pipeline(world, database, profile_id, rule, values)
    scores = {(object_id, "fit"): row["score"] for object_id, row in by_id.items()}
    assert len(set(scores.values())) == 4  # ties in every group
    for params in (
        {"dimension": "fit", "limit": 3},
        {"dimension": "fit", "order": "asc", "limit": 7},
        {"dimension": "fit", "tier": "b", "limit": 2},
    ):
        got = walk(world, profile_id, params)
        assert [(r["objectId"], r["score"]) for r in got] == from_scratch(scores, TIERS, params)
        assert all(r == by_id[r["objectId"]] for r in got)  # the same rows, field for field


# --- errors ---------------------------------------------------------------------------------


def test_a_cursor_only_continues_its_own_read(world: World, ranked: tuple[str, Any]) -> None:
    profile_id, _ = ranked
    path = f"/v1/scoring/profiles/{profile_id}/scores"
    cursor = world.call("GET", path, params={"dimension": "fit", "limit": 5}).json()["nextCursor"]
    for other in (
        {"dimension": "urgency"},
        {"dimension": "fit", "order": "asc"},
        {"dimension": "fit", "tier": "A"},
        {"dimension": "fit", "minScore": 1},
    ):
        response = world.call("GET", path, params={**other, "limit": 5, "cursor": cursor})
        error = assert_error(response, 422, "VALIDATION_ERROR", error_code="INVALID_CURSOR")
        assert [f["field"] for f in error["fields"]] == ["cursor"]
    other_profile = make_profile(world)
    response = world.call(
        "GET",
        f"/v1/scoring/profiles/{other_profile}/scores",
        params={"dimension": "fit", "limit": 5, "cursor": cursor},
    )
    assert_error(response, 422, "VALIDATION_ERROR", error_code="INVALID_CURSOR")


def _forged(document: Any) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        "",
        "x" * 2001,
        _forged([]),
        _forged({"a": 1, "b": 2, "c": 3}),
        _forged(["f", "NaN", "a.com"]),
        _forged(["f", 1e308, "a.com"]),
        _forged(["f", 50, "a\u0000b"]),
        _forged(["f", 50, "\ud800"]),
        _forged(["f", True, "a.com"]),
        _forged(["f", 50, "x" * 600]),
        _forged([[[[[[[["deep"]]]]]]]]),
    ],
)
def test_hostile_cursors_are_refused(world: World, ranked: tuple[str, Any], cursor: str) -> None:
    profile_id, _ = ranked
    response = world.call(
        "GET",
        f"/v1/scoring/profiles/{profile_id}/scores",
        params={"dimension": "fit", "cursor": cursor},
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [f["field"] for f in error["fields"]] == ["cursor"]


@pytest.mark.parametrize(
    ("params", "field", "code"),
    [
        ({}, "dimension", "MISSING_FIELD"),
        ({"dimension": "intent"}, "dimension", None),
        ({"dimension": "fit", "limit": 0}, "limit", None),
        ({"dimension": "fit", "limit": 1001}, "limit", None),
        ({"dimension": "fit", "order": "up"}, "order", None),
        ({"dimension": "fit", "minScore": -1}, "minScore", None),
        ({"dimension": "fit", "maxScore": "nan"}, "maxScore", None),
        ({"dimension": "fit", "minScore": "inf"}, "minScore", None),
        ({"dimension": "fit", "minScore": 60, "maxScore": 50}, "minScore", "INVALID_RANGE"),
        ({"dimension": "fit", "tier": "Z"}, "tier", "UNKNOWN_TIER"),
        ({"dimension": "urgency", "tier": "A"}, "tier", "UNKNOWN_TIER"),
        ({"dimension": "fit", "tier": "a\u0000"}, "tier", None),
        ({"dimension": "fit", "tier": "x" * 51}, "tier", None),
        ({"dimension": "fit", "colour": "red"}, "colour", "UNKNOWN_FIELD"),
    ],
)
def test_bad_parameters_are_refused_with_their_name(
    world: World, ranked: tuple[str, Any], params: dict[str, Any], field: str, code: str | None
) -> None:
    profile_id, _ = ranked
    response = world.call("GET", f"/v1/scoring/profiles/{profile_id}/scores", params=params)
    error = assert_error(response, 422, "VALIDATION_ERROR", error_code=code)
    assert field in [f["field"] for f in error["fields"]]


def test_an_unknown_profile_is_404(world: World) -> None:
    for profile_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = world.call(
            "GET", f"/v1/scoring/profiles/{profile_id}/scores", params={"dimension": "fit"}
        )
        assert_error(response, 404, "NOT_FOUND", error_code="PROFILE_NOT_FOUND")


def test_an_empty_range_is_an_empty_page(world: World, ranked: tuple[str, Any]) -> None:
    profile_id, _ = ranked
    response = world.call(
        "GET",
        f"/v1/scoring/profiles/{profile_id}/scores",
        params={"dimension": "fit", "tier": "A", "maxScore": 50},
    )
    assert response.json() == {"data": [], "nextCursor": None}


def test_a_page_that_would_pass_the_size_limit_stops_early_with_a_cursor(
    world: World, ranked: tuple[str, dict[Any, float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the limit at a few rows' size, pages come shorter than `limit`, and the walk
    still returns every row once, in order."""
    from signalscore.scores import router

    monkeypatch.setattr(router, "MAX_RESPONSE_BYTES", 4_000)
    profile_id, scores = ranked
    params = {"dimension": "fit", "limit": 1000}
    rows: list[dict[str, Any]] = []
    sizes = []
    cursor = None
    while True:
        query = params if cursor is None else {**params, "cursor": cursor}
        response = world.call("GET", f"/v1/scoring/profiles/{profile_id}/scores", params=query)
        assert response.status_code == 200, response.text
        assert len(response.content) <= 4_000
        page = response.json()
        rows += page["data"]
        sizes.append(len(page["data"]))
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert 1 < max(sizes) < 1000
    assert [(r["objectId"], r["score"]) for r in rows] == from_scratch(scores, TIERS, params)
