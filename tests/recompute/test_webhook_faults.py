"""Webhook delivery under faults (SPEC §11), on both backends: a real HTTP receiver that at
random answers 500, times out, drops the connection, and is restarted, while worker
processes are SIGKILLed and restarted. Every event arrives, each subscription sees its events
in sequence order, every signature verifies, and a duplicate is only ever a retry of the
same `webhook-id`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.tables import (
    event_counters,
    recompute_queue,
    score_events,
    webhook_subscriptions,
)
from signalscore.db.types import utcnow
from signalscore.signals.service import write_values
from signalscore.webhooks.schemas import WebhookCreate
from signalscore.webhooks.service import create as create_webhook
from tests.helpers import Tenant
from tests.recompute.test_processes import SIGNALSCORE, random_values, seed_world


class FaultyReceiver:
    """Records every request; answers 200, or 500, or too late, or not at all, at random."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.faults: Counter[str] = Counter()
        # Every kind of fault happens at least once: the 3rd, 6th and 9th requests get one
        # each (how many requests a run makes depends on timing; the rest are at random).
        self.forced = {3: 0.2, 6: 0.25, 9: 0.1}
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender stopped mid-body (a worker SIGKILLed while sending, or its
                    # 1 s timeout): no request was made, as a real server sees it; it will
                    # be sent again.
                    self.close_connection = True
                    return
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "path": self.path.rsplit("/", 1)[-1],
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )
                    roll = receiver.forced.get(len(receiver.requests), receiver.rng.random())
                if roll < 0.15:
                    receiver.faults["500"] += 1
                    self.send_response(500)
                elif roll < 0.22:
                    receiver.faults["timeout"] += 1
                    time.sleep(1.5)  # workers wait 1 s (SIGNALSCORE_WEBHOOK_TIMEOUT_SECONDS)
                    self.send_response(200)
                elif roll < 0.30:
                    receiver.faults["drop"] += 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def restart(self) -> None:
        self.stop()
        self.faults["restart"] += 1
        time.sleep(0.3)  # deliveries meanwhile are refused connections
        self.start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s, expected) for s in headers["webhook-signature"].split())


