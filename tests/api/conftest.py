"""A small configured organisation, built through the HTTP API, for the API tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import metadata
from tests.helpers import Tenant

TEMPLATES = [
    ("employees", "company", "number"),
    ("crm", "company", "list"),
    ("is_b2b", "company", "boolean"),
    ("growth", "company", "percentage"),
    ("revenue", "company", "currency"),
    ("seniority", "contact", "list"),
]


@dataclass
class World:
    client: TestClient
    tenant: Tenant
    profile_id: str
    contact_profile_id: str
    rule_id: str

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.client.request(
            method,
            path.format(pid=self.profile_id, cpid=self.contact_profile_id, rid=self.rule_id),
            headers={**self.tenant.headers, **kwargs.pop("headers", {})},
            **kwargs,
        )


def build_world(client: TestClient, tenant: Tenant) -> World:
    h = tenant.headers
    for template_id, object_type, answer_type in TEMPLATES:
        response = client.post(
            "/v1/signals/templates",
            json={
                "id": template_id,
                "name": template_id.title(),
                "objectType": object_type,
                "answerType": answer_type,
            },
            headers=h,
        )
        assert response.status_code == 201, response.text
    profile = client.post(
        "/v1/scoring/profiles", json={"profileType": "company", "name": "ICP"}, headers=h
    ).json()
    contact_profile = client.post(
        "/v1/scoring/profiles", json={"profileType": "contact", "name": "Buyers"}, headers=h
    ).json()
    rule = client.put(
        f"/v1/scoring/profiles/{profile['id']}/rules",
        json={
            "signalTemplateId": "employees",
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {"ranges": [{"min": 0, "max": 100, "points": 5}]},
        },
        headers=h,
    ).json()
    values = client.put(
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "employees",
                    "value": 50,
                },
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "crm",
                    "value": ["HubSpot"],
                },
            ]
        },
        headers=h,
    )
    assert values.status_code == 200, values.text
    return World(client, tenant, profile["id"], contact_profile["id"], rule["id"])


@pytest.fixture
def world(client: TestClient, tenant: Tenant) -> World:
    return build_world(client, tenant)


def snapshot(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: compare before/after a request."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with database.read() as conn:
        for table in metadata.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            result[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return result
