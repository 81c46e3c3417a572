"""Tenant isolation for the configuration endpoints: organisation B's key on organisation A's
resources behaves as if they did not exist, and changes nothing of A's."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import metadata
from tests.api.conftest import World
from tests.helpers import Tenant, assert_error


def org_snapshot(database: Database, org_id: str) -> dict[str, list[tuple[str, ...]]]:
    result = {}
    with database.read() as conn:
        for table in metadata.sorted_tables:
            column = table.c.get("organization_id")
            if column is None:
                continue
            rows = conn.execute(sa.select(table).where(column == org_id)).all()
            result[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return result


RULE_BODY = {
    "signalTemplateId": "employees",
    "dimension": "fit",
    "answerType": "number",
    "pointValues": {"ranges": [{"min": 0, "points": 1}]},
}

NOT_FOUND_CALLS = [
    ("GET", "/v1/scoring/profiles/{pid}", None, "PROFILE_NOT_FOUND"),
    ("PUT", "/v1/scoring/profiles/{pid}", {"name": "hijacked"}, "PROFILE_NOT_FOUND"),
    ("DELETE", "/v1/scoring/profiles/{pid}", None, "PROFILE_NOT_FOUND"),
    ("GET", "/v1/scoring/profiles/{pid}/rules", None, "PROFILE_NOT_FOUND"),
    ("PUT", "/v1/scoring/profiles/{pid}/rules", RULE_BODY, "PROFILE_NOT_FOUND"),
    ("DELETE", "/v1/scoring/profiles/{pid}/rules/{rid}", None, "PROFILE_NOT_FOUND"),
    ("GET", "/v1/signals/templates/employees", None, "TEMPLATE_NOT_FOUND"),
    ("PATCH", "/v1/signals/templates/employees", {"name": "hijacked"}, "TEMPLATE_NOT_FOUND"),
    ("DELETE", "/v1/signals/templates/crm", None, "TEMPLATE_NOT_FOUND"),
]


@pytest.mark.parametrize(("method", "path", "body", "error_code"), NOT_FOUND_CALLS)
def test_other_organizations_resources_are_404(
    world: World,
    other_tenant: Tenant,
    database: Database,
    method: str,
    path: str,
    body: Any,
    error_code: str,
) -> None:
    before = org_snapshot(database, world.tenant.org_id)
    response = world.call(method, path, json=body, headers=other_tenant.headers)
    assert_error(response, 404, "NOT_FOUND", error_code=error_code)
    assert org_snapshot(database, world.tenant.org_id) == before


def test_lists_and_reads_are_empty_for_the_other_organization(
    world: World, other_tenant: Tenant, client: TestClient, database: Database
) -> None:
    before = org_snapshot(database, world.tenant.org_id)
    h = other_tenant.headers
    assert client.get("/v1/scoring/profiles", headers=h).json() == []
    assert client.get("/v1/signals/templates", headers=h).json() == []
    assert client.get("/v1/signals/templates?objectType=company", headers=h).json() == []
    values = client.get("/v1/signals/values?objectType=company&objectId=acme.com", headers=h)
    assert values.status_code == 200
    assert values.json() == []
    assert org_snapshot(database, world.tenant.org_id) == before


def test_writes_cannot_reach_the_other_organizations_templates(
    world: World, other_tenant: Tenant, client: TestClient, database: Database
) -> None:
    before = org_snapshot(database, world.tenant.org_id)
    h = other_tenant.headers
    response = client.put(
        "/v1/signals/values",
        headers=h,
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "employees",
                    "value": 1,
                }
            ]
        },
    )
    assert_error(
        response,
        422,
        "VALIDATION_ERROR",
        error_code="TEMPLATE_NOT_FOUND",
        fields=["values[0].signalTemplateId"],
    )
    own = client.post(
        "/v1/scoring/profiles", headers=h, json={"profileType": "company", "name": "B"}
    ).json()
    response = client.put(f"/v1/scoring/profiles/{own['id']}/rules", headers=h, json=RULE_BODY)
    assert_error(
        response,
        422,
        "VALIDATION_ERROR",
        error_code="TEMPLATE_NOT_FOUND",
        fields=["signalTemplateId"],
    )
    # B may use the same template id as A: ids are per organisation.
    created = client.post(
        "/v1/signals/templates",
        headers=h,
        json={"id": "employees", "name": "B's", "objectType": "company", "answerType": "boolean"},
    )
    assert created.status_code == 201
    assert created.json()["organizationId"] == other_tenant.org_id
    assert org_snapshot(database, world.tenant.org_id) == before
    assert world.call("GET", "/v1/signals/templates/employees").json()["answerType"] == "number"


def test_assignments_scores_and_compute_are_isolated(
    world: World, other_tenant: Tenant, client: TestClient, database: Database
) -> None:
    assignment = world.call(
        "POST",
        "/v1/scoring/assignments",
        json={"profileId": world.profile_id, "objectType": "company", "objectId": "acme.com"},
    ).json()
    world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["pending.com"]}
    )
    before = org_snapshot(database, world.tenant.org_id)
    h = other_tenant.headers
    for path, body in [
        (
            "/v1/scoring/assignments",
            {"profileId": world.profile_id, "objectType": "company", "objectId": "acme.com"},
        ),
        (
            "/v1/scoring/assignments/bulk",
            {"profileId": world.profile_id, "objectType": "company", "objectIds": ["x.com"]},
        ),
    ]:
        assert_error(
            client.post(path, headers=h, json=body),
            404,
            "NOT_FOUND",
            error_code="PROFILE_NOT_FOUND",
        )
    assert_error(
        client.delete(f"/v1/scoring/assignments/{assignment['id']}", headers=h),
        404,
        "NOT_FOUND",
        error_code="ASSIGNMENT_NOT_FOUND",
    )
    params = {"objectType": "company", "objectId": "acme.com"}
    assert client.get("/v1/scoring/assignments", headers=h, params=params).json() == []
    assert client.get("/v1/scoring/scores", headers=h, params=params).json() == []
    assert client.get("/v1/scoring/compute/status", headers=h).json() == {
        "pending": 0,
        "running": 0,
        "oldestPendingSeconds": 0.0,
    }
    # B may queue its own objects with the same ids; A's queue is untouched.
    accepted = client.post(
        "/v1/scoring/compute", headers=h, json={"objectType": "company", "objectIds": ["acme.com"]}
    )
    assert accepted.json() == {"queued": 1, "failed": 0}
    assert org_snapshot(database, world.tenant.org_id) == before
    assert world.call("GET", "/v1/scoring/scores", params=params).json() != []
