"""Every non-2xx status that exists at this stage renders the SPEC §3 envelope."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy.exc
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from signalscore.app import create_app
from signalscore.config import Settings
from signalscore.db.engine import Database, create_db_engine
from signalscore.deps import CurrentOrgId
from tests.helpers import Tenant, assert_error


class _Deadlock(Exception):
    sqlstate = "40P01"


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1)
    count: int


class _Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[_Item] = Field(min_length=1, max_length=3)


def _add_probe_routes(app: FastAPI) -> None:
    """Routes that exist only in this test, to reach the framework's validation and the
    catch-all 500 handler before the feature routes that use them are built."""

    @app.post("/v1/_probe/batch")
    def probe_batch(batch: _Batch, org_id: CurrentOrgId) -> dict[str, int]:
        return {"items": len(batch.items)}

    @app.get("/v1/_probe/deadlock")
    def probe_deadlock(org_id: CurrentOrgId) -> None:
        raise sqlalchemy.exc.OperationalError("UPDATE ...", {}, _Deadlock())

    @app.get("/v1/_probe/boom")
    def probe_boom(org_id: CurrentOrgId) -> None:
        raise RuntimeError("secret internal detail: SELECT * FROM api_keys")


@pytest.fixture
def probe_client(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, database)
    _add_probe_routes(app)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_unknown_path_is_404(client: TestClient) -> None:
    error = assert_error(client.get("/v1/nowhere"), 404, "NOT_FOUND", type_="NOT_FOUND")
    assert error["fields"] == []


def test_wrong_method_is_405_with_allow_header(client: TestClient, tenant: Tenant) -> None:
    response = client.delete("/v1/organization", headers=tenant.headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED", type_="VALIDATION")
    assert "GET" in response.headers["allow"]


def test_unparseable_json_is_400(probe_client: TestClient, tenant: Tenant) -> None:
    response = probe_client.post(
        "/v1/_probe/batch",
        content=b'{"items": [',
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR", type_="VALIDATION", error_code="MALFORMED_JSON")


def test_validation_errors_list_every_bad_field(probe_client: TestClient, tenant: Tenant) -> None:
    body = {"items": [{"name": "ok", "count": 1}, {"name": "", "count": "x"}, {"nme": "a"}]}
    response = probe_client.post("/v1/_probe/batch", json=body, headers=tenant.headers)
    error = assert_error(response, 422, "VALIDATION_ERROR", type_="VALIDATION")
    assert sorted(f["field"] for f in error["fields"]) == sorted(
        ["items[1].name", "items[1].count", "items[2].name", "items[2].count", "items[2].nme"]
    )
    messages = {f["field"]: f["message"] for f in error["fields"]}
    assert messages["items[2].nme"] == "unknown field 'nme'"
    assert messages["items[2].name"] == "'name' is required"


def test_too_many_items_names_the_list(probe_client: TestClient, tenant: Tenant) -> None:
    body = {"items": [{"name": "a", "count": 1}] * 4}
    response = probe_client.post("/v1/_probe/batch", json=body, headers=tenant.headers)
    assert_error(response, 422, "VALIDATION_ERROR", error_code="TOO_MANY_ITEMS", fields=["items"])


def test_missing_body_is_422(probe_client: TestClient, tenant: Tenant) -> None:
    response = probe_client.post("/v1/_probe/batch", headers=tenant.headers)
    assert_error(response, 422, "VALIDATION_ERROR", error_code="MISSING_FIELD", fields=["body"])


def test_authentication_runs_before_body_validation_reveals_anything(
    probe_client: TestClient,
) -> None:
    # An anonymous caller learns nothing about the body's shape: 401, not 422.
    response = probe_client.post("/v1/_probe/batch", json={"items": []})
    assert_error(response, 401, "UNAUTHORIZED")


def test_unexpected_exception_is_500_without_internals(
    probe_client: TestClient, tenant: Tenant
) -> None:
    response = probe_client.get("/v1/_probe/boom", headers=tenant.headers)
    error = assert_error(response, 500, "INTERNAL_ERROR", type_="INTERNAL")
    assert "debug" not in error
    assert "secret" not in response.text
    assert "SELECT" not in response.text
    assert "RuntimeError" not in response.text


def test_debug_mode_adds_the_cause(database_url: str, database: Database, tenant: Tenant) -> None:
    app = create_app(
        Settings(database_url=database_url, debug=True, embedded_worker=False), database
    )
    _add_probe_routes(app)
    with TestClient(app, raise_server_exceptions=False) as debug_client:
        response = debug_client.get("/v1/_probe/boom", headers=tenant.headers)
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert error["debug"]["cause"].startswith("RuntimeError")


def test_body_over_5_mib_is_413(client: TestClient, tenant: Tenant) -> None:
    payload = b"[" + b"1," * (3 * 1024 * 1024) + b"1]"
    response = client.post(
        "/v1/organization",
        content=payload,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE", type_="VALIDATION")


def test_chunked_body_over_5_mib_is_413(probe_client: TestClient, tenant: Tenant) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"items": ["'
        for _ in range(6):
            yield b"x" * (1024 * 1024)
        yield b'"]}'

    response = probe_client.post(
        "/v1/_probe/batch",
        content=chunks(),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_database_unreachable_is_503_with_retry_after(sqlite_template_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    url = "postgresql://postgres@127.0.0.1:1/test"
    database = Database(create_db_engine(url, connect_timeout=2))
    app = create_app(
        Settings(database_url=url, db_connect_timeout=2, embedded_worker=False), database
    )
    with TestClient(app, raise_server_exceptions=False) as offline:
        response = offline.get(
            "/v1/organization", headers={"Authorization": "Bearer sk_live_" + "a" * 40}
        )
        error = assert_error(response, 503, "SERVICE_UNAVAILABLE", type_="UNAVAILABLE")
        assert error["errorAction"] == "RETRY"
        assert int(response.headers["retry-after"]) > 0
        assert "psycopg" not in response.text
        assert "127.0.0.1" not in response.text
        assert_error(offline.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
        assert offline.get("/healthz").status_code == 200


def test_readyz_is_503_when_schema_is_not_migrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    app = create_app(Settings(database_url=url, embedded_worker=False))
    with TestClient(app, raise_server_exceptions=False) as fresh:
        error = assert_error(fresh.get("/readyz"), 503, "SERVICE_UNAVAILABLE")
    assert error["errorCode"] == "SCHEMA_OUTDATED"


def test_readyz_and_healthz_when_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_request_id_is_reused_when_valid_and_logged(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    incoming = str(uuid.uuid4())
    with caplog.at_level(logging.INFO, logger="signalscore.access"):
        response = client.get("/healthz", headers={"X-Request-Id": incoming})
    assert response.headers["x-request-id"] == incoming
    assert any(
        getattr(record, "fields", {}).get("requestId") == incoming for record in caplog.records
    )


def test_invalid_incoming_request_id_is_replaced(client: TestClient) -> None:
    response = client.get("/nope", headers={"X-Request-Id": "not-a-uuid<script>"})
    error = assert_error(response, 404, "NOT_FOUND")
    assert error["requestId"] != "not-a-uuid<script>"


def test_openapi_documents_the_envelope_for_every_error_status(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert "ErrorEnvelope" in document["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    operations = [
        (path, method, op)
        for path, item in document["paths"].items()
        for method, op in item.items()
    ]
    assert operations
    for path, method, op in operations:
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (
                    path,
                    method,
                    status,
                )
        if path.startswith("/v1/"):
            assert {"401", "404", "422", "500", "503"} <= set(op["responses"]), (path, method)


def test_allow_header_lists_every_method_of_the_path(client: TestClient, tenant: Tenant) -> None:
    response = client.patch("/v1/scoring/profiles", headers=tenant.headers)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert response.headers["allow"] == "GET, HEAD, POST"


def test_unknown_query_parameters_are_checked_after_authentication(client: TestClient) -> None:
    response = client.get("/v1/signals/templates", params={"objectTyp": "company"})
    assert_error(response, 401, "UNAUTHORIZED")


def test_a_lost_race_is_a_retryable_503_not_an_outage(
    probe_client: TestClient, tenant: Tenant
) -> None:
    response = probe_client.get("/v1/_probe/deadlock", headers=tenant.headers)
    error = assert_error(response, 503, "SERVICE_UNAVAILABLE", error_code="TRANSIENT_CONFLICT")
    assert error["errorAction"] == "RETRY"
    assert response.headers["retry-after"] == "1"
    assert "UPDATE" not in response.text
