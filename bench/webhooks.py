"""Webhook delivery (issue 14's targets): how soon a value write's events reach a receiver
on an idle server, and how many events a second reach a receiver that answers at once.

    python bench/webhooks.py [--backend postgresql|sqlite] [--writes 200] [--events 50000]

Starts the real server (`signalscore serve`, embedded worker on, private receivers allowed)
against a scratch database, with the freshness benchmark's profile over `--companies`
companies, and a receiver (a `ThreadingHTTPServer` in this process) that answers 200 at once
and records when each event arrived.

1. Freshness: `--writes` value writes, one at a time on an idle server (as bench/freshness.py
   does), each moving one company's fit score; the latency of a write is from the start of
   its PUT to the arrival of its `score.changed` event. Target: p95 <= 1 s.
2. Throughput: `--events` events are appended to the log in SQL (as a burst of recomputes
   would write them: 2 changes each), for a new subscription; the clock runs until the
   receiver has them all. The append's own time (one INSERT of `--events` rows: the cost of
   writing events is issue 14's other target, measured by bench/recompute.py) is shown
   apart, and the target is the rate of the delivery from the append's commit, the backlog
   drained: >= 10,000 events/s. The rate with the append is printed too.
   Baseline in the same run: this process POSTing the same bodies (100 events each) to the
   same receiver, one at a time, without the database or signing: what the receiver and
   loopback HTTP can take.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa

from _common import load_average, percentile, scratch_database, speed_probe
from freshness import HEADCOUNTS, Server, _check, configure, create_organization, wait_idle


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, int], float] = {}  # (objectId, version) -> time
        self.count = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                now = time.perf_counter()
                events = json.loads(body)["events"]
                with receiver.lock:
                    receiver.count += len(events)
                    for event in events:
                        if event.get("type") == "score.changed":
                            receiver.arrivals[(event["objectId"], event["version"])] = now
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def freshness(
    client: httpx.Client, base: str, ids: Sequence[str], receiver: Receiver, writes: int
) -> list[float]:
    latencies = []
    for i in range(writes):
        object_id = ids[i % len(ids)]
        rows = _check(
            client.get(
                f"{base}/v1/scoring/scores",
                params={"objectType": "company", "objectId": object_id, "dimension": "fit"},
            ),
            200,
        )
        version = rows[0]["version"]
        # Visited once each (writes <= companies): the 5000+ range, never a generated
        # headcount, so every write moves the fit score.
        value = HEADCOUNTS[1] + i
        item = {
            "objectType": "company",
            "objectId": object_id,
            "signalTemplateId": "employees",
            "value": value,
        }
        started = time.perf_counter()
        _check(client.put(f"{base}/v1/signals/values", json={"values": [item]}), 200)
        while (object_id, version + 1) not in receiver.arrivals:
            if time.perf_counter() - started > 30:
                raise RuntimeError(f"{object_id} v{version + 1} never arrived")
            time.sleep(0.002)
        latencies.append(receiver.arrivals[(object_id, version + 1)] - started)
        time.sleep(0.1)
    return latencies


def append_events(url: str, org_id: str, count: int) -> int:
    """`count` events after the organisation's last, in SQL; the new last sequence."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    def side(matched: str, points: int) -> dict[str, Any]:
        return {"matchedValue": matched, "pointsEarned": points, "maxPoints": 10}

    changes = json.dumps(
        [
            {
                "ruleId": str(uuid.uuid4()),
                "signalTemplateId": "employees",
                "before": side("15 (10–50)", 5),
                "after": side("9000 (≥5000)", 10),
            },
            {
                "ruleId": str(uuid.uuid4()),
                "signalTemplateId": "crm",
                "before": None,
                "after": side("HubSpot", 8),
            },
        ]
    )
    with engine.begin() as conn:
        last = conn.execute(
            sa.text("SELECT last_sequence FROM event_counters WHERE organization_id = :o"),
            {"o": org_id},
        ).scalar_one()
        rows = [
            {
                "o": org_id,
                "s": last + i + 1,
                "p": str(uuid.uuid4()),
                "id": f"burst{i}.com",
                "c": changes,
            }
            for i in range(count)
        ]
        conn.execute(
            sa.text(
                "INSERT INTO score_events (organization_id, sequence, type, created_at, profile_id,"
                " object_type, object_id, dimension, score, previous_score, tier, previous_tier,"
                " version, changes) VALUES (:o, :s, 'score.changed', CURRENT_TIMESTAMP, :p,"
                " 'company', :id, 'fit', 61.5, 40.25, NULL, NULL, 2, :c)"
            ),
            rows,
        )
        conn.execute(
            sa.text("UPDATE event_counters SET last_sequence = :s WHERE organization_id = :o"),
            {"s": last + count, "o": org_id},
        )
    engine.dispose()
    return last + count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--companies", type=int, default=250)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--events", type=int, default=50_000)
    args = parser.parse_args()
    print(
        f"webhooks: {args.backend}; load average {load_average()}, "
        f"speed probe {speed_probe():.1f} µs"
    )
    os.environ["SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE"] = "true"
    receiver = Receiver()
    with scratch_database(args.backend, "webhooks") as scratch:
        key = create_organization(scratch.url)
        server = Server(scratch.url)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.Client(headers=headers, timeout=60) as client:
                server.wait_ready(client)
                org_id = _check(client.get(f"{server.base}/v1/organization"), 200)["id"]
                _profile, ids = configure(client, server.base, args.companies, seed=7)
                wait_idle(client, server.base)
                _check(
                    client.post(
                        f"{server.base}/v1/webhooks",
                        json={"url": receiver.url, "eventTypes": ["score.changed"]},
                    ),
                    201,
                )
                latencies = freshness(client, server.base, ids, receiver, args.writes)
                p50, p95 = percentile(latencies, 50) * 1000, percentile(latencies, 95) * 1000
                verdict = "PASS" if p95 <= 1000 else "FAIL"
                print(
                    f"freshness ({args.writes} writes): p50 {p50:.0f} ms, p95 {p95:.0f} ms, "
                    f"max {max(latencies) * 1000:.0f} ms; target p95 <= 1 s: {verdict}"
                )

                _check(
                    client.post(
                        f"{server.base}/v1/webhooks",
                        json={
                            "url": receiver.url.replace("/hook", "/burst"),
                            "eventTypes": ["score.changed"],
                        },
                    ),
                    201,
                )
                before = receiver.count
                url = scratch.url
                started = time.perf_counter()
                append_events(url, org_id, args.events)
                appended = time.perf_counter()
                while receiver.count - before < args.events:
                    if time.perf_counter() - started > 600:
                        raise RuntimeError("the burst was not delivered")
                    time.sleep(0.01)
                elapsed = time.perf_counter() - started
                rate = args.events / elapsed
                # The same, from the append's commit: the delivery alone.
                delivering = time.perf_counter() - appended
            body = json.dumps(
                {
                    "events": [
                        {
                            "type": "score.changed",
                            "objectId": f"b{i}.com",
                            "version": 2,
                            "changes": [],
                        }
                        for i in range(100)
                    ]
                }
            ).encode()
            raw_started = time.perf_counter()
            sent = 0
            with httpx.Client(timeout=10) as raw:
                while sent < args.events:
                    raw.post(
                        receiver.url.replace("/hook", "/raw"),
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    sent += 100
            raw_rate = sent / (time.perf_counter() - raw_started)
            delivery_rate = args.events / delivering
            verdict = "PASS" if delivery_rate >= 10_000 else "FAIL"
            print(
                f"throughput: {args.events:,} events appended and delivered in {elapsed:.2f} s "
                f"= {rate:,.0f} events/s; baseline (plain POSTs of the same size) "
                f"{raw_rate:,.0f} events/s = {rate / raw_rate:.2f}x"
            )
            print(
                f"  of which the append {appended - started:.2f} s, the delivery from its commit "
                f"{delivering:.2f} s = {delivery_rate:,.0f} events/s = "
                f"{delivery_rate / raw_rate:.2f}x the baseline; target (delivery) >= 10,000 "
                f"events/s: {verdict}"
            )
        finally:
            server.stop()
    print(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
