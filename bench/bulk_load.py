"""Benchmark bulk loading: values and assignments through the import endpoints, against the
database's own bulk insert of the same rows, in the same run.

    python bench/bulk_load.py [--backend postgresql|sqlite] [--companies 50000] [--rounds 2]

Starts the real server (`signalscore serve`, embedded worker on, as a new user runs it)
against a scratch database and configures it over HTTP: the 20 templates and 20 rules of
bench/recompute.py and one company profile. Then:

1. **Assignments**: `POST /v1/scoring/assignments/import` of the `--companies` companies (one
   CSV body), timed; the worker then computes them (their scores are all zero: no values yet).
2. **Values**, `--rounds` times, each from an empty `signal_values` table (TRUNCATE, statistics
   left as they are, as on a fresh production database):
   - baseline: the same rows (20 values per company, 1,000,000 at 50,000 companies) written
     straight into `signal_values` by the database's own bulk path: on PostgreSQL `COPY ...
     FROM STDIN` fed from a prepared buffer; on SQLite one `executemany` INSERT transaction;
   - the import: `POST /v1/signals/values/import` of the same values as one streamed NDJSON
     body (`--chunk N` splits it into calls of N lines), timed from the first byte sent to the
     response. It queues every company (each is assigned, and each value is new); the time
     the worker then takes to compute them is reported, not part of the ratio.
   The ratio is the best import against the best baseline. Target: at most 3x.
3. **Memory**: the server process's peak RSS (VmHWM) before and after the imports.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import sqlalchemy as sa

from _common import (
    RULES,
    TEMPLATES,
    company_ids,
    company_values,
    load_average,
    peak_rss_mb,
    scratch_database,
    speed_probe,
)
from freshness import Server, _check, create_organization, wait_idle


def configure(client: httpx.Client, base: str) -> str:
    """Templates, profile and rules over HTTP; the profile id."""
    for template_id, answer_type in TEMPLATES:
        body = {"id": template_id, "name": template_id, "objectType": "company",
                "answerType": answer_type}  # fmt: skip
        _check(client.post(f"{base}/v1/signals/templates", json=body), 201)
    profile = _check(
        client.post(
            f"{base}/v1/scoring/profiles", json={"profileType": "company", "name": "Bulk bench"}
        ),
        201,
    )
    for template_id, dimension, answer_type, point_values in RULES:
        body = {"signalTemplateId": template_id, "dimension": dimension,
                "answerType": answer_type, "pointValues": point_values}  # fmt: skip
        _check(client.put(f"{base}/v1/scoring/profiles/{profile['id']}/rules", json=body), 200, 201)
    return str(profile["id"])


def sql_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def org_id_of(url: str) -> str:
    engine = sa.create_engine(sql_url(url), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        org = conn.execute(sa.text("SELECT id FROM organizations")).scalar_one()
    engine.dispose()
    return str(org)


def empty_values(url: str) -> None:
    """An empty `signal_values` (and queue), as before a first load."""
    engine = sa.create_engine(sql_url(url), poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            conn.exec_driver_sql("TRUNCATE signal_values, recompute_queue")
        else:
            conn.exec_driver_sql("DELETE FROM signal_values")
            conn.exec_driver_sql("DELETE FROM recompute_queue")
    engine.dispose()


def baseline_postgresql(url: str, tsv: bytes) -> float:
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cursor:
        started = time.perf_counter()
        columns = "organization_id, object_type, object_id, signal_template_id, value, " \
                  "observed_at, updated_at"  # fmt: skip
        with cursor.copy(f"COPY signal_values ({columns}) FROM STDIN") as copy:
            for start in range(0, len(tsv), 1 << 20):
                copy.write(tsv[start : start + (1 << 20)])
        conn.commit()
        return time.perf_counter() - started


def baseline_sqlite(path: str, rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO signal_values (organization_id, object_type, object_id, signal_template_id,"
        " value, observed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def ndjson_chunks(path: Path, lines_per_call: int | None) -> Iterator[list[bytes]]:
    """The body of each call, as a list of lines (one call when `lines_per_call` is None)."""
    with path.open("rb") as source:
        call: list[bytes] = []
        for line in source:
            call.append(line)
            if lines_per_call and len(call) >= lines_per_call:
                yield call
                call = []
        if call:
            yield call


def stream(lines: Sequence[bytes], block: int = 1 << 16) -> Iterator[bytes]:
    buffer = io.BytesIO()
    for line in lines:
        buffer.write(line)
        if buffer.tell() >= block:
            yield buffer.getvalue()
            buffer = io.BytesIO()
    if buffer.tell():
        yield buffer.getvalue()


def run_import(
    client: httpx.Client, base: str, path: Path, lines_per_call: int | None, values: int
) -> float:
    started = time.perf_counter()
    written = 0
    for call in ndjson_chunks(path, lines_per_call):
        result = _check(
            client.post(
                f"{base}/v1/signals/values/import",
                content=stream(call),
                headers={"content-type": "application/x-ndjson"},
            ),
            200,
        )
        written += result["written"]
    elapsed = time.perf_counter() - started
    if written != values:
        raise RuntimeError(f"the import wrote {written} values, not {values}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--companies", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=None, help="lines per import call")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    calls = "one call" if not args.chunk else f"{args.chunk:,} lines per call"
    print(f"bulk load: {args.backend}, {args.companies:,} companies x 20 values, "
          f"{args.rounds} round(s), {calls}")  # fmt: skip
    print(f"  speed probe {speed_probe():.1f} us, load average {load_average()}")
    now = datetime.now(UTC).replace(tzinfo=None)
    items = list(company_values(args.companies, args.seed, presence=1.0))
    with scratch_database(args.backend, "bulk") as scratch:
        api_key = create_organization(scratch.url)
        org_id = org_id_of(scratch.url)
        ndjson_path = Path(tempfile.gettempdir()) / f"bulk_bench_{os.getpid()}.ndjson"
        with ndjson_path.open("wb") as out:
            for object_id, template_id, value in items:
                out.write(
                    orjson.dumps({"objectType": "company", "objectId": object_id,
                                  "signalTemplateId": template_id, "value": value}) + b"\n"
                )  # fmt: skip
        print(f"  NDJSON body: {ndjson_path.stat().st_size / 1e6:.1f} MB, {len(items):,} lines")
        if args.backend == "postgresql":
            buffer = io.StringIO()
            for object_id, template_id, value in items:
                document = json.dumps(value).replace("\\", "\\\\")
                buffer.write(f"{org_id}\tcompany\t{object_id}\t{template_id}\t{document}\t"
                             f"{now.isoformat()}\t{now.isoformat()}\n")  # fmt: skip
            tsv = buffer.getvalue().encode()
            baseline = lambda: baseline_postgresql(scratch.url, tsv)  # noqa: E731
        else:
            rows = [
                (org_id, "company", o, t, json.dumps(v), now.isoformat(" "), now.isoformat(" "))
                for o, t, v in items
            ]
            baseline = lambda: baseline_sqlite(scratch.name, rows)  # noqa: E731
        del items

        server = Server(scratch.url)
        headers = {"authorization": f"Bearer {api_key}"}
        try:
            with httpx.Client(headers=headers, timeout=3600) as client:
                server.wait_ready(client)
                base = server.base
                profile_id = configure(client, base)
                csv_body = "objectId\n" + "".join(f"{o}\n" for o in company_ids(args.companies))
                started = time.perf_counter()
                assigned = _check(
                    client.post(
                        f"{base}/v1/scoring/assignments/import",
                        params={"profileId": profile_id},
                        content=csv_body.encode(),
                        headers={"content-type": "text/csv"},
                    ),
                    200,
                )
                assign_s = time.perf_counter() - started
                print(f"  assignments import: {assigned['assigned']:,} in {assign_s:.2f} s "
                      f"({assigned['assigned'] / assign_s:,.0f}/s)")  # fmt: skip
                initial = wait_idle(client, base, 3600)
                print(f"  their initial compute (no values yet): {initial:.1f} s")
                rss_before = peak_rss_mb(server.process.pid)
                baselines: list[float] = []
                imports: list[float] = []
                for round_ in range(1, args.rounds + 1):
                    empty_values(scratch.url)
                    baselines.append(baseline())
                    print(f"  round {round_}: baseline {baselines[-1]:.2f} s "
                          f"({args.companies * 20 / baselines[-1]:,.0f} rows/s)")  # fmt: skip
                    empty_values(scratch.url)
                    imports.append(run_import(client, base, ndjson_path, args.chunk,
                                              args.companies * 20))  # fmt: skip
                    print(f"  round {round_}: import {imports[-1]:.2f} s "
                          f"({args.companies * 20 / imports[-1]:,.0f} values/s), "
                          f"ratio {imports[-1] / baselines[-1]:.2f}x")  # fmt: skip
                    print(f"  round {round_}: the worker computed the queued companies in "
                          f"{wait_idle(client, base, 3600):.1f} s")  # fmt: skip
                rss_after = peak_rss_mb(server.process.pid)
        finally:
            server.stop()
            ndjson_path.unlink(missing_ok=True)
        if server.errors:
            print("  server errors:", *server.errors[:5], sep="\n    ")
            return 1
    best_import, best_baseline = min(imports), min(baselines)
    print(f"RESULT {args.backend}: import {best_import:.2f} s vs baseline {best_baseline:.2f} s "
          f"= {best_import / best_baseline:.2f}x (target <= 3x); server peak RSS "
          f"{rss_before:.0f} MB before the imports, {rss_after:.0f} MB after")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
