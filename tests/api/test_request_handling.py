"""How requests are read and answered, beyond the fields: the key before the body, the body off
the event loop, HEAD, redirects, logs and error lists (issue: hostile input)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from signalscore import body as body_module
from signalscore.app import create_app
from signalscore.config import Settings
from signalscore.db.engine import Database
from signalscore.db.tables import organizations
from signalscore.deps import CurrentOrgId
from tests.api.conftest import World, snapshot
from tests.helpers import Tenant, assert_error

PROFILE = {"profileType": "company", "name": "P"}


def _asgi_call(app: FastAPI, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, int]:
    """(status, how many times the app asked for the body) of one POST, at the ASGI level."""
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/scoring/profiles",
        "raw_path": b"/v1/scoring/profiles",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return statuses[0], asked


def test_an_anonymous_body_is_never_read(settings: Settings, database: Database) -> None:
    app = create_app(settings, database)
    big = b'{"name": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    assert _asgi_call(app, [], big) == (401, 0)
    assert _asgi_call(app, [(b"authorization", b"Bearer sk_live_nope")], big) == (401, 0)


def test_an_authenticated_body_is_read(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    app = create_app(settings, database)
    headers = [(b"authorization", f"Bearer {tenant.key}".encode())]
    status, asked = _asgi_call(app, headers, b'{"profileType": "company", "name": "P"}')
    assert (status, asked) == (201, 1)


@pytest.fixture
def shared_client(settings: Settings, database: Database) -> Iterator[TestClient]:
    """One client (one event loop) that several threads send through at once."""
    with TestClient(create_app(settings, database)) as client:
        yield client


def test_a_body_being_checked_does_not_hold_up_other_requests(
    shared_client: TestClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered = threading.Event()
    release = threading.Event()
    original = body_module.checked_body

    def slow_checked_body(raw: bytes, model: Any) -> Any:
        entered.set()
        assert release.wait(10), "never released"
        return original(raw, model)

    monkeypatch.setattr(body_module, "checked_body", slow_checked_body)
    answers: list[int] = []
    writer = threading.Thread(
        target=lambda: answers.append(
            shared_client.post(
                "/v1/scoring/profiles", json=PROFILE, headers=tenant.headers
            ).status_code
        )
    )
    writer.start()
    try:
        assert entered.wait(10)
        # The body check is parked in a worker thread; the event loop must still answer.
        health: list[int] = []
        reader = threading.Thread(
            target=lambda: health.append(shared_client.get("/healthz").status_code)
        )
        reader.start()
        reader.join(5)
        assert health == [200], "the event loop was blocked by a body being checked"
    finally:
        release.set()
        writer.join(10)
    assert answers == [201]


def test_every_bad_value_item_is_listed_in_one_answer(world: World, database: Database) -> None:
    before = snapshot(database)
    response = world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "acme.com",
                    "signalTemplateId": "growth",
                    "value": 140,
                },
                {
                    "objectType": "company",
                    "objectId": "https://acme.com",
                    "signalTemplateId": "growth",
                    "value": 5,
                },
                {
                    "objectType": "company",
                    "objectId": "b.com",
                    "signalTemplateId": "nope",
                    "value": 5,
                },
                {"objectType": "company", "objectId": "c.com", "value": 5},
            ]
        },
    )
    error = assert_error(
        response,
        422,
        "VALIDATION_ERROR",
        error_code="PERCENTAGE_OUT_OF_RANGE",
        fields=[
            "values[0].value",
            "values[1].objectId",
            "values[2].signalTemplateId",
            "values[3].signalTemplateId",
        ],
    )
    assert [f["code"] for f in error["fields"]] == [
        "PERCENTAGE_OUT_OF_RANGE",
        "INVALID_DOMAIN",
        "TEMPLATE_NOT_FOUND",
        "MISSING_FIELD",
    ]
    assert snapshot(database) == before


@pytest.mark.parametrize(
    "path",
    [
        "/v1/scoring/profiles",
        "/v1/organization",
        "/v1/signals/values?objectType=company&objectId=acme.com",
        "/healthz",
    ],
)
def test_head_answers_like_get_without_a_body(world: World, path: str) -> None:
    get = world.call("GET", path)
    head = world.call("HEAD", path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_head_on_a_path_without_get_is_405(world: World) -> None:
    response = world.call("HEAD", "/v1/scoring/compute")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.content == b""


def test_head_on_an_unknown_path_is_404(world: World) -> None:
    assert world.call("HEAD", "/v1/nowhere").status_code == 404


def test_a_trailing_slash_never_redirects_to_the_callers_host(world: World) -> None:
    response = world.call(
        "GET",
        "/v1/scoring/profiles/",
        headers={"Host": "evil.example"},
        follow_redirects=False,
    )
    assert "location" not in response.headers
    assert_error(response, 404, "NOT_FOUND")


SECRET = "tenant-secret-4f1c9e"


def test_error_logs_carry_no_sql_parameters(
    settings: Settings, database: Database, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings, database)

    @app.post("/v1/_probe/leak")
    def leak(org_id: CurrentOrgId) -> None:
        # A naive datetime fails in the column's bind processor: a StatementError whose
        # parameters hold tenant data, on both backends.
        with database.write() as conn:
            conn.execute(
                organizations.insert().values(id="f" * 24, name=SECRET, created_at=datetime.now())
            )

    with (
        caplog.at_level(logging.ERROR, logger="signalscore.error"),
        TestClient(app, raise_server_exceptions=False) as client,
    ):
        response = client.post("/v1/_probe/leak", headers=tenant.headers)
    assert_error(response, 500, "INTERNAL_ERROR")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "INSERT INTO organizations" in logged  # the statement is there...
    assert SECRET not in logged  # ...its values are not
    assert SECRET not in response.text


def test_the_renderer_survives_text_no_encoder_accepts(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    from signalscore.errors import Invalid

    app = create_app(settings, database)

    @app.get("/v1/_probe/surrogate")
    def surrogate(org_id: CurrentOrgId) -> None:
        raise Invalid.one(
            "bad\ud800", "BAD\ud800", "message \udfff", details={"k\ud800": ["\ud800"]}
        )

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/v1/_probe/surrogate", headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "bad\ufffd"


def test_integrity_errors_never_leak_their_detail(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    app = create_app(settings, database)

    @app.post("/v1/_probe/duplicate")
    def duplicate(org_id: CurrentOrgId) -> None:
        with database.write() as conn:
            for _ in range(2):
                conn.execute(
                    organizations.insert().values(
                        id="e" * 24, name=SECRET, created_at=datetime.now().astimezone()
                    )
                )

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/v1/_probe/duplicate", headers=tenant.headers)
    error = assert_error(response, 409, "CONFLICT")
    assert SECRET not in response.text
    assert "organizations" not in response.text
    assert error["errorAction"] == "RETRY"
