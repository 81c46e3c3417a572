"""Tenant isolation generated from the application's route table (its OpenAPI document):
every /v1 route and method, called with organisation B's key on organisation A's resources,
answers 404 or an empty result and changes nothing of A's. A route added later without an
entry in CALLS fails `test_every_route_is_covered`, so none can skip this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from tests.api.conftest import World
from tests.api.test_isolation_config import org_snapshot
from tests.helpers import Tenant, drain

# What B may legitimately get: "404" (A's resource does not exist for B), "empty" (a read by
# object or a listing: []), "empty page" (a paginated read: no item), "own" (the call acts
# on B's own organisation only).
Expect = str
Body = Callable[[World], Any]

A_OBJECT = {"objectType": "company", "objectId": "acme.com"}
# A public address (TEST-NET documentation ranges are reserved, so a real public one): no
# delivery is attempted in this test.
HOOK = "https://93.184.216.34/hook"


class Raw:
    """A body that is not JSON: a bulk import's NDJSON or CSV."""

    def __init__(self, content_type: str, content: str) -> None:
        self.content_type = content_type
        self.content = content.encode()


def _rule(world: World) -> dict[str, Any]:
    return {
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "pointValues": {"ranges": [{"min": 0, "points": 1}]},
    }


CALLS: dict[tuple[str, str], tuple[Expect, Body | None, dict[str, Any] | None]] = {
    ("GET", "/v1/organization"): ("own", None, None),
    ("GET", "/v1/events"): ("empty page", None, {"after": 0}),
    ("GET", "/v1/webhooks"): ("empty", None, None),
    ("POST", "/v1/webhooks"): (
        "own",
        lambda w: {"url": HOOK, "eventTypes": ["score.changed"]},
        None,
    ),
    ("GET", "/v1/webhooks/{webhook_id}"): ("404", None, None),
    ("PATCH", "/v1/webhooks/{webhook_id}"): ("404", lambda w: {"enabled": False}, None),
    ("DELETE", "/v1/webhooks/{webhook_id}"): ("404", None, None),
    ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"): ("404", None, None),
    ("POST", "/v1/webhooks/{webhook_id}/test"): ("404", None, None),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): ("404", None, None),
    ("GET", "/v1/scoring/history"): ("empty page", None, A_OBJECT),
    ("GET", "/v1/scoring/profiles"): ("empty", None, None),
    ("POST", "/v1/scoring/profiles"): (
        "own",
        lambda w: {"profileType": "company", "name": "B's"},
        None,
    ),
    ("GET", "/v1/scoring/profiles/{profile_id}"): ("404", None, None),
    ("PUT", "/v1/scoring/profiles/{profile_id}"): (
        "404",
        lambda w: {"name": "taken", "tiers": {"fit": [{"name": "A", "minScore": 0}]}},
        None,
    ),
    ("GET", "/v1/scoring/profiles/{profile_id}/scores"): ("404", None, {"dimension": "fit"}),
    ("GET", "/v1/scoring/profiles/{profile_id}/distribution"): (
        "404",
        None,
        {"dimension": "fit"},
    ),
    ("POST", "/v1/scoring/profiles/{profile_id}/preview"): (
        "404",
        lambda w: {"rules": [_rule(w)], "tiers": {"fit": [{"name": "A", "minScore": 0}]}},
        None,
    ),
    ("DELETE", "/v1/scoring/profiles/{profile_id}"): ("404", None, None),
    ("GET", "/v1/scoring/profiles/{profile_id}/rules"): ("404", None, None),
    ("PUT", "/v1/scoring/profiles/{profile_id}/rules"): ("404", _rule, None),
    ("DELETE", "/v1/scoring/profiles/{profile_id}/rules/{rule_id}"): ("404", None, None),
    ("GET", "/v1/scoring/assignments"): ("empty", None, A_OBJECT),
    ("POST", "/v1/scoring/assignments/import"): (
        "404",
        lambda w: Raw("text/csv", "objectId\nacme.com\nb.com\n"),
        None,  # the profile id goes in the query: set per call below
    ),
    ("POST", "/v1/scoring/assignments"): (
        "404",
        lambda w: {"profileId": w.profile_id, **A_OBJECT},
        None,
    ),
    ("POST", "/v1/scoring/assignments/bulk"): (
        "404",
        lambda w: {"profileId": w.profile_id, "objectType": "company", "objectIds": ["acme.com"]},
        None,
    ),
    ("DELETE", "/v1/scoring/assignments/{assignment_id}"): ("404", None, None),
    ("GET", "/v1/scoring/scores"): ("empty", None, A_OBJECT),
    ("POST", "/v1/scoring/compute"): (
        "own",
        lambda w: {"objectType": "company", "objectIds": ["acme.com"]},
        None,
    ),
    ("GET", "/v1/scoring/compute/status"): ("own", None, None),
    ("GET", "/v1/signals/templates"): ("empty", None, None),
    ("POST", "/v1/signals/templates"): (
        "own",
        lambda w: {
            "id": "employees",
            "name": "B's",
            "objectType": "company",
            "answerType": "number",
        },
        None,
    ),
    ("GET", "/v1/signals/templates/{template_id}"): ("404", None, None),
    ("PATCH", "/v1/signals/templates/{template_id}"): ("404", lambda w: {"name": "x"}, None),
    ("DELETE", "/v1/signals/templates/{template_id}"): ("404", None, None),
    ("PUT", "/v1/signals/values"): (
        # B created its own "employees" template above: the write lands there, not in A.
        "own",
        lambda w: {"values": [{**A_OBJECT, "signalTemplateId": "employees", "value": 1}]},
        None,
    ),
    ("GET", "/v1/signals/values"): ("empty", None, A_OBJECT),
    ("POST", "/v1/signals/values/import"): (
        # Like PUT /values: lands in B's own "employees" template.
        "own",
        lambda w: Raw(
            "application/x-ndjson",
            '{"objectType": "company", "objectId": "acme.com", '
            '"signalTemplateId": "employees", "value": 7}\n',
        ),
        None,
    ),
}


