"""Profiles through HTTP: shapes, ordering, update semantics, cascading delete."""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import profile_assignments, scoring_rules
from signalscore.db.types import utcnow
from tests.api.conftest import World
from tests.helpers import Tenant, assert_error

PROFILE_KEYS = {
    "id",
    "organizationId",
    "type",
    "name",
    "description",
    "tiers",
    "createdAt",
    "updatedAt",
}
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def ts(value: str) -> datetime:
    assert RFC3339_Z.match(value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_create_get_list_update_delete(client: TestClient, tenant: Tenant) -> None:
    h = tenant.headers
    created = client.post(
        "/v1/scoring/profiles",
        json={"profileType": "company", "name": "  EMEA Enterprise  ", "description": "1000+"},
        headers=h,
    )
    assert created.status_code == 201
    body = created.json()
    assert set(body) == PROFILE_KEYS
    assert uuid.UUID(body["id"])
    assert body["organizationId"] == tenant.org_id
    assert body["type"] == "company"
    assert body["name"] == "EMEA Enterprise"  # trimmed
    assert body["description"] == "1000+"
    assert ts(body["createdAt"]) == ts(body["updatedAt"])

    fetched = client.get(f"/v1/scoring/profiles/{body['id']}", headers=h)
    assert fetched.status_code == 200
    assert fetched.json() == body

    second = client.post(
        "/v1/scoring/profiles", json={"profileType": "contact", "name": "Buyers"}, headers=h
    ).json()
    assert second["description"] is None
    listed = client.get("/v1/scoring/profiles", headers=h)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()] == [body["id"], second["id"]]
    assert listed.json()[0] == body

    # An omitted description keeps the old one.
    renamed = client.put(
        f"/v1/scoring/profiles/{body['id']}", json={"name": "Enterprise ICP"}, headers=h
    ).json()
    assert renamed["name"] == "Enterprise ICP"
    assert renamed["description"] == "1000+"
    assert renamed["type"] == "company"
    assert renamed["createdAt"] == body["createdAt"]
    assert ts(renamed["updatedAt"]) > ts(body["updatedAt"])
    # null clears it.
    cleared = client.put(
        f"/v1/scoring/profiles/{body['id']}", json={"name": "X", "description": None}, headers=h
    ).json()
    assert cleared["description"] is None
    assert client.get(f"/v1/scoring/profiles/{body['id']}", headers=h).json() == cleared

    deleted = client.delete(f"/v1/scoring/profiles/{body['id']}", headers=h)
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_error(
        client.get(f"/v1/scoring/profiles/{body['id']}", headers=h),
        404,
        "NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    )
    assert [p["id"] for p in client.get("/v1/scoring/profiles", headers=h).json()] == [second["id"]]


def test_list_orders_by_created_at_then_id(client: TestClient, tenant: Tenant) -> None:
    ids = [
        client.post(
            "/v1/scoring/profiles",
            json={"profileType": "company", "name": f"P{i}"},
            headers=tenant.headers,
        ).json()["id"]
        for i in range(5)
    ]
    listed = client.get("/v1/scoring/profiles", headers=tenant.headers).json()
    assert [p["id"] for p in listed] == ids
    keys = [(p["createdAt"], p["id"]) for p in listed]
    assert keys == sorted(keys)


def test_delete_cascades_to_rules_and_assignments(world: World, database: Database) -> None:
    with database.write() as conn:
        conn.execute(
            profile_assignments.insert().values(
                organization_id=world.tenant.org_id,
                id=uuid.uuid4(),
                profile_id=uuid.UUID(world.profile_id),
                object_type="company",
                object_id="acme.com",
                assigned_at=utcnow(),
            )
        )
    assert world.call("DELETE", "/v1/scoring/profiles/{pid}").status_code == 204
    with database.read() as conn:
        for table in (scoring_rules, profile_assignments):
            count = conn.execute(
                sa.select(sa.func.count())
                .select_from(table)
                .where(table.c.profile_id == uuid.UUID(world.profile_id))
            ).scalar_one()
            assert count == 0, table.name
    # The template the rule used can now be deleted.
    assert world.call("DELETE", "/v1/signals/templates/employees").status_code == 204
