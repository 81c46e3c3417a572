"""Per-request cost of authentication and rate limiting, before and after issue 11 (part 3).

    .venv/bin/python bench/request_cost.py [--requests 3000] [--rounds 6] [--before REV]
                                           [--variants before,after,no-cache,redis,off]

Each variant is a real `signalscore serve` (one process, no embedded worker, log level
warning) on a scratch PostgreSQL database of its own, with one organisation made by that
variant's own CLI; all of them run at once. On one keep-alive connection per server, after a
warm-up, the client sends `--rounds` rounds; each round visits every variant in turn with a
block of `GET /healthz` (the baseline: no key, no database) then a block of the same size of
`GET /v1/organization` (key, rate limits, then the route's one read of the organisation row),
so the machine's changing load falls on every variant alike. Per variant it prints:

- latency p50 and p99 of both routes, and the authenticated route's p50 as a multiple of
  `/healthz`'s (the baseline measured in the same run);
- server CPU per request of both routes (the process's user + system time over the blocks of
  that route), and the authenticated route's as a multiple of `/healthz`'s;
- the CPU of the PostgreSQL backends serving the server, per authenticated request;
- transactions committed and rows written to `rate_limit_counters` per authenticated request
  (`pg_stat_database`, `pg_stat_user_tables` of the scratch database, read after the server
  stopped; they include the start-up's handful of transactions).

Variants:

- `before`: git revision `--before` (the code before this work: one read transaction per key
  look-up, one committed upsert per request), run from `git archive REV src` with PYTHONPATH
  (skipped without `--before`);
- `after`: this tree with its defaults (counters merged through PostgreSQL every second, key
  cache 5 s);
- `no-cache`: this tree, `SIGNALSCORE_AUTH_CACHE_SECONDS=0` (a key look-up per request);
- `redis`: this tree, `SIGNALSCORE_RATE_LIMIT_BACKEND=redis` (Redis at 127.0.0.1:6379);
- `off`: this tree, every limit 0 and no key cache (key look-up, no counting);
- `floor`: this tree, every limit 0, key cache 300 s: the route with (almost) nothing of
  authentication and rate limiting left, so `variant - floor` is what they cost.

The second table divides every variant's figures by `before`'s; the third is each variant
minus `floor`: the cost of authentication and rate limiting alone, old path against new.
Last, the new path's own work timed in process (no HTTP): a key cache hit, and the address
check plus the two counts, with each backend that needs no server.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import sqlalchemy as sa

from _common import (
    REPO,
    VENV_BIN,
    free_port,
    load_average,
    percentile,
    scratch_database,
    speed_probe,
)

PYTHON = str(VENV_BIN / "python")
CLI = ["-m", "signalscore.cli"]
ROUTE = "/v1/organization"

VARIANT_ENV: dict[str, dict[str, str]] = {
    "before": {},
    "after": {},
    "no-cache": {"SIGNALSCORE_AUTH_CACHE_SECONDS": "0"},
    "redis": {
        "SIGNALSCORE_RATE_LIMIT_BACKEND": "redis",
        "SIGNALSCORE_REDIS_URL": "redis://127.0.0.1:6379/0",
    },
    "off": {
        "SIGNALSCORE_RATE_LIMIT_READS_PER_MINUTE": "0",
        "SIGNALSCORE_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "SIGNALSCORE_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE": "0",
        "SIGNALSCORE_AUTH_CACHE_SECONDS": "0",
    },
    "floor": {
        "SIGNALSCORE_RATE_LIMIT_READS_PER_MINUTE": "0",
        "SIGNALSCORE_RATE_LIMIT_WRITES_PER_MINUTE": "0",
        "SIGNALSCORE_RATE_LIMIT_AUTH_FAILURES_PER_MINUTE": "0",
        "SIGNALSCORE_AUTH_CACHE_SECONDS": "300",
    },
}


@dataclass
class Figures:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"health": [], "auth": []})
    server_cpu: dict[str, float] = field(default_factory=lambda: {"health": 0.0, "auth": 0.0})
    db_cpu: dict[str, float] = field(default_factory=lambda: {"health": 0.0, "auth": 0.0})
    count: dict[str, int] = field(default_factory=lambda: {"health": 0, "auth": 0})
    auth_total: int = 0  # authenticated requests over the server's life (warm-up included)
    commits: int = 0
    counter_writes: int = 0

    def p(self, route: str, pct: float) -> float:
        return percentile(self.latencies[route], pct)

    def cpu_per_request(self, route: str) -> float:
        return self.server_cpu[route] / self.count[route]

    def db_cpu_per_request(self, route: str) -> float:
        return self.db_cpu[route] / self.count[route]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of some live processes (all their threads, exited ones too)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(
        url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=sa.pool.NullPool
    )


def database_stats(url: str) -> tuple[int, int]:
    """(transactions committed, rows inserted + updated in rate_limit_counters) so far."""
    engine = _engine(url)
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT pg_stat_clear_snapshot()")
        commits = conn.exec_driver_sql(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).scalar_one()
        writes = conn.exec_driver_sql(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0) FROM pg_stat_user_tables "
            "WHERE relname = 'rate_limit_counters'"
        ).scalar_one()
    engine.dispose()
    return int(commits), int(writes)


def backend_pids(url: str) -> list[int]:
    engine = _engine(url)
    with engine.connect() as conn:
        pids = conn.exec_driver_sql(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'signalscore'"
        ).scalars()
        found = [int(p) for p in pids]
    engine.dispose()
    return found


@contextlib.contextmanager
def source_tree(revision: str | None) -> Iterator[str | None]:
    """PYTHONPATH for a variant: None for this tree, else `git archive REV src` unpacked."""
    if revision is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="signalscore-before-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", revision, "src"],
            check=True,
            capture_output=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        # The compiled C engine loop of this tree (the benchmark does not score anything,
        # but without it every process logs a warning).
        for built in (REPO / "src/signalscore/engine").glob("_native*.so"):
            (Path(tmp) / "src/signalscore/engine" / built.name).write_bytes(built.read_bytes())
        yield str(Path(tmp) / "src")


class Variant:
    """One server (and its scratch database) of one variant, started and stopped here."""

    def __init__(self, name: str, url: str, pythonpath: str | None) -> None:
        self.name = name
        self.url = url
        self.figures = Figures()
        self.env = {**os.environ, **VARIANT_ENV[name]}
        if pythonpath is not None:
            self.env["PYTHONPATH"] = pythonpath
        created = subprocess.run(
            [PYTHON, *CLI, "org", "create", "bench", "--json", "--database-url", url],
            check=True,
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout
        self.headers = {"Authorization": f"Bearer {json.loads(created.splitlines()[-1])['apiKey']}"}
        time.sleep(0.7)  # let the CLI's backend report its statistics
        self.stats_before = database_stats(url)
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        command = [PYTHON, *CLI, "serve", "--port", str(port), "--database-url", url]
        self.server = subprocess.Popen(
            [*command, "--no-embedded-worker", "--log-level", "warning"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.server.stderr is not None
        self.errors.extend(line.rstrip() for line in self.server.stderr if line.strip())

    def wait_ready(self, client: httpx.Client) -> None:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if client.get(f"{self.base}/readyz").status_code == 200:
                    return
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the server did not start: {self.errors}")
            time.sleep(0.1)

    def block(self, client: httpx.Client, route: str, count: int) -> None:
        """`count` requests of one route, timed, with the CPU they cost."""
        path, headers = ("/healthz", {}) if route == "health" else (ROUTE, self.headers)
        f = self.figures
        db_pids = backend_pids(self.url)
        cpu0, db0 = cpu_seconds([self.server.pid]), cpu_seconds(db_pids)
        for _ in range(count):
            started = time.perf_counter()
            response = client.get(f"{self.base}{path}", headers=headers)
            f.latencies[route].append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"{self.name}: {path} answered {response.status_code}")
        f.server_cpu[route] += cpu_seconds([self.server.pid]) - cpu0
        f.db_cpu[route] += cpu_seconds(db_pids) - db0
        f.count[route] += count

    def stop(self) -> None:
        self.server.terminate()
        self.server.wait(timeout=30)
        time.sleep(0.7)  # the server's backends report their statistics as they exit
        commits, writes = database_stats(self.url)
        self.figures.commits = commits - self.stats_before[0]
        self.figures.counter_writes = writes - self.stats_before[1]
        if self.errors:
            print(f"  ({self.name}: server stderr: {self.errors[:3]})")


def measure(names: list[str], args: argparse.Namespace) -> dict[str, Figures]:
    """Every variant's server runs at once, and the rounds visit them in turn, so a change
    in the machine's load during the run falls on all of them alike."""
    with contextlib.ExitStack() as stack:
        variants = []
        for name in names:
            pythonpath = stack.enter_context(source_tree(args.before if name == "before" else None))
            scratch = stack.enter_context(
                scratch_database("postgresql", f"cost_{name.replace('-', '_')}")
            )
            variant = Variant(name, scratch.url, pythonpath)
            stack.callback(variant.server.kill)
            variants.append(variant)
        with httpx.Client(timeout=30) as client:
            for variant in variants:
                variant.wait_ready(client)
                for _ in range(args.warmup):
                    client.get(f"{variant.base}/healthz")
                    client.get(f"{variant.base}{ROUTE}", headers=variant.headers)
                variant.figures.auth_total += args.warmup
            block = args.requests // args.rounds
            for _ in range(args.rounds):
                for variant in variants:
                    variant.block(client, "health", block)
                    variant.block(client, "auth", block)
                    variant.figures.auth_total += block
        for variant in variants:
            variant.stop()
        return {variant.name: variant.figures for variant in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="per route and variant")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--before", help="git revision of the code before (variant 'before')")
    parser.add_argument("--variants", default="before,after,no-cache,redis,off,floor")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n and (n != "before" or args.before)]
    probe = speed_probe()
    print(
        f"machine: load {load_average()}, sum(range(1000)) {probe:.2f} µs; "
        f"{args.requests} requests per route and variant in {args.rounds} rounds"
    )
    results = measure(names, args)

    print()
    print(
        "| variant | /healthz p50 / p99 | /v1/organization p50 / p99 | p50 vs /healthz | "
        "server CPU /healthz | server CPU auth | vs /healthz | DB CPU per auth req | "
        "commits per auth req | counter rows written per auth req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, f in results.items():
        print(
            f"| {name} | {f.p('health', 50) * 1e3:.2f} / {f.p('health', 99) * 1e3:.2f} ms | "
            f"{f.p('auth', 50) * 1e3:.2f} / {f.p('auth', 99) * 1e3:.2f} ms | "
            f"{f.p('auth', 50) / f.p('health', 50):.2f}x | "
            f"{f.cpu_per_request('health') * 1e6:.0f} µs | "
            f"{f.cpu_per_request('auth') * 1e6:.0f} µs | "
            f"{f.cpu_per_request('auth') / f.cpu_per_request('health'):.2f}x | "
            f"{f.db_cpu_per_request('auth') * 1e6:.0f} µs | "
            f"{f.commits / f.auth_total:.3f} | {f.counter_writes / f.auth_total:.3f} |"
        )
    if "before" in results:
        b = results["before"]
        print()
        print("Against `before` (same run): ratio of each variant's figure to before's")
        print()
        print(
            "| variant | auth p50 - /healthz p50 | auth server CPU - /healthz CPU | "
            "DB CPU per auth req | commits per auth req |"
        )
        print("|---|---|---|---|---|")

        def extra_latency(f: Figures) -> float:
            return f.p("auth", 50) - f.p("health", 50)

        def extra_cpu(f: Figures) -> float:
            return f.cpu_per_request("auth") - f.cpu_per_request("health")

        for name, f in results.items():
            print(
                f"| {name} | {extra_latency(f) * 1e3:.2f} ms "
                f"({extra_latency(f) / extra_latency(b):.2f}x) | "
                f"{extra_cpu(f) * 1e6:.0f} µs ({extra_cpu(f) / extra_cpu(b):.2f}x) | "
                f"{f.db_cpu_per_request('auth') * 1e6:.0f} µs "
                f"({f.db_cpu_per_request('auth') / max(b.db_cpu_per_request('auth'), 1e-9):.2f}x)"
                f" | {f.commits / f.auth_total:.3f} "
                f"({(f.commits / f.auth_total) / (b.commits / b.auth_total):.2f}x) |"
            )

    if "floor" in results:
        floor = results["floor"]
        print()
        print("Authentication + rate limiting alone: each variant minus `floor` (same run)")
        print()
        print("| variant | auth p50 | server CPU per auth req | DB CPU per auth req |")
        print("|---|---|---|---|")
        for name, f in results.items():
            if name == "floor":
                continue
            latency = f.p("auth", 50) - floor.p("auth", 50)
            cpu = f.cpu_per_request("auth") - floor.cpu_per_request("auth")
            db = f.db_cpu_per_request("auth") - floor.db_cpu_per_request("auth")
            print(
                f"| {name} | {latency * 1e3:+.2f} ms | {cpu * 1e6:+.0f} µs | {db * 1e6:+.0f} µs |"
            )
    in_process_costs(probe)


def in_process_costs(probe: float) -> None:
    """The new path's own work per request, without HTTP: the key cache hit, the address
    check and the count against key and organisation (no merge is due in the loop)."""
    from signalscore.auth.keys import generate_key, hash_key
    from signalscore.auth.service import KeyCache, authenticate_cached
    from signalscore.db.engine import Database, create_db_engine
    from signalscore.ratelimit import Limits, MemoryCounters, PostgresCounters, RateLimiter

    engine = create_db_engine("postgresql://postgres@127.0.0.1:1/unused")  # never connects
    key, key_id, loops = generate_key(), uuid.uuid4(), 100_000
    cache = KeyCache(300)
    cache.put(hash_key(key), ("org", key_id))
    database = Database(engine)
    started = time.perf_counter()
    for _ in range(loops):
        authenticate_cached(database, key, cache)
    cached = (time.perf_counter() - started) / loops
    print()
    print(f"in process, per request (sum(range(1000)) = {probe:.2f} µs on this machine now):")
    print(f"- key cache hit (SHA-256 + dict): {cached * 1e6:.1f} µs ({cached * 1e6 / probe:.2f}x)")
    for counters in (MemoryCounters(), PostgresCounters(engine, sync_seconds=3600)):
        limiter = RateLimiter(counters, Limits(key_reads=10**9, org_reads=10**9))
        started = time.perf_counter()
        for _ in range(loops):
            limiter.address_blocked("192.0.2.1")
            decision = limiter.check(key_id, "org", "read")
            assert decision is not None
            decision.headers()
        took = (time.perf_counter() - started) / loops
        print(
            f"- address check + key and organisation counts ({type(counters).__name__}): "
            f"{took * 1e6:.1f} µs ({took * 1e6 / probe:.2f}x)"
        )
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
