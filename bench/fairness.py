"""Benchmark fairness: organisation A's write-to-fresh-score latency while organisation B
recomputes a large profile after a rule change.

    python bench/fairness.py [--objects 200000] [--writes 50] [--workers 2] [--companies 100]

PostgreSQL only (the deployment with several workers). In a scratch database (created and
dropped by this run):

1. Setup (not measured): organisation B with the 20 templates and 20 rules of
   bench/recompute.py and `--objects` companies assigned to one profile with about 16 values
   each (COPY), and organisation A. Then the real server (`signalscore serve
   --no-embedded-worker`) and `signalscore worker --concurrency K` start (`--workers 0`:
   `serve` with its embedded worker instead), and A is configured over HTTP like
   bench/freshness.py (the same templates and rules, `--companies` companies). B's objects are
   scored once (its whole profile queued), then VACUUM ANALYZE, as autovacuum would have.
2. **Idle (the baseline)**: `--writes` single-value writes by A, one at a time, 50-150 ms apart,
   each followed by polling `GET /v1/scoring/scores` every 10 ms until the company's `fit`
   version increases (bench/freshness.py's `measure`). Latency runs from just before the PUT
   to the end of the first GET showing the new version.
3. **Under B's load**: one rule write replaces the points of a boolean rule of B's profile
   (every one of B's objects must be recomputed; the rule write queues the first chunk and
   the workers the rest), and 2 s later, while B's recompute runs, A makes the same writes.
   The script prints how much of B's work was left when A's last write was scored (if none
   was, the measurement did not run under load, and it says so). `--analyze-every` seconds,
   it runs ANALYZE on the queue and score tables, as autovacuum's auto-analyze would.

It prints p50/p95/p99/max of both, their ratios, the PUT and GET round trips in both phases
(how much the machine itself slowed down under B's load), and B's recompute time.
Target (issue 11): A's p95 under B's load at most 2x A's idle p95.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import httpx2 as httpx
import sqlalchemy as sa

from _common import (
    VENV_BIN,
    free_port,
    load_average,
    percentile,
    scratch_database,
    speed_probe,
)
from freshness import configure, measure
from recompute import Fixture, build_fixture, queue_profile
from signalscore.auth.service import create_organization
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.recompute import worker
from signalscore.recompute.queue import FAN_OUT_CHUNK
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule

SIGNALSCORE = str(VENV_BIN / "signalscore")


class Stack:
    """`signalscore serve` and its workers, as subprocesses."""

    def __init__(self, database_url: str, workers: int, batch_size: int) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.errors: list[str] = []
        # `serve` has no --batch-size: its embedded worker reads the setting from here.
        self.env = {**os.environ, "SIGNALSCORE_WORKER_BATCH_SIZE": str(batch_size)}
        serve = [SIGNALSCORE, "serve", "--port", str(self.port), "--database-url", database_url,
                 "--log-level", "warning"]  # fmt: skip
        if workers:
            serve.append("--no-embedded-worker")
        self.processes = [self._start(serve)]
        if workers:
            worker = [SIGNALSCORE, "worker", "--database-url", database_url,
                      "--concurrency", str(workers), "--batch-size", str(batch_size),
                      "--log-level", "warning"]  # fmt: skip
            self.processes.append(self._start(worker))

    def _start(self, command: list[str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env
        )
        threading.Thread(target=self._drain, args=(process,), daemon=True).start()
        return process

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if re.search(r"ERROR|Traceback|Exception", line):
                self.errors.append(line.rstrip())

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def wait_ready(self, client: httpx.Client, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"a process exited: {self.errors}")
            try:
                if client.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def remaining(db: Database, org_id: str) -> tuple[int, bool]:
    """(queue entries of `org_id`, whether a fan-out of one of its profiles is unfinished)."""
    with db.engine.connect() as conn:
        queued = conn.execute(
            sa.text("SELECT count(*) FROM recompute_queue WHERE organization_id = :org"),
            {"org": org_id},
        ).scalar_one()
        fanning = conn.execute(
            sa.text("SELECT 1 FROM recompute_profiles WHERE organization_id = :org LIMIT 1"),
            {"org": org_id},
        ).first()
    return int(queued), fanning is not None


def analyze(db: Database) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE recompute_queue, score_results")


def wait_until_done(
    db: Database, stack: Stack, org_id: str, analyze_every: float, timeout: float = 3600
) -> float:
    """Seconds until `org_id` has nothing queued or fanning out, ANALYZE-ing as it goes."""
    started = last_analyze = last_report = time.perf_counter()
    while True:
        queued, fanning = remaining(db, org_id)
        now = time.perf_counter()
        if not queued and not fanning:
            return now - started
        if not stack.alive():
            raise RuntimeError(f"a server or worker process died: {stack.errors[:5]}")
        if now - started > timeout:
            raise RuntimeError(f"B's work not done after {timeout} s")
        if analyze_every and now - last_analyze > analyze_every:
            analyze(db)
            last_analyze = now
        if now - last_report > 15:
            print(f"    B: {queued:,} queued{', fan-out unfinished' if fanning else ''} "
                  f"after {now - started:.0f} s")  # fmt: skip
            last_report = now
        time.sleep(0.05)


def change_b_rule(db: Database, fixture: Fixture, points: int) -> None:
    """B's rule change: b2b's `true` points, so every object's `fit` row changes."""
    with db.write(org=fixture.org_id, structure=True) as conn:
        upsert_rule(
            conn,
            fixture.org_id,
            fixture.profile_id,
            RuleUpsert(
                signalTemplateId="b2b",
                dimension="fit",
                answerType="boolean",
                pointValues={"true": points, "false": -10},
            ),
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _figures(sample: Sequence[float]) -> list[float]:
    return [percentile(sample, p) for p in (50, 95, 99)] + [max(sample)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200_000, help="B's companies [200000]")
    parser.add_argument(
        "--companies", type=int, default=100, help="A's companies, at least 2 x writes [100]"
    )
    parser.add_argument("--writes", type=int, default=50, help="A's writes per phase [50]")
    parser.add_argument(
        "--workers", type=int, default=2, help="worker processes; 0 = serve's embedded one [2]"
    )
    parser.add_argument("--batch-size", type=int, default=500, help="the worker's default [500]")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=10.0,
        help="ANALYZE the queue and score tables this often while B recomputes, standing in "
        "for autovacuum on a server that runs without it; 0 = never [10]",
    )
    args = parser.parse_args(argv)
    args.companies = max(args.companies, 2 * args.writes)  # each company written once
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    mode = f"{args.workers} worker process(es)" if args.workers else "serve's embedded worker"
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_average()}, "
        f"speed probe sum(range(1000)) = {speed_probe():.1f} µs"
    )
    # Code from before the lanes has no interactive thread: the script runs on it as well.
    lanes = "with" if hasattr(worker.Worker, "serve_interactive") else "WITHOUT"
    print(f"PostgreSQL, {mode} ({lanes} the interactive thread), batch {args.batch_size}, "
          f"FAN_OUT_CHUNK {FAN_OUT_CHUNK:,}; "
          f"B: {args.objects:,} companies; A: {args.companies} companies, "
          f"{args.writes} writes per phase")  # fmt: skip
    with scratch_database("postgresql", "fair") as scratch:
        db = Database(create_db_engine(scratch.url))
        upgrade_to_head(db.engine)
        started = time.perf_counter()
        fixture = build_fixture(db, args.objects, args.seed)  # B, with VACUUM ANALYZE
        with db.write() as conn:
            org_a, issued = create_organization(conn, "A")
        print(f"setup: B's {args.objects:,} companies and {fixture.values:,} values in "
              f"{time.perf_counter() - started:.1f} s")  # fmt: skip
        stack = Stack(scratch.url, args.workers, args.batch_size)
        headers = {"Authorization": f"Bearer {issued.key}"}
        try:
            with httpx.Client(headers=headers, timeout=60.0) as client:
                stack.wait_ready(client)
                _profile, a_ids = configure(client, stack.base, args.companies, args.seed)
                wait_until_done(db, stack, org_a.id, 0)
                queue_profile(db, fixture)
                initial = wait_until_done(db, stack, fixture.org_id, args.analyze_every)
                print(f"B's first scoring of {args.objects:,} companies: {initial:.1f} s")
                with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                    c.exec_driver_sql("VACUUM ANALYZE")
                time.sleep(1.0)

                print(f"\nidle: {args.writes} writes by A ...")
                idle, idle_puts, idle_gets, _ = measure(
                    client, stack.base, a_ids[: args.writes], args.writes, args.seed
                )

                print("under load: B changes a rule over all its companies ...")
                rule_started = time.perf_counter()
                change_b_rule(db, fixture, 30)
                rule_write = time.perf_counter() - rule_started
                time.sleep(2.0)
                before = remaining(db, fixture.org_id)
                analyzer_stop = threading.Event()

                def keep_analyzing() -> None:  # autovacuum's auto-analyze, meanwhile
                    while args.analyze_every and not analyzer_stop.wait(args.analyze_every):
                        analyze(db)

                analyzer = threading.Thread(target=keep_analyzing, daemon=True)
                analyzer.start()
                loaded, loaded_puts, loaded_gets, _ = measure(  # other companies than idle
                    client, stack.base, a_ids[args.writes :], args.writes, args.seed + 1
                )
                analyzer_stop.set()
                analyzer.join()
                after = remaining(db, fixture.org_id)
                rest = wait_until_done(db, stack, fixture.org_id, args.analyze_every)
                b_total = time.perf_counter() - rule_started
        finally:
            stack.stop()
        db.engine.dispose()
    if stack.errors:
        print("server/worker errors:\n  " + "\n  ".join(stack.errors[:10]))
    print(f"\nB's rule write: {_ms(rule_write)}; B's entries queued when A began: {before[0]:,}"
          f"{' (fan-out unfinished)' if before[1] else ''}; when A's last write was scored: "
          f"{after[0]:,}{' (fan-out unfinished)' if after[1] else ''}")  # fmt: skip
    print(f"B's recompute, rule write to the last of its {args.objects:,} companies fresh: "
          f"{b_total:.1f} s ({args.objects / b_total:,.0f} companies/s; "
          f"{rest:.1f} s after A's last write)")  # fmt: skip
    under_load = after[0] > 0 or after[1]
    if not under_load:
        print("WARNING: B's recompute ended before A's last write: not all of A's writes ran "
              "under load (use more --objects or fewer --writes)")  # fmt: skip
    print(f"\nA's write → fresh score, {args.writes} writes per phase:")
    print("| phase | p50 | p95 | p99 | max | PUT p50 | GET p50 |")
    print("|---|---|---|---|---|---|---|")
    for name, sample, puts, gets in (
        ("idle (baseline)", idle, idle_puts, idle_gets),
        ("while B recomputes", loaded, loaded_puts, loaded_gets),
    ):
        cells = [_ms(f) for f in _figures(sample)] + [_ms(percentile(puts, 50)),
                                                      _ms(percentile(gets, 50))]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    ratios = [lo / hi for lo, hi in zip(_figures(loaded), _figures(idle), strict=True)]
    print("| loaded / idle | " + " | ".join(f"{r:.1f}x" for r in ratios)
          + f" | {percentile(loaded_puts, 50) / percentile(idle_puts, 50):.1f}x"
          f" | {percentile(loaded_gets, 50) / percentile(idle_gets, 50):.1f}x |")  # fmt: skip
    p95_ratio = ratios[1]
    verdict = "MET" if p95_ratio <= 2.0 and under_load else "NOT MET"
    if p95_ratio <= 2.0 and not under_load:
        verdict += " (not measured under load)"
    print(f"target: A's p95 under B's load <= 2x idle: {verdict} ({p95_ratio:.1f}x: "
          f"{_ms(percentile(loaded, 95))} against {_ms(percentile(idle, 95))})")  # fmt: skip
    print(f"load average at the end: {load_average()}")
    return 0 if not stack.errors else 1


if __name__ == "__main__":
    sys.exit(main())
