"""Benchmark `signalscore-client push values` against the server's own bulk load, in the same
run, and the client's memory at two file sizes.

    python bench/client_push.py [--backend postgresql|sqlite] [--companies 50000] [--rounds 1]
                                [--chunk-lines N]

Starts the real server and configures it as bench/bulk_load.py does (20 templates, 20 rules,
one company profile). Each measurement starts from an empty `signal_values` table:

- **server import**: the values (20 per company, 1,000,000 at 50,000 companies) as one
  streamed NDJSON body to `POST /v1/signals/values/import`: bench/bulk_load.py's measurement;
- **client push**: `signalscore-client push values FILE` of the same values, as a user runs
  it (a subprocess, chunks of `--chunk-lines`, a checkpoint after each), timed from start to
  exit, from a CSV file and from the NDJSON file.

A. Before any company is assigned: nothing is queued, so both measure the load alone.
   Target: the client's speed at least 0.8x the server's (server time / client time).
B. Every company assigned, as in bench/bulk_load.py: every value queues its company. A
   one-shot import queues them all at its commit and the worker computes them afterwards;
   a chunked push has the worker computing the first chunks' companies while the next are
   loaded (on 2 cores they share the CPU). Reported: each load, and each until scored.

Memory: the client's peak RSS (VmHWM, read by the CLI's own process at exit) pushing the
CSV file and its first fifth.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx2 as httpx
import orjson

from _common import REPO, VENV_BIN, company_values, load_average, scratch_database, speed_probe
from bulk_load import configure, empty_values, run_import
from freshness import Server, _check, create_organization, wait_idle

# The CLI, run by the server's venv Python with only the client's source added to its path
# (its dependencies, httpx2 and rich, are in that venv); at exit it prints its VmHWM.
CLI_WITH_RSS = """
import atexit, sys
def _rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            sys.stderr.write("PEAK_RSS_KB " + line.split()[1] + "\\n")
atexit.register(_rss)
from signalscore_client.cli import main
sys.argv[0] = "signalscore-client"
main()
"""


def push(
    base: str, key: str, path: Path, checkpoint: Path, chunk_lines: int | None
) -> tuple[float, float, dict[str, int]]:
    """(seconds, peak RSS in MB, summary) of one `push values` run."""
    checkpoint.unlink(missing_ok=True)
    env = {
        **os.environ,
        "SIGNALSCORE_URL": base,
        "SIGNALSCORE_API_KEY": key,
        "PYTHONPATH": str(REPO / "clients" / "python" / "src"),
    }
    started = time.perf_counter()
    done = subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-c",
            CLI_WITH_RSS,
            "--no-progress",
            "push",
            "values",
            str(path),
            "--checkpoint",
            str(checkpoint),
            *(["--chunk-lines", str(chunk_lines)] if chunk_lines else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"push failed: {done.stderr}")
    rss = [
        int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_RSS_KB")
    ]
    return elapsed, rss[-1] / 1024, json.loads(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--companies", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk-lines", type=int, default=None, help="[the CLI's default]")
    args = parser.parse_args(argv)
    values = args.companies * 20

    print(
        f"client push: {args.backend}, {args.companies:,} companies x 20 values, "
        f"{args.rounds} round(s)"
    )
    print(f"  speed probe {speed_probe():.1f} us, load average {load_average()}")
    tmp = Path(tempfile.gettempdir())
    ndjson_path = tmp / f"client_bench_{os.getpid()}.ndjson"
    csv_path = tmp / f"client_bench_{os.getpid()}.csv"
    small_path = tmp / f"client_bench_{os.getpid()}_small.csv"
    checkpoint = tmp / f"client_bench_{os.getpid()}.checkpoint.json"
    with (
        ndjson_path.open("wb") as nd,
        csv_path.open("w", newline="") as out,
        small_path.open("w", newline="") as small,
    ):
        writers = [csv.writer(out, lineterminator="\n"), csv.writer(small, lineterminator="\n")]
        for writer in writers:
            writer.writerow(["objectType", "objectId", "signalTemplateId", "value"])
        for n, (object_id, template_id, value) in enumerate(
            company_values(args.companies, args.seed, presence=1.0)
        ):
            item = {
                "objectType": "company",
                "objectId": object_id,
                "signalTemplateId": template_id,
                "value": value,
            }
            nd.write(orjson.dumps(item) + b"\n")
            row = ["company", object_id, template_id, json.dumps(value)]
            writers[0].writerow(row)
            if n < values // 5:
                writers[1].writerow(row)
    print(
        f"  files: NDJSON {ndjson_path.stat().st_size / 1e6:.1f} MB, CSV "
        f"{csv_path.stat().st_size / 1e6:.1f} MB ({values:,} lines), small CSV "
        f"{small_path.stat().st_size / 1e6:.1f} MB ({values // 5:,} lines)"
    )

    results: dict[str, list[float]] = {}
    rss: dict[str, float] = {}

    def measure(label: str, seconds: float, compute: float, note: str = "") -> None:
        results.setdefault(label, []).append(seconds)
        print(
            f"  {label}: {seconds:.2f} s ({values / seconds:,.0f} values/s){note}; "
            f"the worker's compute after it {compute:.1f} s"
        )

    with scratch_database(args.backend, "client") as scratch:
        api_key = create_organization(scratch.url)
        server = Server(scratch.url)
        headers = {"authorization": f"Bearer {api_key}"}
        try:
            with httpx.Client(headers=headers, timeout=3600) as client:
                server.wait_ready(client)
                base = server.base
                profile_id = configure(client, base)

                def client_push(label: str, path: Path) -> None:
                    empty_values(scratch.url)
                    seconds, peak, summary = push(base, api_key, path, checkpoint, args.chunk_lines)
                    if summary["written"] != values:
                        raise RuntimeError(f"the push wrote {summary['written']} values")
                    rss[label] = max(rss.get(label, 0.0), peak)
                    note = f", {summary['chunks']} chunks, client peak RSS {peak:.0f} MB"
                    measure(label, seconds, wait_idle(client, base, 3600), note)

                def server_import(label: str) -> None:
                    empty_values(scratch.url)
                    seconds = run_import(client, base, ndjson_path, None, values)
                    measure(label, seconds, wait_idle(client, base, 3600))

                print("A. nothing assigned yet (nothing queued): the load alone")
                for _ in range(args.rounds):
                    server_import("A server import")
                    client_push("A client push CSV", csv_path)
                    client_push("A client push NDJSON", ndjson_path)
                empty_values(scratch.url)
                _, small_rss, _ = push(base, api_key, small_path, checkpoint, args.chunk_lines)

                print(
                    "B. every company assigned (every value queues its company, as in "
                    "bench/bulk_load.py): the worker computes during a chunked push"
                )
                ids = "objectId\n" + "".join(
                    f"company-{i:07d}.example.com\n" for i in range(args.companies)
                )
                _check(
                    client.post(
                        f"{base}/v1/scoring/assignments/import",
                        params={"profileId": profile_id},
                        content=ids.encode(),
                        headers={"content-type": "text/csv"},
                    ),
                    200,
                )
                wait_idle(client, base, 3600)
                for _ in range(args.rounds):
                    started = time.perf_counter()
                    server_import("B server import")
                    results.setdefault("B server import + compute", []).append(
                        time.perf_counter() - started
                    )
                    started = time.perf_counter()
                    client_push("B client push CSV", csv_path)
                    results.setdefault("B client push CSV + compute", []).append(
                        time.perf_counter() - started
                    )
        finally:
            server.stop()
            for path in (ndjson_path, csv_path, small_path, checkpoint):
                path.unlink(missing_ok=True)
        if server.errors:
            print("  server errors:", *server.errors[:5], sep="\n    ")
            return 1
    best = {label: min(times) for label, times in results.items()}
    for scenario in ("A", "B"):
        reference = best[f"{scenario} server import"]
        for label, seconds in best.items():
            if label.startswith(f"{scenario} client push") and "compute" not in label:
                print(
                    f"RESULT {args.backend} {label}: {seconds:.2f} s vs server import "
                    f"{reference:.2f} s = {reference / seconds:.2f}x the server's speed "
                    f"(target >= 0.8x)"
                )
    load_and_compute = best["B server import + compute"] / best["B client push CSV + compute"]
    print(
        f"RESULT {args.backend} B until scored: server import + compute "
        f"{best['B server import + compute']:.1f} s, client push + compute "
        f"{best['B client push CSV + compute']:.1f} s = {load_and_compute:.2f}x"
    )
    print(
        f"RESULT {args.backend} memory: client peak RSS {small_rss:.0f} MB for "
        f"{values // 5:,} lines, {rss['A client push CSV']:.0f} MB for {values:,} lines "
        f"(CSV; NDJSON {rss['A client push NDJSON']:.0f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
