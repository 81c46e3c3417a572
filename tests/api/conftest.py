"""A small configured organisation for the API tests, and a snapshot helper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import metadata
from signalscore.profiles import service as profiles
from signalscore.profiles.schemas import ProfileCreate
from signalscore.rules import service as rules
from signalscore.rules.schemas import RuleUpsert
from signalscore.signals import service as signals
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
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
    """Built with the service layer in one transaction (the HTTP paths that create these are
    tested on their own); ~20x faster than a dozen requests per test."""
    database: Database = client.app.state.database  # type: ignore[attr-defined]
    org_id = tenant.org_id
    with database.write(org=org_id, structure=True) as conn:
        for template_id, object_type, answer_type in TEMPLATES:
            signals.create_template(
                conn,
                org_id,
                TemplateCreate(
                    id=template_id,
                    name=template_id.title(),
                    objectType=object_type,
                    answerType=answer_type,
                ),
            )
        profile = profiles.create_profile(
            conn, org_id, ProfileCreate(profileType="company", name="ICP")
        )
        contact_profile = profiles.create_profile(
            conn, org_id, ProfileCreate(profileType="contact", name="Buyers")
        )
        rule = rules.upsert_rule(
            conn,
            org_id,
            profile.id,
            RuleUpsert(
                signalTemplateId="employees",
                dimension="fit",
                answerType="number",
                pointValues={"ranges": [{"min": 0, "max": 100, "points": 5}]},
            ),
        )
        signals.write_values(
            conn,
            org_id,
            [
                SignalValueIn(
                    objectType="company",
                    objectId="acme.com",
                    signalTemplateId="employees",
                    value=50,
                ),
                SignalValueIn(
                    objectType="company",
                    objectId="acme.com",
                    signalTemplateId="crm",
                    value=["HubSpot"],
                ),
            ],
        )
    return World(client, tenant, str(profile.id), str(contact_profile.id), str(rule.id))


@pytest.fixture
def world(client: TestClient, tenant: Tenant) -> World:
    return build_world(client, tenant)


def snapshot(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: compare before/after a request."""
    result: dict[str, list[tuple[Any, ...]]] = {}
    with database.read() as conn:
        for table in metadata.sorted_tables:
            if table.name == "rate_limit_counters":  # counts every request by design
                continue
            rows = conn.execute(sa.select(table)).all()
            result[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return result


def score_through_pipeline(
    world: World,
    database: Database,
    profile_id: str,
    rule: dict[str, Any],
    values: dict[str, Any],
    objects: list[str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Through the API: the rule on the profile, each object's value of the rule's template,
    the objects (`values`' keys, or `objects`) assigned in bulk; then the workers run until
    the queue is empty. Returns the objects' fit rows by objectId, as GET /scores reads them."""
    from tests.helpers import drain, fan_out

    put = world.call("PUT", f"/v1/scoring/profiles/{profile_id}/rules", json=rule)
    assert put.status_code == 200, put.text
    template = rule["signalTemplateId"]
    items = [
        {"objectType": "company", "objectId": o, "signalTemplateId": template, "value": v}
        for o, v in values.items()
    ]
    assert world.call("PUT", "/v1/signals/values", json={"values": items}).status_code == 200
    objects = list(values) if objects is None else objects
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": profile_id, "objectType": "company", "objectIds": objects},
    )
    assert bulk.status_code == 201, bulk.text
    fan_out(database)
    drain(database)
    return fit_rows(world, profile_id, objects)


def fit_rows(world: World, profile_id: str, objects: list[str]) -> dict[str, dict[str, Any]]:
    """The objects' rows in the profile's fit dimension, by objectId (GET /scores)."""
    params = [("objectType", "company"), ("profileId", profile_id)]
    rows = world.call(
        "GET", "/v1/scoring/scores", params=[*params, *[("objectId", o) for o in objects]]
    ).json()
    return {row["objectId"]: row for row in rows if row["dimension"] == "fit"}