def start_worker(url: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "SIGNALSCORE_DATABASE_URL": url,
        "SIGNALSCORE_WORKER_POLL_SECONDS": "0.02",
        "SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE": "true",
        # A 1 s timeout also makes the delivery lease 6 s (60 s at the default 10 s): a batch
        # whose worker is SIGKILLed mid-send is taken over after that.
        "SIGNALSCORE_WEBHOOK_TIMEOUT_SECONDS": "1",
        # 5 s -> 0.5 ms, 30 s -> 3 ms, 2 min -> 12 ms, 10 min -> 60 ms, 1 h -> 0.36 s, 6 h ->
        # 2.2 s, then every 12 h -> 4.3 s. About 4 requests in 10 fail here (the faults, and
        # the receiver's restarts), so a batch fails 7 or 8 times in a row in a run now and
        # then: at 0.001 that waited 21.6 s and then 43 s per attempt, past the 90 s allowed
        # to catch up (a stall report showed a batch at its 6th attempt 9 s into a run). The
        # 3-day disable -> 26 s of failing without one success, a dozen failures in a row.
        "SIGNALSCORE_WEBHOOK_RETRY_SCALE": "0.0001",
    }
    return subprocess.Popen(
        [SIGNALSCORE, "worker", "--log-level", "error", "--lease-seconds", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


@pytest.fixture
def worker_log() -> Iterator[Any]:
    """The workers' stderr, read when deliveries stall."""
    with tempfile.TemporaryFile("w+") as log:
        yield log


@pytest.fixture
def receiver() -> Iterator[FaultyReceiver]:
    server = FaultyReceiver(seed=5)
    yield server
    server.stop()


def _caught_up(database: Database, org_id: str) -> bool:
    """Every write scored (the queue is empty: no event still to come) and every event
    delivered. Under a heavy load the one SQLite worker, killed and restarted often, may not
    have scored anything yet when the writes end: no event at all is not caught up."""
    with database.read() as conn:
        queued = conn.execute(
            sa.select(sa.func.count())
            .select_from(recompute_queue)
            .where(recompute_queue.c.organization_id == org_id)
        ).scalar_one()
        last = conn.execute(
            sa.select(event_counters.c.last_sequence).where(
                event_counters.c.organization_id == org_id
            )
        ).scalar_one_or_none()
        if queued or last is None:
            return False
        behind = conn.execute(
            sa.select(sa.func.count())
            .select_from(webhook_subscriptions)
            .where(
                webhook_subscriptions.c.organization_id == org_id,
                sa.or_(
                    webhook_subscriptions.c.delivered_through < last,
                    webhook_subscriptions.c.pending_through.is_not(None),
                ),
            )
        ).scalar_one()
    return bool(behind == 0)


def _stall_report(
    database: Database, org_id: str, workers: list[subprocess.Popen[str]], log: Any
) -> str:
    """What a stall looks like: the log's end, each subscription's cursor, and every live
    worker's threads (SIGUSR1 prints their stacks to the log file)."""
    with database.read() as conn:
        last = conn.execute(
            sa.select(event_counters.c.last_sequence).where(
                event_counters.c.organization_id == org_id
            )
        ).scalar_one_or_none()
        queued = conn.execute(
            sa.select(sa.func.count())
            .select_from(recompute_queue)
            .where(recompute_queue.c.organization_id == org_id)
        ).scalar_one()
        w = webhook_subscriptions
        rows = conn.execute(
            sa.select(
                w.c.url, w.c.enabled, w.c.delivered_through, w.c.pending_through, w.c.attempt,
                w.c.next_attempt_at, w.c.lease_until, w.c.failing_since,
            ).where(w.c.organization_id == org_id)
        ).all()  # fmt: skip
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGUSR1)
    time.sleep(1)
    log.flush()
    log.seek(0)
    stacks = log.read()[-20_000:]
    state = f"{queued} queued; last sequence {last}; subscriptions {rows}"
    return f"at {utcnow()}: {state}; workers:\n{stacks}"


def test_every_event_arrives_in_order_through_faults_and_kills(
    backend: str,
    database_url: str,
    database: Database,
    tenant: Tenant,
    receiver: FaultyReceiver,
    worker_log: Any,
) -> None:
    org_id = tenant.org_id
    companies = [f"h{i}.com" for i in range(60)]
    subscriptions = {}
    with database.write() as conn:
        for name, types in (
            ("all", ["score.created", "score.changed", "score.tier_changed", "score.deleted"]),
            ("changed", ["score.changed"]),
        ):
            created = create_webhook(
                conn, org_id, WebhookCreate(url=receiver.url + "/" + name, eventTypes=types),
                allow_private=True,
            )  # fmt: skip
            subscriptions[name] = created
    seed_world(database, org_id, companies)
    count = 2 if backend == "postgresql" else 1
    workers = [start_worker(database_url, worker_log) for _ in range(count)]
    rng = random.Random(9)
    kills = 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with database.write(org=org_id, structure=True) as conn:
                write_values(conn, org_id, random_values(rng, companies, rng.randint(1, 10)))
            time.sleep(rng.uniform(0.05, 0.25))
            if rng.random() < 0.08:  # SIGKILL a worker mid-whatever, start another
                victim = rng.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start_worker(database_url, worker_log)
                kills += 1
            if rng.random() < 0.04:
                receiver.restart()
        settle_by = time.monotonic() + 90
        while not _caught_up(database, org_id):
            if time.monotonic() > settle_by:
                pytest.fail(
                    "deliveries did not catch up: "
                    + _stall_report(database, org_id, workers, worker_log)
                )
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    assert kills >= 1
    assert receiver.faults["500"] > 0
    assert receiver.faults["drop"] > 0
    assert receiver.faults["timeout"] > 0
    assert receiver.faults["restart"] >= 1

    with database.read() as conn:
        log = list(
            conn.execute(
                sa.select(score_events)
                .where(score_events.c.organization_id == org_id)
                .order_by(score_events.c.sequence)
            )
        )
    assert len(log) > 100
    for name, subscription in subscriptions.items():
        wanted = [e.sequence for e in log if e.type in subscription.eventTypes]
        mine = [r for r in receiver.requests if r["path"] == name]
        assert mine
        batches: dict[str, list[int]] = {}
        order: list[str] = []
        for request in mine:
            assert verify(subscription.secret, request["headers"], request["body"])
            sequences = [e["sequence"] for e in json.loads(request["body"])["events"]]
            message_id = request["headers"]["webhook-id"]
            if message_id in batches:  # a retry: the very same batch
                assert batches[message_id] == sequences, message_id
            else:
                batches[message_id] = sequences
                order.append(message_id)
        delivered = [s for message_id in order for s in batches[message_id]]
        assert delivered == wanted, name  # all of them, once per batch, in sequence order
        assert len(mine) > len(order), "faults must have caused retries"
