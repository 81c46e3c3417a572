"""Webhooks (SPEC §11): subscriptions and their validation, and delivery from the event log
to a real HTTP receiver on this machine: batches in sequence order, Standard Webhooks
signatures, the retry schedule and the 3-day disable with an injected clock, resuming, the
test delivery and secret rotation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.tables import event_counters, score_events
from signalscore.db.types import utcnow
from signalscore.webhooks.delivery import Outcome, deliver_once, post
from tests.api.conftest import World, snapshot
from tests.helpers import assert_error, drain

CHANGED = ["score.created", "score.changed", "score.tier_changed", "score.deleted"]


class Receiver:
    """An HTTP server that records every request and answers with the next planned status
    (200 once the plan is used up)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.plan: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body})
                status = receiver.plan.pop(0) if receiver.plan else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [e for r in self.requests for e in json.loads(r["body"])["events"]]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def private_ok(world: World) -> World:
    """The server allows receivers on this machine (SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE)."""
    state = world.client.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"webhook_allow_private": True})
    return world


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks, written from the scheme: v1 HMAC-SHA256 over id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(part.split(",", 1)[1], expected)
        for part in headers["webhook-signature"].split(" ")
        if part.startswith("v1,")
    )


def subscribe(world: World, url: str, **extra: Any) -> dict[str, Any]:
    response = world.call("POST", "/v1/webhooks", json={"url": url, "eventTypes": CHANGED, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def make_events(world: World, database: Database, objects: list[str]) -> None:
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": objects},
    )
    assert bulk.status_code == 201, bulk.text
    drain(database)


def deliver_all(database: Database, now: Callable[[], datetime] = utcnow) -> int:
    sent = 0
    for _ in range(1000):
        batch = deliver_once(database, allow_private=True, now=now)
        if not batch:
            return sent
        sent += batch
    raise AssertionError("deliveries did not settle")


# --- subscriptions ----------------------------------------------------------------------------


def test_a_subscription_shows_its_secret_once(private_ok: World, receiver: Receiver) -> None:
    world = private_ok
    created = subscribe(world, receiver.url, description="CRM sync")
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"][6:])) >= 24
    assert (created["enabled"], created["disabledReason"], created["profileIds"]) == (
        True,
        None,
        None,
    )
    read = world.call("GET", f"/v1/webhooks/{created['id']}").json()
    assert "secret" not in read
    assert read == {k: v for k, v in created.items() if k != "secret"}
    assert world.call("GET", "/v1/webhooks").json() == [read]
    rotated = world.call("POST", f"/v1/webhooks/{created['id']}/rotate-secret").json()
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != created["secret"]
    assert world.call("DELETE", f"/v1/webhooks/{created['id']}").status_code == 204
    assert world.call("GET", f"/v1/webhooks/{created['id']}").status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/",
        "https://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "https://224.0.0.1/",
        "http://0.0.0.0/",
    ],
)
def test_private_addresses_are_refused_unless_allowed(
    world: World, database: Database, url: str
) -> None:
    before = snapshot(database)
    response = world.call("POST", "/v1/webhooks", json={"url": url, "eventTypes": CHANGED})
    error = assert_error(response, 422, "VALIDATION_ERROR", error_code="UNSAFE_WEBHOOK_URL")
    assert [f["field"] for f in error["fields"]] == ["url"]
    assert snapshot(database) == before


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"url": "ftp://93.184.216.34/x", "eventTypes": CHANGED}, "url", "INVALID_WEBHOOK_URL"),
        ({"url": "93.184.216.34/x", "eventTypes": CHANGED}, "url", "INVALID_WEBHOOK_URL"),
        ({"url": "https://no-such-host.invalid/", "eventTypes": CHANGED}, "url", None),
        ({"url": "https://93.184.216.34/", "eventTypes": []}, "eventTypes", None),
        ({"url": "https://93.184.216.34/", "eventTypes": ["score.moved"]}, "eventTypes[0]", None),
        (
            {
                "url": "https://93.184.216.34/",
                "eventTypes": CHANGED,
                "profileIds": ["00000000-0000-4000-8000-000000000000"],
            },
            "profileIds[0]",
            "PROFILE_NOT_FOUND",
        ),
        (
            {"url": "https://93.184.216.34/", "eventTypes": CHANGED, "secret": "x"},
            "secret",
            "UNKNOWN_FIELD",
        ),
    ],
)
def test_invalid_subscriptions_are_refused(
    world: World, database: Database, body: dict[str, Any], field: str, code: str | None
) -> None:
    before = snapshot(database)
    error = assert_error(
        world.call("POST", "/v1/webhooks", json=body), 422, "VALIDATION_ERROR", error_code=code
    )
    assert field in [f["field"] for f in error["fields"]]
    assert snapshot(database) == before


