"""What each request of bench/load.py's mix costs in CPU, against the machine's CPU at issue
11's target rate.

    .venv/bin/python bench/cpu_budget.py [--companies 20000] [--requests 200] [--rounds 3]
                                         [--duration 20] [--concurrency 32]

Issue 11 asks the mix of bench/load.py (PostgreSQL, 4 API processes, 2 workers) to reach 0.5x
the bare-ASGI ceiling in req/s. This measures whether the machine has the CPU for it at all:

1. The ceiling, as bench/load.py measures it (its `ceiling_app` under uvicorn with 4
   processes, `--concurrency` closed-loop connections, `--duration` seconds), serving the
   bytes of a real 20-company score response captured from the service below.
2. The cost of each kind of request, with no contention: one `signalscore serve` process (no
   embedded worker) and one `signalscore worker` on a scratch PostgreSQL database set up as
   bench/load.py does (`signalscore demo`, scored, VACUUM ANALYZE). One keep-alive connection
   sends `--requests` requests of one kind at a time (rule upserts: a tenth as many, each
   rescores every company), drawn from bench/load.py's `Mix`, with the worker stopped
   (SIGSTOP); then the worker resumes and the queue drains. `--rounds` rounds visit the kinds
   in turn. Per request, the CPU seconds of the server process and of the PostgreSQL
   backends during the requests, of this driver, and of the worker with the PostgreSQL
   backends during the drain (the recomputes the requests queued).
3. The budget: at 0.5x the ceiling, the mix's CPU per request (80% reads, 15% value writes,
   2.5% rule upserts, 2.5% compute calls, as bench/load.py) times the rate, in cores, against
   the cores of this machine. Requests alone (server + PostgreSQL + driver), and with the
   workers' share for what the requests queue (rule upserts rescore every company).

CPU measured one request at a time is the least a request costs: under load, contention
(context switches, cache misses, lock waits) only adds to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import free_port, load_average, scratch_database, speed_probe
from load import (
    BENCH_DIR,
    CEILING_BODY_ENV,
    PYTHON,
    SIGNALSCORE,
    TARGET_RATIO,
    HttpConnection,
    Managed,
    Mix,
    cpu_by_pid,
    cpu_used,
    maintenance,
    measured,
    postgres_backends,
    setup,
    wait_drained,
    wait_http,
)

KINDS = ("read", "write_values", "upsert_rule", "compute")
SHARES = {"read": 0.80, "write_values": 0.15, "upsert_rule": 0.025, "compute": 0.025}
PARTS = ("server", "postgresql", "worker", "driver")


def _one_kind(mix: Mix, kind: str) -> tuple[str, str, str, bytes | None]:
    while True:
        drawn = mix.next()
        if drawn[0] == kind:
            return drawn


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--companies", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=200, help="per kind and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="of the ceiling phase")
    parser.add_argument("--warmup", type=float, default=5.0, help="of the ceiling phase")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server-processes", type=int, default=4, help="of the ceiling")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {cores} cores, load average {load_average()}, speed probe {speed_probe()}")

    with scratch_database("postgresql", "cpu_budget") as scratch, contextlib.ExitStack() as stack:
        fixture = setup(scratch, args.companies, 0)
        env = {
            **os.environ,
            "SIGNALSCORE_RATE_LIMIT_READS_PER_MINUTE": "0",
            "SIGNALSCORE_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        }
        common = ["--database-url", scratch.url, "--log-level", "warning"]
        port = free_port()
        server = Managed(
            "server",
            [SIGNALSCORE, "serve", "--port", str(port), "--no-embedded-worker", *common],
            env,
        )
        stack.callback(server.stop)
        worker = Managed("worker", [SIGNALSCORE, "worker", *common], env)
        stack.callback(worker.stop)
        wait_http(port, "/readyz", server)
        header = f"Authorization: Bearer {fixture.keys[0]}\r\n".encode()

        def alive() -> None:
            server.check(1)
            worker.check(1)

        t0 = time.perf_counter()
        asyncio.run(wait_drained(port, header, 3600, alive))
        maintenance(scratch.url, vacuum=True)
        print(f"{args.companies:,} companies scored in {time.perf_counter() - t0:.1f} s")

        mix = Mix(fixture, [SHARES[k] for k in KINDS], args.seed)
        backends = postgres_backends(scratch.url)
        spent: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(PARTS, 0.0))
        done: dict[str, int] = defaultdict(int)

        async def block(kind: str) -> None:
            """The requests with the worker stopped (SIGSTOP), so the PostgreSQL backends
            work for the server alone; then the worker resumes and drains what they queued,
            which (with its backends' CPU) is the worker's part."""
            conn = HttpConnection("127.0.0.1", port, header)
            requests = max(5, args.requests // 10) if kind == "upsert_rule" else args.requests
            requesting = {"server": server.pids, "postgresql": backends}
            draining = {"worker": worker.pids, "postgresql": backends}
            os.kill(worker.process.pid, signal.SIGSTOP)
            try:
                before = {name: cpu_by_pid(pids()) for name, pids in requesting.items()}
                driver0 = time.process_time()
                for _ in range(requests):
                    _, method, target, body = _one_kind(mix, kind)
                    status, data = await conn.request(method, target, body)
                    if status >= 300:
                        raise RuntimeError(f"{kind}: {method} {target} answered {status}: {data!r}")
                spent[kind]["driver"] += time.process_time() - driver0
                after = {name: cpu_by_pid(pids()) for name, pids in requesting.items()}
            finally:
                os.kill(worker.process.pid, signal.SIGCONT)
                conn.close()
            for name in requesting:
                spent[kind][name] += cpu_used(before[name], after[name])
            before = {name: cpu_by_pid(pids()) for name, pids in draining.items()}
            await wait_drained(port, header, 3600, alive, poll=0.1)
            after = {name: cpu_by_pid(pids()) for name, pids in draining.items()}
            spent[kind]["worker"] += sum(cpu_used(before[n], after[n]) for n in draining)
            done[kind] += requests

        for _ in range(args.rounds):
            for kind in KINDS:
                asyncio.run(block(kind))
        # The response the ceiling serves: a real 20-company read, captured now.
        captured_target = mix.read_target(random.Random(args.seed).sample(fixture.companies, 20))

        async def capture() -> bytes:
            conn = HttpConnection("127.0.0.1", port, header)
            try:
                status, data = await conn.request("GET", captured_target)
                assert status == 200, status
                return data
            finally:
                conn.close()

        body = asyncio.run(capture())
        server.stop()
        worker.stop()

        body_file = stack.enter_context(tempfile.TemporaryDirectory()) + "/body.json"
        Path(body_file).write_bytes(body)
        cport = free_port()
        command = [PYTHON, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "--port", str(cport)]
        command += ["--workers", str(args.server_processes), "--no-access-log"]
        command += ["--log-level", "warning", "load:ceiling_app"]
        ceiling = Managed("ceiling asgi", command, {**env, CEILING_BODY_ENV: body_file})
        stack.callback(ceiling.stop)
        wait_http(cport, captured_target, ceiling)
        phase = measured(
            cport,
            [header],
            lambda: ("read", "GET", captured_target, None),
            argparse.Namespace(
                warmup=args.warmup, duration=args.duration, concurrency=args.concurrency
            ),
            {"servers": ceiling.pids},
        )
        ceiling.stop()

    ceiling_rps = phase.stats.ok() / phase.stats.elapsed
    target_rps = TARGET_RATIO * ceiling_rps
    print(
        f"\nceiling (pure ASGI, {args.server_processes} uvicorn processes, "
        f"{args.concurrency} connections): {ceiling_rps:,.0f} req/s; issue 11's target "
        f"{TARGET_RATIO}x = {target_rps:,.0f} req/s of the mix\n"
    )
    print("CPU per request, one request at a time (ms):")
    print(f"| kind | n | {' | '.join(PARTS)} | requests (server + PostgreSQL + driver) |")
    print(f"|---|---|{'---|' * len(PARTS)}---|")
    per: dict[str, dict[str, float]] = {}
    for kind in KINDS:
        per[kind] = {part: spent[kind][part] / done[kind] for part in PARTS}
        request_cost = per[kind]["server"] + per[kind]["postgresql"] + per[kind]["driver"]
        figures = " | ".join(f"{per[kind][part] * 1000:,.2f}" for part in PARTS)
        print(f"| {kind} | {done[kind]} | {figures} | {request_cost * 1000:,.2f} |")
    requests_only = sum(
        SHARES[k] * (per[k]["server"] + per[k]["postgresql"] + per[k]["driver"]) for k in KINDS
    )
    with_workers = requests_only + sum(SHARES[k] * per[k]["worker"] for k in KINDS)
    budget = cores / target_rps
    print(
        f"\nthe mix, weighted: {requests_only * 1000:.2f} ms of CPU per request for the requests "
        f"alone, {with_workers * 1000:.2f} ms with the workers' recomputes of what they queue"
    )
    print(
        f"at {target_rps:,.0f} req/s: {requests_only * target_rps:.2f} cores for the requests "
        f"alone, {with_workers * target_rps:.2f} with the workers; this machine has {cores} "
        f"({budget * 1000:.2f} ms of CPU per request at that rate, everything included)"
    )
    fits = requests_only * target_rps <= cores
    print(
        "the requests alone "
        + ("FIT" if fits else "DO NOT FIT")
        + f" in this machine's CPU at the target rate (best case: "
        f"{cores / requests_only:,.0f} req/s = {cores / requests_only / ceiling_rps:.3f}x the "
        "ceiling, with no workers and no contention)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
