"""Assignments, scores and compute through HTTP (SPEC §4), with version semantics (§6)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue, score_results
from tests.api.conftest import World
from tests.api.test_profiles import ts
from tests.helpers import assert_error, assert_scores_fresh, drain

ASSIGNMENT_KEYS = {"id", "profileId", "organizationId", "objectType", "objectId", "assignedAt"}
SCORE_KEYS = {
    "id",
    "profileId",
    "organizationId",
    "objectType",
    "objectId",
    "dimension",
    "score",
    "previousScore",
    "tier",
    "previousTier",
    "contributions",
    "previousContributions",
    "signalCoverage",
    "totalRules",
    "computedAt",
    "version",
}


def assign(world: World, object_id: str, profile: str = "{pid}", object_type: str = "company"):
    profile = profile.format(pid=world.profile_id, cpid=world.contact_profile_id)
    return world.call(
        "POST",
        "/v1/scoring/assignments",
        json={"profileId": profile, "objectType": object_type, "objectId": object_id},
    )


def scores(world: World, *object_ids: str, **params: Any) -> list[dict[str, Any]]:
    query = [("objectType", "company"), *[("objectId", o) for o in object_ids], *params.items()]
    response = world.call("GET", "/v1/scoring/scores", params=query)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def queued(database: Database) -> list[str]:
    with database.read() as conn:
        return sorted(conn.execute(sa.select(recompute_queue.c.object_id)).scalars())


def test_single_assign_computes_before_answering(world: World, database: Database) -> None:
    response = assign(world, "ACME.com")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == ASSIGNMENT_KEYS
    assert (body["profileId"], body["objectId"], body["objectType"]) == (
        world.profile_id,
        "acme.com",
        "company",
    )
    assert body["organizationId"] == world.tenant.org_id
    [row] = scores(world, "acme.com")  # no drain: computed in the request
    assert set(row) == SCORE_KEYS
    assert row["dimension"] == "fit"
    assert row["score"] == 100.0  # employees=50 is in [0, 100): 5 of 5 points
    assert row["version"] == 1
    assert row["previousScore"] is None
    assert row["previousContributions"] == []
    assert (row["signalCoverage"], row["totalRules"]) == (1, 1)
    assert row["contributions"] == [
        {
            "ruleId": world.rule_id,
            "signalTemplateId": "employees",
            "matchedValue": "50 (0–100)",
            "pointsEarned": 5,
            "maxPoints": 5,
            "observedAt": None,
            "decayFactor": 1,
        }
    ]
    # Assigning again returns the existing row with 200.
    again = assign(world, "acme.com")
    assert again.status_code == 200
    assert again.json() == body
    listed = world.call(
        "GET", "/v1/scoring/assignments", params={"objectType": "company", "objectId": "Acme.COM."}
    ).json()
    assert listed == [body]


def test_assign_errors(world: World) -> None:
    unknown = str(uuid.uuid4())
    assert_error(
        assign(world, "a.com", profile=unknown), 404, "NOT_FOUND", error_code="PROFILE_NOT_FOUND"
    )
    assert_error(
        assign(world, "a.com", profile="{cpid}"),
        422,
        "VALIDATION_ERROR",
        error_code="OBJECT_TYPE_MISMATCH",
        fields=["objectType"],
    )
    assert_error(
        assign(world, "a.com", profile="not-a-uuid"),
        422,
        "VALIDATION_ERROR",
        error_code="INVALID_UUID",
        fields=["profileId"],
    )
    assert_error(
        assign(world, "https://a.com"),
        422,
        "VALIDATION_ERROR",
        error_code="INVALID_DOMAIN",
        fields=["objectId"],
    )
    assert_error(
        world.call("DELETE", f"/v1/scoring/assignments/{unknown}"),
        404,
        "NOT_FOUND",
        error_code="ASSIGNMENT_NOT_FOUND",
    )
    assert (
        world.call(
            "GET", "/v1/scoring/assignments", params={"objectType": "company", "objectId": "a.com"}
        ).json()
        == []
    )


def test_bulk_assign_returns_new_rows_in_request_order(world: World, database: Database) -> None:
    assign(world, "b.com")
    drain(database)
    response = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={
            "profileId": world.profile_id,
            "objectType": "company",
            "objectIds": ["z.com", "B.com", "a.com", "Z.COM.", "m.io"],
        },
    )
    assert response.status_code == 201
    rows = response.json()
    assert [r["objectId"] for r in rows] == ["z.com", "a.com", "m.io"]
    assert all(set(r) == ASSIGNMENT_KEYS for r in rows)
    assert queued(database) == ["a.com", "m.io", "z.com"]
    assert scores(world, "z.com") == []  # queued, not computed in the request
    drain(database)
    assert [s["objectId"] for s in scores(world, "z.com", "a.com", "m.io")] == [
        "z.com",
        "a.com",
        "m.io",
    ]
    assert (
        world.call(
            "POST",
            "/v1/scoring/assignments/bulk",
            json={"profileId": world.profile_id, "objectType": "company", "objectIds": ["z.com"]},
        ).json()
        == []
    )


def test_bulk_assign_rejects_everything_on_one_bad_id(world: World, database: Database) -> None:
    response = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={
            "profileId": world.profile_id,
            "objectType": "company",
            "objectIds": ["ok.com", "https://bad.com", "fine.io", "bad.com/x"],
        },
    )
    assert_error(
        response,
        422,
        "VALIDATION_ERROR",
        error_code="INVALID_DOMAIN",
        fields=["objectIds[1]", "objectIds[3]"],
    )
    too_many = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={
            "profileId": world.profile_id,
            "objectType": "company",
            "objectIds": [f"c{i}.com" for i in range(501)],
        },
    )
    assert_error(
        too_many, 422, "VALIDATION_ERROR", error_code="TOO_MANY_ITEMS", fields=["objectIds"]
    )
    assert (
        world.call(
            "GET", "/v1/scoring/assignments", params={"objectType": "company", "objectId": "ok.com"}
        ).json()
        == []
    )
    assert queued(database) == []


def test_unassign_deletes_the_pairs_scores_only(world: World, database: Database) -> None:
    other = world.call(
        "POST", "/v1/scoring/profiles", json={"profileType": "company", "name": "Other"}
    ).json()
    world.call(
        "PUT",
        f"/v1/scoring/profiles/{other['id']}/rules",
        json={
            "signalTemplateId": "crm",
            "dimension": "urgency",
            "answerType": "list",
            "pointValues": {"choices": {"hubspot": 3}},
        },
    )
    first = assign(world, "acme.com").json()
    assign(world, "acme.com", profile=other["id"])
    assert len(scores(world, "acme.com")) == 2
    assert world.call("DELETE", f"/v1/scoring/assignments/{first['id']}").status_code == 204
    remaining = scores(world, "acme.com")
    assert [(r["profileId"], r["dimension"]) for r in remaining] == [(other["id"], "urgency")]
    drain(database)
    assert_scores_fresh(database)


def test_scores_order_and_filters(world: World, database: Database) -> None:
    second = world.call(
        "POST", "/v1/scoring/profiles", json={"profileType": "company", "name": "Second"}
    ).json()
    for dimension in ("urgency", "fit"):
        world.call(
            "PUT",
            f"/v1/scoring/profiles/{second['id']}/rules",
            json={
                "signalTemplateId": "employees",
                "dimension": dimension,
                "answerType": "number",
                "pointValues": {"ranges": [{"min": 10, "points": 1}]},
            },
        )
    world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        json={
            "signalTemplateId": "crm",
            "dimension": "urgency",
            "answerType": "list",
            "pointValues": {"choices": {"HubSpot": 1}},
        },
    )
    for object_id in ("acme.com", "beta.io"):
        for profile in (world.profile_id, second["id"]):
            assign(world, object_id, profile=profile)
    rows = scores(world, "beta.io", "acme.com", "nothing.com")
    first_profile, second_profile = sorted([world.profile_id, second["id"]])
    expected_keys = [
        (o, p, d)
        for o in ("beta.io", "acme.com")
        for p in (first_profile, second_profile)
        for d in ("fit", "urgency")
    ]
    assert [(r["objectId"], r["profileId"], r["dimension"]) for r in rows] == expected_keys
    only = scores(world, "acme.com", "beta.io", profileId=second["id"], dimension="urgency")
    assert [(r["objectId"], r["profileId"], r["dimension"]) for r in only] == [
        ("acme.com", second["id"], "urgency"),
        ("beta.io", second["id"], "urgency"),
    ]
    assert_error(
        world.call(
            "GET",
            "/v1/scoring/scores",
            params=[("objectType", "company"), *[("objectId", f"c{i}.com") for i in range(101)]],
        ),
        422,
        "VALIDATION_ERROR",
        error_code="TOO_MANY_ITEMS",
        fields=["objectId"],
    )


def test_reading_never_computes(world: World, database: Database) -> None:
    world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": ["acme.com"]},
    )
    assert scores(world, "acme.com") == []
    assert queued(database) == ["acme.com"]


def test_version_semantics(world: World, database: Database) -> None:
    assign(world, "acme.com")
    [v1] = scores(world, "acme.com")
    # Recomputing with nothing changed keeps version and previous values; computedAt moves.
    world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["acme.com"]}
    )
    drain(database)
    [same] = scores(world, "acme.com")
    assert (same["version"], same["previousScore"], same["previousContributions"]) == (1, None, [])
    assert same["score"] == v1["score"]
    assert ts(same["computedAt"]) > ts(v1["computedAt"])
    # A change increments version by exactly one and moves the old values.
    world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "employees",
                    "value": 500,
                }
            ]
        },
    )
    drain(database)
    [v2] = scores(world, "acme.com")
    assert v2["version"] == 2
    assert v2["score"] == 0.0
    assert v2["previousScore"] == v1["score"]
    assert v2["previousContributions"] == v1["contributions"]
    assert v2["contributions"][0]["matchedValue"] == "500 (no range)"
    assert v2["id"] == v1["id"]
    # An identical rule re-upsert: recomputed, but nothing moves.
    world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        json={
            "signalTemplateId": "employees",
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {"ranges": [{"min": 0, "max": 100, "points": 5}]},
        },
    )
    drain(database)
    [still] = scores(world, "acme.com")
    assert (still["version"], still["previousScore"]) == (2, v1["score"])


def test_rows_of_a_dimension_that_lost_its_rules_are_deleted(
    world: World, database: Database
) -> None:
    urgency = world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        json={
            "signalTemplateId": "crm",
            "dimension": "urgency",
            "answerType": "list",
            "pointValues": {"choices": {"HubSpot": 2}},
        },
    ).json()
    assign(world, "acme.com")
    assert [r["dimension"] for r in scores(world, "acme.com")] == ["fit", "urgency"]
    world.call("DELETE", f"/v1/scoring/profiles/{world.profile_id}/rules/{urgency['id']}")
    drain(database)
    assert [r["dimension"] for r in scores(world, "acme.com")] == ["fit"]
    assert_scores_fresh(database)


def test_compute_merges_and_reports_status(world: World, database: Database) -> None:
    response = world.call(
        "POST",
        "/v1/scoring/compute",
        json={
            "objectType": "company",
            "objectIds": ["a.com", "A.COM", "b.com", "never-assigned.io"],
        },
    )
    assert response.status_code == 202
    assert response.json() == {"queued": 3, "failed": 0}
    again = world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["a.com"]}
    )
    assert again.json() == {"queued": 1, "failed": 0}
    assert queued(database) == ["a.com", "b.com", "never-assigned.io"]
    status = world.call("GET", "/v1/scoring/compute/status").json()
    assert set(status) == {"pending", "running", "oldestPendingSeconds"}
    assert (status["pending"], status["running"]) == (3, 0)
    assert status["oldestPendingSeconds"] >= 0
    drain(database)
    assert world.call("GET", "/v1/scoring/compute/status").json() == {
        "pending": 0,
        "running": 0,
        "oldestPendingSeconds": 0.0,
    }
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(score_results)).scalar() == 0
    assert_error(
        world.call("POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": []}),
        422,
        "VALIDATION_ERROR",
        error_code="TOO_FEW_ITEMS",
        fields=["objectIds"],
    )
    assert_error(
        world.call(
            "POST",
            "/v1/scoring/compute",
            json={"objectType": "contact", "objectIds": ["https://twitter.com/x"]},
        ),
        422,
        "VALIDATION_ERROR",
        error_code="INVALID_LINKEDIN_URL",
        fields=["objectIds[0]"],
    )
