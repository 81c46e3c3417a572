"""Signal templates through HTTP."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient

from tests.api.conftest import World
from tests.api.test_profiles import ts
from tests.helpers import Tenant, assert_error

TEMPLATE_KEYS = {
    "id",
    "organizationId",
    "name",
    "description",
    "objectType",
    "answerType",
    "createdAt",
    "updatedAt",
}


def test_create_with_and_without_id_get_list_filter(client: TestClient, tenant: Tenant) -> None:
    h = tenant.headers
    named = client.post(
        "/v1/signals/templates",
        json={
            "id": "crm.vendor",
            "name": " CRM ",
            "objectType": "company",
            "answerType": "list",
            "description": "Which CRM",
        },
        headers=h,
    )
    assert named.status_code == 201
    body = named.json()
    assert set(body) == TEMPLATE_KEYS
    assert body["id"] == "crm.vendor"
    assert body["organizationId"] == tenant.org_id
    assert body["name"] == "CRM"
    assert body["description"] == "Which CRM"
    assert (body["objectType"], body["answerType"]) == ("company", "list")

    generated = client.post(
        "/v1/signals/templates",
        json={"name": "Seniority", "objectType": "contact", "answerType": "list"},
        headers=h,
    ).json()
    assert str(uuid.UUID(generated["id"])) == generated["id"]

    assert client.get("/v1/signals/templates/crm.vendor", headers=h).json() == body
    everything = client.get("/v1/signals/templates", headers=h).json()
    assert [t["id"] for t in everything] == ["crm.vendor", generated["id"]]
    companies = client.get("/v1/signals/templates?objectType=company", headers=h).json()
    assert [t["id"] for t in companies] == ["crm.vendor"]
    contacts = client.get("/v1/signals/templates?objectType=contact", headers=h).json()
    assert [t["id"] for t in contacts] == [generated["id"]]


def test_patch_changes_only_name_and_description(world: World) -> None:
    before = world.call("GET", "/v1/signals/templates/crm").json()
    renamed = world.call("PATCH", "/v1/signals/templates/crm", json={"name": "CRM vendor"}).json()
    assert renamed["name"] == "CRM vendor"
    assert renamed["description"] == before["description"]
    assert renamed["answerType"] == "list"
    assert renamed["createdAt"] == before["createdAt"]
    assert ts(renamed["updatedAt"]) > ts(before["updatedAt"])
    described = world.call(
        "PATCH", "/v1/signals/templates/crm", json={"description": "from the CRM sync"}
    ).json()
    assert described["name"] == "CRM vendor"
    assert described["description"] == "from the CRM sync"
    cleared = world.call("PATCH", "/v1/signals/templates/crm", json={"description": None}).json()
    assert cleared["description"] is None
    unchanged = world.call("PATCH", "/v1/signals/templates/crm", json={}).json()
    assert unchanged == cleared
    assert world.call("GET", "/v1/signals/templates/crm").json() == cleared


def test_delete_removes_the_template_and_its_values(world: World) -> None:
    params = {"objectType": "company", "objectId": "acme.com"}
    assert {
        v["signalTemplateId"] for v in world.call("GET", "/v1/signals/values", params=params).json()
    } == {"employees", "crm"}
    assert world.call("DELETE", "/v1/signals/templates/crm").status_code == 204
    assert_error(
        world.call("GET", "/v1/signals/templates/crm"),
        404,
        "NOT_FOUND",
        error_code="TEMPLATE_NOT_FOUND",
    )
    remaining = world.call("GET", "/v1/signals/values", params=params).json()
    assert [v["signalTemplateId"] for v in remaining] == ["employees"]
    # The id is free again.
    again = world.call(
        "POST",
        "/v1/signals/templates",
        json={"id": "crm", "name": "CRM", "objectType": "company", "answerType": "list"},
    )
    assert again.status_code == 201


def test_delete_in_use_lists_the_rule_ids(world: World) -> None:
    second = world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        json={
            "signalTemplateId": "employees",
            "dimension": "urgency",
            "answerType": "number",
            "pointValues": {"ranges": [{"min": 1000, "points": 3}]},
        },
    ).json()
    error = assert_error(
        world.call("DELETE", "/v1/signals/templates/employees"),
        409,
        "CONFLICT",
        error_code="TEMPLATE_IN_USE",
    )
    assert error["details"]["ruleIds"] == [world.rule_id, second["id"]]
