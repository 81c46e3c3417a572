"""Rules through HTTP: upsert semantics, normalised point values, ordering, and the queue
entries that every score-changing write leaves behind in its own transaction."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.tables import profile_assignments, recompute_queue
from signalscore.db.types import utcnow
from tests.api.conftest import World
from tests.api.test_profiles import ts
from tests.helpers import assert_error, fan_out

RULE_KEYS = {
    "id",
    "profileId",
    "signalTemplateId",
    "dimension",
    "selector",
    "answerType",
    "pointValues",
    "decay",
    "createdAt",
    "updatedAt",
}
RULES = "/v1/scoring/profiles/{pid}/rules"


def upsert(world: World, template: str, dimension: str, answer_type: str, pv: Any) -> Any:
    return world.call(
        "PUT",
        RULES,
        json={
            "signalTemplateId": template,
            "dimension": dimension,
            "answerType": answer_type,
            "pointValues": pv,
        },
    )


def test_create_every_shape_with_normalised_point_values(world: World) -> None:
    boolean = upsert(world, "is_b2b", "fit", "boolean", {"true": 20, "false": -5})
    assert boolean.status_code == 200
    body = boolean.json()
    assert set(body) == RULE_KEYS
    assert body["profileId"] == world.profile_id
    assert body["selector"] is None
    assert body["pointValues"] == {"true": 20, "false": -5}
    assert body["createdAt"] == body["updatedAt"]

    numeric = upsert(
        world,
        "revenue",
        "urgency",
        "currency",
        {
            "ranges": [
                {"min": 0, "max": 1e6, "points": 1},
                {"min": 1e6, "points": 5},
                {"max": 0, "points": -3},
            ]
        },
    ).json()
    assert numeric["pointValues"] == {
        "ranges": [
            {"min": 0, "max": 1e6, "points": 1},
            {"min": 1e6, "max": None, "points": 5},
            {"min": None, "max": 0, "points": -3},
        ]
    }
    listed = upsert(world, "crm", "fit", "list", {"choices": {" Salesforce ": 10, "HubSpot": 8}})
    assert listed.json()["pointValues"] == {
        "choices": {"Salesforce": 10, "HubSpot": 8},
        "mode": "additive",
    }
    for mode in ("best-match", "contains-all", "contains-none", "exact-match"):
        response = upsert(world, "crm", "urgency", "list", {"choices": {"a": 1}, "mode": mode})
        assert response.status_code == 200
        assert response.json()["pointValues"]["mode"] == mode

    rules = world.call("GET", RULES).json()
    assert [r["signalTemplateId"] for r in rules] == [
        "employees",
        "is_b2b",
        "revenue",
        "crm",
        "crm",
    ]
    assert [(r["createdAt"], r["id"]) for r in rules] == sorted(
        (r["createdAt"], r["id"]) for r in rules
    )
    assert rules[1] == body


def test_replace_keeps_id_and_created_at(world: World) -> None:
    first = upsert(world, "growth", "fit", "percentage", {"ranges": [{"min": 0, "points": 1}]})
    second = upsert(
        world, "growth", "fit", "percentage", {"ranges": [{"min": 50, "max": 100, "points": 9}]}
    )
    a, b = first.json(), second.json()
    assert b["id"] == a["id"]
    assert b["createdAt"] == a["createdAt"]
    assert ts(b["updatedAt"]) > ts(a["updatedAt"])
    assert b["pointValues"]["ranges"][0]["points"] == 9
    # A different dimension is a different rule.
    third = upsert(world, "growth", "urgency", "percentage", {"ranges": [{"min": 0, "points": 1}]})
    assert third.json()["id"] != a["id"]
    ids = [r["id"] for r in world.call("GET", RULES).json()]
    assert ids.count(a["id"]) == 1
    assert len(ids) == 3


def test_delete_rule(world: World) -> None:
    assert world.call("DELETE", RULES + "/{rid}").status_code == 204
    assert world.call("GET", RULES).json() == []
    assert_error(
        world.call("DELETE", RULES + "/{rid}"), 404, "NOT_FOUND", error_code="RULE_NOT_FOUND"
    )


def test_rule_of_another_profile_is_not_found_here(world: World) -> None:
    other = world.call(
        "POST", "/v1/scoring/profiles", json={"profileType": "company", "name": "Other"}
    ).json()
    path = f"/v1/scoring/profiles/{other['id']}/rules/{world.rule_id}"
    assert_error(world.call("DELETE", path), 404, "NOT_FOUND", error_code="RULE_NOT_FOUND")
    assert [r["id"] for r in world.call("GET", RULES).json()] == [world.rule_id]


def _assign(database: Database, world: World, *object_ids: str) -> None:
    with database.write() as conn:
        for object_id in object_ids:
            conn.execute(
                profile_assignments.insert().values(
                    organization_id=world.tenant.org_id,
                    id=uuid.uuid4(),
                    profile_id=uuid.UUID(world.profile_id),
                    object_type="company",
                    object_id=object_id,
                    assigned_at=utcnow(),
                )
            )


def _queued(database: Database) -> set[str]:
    with database.read() as conn:
        return set(conn.execute(sa.select(recompute_queue.c.object_id)).scalars())


def _clear_queue(database: Database) -> None:
    with database.write() as conn:
        conn.execute(sa.delete(recompute_queue))


def test_rule_writes_queue_every_assigned_object(world: World, database: Database) -> None:
    _assign(database, world, "acme.com", "beta.io")
    _clear_queue(database)
    upsert(world, "is_b2b", "fit", "boolean", {"true": 1})
    # The rule write leaves the profile's fan-out to the workers; it counts as pending now.
    assert world.call("GET", "/v1/scoring/compute/status").json()["pending"] == 2
    assert fan_out(database) == 2
    assert _queued(database) == {"acme.com", "beta.io"}
    _clear_queue(database)
    assert world.call("DELETE", RULES + "/{rid}").status_code == 204
    assert fan_out(database) == 2
    assert _queued(database) == {"acme.com", "beta.io"}


def test_value_writes_queue_only_objects_a_rule_reads(world: World, database: Database) -> None:
    _assign(database, world, "acme.com", "beta.io")
    _clear_queue(database)
    # No rule reads 'revenue': nothing to recompute.
    world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "revenue",
                    "value": 5,
                }
            ]
        },
    )
    assert _queued(database) == set()
    # A rule reads 'employees': beta.io is assigned and queued; gamma.io is not assigned.
    world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": o,
                    "signalTemplateId": "employees",
                    "value": 7,
                }
                for o in ("beta.io", "gamma.io")
            ]
        },
    )
    assert _queued(database) == {"beta.io"}
    _clear_queue(database)
    # Writing the same value again with the same observedAt changes nothing and queues
    # nothing; observed anew, it queues (scores show each value's observedAt, SPEC §13).
    same = {"objectType": "company", "objectId": "beta.io", "signalTemplateId": "employees",
            "value": 7, "observedAt": "2026-01-02T03:04:05Z"}  # fmt: skip
    world.call("PUT", "/v1/signals/values", json={"values": [same]})
    _clear_queue(database)
    again = world.call("PUT", "/v1/signals/values", json={"values": [same]})
    assert again.json() == {"written": 0, "deleted": 0, "unchanged": 1}
    assert _queued(database) == set()
    anew = world.call("PUT", "/v1/signals/values", json={"values": [{**same, "observedAt": None}]})
    assert anew.json() == {"written": 0, "deleted": 0, "unchanged": 1}
    assert _queued(database) == {"beta.io"}


def test_a_pending_object_is_queued_once(world: World, database: Database) -> None:
    _assign(database, world, "acme.com")
    _clear_queue(database)
    for points in (1, 2, 3):
        upsert(world, "is_b2b", "fit", "boolean", {"true": points})
        fan_out(database)
    with database.read() as conn:
        rows = conn.execute(sa.select(recompute_queue)).all()
    assert len(rows) == 1
    assert rows[0].rerun is False
