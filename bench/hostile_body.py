"""A hostile body against a running server: how long it takes to be refused, how large the
refusal is, and how long `/healthz` waits meanwhile (issue: hostile input, finding 2).

Starts the real server (`signalscore serve`) on a scratch SQLite database, then sends a body of
300,000 unknown keys (3.5 MB) to `POST /v1/scoring/profiles`, once without a key and once with
one, while a second thread polls `/healthz`. The baseline is `/healthz` on the idle server,
measured in the same run; the figures are the worst `/healthz` wait during each request as a
multiple of the idle one.

    .venv/bin/python bench/hostile_body.py [--keys 300000] [--backend sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import threading
import time

import httpx2 as httpx

from _common import percentile, scratch_database
from freshness import Server, create_organization


def _poll(client: httpx.Client, base: str, out: list[float], stop: threading.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        client.get(f"{base}/healthz")
        out.append(time.perf_counter() - started)
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=300_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    body = ("{" + ",".join(f'"k{i}":0' for i in range(args.keys)) + "}").encode()
    with scratch_database(args.backend, "hostile") as scratch:
        key = create_organization(scratch.url)
        server = Server(scratch.url)
        try:
            with httpx.Client(timeout=60) as client, httpx.Client(timeout=60) as poller:
                server.wait_ready(client)
                idle: list[float] = []
                for _ in range(200):
                    started = time.perf_counter()
                    poller.get(f"{server.base}/healthz")
                    idle.append(time.perf_counter() - started)
                idle_p99 = percentile(idle, 99)
                print(f"body: {len(body):,} bytes, {args.keys:,} keys ({args.backend})")
                print(f"idle /healthz p99: {idle_p99 * 1000:.1f} ms (baseline)")
                for label, headers in (
                    ("anonymous", {}),
                    ("with a key", {"Authorization": f"Bearer {key}"}),
                ):
                    waits: list[float] = []
                    stop = threading.Event()
                    thread = threading.Thread(target=_poll, args=(poller, server.base, waits, stop))
                    thread.start()
                    time.sleep(0.2)
                    started = time.perf_counter()
                    response = client.post(
                        f"{server.base}/v1/scoring/profiles",
                        content=body,
                        headers={"Content-Type": "application/json", **headers},
                    )
                    elapsed = time.perf_counter() - started
                    time.sleep(0.1)
                    stop.set()
                    thread.join()
                    print(
                        f"{label}: {response.status_code} in {elapsed * 1000:.0f} ms, "
                        f"{len(response.content):,} bytes; /healthz worst "
                        f"{max(waits) * 1000:.0f} ms = {max(waits) / idle_p99:.1f}x idle p99 "
                        f"({len(waits)} probes)"
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