def v1_operations(client: TestClient) -> list[tuple[str, str]]:
    paths = client.get("/openapi.json").json()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/")
        for method in operations
    )


def test_every_route_is_covered(client: TestClient) -> None:
    assert set(v1_operations(client)) == set(CALLS)


@pytest.fixture
def a_world(world: World, database: Database) -> World:
    """A with a template, profiles, a rule, values, an assignment and computed scores."""
    assignment = world.call(
        "POST", "/v1/scoring/assignments", json={"profileId": world.profile_id, **A_OBJECT}
    )
    assert assignment.status_code == 201
    world.assignment_id = assignment.json()["id"]  # type: ignore[attr-defined]
    world.call(
        "POST",
        "/v1/scoring/compute",
        json={"objectType": "company", "objectIds": ["acme.com", "b.com"]},
    )
    drain(database)
    world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["pending.com"]}
    )
    hook = world.call("POST", "/v1/webhooks", json={"url": HOOK, "eventTypes": ["score.changed"]})
    assert hook.status_code == 201, hook.text
    world.webhook_id = hook.json()["id"]  # type: ignore[attr-defined]
    # A's events and history exist: B must not see them.
    assert world.call("GET", "/v1/events").json()["data"]
    assert world.call("GET", "/v1/scoring/history", params=A_OBJECT).json()["data"]
    return world


def test_other_organization_cannot_reach_any_route(
    a_world: World, other_tenant: Tenant, client: TestClient, database: Database
) -> None:
    ids = {
        "profile_id": a_world.profile_id,
        "rule_id": a_world.rule_id,
        "assignment_id": a_world.assignment_id,  # type: ignore[attr-defined]
        "template_id": "crm",
        "webhook_id": a_world.webhook_id,  # type: ignore[attr-defined]
    }
    checked = 0
    for method, template in v1_operations(client):
        expect, body, params = CALLS[(method, template)]
        before = org_snapshot(database, a_world.tenant.org_id)
        payload = body(a_world) if body else None
        if template.endswith("/assignments/import"):
            params = {"profileId": a_world.profile_id}
        if isinstance(payload, Raw):
            response = client.request(
                method,
                template.format(**ids),
                headers={**other_tenant.headers, "content-type": payload.content_type},
                content=payload.content,
                params=params,
            )
        else:
            response = client.request(
                method,
                template.format(**ids),
                headers=other_tenant.headers,
                json=payload,
                params=params,
            )
        where = f"{method} {template}: {response.status_code} {response.text[:200]}"
        if expect == "404":
            assert response.status_code == 404, where
        elif expect == "empty":
            assert response.status_code == 200, where
            assert response.json() == [], where
        elif expect == "empty page":
            assert response.status_code == 200, where
            assert response.json()["data"] == [], where
        else:
            assert response.status_code < 300, where
            assert a_world.tenant.org_id not in response.text, where
        assert org_snapshot(database, a_world.tenant.org_id) == before, where
        checked += 1
    assert checked == len(CALLS)
