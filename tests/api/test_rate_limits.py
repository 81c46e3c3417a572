"""Rate limits per API key and per organisation: headers on every authenticated response
(describing the limit closest to exhaustion), a 429 envelope with Retry-After, reads and
writes counted apart, failed authentication limited per client address, no database write
and no key look-up per request, and one limit shared by several server processes
(PostgreSQL, merged every `rate_limit_sync_seconds`; Redis, exact)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.app import create_app
from signalscore.auth import service as auth_service
from signalscore.config import Settings
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.tables import api_keys, rate_limit_counters
from signalscore.ratelimit import RateLimiter, counter_row_id
from tests.helpers import Tenant, assert_error, make_tenant

PROFILE = {"profileType": "company", "name": "P"}
REDIS_URL = "redis://127.0.0.1:6379/0"


def limited_client(
    database_url: str,
    database: Database,
    *,
    writes: int = 2_000,
    reads: int = 100_000,
    address: str | None = None,
    **settings: Any,
) -> TestClient:
    """A client of its own application (as a server process of its own would be), from a
    client address of its own (random unless given)."""
    config = Settings(
        database_url=database_url,
        embedded_worker=False,
        rate_limit_writes_per_minute=writes,
        rate_limit_reads_per_minute=reads,
        **settings,
    )
    address = address or f"2001:db8::{secrets.token_hex(2)}"
    return TestClient(
        create_app(config, database), raise_server_exceptions=False, client=(address, 50000)
    )


def limiter_of(client: TestClient) -> RateLimiter:
    limiter: RateLimiter = client.app.state.rate_limiter  # type: ignore[attr-defined]
    return limiter


def redis_or_skip() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis at {REDIS_URL} is unreachable ({type(exc).__name__})")


@pytest.fixture
def limited(database_url: str, database: Database) -> Iterator[TestClient]:
    with limited_client(database_url, database, writes=3, reads=5) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_headers_count_down_and_the_429_envelope(limited: TestClient, tenant: Tenant) -> None:
    remaining = []
    for _ in range(3):
        response = limited.post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE)
        assert response.status_code == 201
        assert response.headers["x-ratelimit-limit"] == "3"
        assert 1 <= int(response.headers["x-ratelimit-reset"]) <= 60
        remaining.append(int(response.headers["x-ratelimit-remaining"]))
    assert remaining == [2, 1, 0]
    blocked = limited.post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE)
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


def test_a_second_key_shares_the_organisation_budget(
    limited: TestClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    # Until issue 11 each key had its own budget, so a second key doubled the organisation's.
    # The organisation limit defaults to the per-key one (3 writes here).
    with database.write() as conn:
        second = auth_service.create_api_key(conn, tenant.org_id)
    for _ in range(3):
        assert (
            limited.post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE).status_code
            == 201
        )
    other = limited.post("/v1/scoring/profiles", headers=bearer(second.key), json=PROFILE)
    error = assert_error(other, 429, "TOO_MANY_REQUESTS", error_code="RATE_LIMITED")
    assert error["details"] == {"limit": 3, "kind": "write", "scope": "organization"}
    assert other.headers["x-ratelimit-remaining"] == "0"
    assert "organization" in error["message"]
    # Another organisation is untouched, and reads are a budget of their own.
    assert (
        limited.post("/v1/scoring/profiles", headers=other_tenant.headers, json=PROFILE).headers[
            "x-ratelimit-remaining"
        ]
        == "2"
    )
    assert limited.get("/v1/scoring/profiles", headers=bearer(second.key)).status_code == 200


def test_headers_describe_the_limit_closest_to_exhaustion(
    database_url: str, database: Database, tenant: Tenant
) -> None:
    with database.write() as conn:
        second = auth_service.create_api_key(conn, tenant.org_id)
    with limited_client(
        database_url, database, writes=5, rate_limit_org_writes_per_minute=6
    ) as client:

        def write(key: str) -> tuple[int, str, str]:
            response = client.post("/v1/scoring/profiles", headers=bearer(key), json=PROFILE)
            return (
                response.status_code,
                response.headers["x-ratelimit-limit"],
                response.headers["x-ratelimit-remaining"],
            )

        # Key 1 alone: its own limit (5) is the nearer one.
        assert [write(tenant.key) for _ in range(4)] == [
            (201, "5", "4"),
            (201, "5", "3"),
            (201, "5", "2"),
            (201, "5", "1"),
        ]
        # Key 2 is fresh (4 left of 5), but the organisation has 1 left of 6, then none.
        assert write(second.key) == (201, "6", "1")
        assert write(second.key) == (201, "6", "0")
        assert write(second.key) == (429, "6", "0")


def test_zero_disables_limiting(database_url: str, database: Database, tenant: Tenant) -> None:
    with limited_client(database_url, database, writes=0, reads=0) as client:
        response = client.get("/v1/scoring/profiles", headers=tenant.headers)
    assert response.status_code == 200
    assert "x-ratelimit-limit" not in response.headers


def test_failed_authentication_is_limited_per_client_address(
    database_url: str, database: Database, tenant: Tenant
) -> None:
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    wrong = bearer("sk_live_" + "x" * 40)
    with (
        limited_client(
            database_url, database, rate_limit_auth_failures_per_minute=3, address="192.0.2.7"
        ) as attacker,
        limited_client(database_url, database, address="192.0.2.8") as neighbour,
    ):
        # The two clients are two applications (processes); give the neighbour the
        # attacker's limiter, so the test shows the count is per address, not per process.
        neighbour.app.state.rate_limiter = attacker.app.state.rate_limiter  # type: ignore[attr-defined]
        assert [attacker.get("/v1/organization", headers=wrong).status_code for _ in range(2)] == [
            401,
            401,
        ]
        assert attacker.get("/v1/organization").status_code == 401  # missing keys count too
        sa.event.listen(database.engine, "before_cursor_execute", record)
        try:
            refused = attacker.get("/v1/organization", headers=wrong)
            # Past the limit, a valid key from that address is refused as well, unread.
            valid = attacker.get("/v1/organization", headers=tenant.headers)
        finally:
            sa.event.remove(database.engine, "before_cursor_execute", record)
        assert statements == [], "a refused attempt must not reach the database"
        error = assert_error(refused, 429, "TOO_MANY_REQUESTS", error_code="RATE_LIMITED")
        assert error["details"] == {"limit": 3, "kind": "authentication", "scope": "address"}
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "x-ratelimit-limit" not in refused.headers
        assert_error(valid, 429, "TOO_MANY_REQUESTS")
        # Another address is not affected.
        assert_error(neighbour.get("/v1/organization", headers=wrong), 401, "UNAUTHORIZED")
        assert neighbour.get("/v1/organization", headers=tenant.headers).status_code == 200


def test_failed_authentication_limit_ends_with_the_window(
    database_url: str, database: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000_000 * 60 + 30.0]  # the middle of a window
    with limited_client(
        database_url, database, rate_limit_auth_failures_per_minute=1, address="192.0.2.9"
    ) as client:
        monkeypatch.setattr(limiter_of(client), "_clock", lambda: now[0])
        wrong = bearer("sk_live_" + "y" * 40)
        assert client.get("/v1/organization", headers=wrong).status_code == 401
        refused = client.get("/v1/organization", headers=tenant.headers)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "30"
        now[0] += 30
        assert client.get("/v1/organization", headers=tenant.headers).status_code == 200


def test_no_database_write_and_one_key_look_up_for_many_requests(
    backend: str, database_url: str, database: Database, tenant: Tenant
) -> None:
    # Before issue 11 every request looked its key up in a transaction of its own and, on
    # PostgreSQL, committed an upsert of its counter row. Now the key is cached and the
    # counters are merged in the background (here: not at all until `sync()`).
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).upper())

    client = limited_client(database_url, database, rate_limit_sync_seconds=60)
    with client:
        sa.event.listen(database.engine, "before_cursor_execute", record)
        try:
            for _ in range(20):
                assert client.get("/v1/organization", headers=tenant.headers).status_code == 200
        finally:
            sa.event.remove(database.engine, "before_cursor_execute", record)
        writes = [s for s in statements if s.startswith(("INSERT", "UPDATE", "DELETE"))]
        assert writes == []
        assert len([s for s in statements if "FROM API_KEYS" in s]) == 1

        with database.read() as conn:
            [key_id] = conn.execute(sa.select(api_keys.c.id)).scalars()
        rows = {  # this test's counter rows (other tests' merges may add theirs meanwhile)
            counter_row_id(("key", str(key_id), "read"))[0]: "key",
            counter_row_id(("org", tenant.org_id, "read"))[0]: "org",
        }

        def counts() -> list[tuple[str, str, int]]:
            table = rate_limit_counters
            with database.read() as conn:
                found = conn.execute(
                    sa.select(table.c.api_key_id, table.c.kind, table.c.count).where(
                        table.c.api_key_id.in_(list(rows))
                    )
                )
                return sorted((rows[row_id], kind, count) for row_id, kind, count in found)

        assert counts() == []
        if backend == "postgresql":
            limiter_of(client).sync()  # what the background merge does every second
            assert counts() == [("key", "read", 20), ("org", "read", 20)]
        limiter_of(client).close()


def test_key_cache_a_key_revoked_elsewhere_stops_working_within_the_ttl(
    database_url: str, database: Database, tenant: Tenant
) -> None:
    with database.write() as conn:
        second = auth_service.create_api_key(conn, tenant.org_id)
    with limited_client(database_url, database, auth_cache_seconds=1.0) as client:
        for key in (tenant.key, second.key):
            assert client.get("/v1/organization", headers=bearer(key)).status_code == 200
        cached_at = time.monotonic()
        # Revoked in this process (the service drops it from every cache here): at once.
        with database.write() as conn:
            auth_service.revoke_api_key(conn, str(second.info.id))
        assert_error(
            client.get("/v1/organization", headers=bearer(second.key)), 401, "UNAUTHORIZED"
        )
        # Revoked by another process (`signalscore key revoke`, another server): a plain
        # UPDATE this process hears nothing about. Still served from the cache...
        with database.write() as conn:
            conn.execute(sa.update(api_keys).values(revoked_at=sa.func.now()))
        assert client.get("/v1/organization", headers=tenant.headers).status_code == 200
        # ... until its entry expires.
        while time.monotonic() - cached_at < 1.0:
            time.sleep(0.05)
        response = client.get("/v1/organization", headers=tenant.headers)
        assert_error(response, 401, "UNAUTHORIZED", error_code="INVALID_API_KEY")


def test_one_limit_across_processes_sharing_postgresql(
    backend: str, database_url: str, tenant: Tenant
) -> None:
    if backend != "postgresql":
        pytest.skip("the embedded (SQLite) mode runs one server process; counters are local")
    # Two applications with their own engines and pools, as two server processes have:
    # the only thing they share is the database. No merge runs by itself here (60 s);
    # the test merges by hand where the background thread would.
    databases = [Database(create_db_engine(database_url)) for _ in range(2)]
    clients = [
        limited_client(database_url, db, writes=4, rate_limit_sync_seconds=60) for db in databases
    ]
    limiters = [limiter_of(client) for client in clients]

    def merge_all() -> None:
        # Every process pushes its counts; then every process reads the others' (a
        # background merge does both each second).
        for limiter in (*limiters, *limiters):
            limiter.sync()

    try:
        statuses = []
        for i in range(6):
            statuses.append(
                clients[i % 2]
                .post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE)
                .status_code
            )
            merge_all()
        # Merged after every request, the two processes enforce the limit exactly.
        assert statuses == [201, 201, 201, 201, 429, 429]

        # The accuracy given up: what the other process admitted since the last merge is
        # not seen yet (at most one sync interval of its traffic). A fresh organisation:
        other = make_tenant(databases[0], "Other")

        def write(client: TestClient) -> int:
            return client.post(
                "/v1/scoring/profiles", headers=other.headers, json=PROFILE
            ).status_code

        assert [write(clients[0]) for _ in range(4)] == [201] * 4
        assert write(clients[1]) == 201  # not merged yet: one over the limit
        merge_all()
        assert [write(client) for client in clients] == [429, 429]
    finally:
        for limiter in limiters:
            limiter.close()
        for db in databases:
            db.dispose()


def test_one_exact_limit_across_processes_sharing_redis(
    database_url: str, database: Database, tenant: Tenant
) -> None:
    redis_or_skip()
    clients = [
        limited_client(
            database_url,
            database,
            writes=4,
            rate_limit_backend="redis",
            redis_url=REDIS_URL,
        )
        for _ in range(2)
    ]
    statuses = [
        clients[i % 2]
        .post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE)
        .status_code
        for i in range(6)
    ]
    assert statuses == [201, 201, 201, 201, 429, 429]


def test_redis_failed_authentication_counts_are_shared(
    database_url: str, database: Database, tenant: Tenant
) -> None:
    redis_or_skip()
    address = f"2001:db8::{secrets.token_hex(4)}"
    clients = [
        limited_client(
            database_url,
            database,
            rate_limit_backend="redis",
            redis_url=REDIS_URL,
            rate_limit_auth_failures_per_minute=2,
            address=address,
        )
        for _ in range(2)
    ]
    wrong = bearer("sk_live_" + "z" * 40)
    assert clients[0].get("/v1/organization", headers=wrong).status_code == 401
    assert clients[1].get("/v1/organization", headers=wrong).status_code == 401
    # The third failure, in either process, is over the shared limit.
    assert_error(clients[0].get("/v1/organization", headers=wrong), 429, "TOO_MANY_REQUESTS")
    assert clients[0].get("/v1/organization", headers=tenant.headers).status_code == 429


def test_requests_do_not_fail_when_redis_is_down(
    database_url: str, database: Database, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="signalscore.ratelimit"),
        limited_client(
            database_url,
            database,
            writes=2,
            rate_limit_backend="redis",
            redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        ) as client,
    ):
        statuses = [
            client.post("/v1/scoring/profiles", headers=tenant.headers, json=PROFILE).status_code
            for _ in range(3)
        ]
    # Counted in the process meanwhile: the limit still holds.
    assert statuses == [201, 201, 429]
    assert any("Redis failed" in r.getMessage() for r in caplog.records)
