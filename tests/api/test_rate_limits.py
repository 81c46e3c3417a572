"""Rate limits per API key: headers on every authenticated response, a 429 envelope with
Retry-After, reads and writes counted apart, and (PostgreSQL) one limit shared by several
server processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from signalscore.app import create_app
from signalscore.auth import service as auth_service
from signalscore.config import Settings
from signalscore.db.engine import Database, create_db_engine
from tests.helpers import Tenant, assert_error

WRITE = ("POST", "/v1/scoring/profiles", {"profileType": "company", "name": "P"})


def limited_client(
    database_url: str, database: Database, *, writes: int = 2_000, reads: int = 100_000
) -> TestClient:
    settings = Settings(
        database_url=database_url,
        embedded_worker=False,
        rate_limit_writes_per_minute=writes,
        rate_limit_reads_per_minute=reads,
    )
    return TestClient(create_app(settings, database), raise_server_exceptions=False)


@pytest.fixture
def limited(database_url: str, database: Database) -> Iterator[TestClient]:
    with limited_client(
        database_url,
        database,
        writes=3,
        reads=5,
    ) as client:
        yield client


def test_headers_count_down_and_the_429_envelope(limited: TestClient, tenant: Tenant) -> None:
    remaining = []
    for _ in range(3):
        response = limited.post(
            "/v1/scoring/profiles",
            headers=tenant.headers,
            json={"profileType": "company", "name": "P"},
        )
        assert response.status_code == 201
        assert response.headers["x-ratelimit-limit"] == "3"
        assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 60
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    blocked = limited.post(
        "/v1/scoring/profiles", headers=tenant.headers, json={"profileType": "company", "name": "P"}
    )
    error = assert_error(
        blocked, 429, "TOO_MANY_REQUESTS", type_="RATE_LIMIT", error_code="RATE_LIMITED"
    )
    assert error["errorAction"] == "RETRY"
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert blocked.headers["x-ratelimit-remaining"] == "0"
    # Nothing was created by the refused request.
    listed = limited.get("/v1/scoring/profiles", headers=tenant.headers)
    assert len(listed.json()) == 3
    # Reads have their own budget.
    assert listed.headers["x-ratelimit-limit"] == "5"
    assert listed.headers["x-ratelimit-remaining"] == "4"


def test_errors_after_authentication_carry_the_headers_too(
    limited: TestClient, tenant: Tenant
) -> None:
    response = limited.get("/v1/scoring/profiles/not-a-uuid", headers=tenant.headers)
    assert_error(response, 404, "NOT_FOUND")
    assert response.headers["x-ratelimit-remaining"] == "4"


def test_limits_are_per_key(limited: TestClient, tenant: Tenant, database: Database) -> None:
    with database.write() as conn:
        second = auth_service.create_api_key(conn, tenant.org_id)
    for _ in range(3):
        limited.post(
            "/v1/scoring/profiles",
            headers=tenant.headers,
            json={"profileType": "company", "name": "P"},
        )
    other = limited.post(
        "/v1/scoring/profiles",
        headers={"Authorization": f"Bearer {second.key}"},
        json={"profileType": "company", "name": "P"},
    )
    assert other.status_code == 201
    assert other.headers["x-ratelimit-remaining"] == "2"


def test_zero_disables_limiting(database_url: str, database: Database, tenant: Tenant) -> None:
    with limited_client(database_url, database, writes=0, reads=0) as client:
        response = client.get("/v1/scoring/profiles", headers=tenant.headers)
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers


def test_one_limit_across_processes_sharing_postgresql(
    backend: str, database_url: str, tenant: Tenant
) -> None:
    if backend != "postgresql":
        pytest.skip("the embedded (SQLite) mode runs one server process; counters are local")
    # Two applications with their own engines and pools, as two server processes have:
    # the only thing they share is the database.
    databases = [Database(create_db_engine(database_url)) for _ in range(2)]
    clients = [limited_client(database_url, db, writes=4) for db in databases]
    statuses = []
    for i in range(6):
        client = clients[i % 2]
        statuses.append(
            client.post(
                "/v1/scoring/profiles",
                headers=tenant.headers,
                json={"profileType": "company", "name": "P"},
            ).status_code
        )
    assert statuses == [201, 201, 201, 201, 429, 429]
    for db in databases:
        db.dispose()
