"""Structured access logs and the Prometheus endpoint."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue
from signalscore.db.types import utcnow
from signalscore.observability import JsonFormatter
from signalscore.recompute.queue import enqueue_objects
from tests.helpers import Tenant


def metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    ]
    assert values, f"{name} not exported"
    return sum(values)


def test_one_json_line_per_request(
    client: TestClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="signalscore.access"):
        response = client.get("/v1/scoring/profiles/not-a-uuid", headers=tenant.headers)
    [record] = [r for r in caplog.records if r.name == "signalscore.access"]
    line = json.loads(JsonFormatter().format(record))
    assert line["requestId"] == response.headers["x-request-id"]
    assert line["organizationId"] == tenant.org_id
    assert line["route"] == "/v1/scoring/profiles/{profile_id}"
    assert line["status"] == 404
    assert line["method"] == "GET"
    assert line["durationMs"] >= 0
    assert line["level"] == "info"
    assert line["ts"].endswith("Z")


def test_metrics_count_requests_and_report_the_queue(
    client: TestClient, tenant: Tenant, database: Database
) -> None:
    for _ in range(3):
        client.get("/v1/scoring/profiles", headers=tenant.headers)
    client.get("/nowhere/at/all")
    with database.write() as conn:
        enqueue_objects(conn, tenant.org_id, "company", ["a.com", "b.com"])
        conn.execute(
            sa.update(recompute_queue).values(enqueued_at=utcnow() - timedelta(seconds=42))
        )
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        metric(
            text,
            'signalscore_http_requests_total{method="GET",route="/v1/scoring/profiles",status="200"}',
        )
        == 3
    )
    assert 'route="unmatched"' in text
    assert (
        metric(
            text,
            'signalscore_http_request_duration_seconds_count{method="GET",'
            'route="/v1/scoring/profiles"}',
        )
        == 3
    )
    assert metric(text, 'signalscore_queue_depth{state="pending"}') == 2
    assert metric(text, 'signalscore_queue_depth{state="running"}') == 0
    assert metric(text, "signalscore_profile_fan_outs") == 0
    assert 41 <= metric(text, "signalscore_worker_lag_seconds") < 120
    assert metric(text, "signalscore_computations_total") == 0
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
