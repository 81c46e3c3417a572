"""Score events through the API (SPEC §10): which changes write which events, with what
fields and `changes`; the feed's paging and filters; an object's history; retention and
410. The sequence guarantee under concurrent workers is tests/recompute/test_event_sequence.py;
the invariant test replays every log onto the stored rows (tests/helpers.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from signalscore.db.engine import Database
from signalscore.db.types import utcnow
from signalscore.events.log import event_id
from signalscore.recompute.worker import Worker, WorkerConfig
from tests.api.conftest import World
from tests.helpers import assert_error, assert_events_replay, drain, fan_out

TIERS = {"fit": [{"name": "A", "minScore": 50}, {"name": "B", "minScore": 0}]}
EMPLOYEES = {
    "signalTemplateId": "employees",
    "dimension": "fit",
    "answerType": "number",
    "pointValues": {"ranges": [{"max": 100, "points": 1}, {"min": 100, "points": 10}]},
}
B2B = {
    "signalTemplateId": "is_b2b",
    "dimension": "fit",
    "answerType": "boolean",
    "pointValues": {"true": 10},
}


def feed(world: World, **params: Any) -> dict[str, Any]:
    response = world.call("GET", "/v1/events", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def all_events(world: World) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = feed(world, limit=1000)["data"]
    return events


def new_events(world: World, seen: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = feed(world, after=seen, limit=1000)["data"]
    return events


def put_value(world: World, object_id: str, template: str, value: Any) -> None:
    item = {"objectType": "company", "objectId": object_id, "signalTemplateId": template}
    response = world.call("PUT", "/v1/signals/values", json={"values": [{**item, "value": value}]})
    assert response.status_code == 200, response.text


@pytest.fixture
def scored(world: World, database: Database) -> tuple[World, str, int]:
    """A profile with fit tiers and two fit rules; acme.com (500 employees, b2b) assigned
    and computed. Returns the world, the profile and the last sequence so far."""
    response = world.call(
        "POST",
        "/v1/scoring/profiles",
        json={"profileType": "company", "name": "Events", "tiers": TIERS},
    )
    profile = response.json()["id"]
    for rule in (EMPLOYEES, B2B):
        assert (
            world.call("PUT", f"/v1/scoring/profiles/{profile}/rules", json=rule).status_code == 200
        )
    put_value(world, "acme.com", "employees", 500)
    put_value(world, "acme.com", "is_b2b", True)
    drain(database)
    seen = feed(world)["nextAfter"]
    assign = world.call(
        "POST",
        "/v1/scoring/assignments",
        json={"profileId": profile, "objectType": "company", "objectId": "acme.com"},
    )
    assert assign.status_code == 201
    drain(database)
    return world, profile, seen


def assign(world: World, database: Database, profile: str, objects: list[str]) -> None:
    """Assign in bulk, and let the workers score them (their events are written)."""
    response = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": profile, "objectType": "company", "objectIds": objects},
    )
    assert response.status_code == 201, response.text
    drain(database)


def timeless(side: dict[str, Any] | None) -> dict[str, Any] | None:
    """A change's side without its observedAt (a time of the run), checking its decayFactor
    is 1 (no rule here decays) and that it has an observedAt."""
    if side is None:
        return None
    rest = dict(side)
    assert isinstance(rest.pop("observedAt"), str)
    assert rest.pop("decayFactor") == 1
    return rest


def test_a_new_row_writes_created_and_tier_changed_with_every_rule(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, seen = scored
    events = new_events(world, seen)
    assert [e["type"] for e in events] == ["score.created", "score.tier_changed"]
    created = events[0]
    assert created["sequence"] == seen + 1
    assert events[1]["sequence"] == seen + 2
    assert {k: created[k] for k in ("profileId", "objectType", "objectId", "dimension")} == {
        "profileId": profile,
        "objectType": "company",
        "objectId": "acme.com",
        "dimension": "fit",
    }
    assert (created["score"], created["previousScore"], created["version"]) == (100, None, 1)
    assert (created["tier"], created["previousTier"]) == ("A", None)
    assert [
        (c["signalTemplateId"], c["before"], timeless(c["after"])) for c in created["changes"]
    ] == [
        ("employees", None, {"matchedValue": "500 (≥100)", "pointsEarned": 10, "maxPoints": 10}),
        ("is_b2b", None, {"matchedValue": "true", "pointsEarned": 10, "maxPoints": 10}),
    ]
    assert created["id"] == str(event_id(world.tenant.org_id, created["sequence"]))
    assert created["createdAt"].endswith("Z")
    assert events[1]["changes"] == created["changes"]
    assert_events_replay(database)


def test_a_changed_value_explains_only_the_rule_that_moved(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, _, _ = scored
    seen = feed(world)["nextAfter"]
    put_value(world, "acme.com", "employees", 50)
    drain(database)
    [changed] = new_events(world, seen)  # 100 -> 55: still tier A, so no tier_changed
    assert changed["type"] == "score.changed"
    assert (changed["score"], changed["previousScore"], changed["version"]) == (55, 100, 2)
    assert (changed["tier"], changed["previousTier"]) == ("A", "A")
    sides = [(c["ruleId"], timeless(c["before"]), timeless(c["after"])) for c in changed["changes"]]
    assert sides == [
        (
            changed["changes"][0]["ruleId"],
            {"matchedValue": "500 (≥100)", "pointsEarned": 10, "maxPoints": 10},
            {"matchedValue": "50 (<100)", "pointsEarned": 1, "maxPoints": 10},
        )
    ]
    assert changed["changes"][0]["signalTemplateId"] == "employees"
    # The new value was observed at its write, after the old one.
    before, after = changed["changes"][0]["before"], changed["changes"][0]["after"]
    assert before["observedAt"] < after["observedAt"]
    # Moving into tier B: changed, then tier_changed with the same fields.
    seen = changed["sequence"]
    put_value(world, "acme.com", "is_b2b", False)
    drain(database)
    events = new_events(world, seen)
    assert [e["type"] for e in events] == ["score.changed", "score.tier_changed"]
    assert (events[1]["tier"], events[1]["previousTier"], events[1]["version"]) == ("B", "A", 3)
    assert_events_replay(database)


def test_an_identical_recomputation_writes_nothing(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, _, _ = scored
    seen = feed(world)["nextAfter"]
    world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["acme.com"]}
    )
    drain(database)
    assert new_events(world, seen) == []


def test_new_tiers_write_changed_and_tier_changed_with_no_rule_change(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    seen = feed(world)["nextAfter"]
    response = world.call(
        "PUT",
        f"/v1/scoring/profiles/{profile}",
        json={"name": "Events", "tiers": {"fit": [{"name": "Top", "minScore": 90}]}},
    )
    assert response.status_code == 200
    fan_out(database)
    drain(database)
    events = new_events(world, seen)
    assert [(e["type"], e["tier"], e["previousTier"], e["changes"]) for e in events] == [
        ("score.changed", "Top", "A", []),
        ("score.tier_changed", "Top", "A", []),
    ]


def test_deletions_write_deleted_with_every_rule_as_before(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    # The last rule of a dimension: its rows go.
    assign(world, database, profile, ["b.com", "c.com"])
    seen = feed(world)["nextAfter"]
    rules = world.call("GET", f"/v1/scoring/profiles/{profile}/rules").json()
    for rule in rules:
        world.call("DELETE", f"/v1/scoring/profiles/{profile}/rules/{rule['id']}")
        fan_out(database)
        drain(database)
    events = new_events(world, seen)
    deleted = [e for e in events if e["type"] == "score.deleted"]
    assert sorted(e["objectId"] for e in deleted) == ["acme.com", "b.com", "c.com"]
    acme = next(e for e in deleted if e["objectId"] == "acme.com")
    assert (acme["score"], acme["tier"]) == (None, None)
    assert (acme["previousScore"], acme["previousTier"]) == (100, "A")
    assert [(c["signalTemplateId"], c["after"]) for c in acme["changes"]] == [("is_b2b", None)]
    assert_events_replay(database)


def test_unassigning_and_deleting_a_profile_write_deleted(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    assign(world, database, profile, ["b.com", "c.com"])
    assignments = world.call(
        "GET", "/v1/scoring/assignments", params={"objectType": "company", "objectId": "b.com"}
    ).json()
    seen = feed(world)["nextAfter"]
    assert (
        world.call("DELETE", f"/v1/scoring/assignments/{assignments[0]['id']}").status_code == 204
    )
    drain(database)
    [gone] = new_events(world, seen)
    assert (gone["type"], gone["objectId"], gone["previousScore"]) == ("score.deleted", "b.com", 0)
    seen = gone["sequence"]
    before = {
        (e["objectId"]): e
        for e in all_events(world)
        if e["type"] in ("score.created", "score.changed") and e["profileId"] == profile
    }
    assert world.call("DELETE", f"/v1/scoring/profiles/{profile}").status_code == 204
    events = new_events(world, seen)
    # One per remaining row, in objectId order, every rule of the last version as `before`.
    assert [(e["type"], e["objectId"]) for e in events] == [
        ("score.deleted", "acme.com"),
        ("score.deleted", "c.com"),
    ]
    assert [e["sequence"] for e in events] == [seen + 1, seen + 2]
    for event in events:
        last = before[event["objectId"]]
        assert (event["previousScore"], event["previousTier"], event["version"]) == (
            last["score"],
            last["tier"],
            last["version"],
        )
        assert [c["before"] for c in event["changes"]] == [
            c["after"] for c in last["changes"]
        ] or event["objectId"] != "acme.com"
        assert all(c["after"] is None for c in event["changes"])
        assert len(event["changes"]) == 2
    assert_events_replay(database)


# --- the feed ---------------------------------------------------------------------------------


def test_paging_the_feed_sees_every_event_once_in_order(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    assign(world, database, profile, [f"p{i}.com" for i in range(7)])
    everything = all_events(world)
    assert len(everything) >= 9
    assert [e["sequence"] for e in everything] == list(range(1, len(everything) + 1))
    for limit in (1, 2, 5):
        walked, after = [], 0
        while True:
            page = feed(world, after=after, limit=limit)
            assert len(page["data"]) <= limit
            if not page["data"]:
                assert page["nextAfter"] == after
                break
            walked += page["data"]
            after = page["nextAfter"]
            assert after == page["data"][-1]["sequence"]
        assert walked == everything
    assert feed(world, after=10_000) == {"data": [], "nextAfter": 10_000}


def test_the_feed_filters_by_type_and_profile(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    everything = all_events(world)
    tiers = feed(world, types="score.tier_changed", limit=1000)["data"]
    assert tiers == [e for e in everything if e["type"] == "score.tier_changed"] != []
    both = world.call(
        "GET",
        "/v1/events",
        params=[("types", "score.created,score.deleted"), ("types", "score.changed")],
    ).json()["data"]
    assert both == [e for e in everything if e["type"] != "score.tier_changed"]
    mine = feed(world, profileId=profile, limit=1000)["data"]
    assert mine == [e for e in everything if e["profileId"] == profile] != []
    assert feed(world, profileId=str(uuid.uuid4()))["data"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": -1}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"types": "score.moved"}, "types"),
        ({"profileId": "nope"}, "profileId"),
        ({"since": 1}, "since"),
    ],
)
def test_bad_feed_parameters_are_refused(world: World, params: dict[str, Any], field: str) -> None:
    error = assert_error(world.call("GET", "/v1/events", params=params), 422, "VALIDATION_ERROR")
    assert field in [f["field"] for f in error["fields"]]


# --- history ----------------------------------------------------------------------------------


def test_history_is_newest_first_and_pages(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, profile, _ = scored
    for employees in (50, 5000, 20, 700):
        put_value(world, "acme.com", "employees", employees)
        drain(database)
    mine = [e for e in all_events(world) if e["objectId"] == "acme.com"]
    params = {"objectType": "company", "objectId": "ACME.com", "limit": 2}
    walked, cursor = [], None
    while True:
        query = params if cursor is None else {**params, "cursor": cursor}
        response = world.call("GET", "/v1/scoring/history", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        walked += page["data"]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert walked == list(reversed(mine))
    assert [e["score"] for e in walked if e["type"] == "score.changed"][:2] == [100, 55]
    only = world.call(
        "GET",
        "/v1/scoring/history",
        params={
            "objectType": "company",
            "objectId": "acme.com",
            "profileId": profile,
            "dimension": "urgency",
        },
    ).json()
    assert only == {"data": [], "nextCursor": None}
    cursor = world.call("GET", "/v1/scoring/history", params=params).json()["nextCursor"]
    other = world.call(
        "GET",
        "/v1/scoring/history",
        params={"objectType": "company", "objectId": "b.com", "limit": 2, "cursor": cursor},
    )
    assert_error(other, 422, "VALIDATION_ERROR", error_code="INVALID_CURSOR")


# --- retention --------------------------------------------------------------------------------


def test_events_past_retention_go_and_a_read_from_before_them_is_410(
    scored: tuple[World, str, int], database: Database
) -> None:
    world, _, _ = scored
    last = feed(world)["nextAfter"]
    worker = Worker(database, WorkerConfig(event_retention_days=30))
    assert worker.housekeeping(utcnow()) == 0  # nothing is old yet
    assert worker.housekeeping(utcnow() + timedelta(days=31)) == last
    error = assert_error(world.call("GET", "/v1/events"), 410, "GONE", error_code="EVENTS_EXPIRED")
    assert error["details"] == {"after": 0, "expiredThrough": last}
    assert feed(world, after=last) == {"data": [], "nextAfter": last}
    # New events continue the sequence, and history no longer holds the old ones.
    put_value(world, "acme.com", "employees", 5)
    drain(database)
    assert [e["sequence"] for e in feed(world, after=last)["data"]] == [last + 1]
    history = world.call(
        "GET", "/v1/scoring/history", params={"objectType": "company", "objectId": "acme.com"}
    ).json()["data"]
    assert [e["sequence"] for e in history] == [last + 1]