# --- delivery ---------------------------------------------------------------------------------


def test_events_arrive_signed_in_order_in_batches_of_100(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    world = private_ok
    hook = subscribe(world, receiver.url)
    make_events(world, database, [f"w{i}.com" for i in range(150)])
    assert deliver_all(database) >= 150
    feed = world.call("GET", "/v1/events", params={"limit": 1000}).json()["data"]
    assert feed
    assert receiver.events() == feed  # every event, once, in sequence order, as the feed has it
    assert all(1 <= len(json.loads(r["body"])["events"]) <= 100 for r in receiver.requests)
    ids = [r["headers"]["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == len(ids)
    for request in receiver.requests:
        assert request["headers"]["Content-Type"] == "application/json"
        assert verify(hook["secret"], request["headers"], request["body"])
        assert not verify(
            "whsec_" + base64.b64encode(b"x" * 24).decode(), request["headers"], request["body"]
        )
    log = world.call("GET", f"/v1/webhooks/{hook['id']}/deliveries").json()
    assert [d["statusCode"] for d in log] == [200] * len(receiver.requests)
    assert sorted(d["id"] for d in log) == sorted(ids)
    assert sum(len(d["eventIds"]) for d in log) == len(feed)
    assert [e["id"] for e in receiver.events()] == [i for d in reversed(log) for i in d["eventIds"]]


def test_delivery_reads_past_a_gap_retention_left(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    """A subscription behind what retention deleted gets every event left, in order (its
    reads go by sequence ranges: a gap must not end them)."""
    world = private_ok
    subscribe(world, receiver.url)
    make_events(world, database, [f"g{i}.com" for i in range(250)])
    with database.write() as conn:  # as retention does: the oldest, and `expired_through`
        conn.execute(
            sa.delete(score_events).where(
                score_events.c.organization_id == world.tenant.org_id,
                score_events.c.sequence <= 130,
            )
        )
        conn.execute(
            sa.update(event_counters)
            .where(event_counters.c.organization_id == world.tenant.org_id)
            .values(expired_through=130)
        )
    deliver_all(database)
    feed = world.call("GET", "/v1/events", params={"after": 130, "limit": 1000}).json()["data"]
    assert len(feed) >= 120
    assert receiver.events() == feed


def test_a_change_to_the_subscription_mid_burst_applies_to_the_next_batch(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    """Batches are read ahead while one is in flight; one read before a PATCH of the filters
    is not sent (the settle sees the subscription changed): the next claim reads anew."""
    world = private_ok
    hook = subscribe(world, receiver.url)
    make_events(world, database, [f"m{i}.com" for i in range(250)])

    def send_then_patch(url: str, headers: dict[str, str], body: bytes, timeout: float) -> Outcome:
        outcome = post(url, headers, body, timeout)
        if len(receiver.requests) == 1:
            patched = world.call(
                "PATCH", f"/v1/webhooks/{hook['id']}", json={"eventTypes": ["score.deleted"]}
            )
            assert patched.status_code == 200, patched.text
        return outcome

    assert deliver_once(database, allow_private=True, send=send_then_patch) == 100
    assert deliver_all(database) == 0  # none of the rest is a score.deleted
    assert len(receiver.requests) == 1


def test_filters_choose_the_events_sent(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    world = private_ok
    subscribe(world, receiver.url, eventTypes=["score.changed"], profileIds=[world.profile_id])
    make_events(world, database, ["f1.com", "f2.com"])  # created only
    world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "f1.com",
                    "signalTemplateId": "employees",
                    "value": 50,
                }
            ]
        },
    )
    drain(database)
    deliver_all(database)
    assert [(e["type"], e["objectId"]) for e in receiver.events()] == [("score.changed", "f1.com")]


def test_failures_retry_the_same_batch_on_schedule_then_disable_and_resume(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    world = private_ok
    hook = subscribe(world, receiver.url)
    make_events(world, database, ["r1.com"])
    clock = [utcnow()]
    receiver.plan = [500] * 100
    delays = []
    for _ in range(9):
        assert deliver_once(database, allow_private=True, now=lambda: clock[0]) > 0
        # Not due again before its delay: nothing happens a second before it.
        log = world.call("GET", f"/v1/webhooks/{hook['id']}/deliveries").json()
        delays.append(log[0]["attempt"])
        wait = [5, 30, 120, 600, 3600, 21600, 43200, 43200, 43200][len(delays) - 1]
        clock[0] += timedelta(seconds=wait - 1)
        assert deliver_once(database, allow_private=True, now=lambda: clock[0]) == 0
        clock[0] += timedelta(seconds=1)
    assert delays == list(range(1, 10))
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1  # every retry is the same delivery
    # 2 + 30 s ... + 4 x 12 h < 3 days: still enabled; the next failures pass 3 days.
    assert world.call("GET", f"/v1/webhooks/{hook['id']}").json()["enabled"] is True
    while world.call("GET", f"/v1/webhooks/{hook['id']}").json()["enabled"]:
        assert deliver_once(database, allow_private=True, now=lambda: clock[0]) > 0
        clock[0] += timedelta(hours=12)
    disabled = world.call("GET", f"/v1/webhooks/{hook['id']}").json()
    assert "3 days" in disabled["disabledReason"]
    assert deliver_once(database, allow_private=True, now=lambda: clock[0]) == 0  # disabled
    # Later events wait behind; enabling resumes with the same batch, then the rest.
    make_events(world, database, ["r2.com"])
    receiver.plan = []
    resumed = world.call("PATCH", f"/v1/webhooks/{hook['id']}", json={"enabled": True}).json()
    assert (resumed["enabled"], resumed["disabledReason"]) == (True, None)
    deliver_all(database, now=lambda: clock[0])
    assert receiver.requests[-2]["headers"]["webhook-id"] in ids
    feed = world.call("GET", "/v1/events", params={"limit": 1000}).json()["data"]
    delivered = []
    for request in receiver.requests:
        for event in json.loads(request["body"])["events"]:
            if event not in delivered:
                delivered.append(event)
    assert delivered == feed


def test_the_test_delivery_reaches_the_receiver_signed(
    private_ok: World, receiver: Receiver
) -> None:
    world = private_ok
    hook = subscribe(world, receiver.url)
    response = world.call("POST", f"/v1/webhooks/{hook['id']}/test")
    assert response.status_code == 200, response.text
    attempt = response.json()
    assert (attempt["statusCode"], attempt["attempt"], attempt["error"]) == (200, 1, None)
    [request] = receiver.requests
    [event] = json.loads(request["body"])["events"]
    assert event["type"] == "webhook.test"
    assert request["headers"]["webhook-id"] == attempt["id"]
    assert verify(hook["secret"], request["headers"], request["body"])
    receiver.plan = [503]
    failed = world.call("POST", f"/v1/webhooks/{hook['id']}/test").json()
    assert (failed["statusCode"], failed["error"]) == (503, "HTTP 503")
    log = world.call("GET", f"/v1/webhooks/{hook['id']}/deliveries").json()
    assert [d["statusCode"] for d in log] == [503, 200]


def _metric(text: str, name: str) -> dict[str, float]:
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            found[key[len(name) :]] = float(value)
    return found


def test_metrics_count_events_and_deliveries_and_the_oldest_waiting(
    private_ok: World, database: Database, receiver: Receiver
) -> None:
    world = private_ok
    hook = subscribe(world, receiver.url)
    make_events(world, database, ["m1.com", "m2.com"])
    written = len(world.call("GET", "/v1/events", params={"limit": 1000}).json()["data"])
    receiver.plan = [500]
    clock = [utcnow() + timedelta(seconds=30)]
    deliver_once(database, allow_private=True, now=lambda: clock[0])  # fails: waits 5 s
    text = world.client.get("/metrics").text
    assert _metric(text, "signalscore_events_written") == {"": written}
    assert _metric(text, "signalscore_webhook_attempts") == {
        '{outcome="delivered"}': 0,
        '{outcome="failed"}': 1,
    }
    [age] = _metric(text, "signalscore_webhook_oldest_undelivered_seconds").items()
    assert age[0] == f'{{subscription="{hook["id"]}"}}'
    assert age[1] > 0
    clock[0] += timedelta(seconds=5)
    deliver_all(database, now=lambda: clock[0])
    text = world.client.get("/metrics").text
    assert _metric(text, "signalscore_webhook_attempts")['{outcome="delivered"}'] >= 1
    assert _metric(text, "signalscore_webhook_oldest_undelivered_seconds") == {
        f'{{subscription="{hook["id"]}"}}': 0
    }
