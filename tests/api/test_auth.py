"""Authentication through HTTP: every way a key can be wrong is a 401 envelope."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from signalscore.auth import service as auth_service
from signalscore.auth.keys import generate_key, hash_key
from signalscore.db.engine import Database
from signalscore.db.tables import api_keys
from tests.helpers import Tenant, assert_error

ROUTE = "/v1/organization"


def test_valid_key_reaches_an_authenticated_route(client: TestClient, tenant: Tenant) -> None:
    response = client.get(ROUTE, headers=tenant.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == tenant.org_id
    assert body["name"] == "Tenant A"
    assert body["createdAt"].endswith("Z")


def test_each_key_sees_only_its_own_organization(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    assert client.get(ROUTE, headers=tenant.headers).json()["id"] == tenant.org_id
    assert client.get(ROUTE, headers=other_tenant.headers).json()["id"] == other_tenant.org_id


@pytest.mark.parametrize(
    ("case", "headers", "error_code"),
    [
        ("no header", {}, "MISSING_API_KEY"),
        ("wrong scheme", {"Authorization": "Basic dXNlcjpwYXNz"}, "MISSING_API_KEY"),
        ("bare key without scheme", {"Authorization": generate_key()}, "MISSING_API_KEY"),
        ("empty bearer", {"Authorization": "Bearer "}, "MISSING_API_KEY"),
        ("malformed: short secret", {"Authorization": "Bearer sk_live_abc123"}, "INVALID_API_KEY"),
        (
            "malformed: wrong prefix",
            {"Authorization": "Bearer sk_test_" + "a" * 40},
            "INVALID_API_KEY",
        ),
        (
            "malformed: non-base62",
            {"Authorization": "Bearer sk_live_" + "a" * 39 + "!"},
            "INVALID_API_KEY",
        ),
        ("unknown key", {"Authorization": f"Bearer {generate_key()}"}, "INVALID_API_KEY"),
    ],
)
def test_bad_credentials_are_401(
    client: TestClient, tenant: Tenant, case: str, headers: dict[str, str], error_code: str
) -> None:
    response = client.get(ROUTE, headers=headers)
    error = assert_error(
        response, 401, "UNAUTHORIZED", type_="AUTHENTICATION", error_code=error_code
    )
    assert error["errorAction"] == "CHECK_CREDENTIALS"
    assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_401(client: TestClient, database: Database, tenant: Tenant) -> None:
    assert client.get(ROUTE, headers=tenant.headers).status_code == 200
    with database.write() as conn:
        [key_info] = auth_service.list_api_keys(conn, tenant.org_id)
        auth_service.revoke_api_key(conn, str(key_info.id))
    assert_error(client.get(ROUTE, headers=tenant.headers), 401, "UNAUTHORIZED")


def test_revoking_one_key_leaves_the_others_working(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    with database.write() as conn:
        second = auth_service.create_api_key(conn, tenant.org_id, "second")
        auth_service.revoke_api_key(conn, second.info.prefix)
    assert client.get(ROUTE, headers=tenant.headers).status_code == 200
    response = client.get(ROUTE, headers={"Authorization": f"Bearer {second.key}"})
    assert_error(response, 401, "UNAUTHORIZED")


def test_keys_are_stored_hashed(database: Database, tenant: Tenant) -> None:
    with database.read() as conn:
        rows = conn.execute(api_keys.select()).mappings().all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert tenant.key not in stored
    assert tenant.key[8:] not in stored  # not even the bare secret
    assert rows[0]["key_hash"] == hash_key(tenant.key)
    assert tenant.key.startswith(rows[0]["prefix"])
    assert len(rows[0]["prefix"]) < len(tenant.key) // 2
