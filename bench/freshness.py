"""Benchmark freshness: how long after a single value write the stored score shows it.

    python bench/freshness.py [--writes 200] [--companies 100] [--backend sqlite|postgresql]

Starts the real server (`signalscore serve`, embedded worker on) against a scratch database,
configures it over HTTP (the 20 templates and 20 rules of bench/recompute.py, one company
profile, `--companies` companies assigned with about 16 values each) and waits until
`GET /v1/scoring/compute/status` shows nothing pending or running. Then, `--writes` times, on
an otherwise idle server: read a company's current `fit` version, write one value with
`PUT /v1/signals/values` that changes that company's fit score (headcount alternating between
two ranges, always a new value), and poll `GET /v1/scoring/scores` every 10 ms until the row's
version increases.
The latency runs from just before the PUT to the end of the first read showing the new
version. Baseline, in the same run: the round trip of the PUT itself and of one GET.
Target: p95 under 1 second.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx

from _common import (
    RULES,
    TEMPLATES,
    VENV_BIN,
    company_ids,
    company_values,
    free_port,
    load_average,
    percentile,
    scratch_database,
    speed_probe,
)

SIGNALSCORE = str(VENV_BIN / "signalscore")
# Headcounts in two different ranges of the `employees` fit rule (10-50 → 5, 5000+ → 10).
HEADCOUNTS = (15, 10_000_000)


def create_organization(database_url: str) -> str:
    """`signalscore org create --json` (migrates the scratch database first); the API key."""
    out = subprocess.run(
        [SIGNALSCORE, "org", "create", "bench", "--json", "--database-url", database_url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return str(json.loads(out.strip().splitlines()[-1])["apiKey"])


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of some processes (with their threads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """`signalscore serve` as a subprocess on a free port."""

    def __init__(self, database_url: str, *, standalone_worker: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        command = [SIGNALSCORE, "serve", "--port", str(self.port), "--database-url", database_url]
        if standalone_worker:
            command.append("--no-embedded-worker")
        self.process = subprocess.Popen(
            [*command, "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.errors: list[str] = []
        threading.Thread(target=self._drain_stderr, args=(self.process,), daemon=True).start()
        self.worker: subprocess.Popen[str] | None = None
        if standalone_worker:
            self.worker = subprocess.Popen(
                [SIGNALSCORE, "worker", "--database-url", database_url, "--log-level", "warning"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            threading.Thread(target=self._drain_stderr, args=(self.worker,), daemon=True).start()

    def _drain_stderr(self, process: subprocess.Popen[str]) -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if re.search(r"ERROR|Traceback|Exception", line):
                self.errors.append(line.rstrip())

    def pids(self) -> list[int]:
        return [p.pid for p in (self.process, self.worker) if p is not None]

    def wait_ready(self, client: httpx.Client, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.errors}")
            try:
                if client.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        for process in (self.process, self.worker):
            if process is None:
                continue
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _check(response: httpx.Response, *expected: int) -> Any:
    if response.status_code not in expected:
        raise RuntimeError(
            f"{response.request.method} {response.request.url} → {response.status_code}: "
            f"{response.text[:500]}"
        )
    return response.json() if response.content else None


def configure(client: httpx.Client, base: str, companies: int, seed: int) -> tuple[str, list[str]]:
    """Templates, profile, rules, values and assignments over HTTP. Returns (profile, ids)."""
    for template_id, answer_type in TEMPLATES:
        _check(
            client.post(
                f"{base}/v1/signals/templates",
                json={
                    "id": template_id,
                    "name": template_id,
                    "objectType": "company",
                    "answerType": answer_type,
                },
            ),
            201,
        )
    profile = _check(
        client.post(
            f"{base}/v1/scoring/profiles",
            json={"profileType": "company", "name": "Freshness bench"},
        ),
        201,
    )
    profile_id = profile["id"]
    for template_id, dimension, answer_type, point_values in RULES:
        _check(
            client.put(
                f"{base}/v1/scoring/profiles/{profile_id}/rules",
                json={
                    "signalTemplateId": template_id,
                    "dimension": dimension,
                    "answerType": answer_type,
                    "pointValues": point_values,
                },
            ),
            200,
            201,
        )
    ids = company_ids(companies)
    items = [
        {"objectType": "company", "objectId": o, "signalTemplateId": t, "value": v}
        for o, t, v in company_values(companies, seed)
    ]
    for start in range(0, len(items), 1000):
        _check(
            client.put(f"{base}/v1/signals/values", json={"values": items[start : start + 1000]}),
            200,
        )
    for start in range(0, len(ids), 500):
        _check(
            client.post(
                f"{base}/v1/scoring/assignments/bulk",
                json={
                    "profileId": profile_id,
                    "objectType": "company",
                    "objectIds": ids[start : start + 500],
                },
            ),
            201,
        )
    return profile_id, ids


def wait_idle(client: httpx.Client, base: str, timeout: float = 300.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        status = _check(client.get(f"{base}/v1/scoring/compute/status"), 200)
        if status["pending"] == 0 and status["running"] == 0:
            return time.perf_counter() - started
        time.sleep(0.05)
    raise RuntimeError("the queue did not drain")


def fit_version(client: httpx.Client, base: str, object_id: str) -> int:
    rows = _check(
        client.get(
            f"{base}/v1/scoring/scores",
            params={"objectType": "company", "objectId": object_id, "dimension": "fit"},
        ),
        200,
    )
    return int(rows[0]["version"]) if rows else 0


def measure(
    client: httpx.Client, base: str, ids: Sequence[str], writes: int, seed: int
) -> tuple[list[float], list[float], list[float], int]:
    """(freshness latencies, PUT round trips, GET round trips, polls) in seconds."""
    rnd = random.Random(seed)
    latencies: list[float] = []
    puts: list[float] = []
    gets: list[float] = []
    polls = 0
    headcount: dict[str, int] = {}
    for i in range(writes):
        object_id = ids[i % len(ids)]
        before = fit_version(client, base, object_id)
        # Alternate between the 5000+ range (never a generated headcount) and 10-50, so
        # every write differs from the stored value and moves the fit score.
        small = headcount.get(object_id, 0) >= HEADCOUNTS[1]
        value = HEADCOUNTS[0] + i % 30 if small else HEADCOUNTS[1] + i
        headcount[object_id] = value
        body = {
            "values": [
                {
                    "objectType": "company",
                    "objectId": object_id,
                    "signalTemplateId": "employees",
                    "value": value,
                }
            ]
        }
        params = {"objectType": "company", "objectId": object_id, "dimension": "fit"}
        started = time.perf_counter()
        result = _check(client.put(f"{base}/v1/signals/values", json=body), 200)
        put_done = time.perf_counter()
        puts.append(put_done - started)
        if result["written"] != 1:
            raise RuntimeError(f"write did not change the value: {result}")
        while True:
            get_started = time.perf_counter()
            rows = _check(client.get(f"{base}/v1/scoring/scores", params=params), 200)
            get_done = time.perf_counter()
            gets.append(get_done - get_started)
            polls += 1
            if rows and rows[0]["version"] > before:
                latencies.append(get_done - started)
                break
            if get_done - started > 30:
                raise RuntimeError(f"{object_id}: score not updated after 30 s")
            time.sleep(0.01)
        time.sleep(rnd.uniform(0.05, 0.15))  # let the server go idle again
    return latencies, puts, gets, polls


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--companies", type=int, default=100)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument(
        "--standalone-worker",
        action="store_true",
        help="serve --no-embedded-worker plus one `signalscore worker` process (comparison)",
    )
    args = parser.parse_args(argv)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_average()}, "
        f"speed probe sum(range(1000)) = {speed_probe():.1f} µs"
    )
    with scratch_database(args.backend, "fresh", keep=args.keep) as scratch:
        key = create_organization(scratch.url)
        server = Server(scratch.url, standalone_worker=args.standalone_worker)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.Client(headers=headers, timeout=30.0) as client:
                server.wait_ready(client)
                started = time.perf_counter()
                _profile, ids = configure(client, server.base, args.companies, args.seed)
                drained = wait_idle(client, server.base)
                print(
                    f"{args.backend}: configured {len(ids)} companies over HTTP in "
                    f"{time.perf_counter() - started:.1f} s (queue drained {drained:.1f} s after "
                    "the last assignment)"
                )
                time.sleep(1.0)
                cpu_before, idle_started = cpu_seconds(server.pids()), time.perf_counter()
                time.sleep(5.0)
                idle_cpu = (cpu_seconds(server.pids()) - cpu_before) / (
                    time.perf_counter() - idle_started
                )
                mode = "standalone worker" if args.standalone_worker else "embedded worker"
                print(f"idle server CPU over 5 s (no requests, {mode}): {idle_cpu:.0%} of one core")
                cpu_before, run_started = cpu_seconds(server.pids()), time.perf_counter()
                latencies, puts, gets, polls = measure(
                    client, server.base, ids, args.writes, args.seed
                )
                run_cpu = (cpu_seconds(server.pids()) - cpu_before) / (
                    time.perf_counter() - run_started
                )
        finally:
            server.stop()
        if server.errors:
            print("server errors:\n  " + "\n  ".join(server.errors[:10]))
    p50, p95, p99 = (percentile(latencies, p) for p in (50, 95, 99))
    put_median, get_median = percentile(puts, 50), percentile(gets, 50)
    print(f"\n{len(latencies)} single-value writes, {polls} polls (every 10 ms):")
    print("| | p50 | p95 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, sample in (
        ("write → fresh score", latencies),
        ("PUT round trip", puts),
        ("GET round trip", gets),
    ):
        figures = [percentile(sample, p) for p in (50, 95, 99)] + [max(sample)]
        print(f"| {name} | " + " | ".join(_ms(f) for f in figures) + " |")
    print(
        f"freshness p50 = {p50 / put_median:.1f}x the median PUT round trip "
        f"({_ms(put_median)}), {p50 / get_median:.1f}x the median GET ({_ms(get_median)})"
    )
    print(f"server CPU during the measurement: {run_cpu:.0%} of one core")
    verdict = "MET" if p95 < 1.0 else "NOT MET"
    print(f"target p95 < 1 s: {verdict} (p95 = {_ms(p95)}, p99 = {_ms(p99)})")
    print(f"load average at the end: {load_average()}")
    return 0 if not server.errors else 1


if __name__ == "__main__":
    sys.exit(main())
