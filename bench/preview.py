"""Benchmark the preview of a rule change (SPEC §12) against a plain SELECT of the same values.

    python bench/preview.py [--sizes 50000,200000] [--backend postgresql|sqlite] [--workers 2]

For each size, in a scratch database created (and dropped) by this run:

1. Setup (not measured): the 20-template, 20-rule company profile of bench/recompute.py, N
   assignments and about 16 values per company (COPY), every company scored by worker
   processes (so the preview has stored rows to compare with), then VACUUM ANALYZE.
2. Baseline: `SELECT object_id, signal_template_id, value FROM signal_values` of the
   organisation's companies, every row fetched into Python (psycopg decodes each JSONB
   value), in a fresh process.
3. Preview: `preview.service.preview` (what `POST .../preview` runs, without HTTP) with the
   profile's 20 rules, one of them changed and one of them with a two-step decay when the
   engine supports it, in a fresh process: the server time of a preview.

Each of 2 and 3 runs `--repeats` times (fresh process each) and the best is kept; the ratio
is preview / baseline (target on PostgreSQL: <= 1.5x). Peak memory: each child's VmHWM less
its RSS before the call, compared across sizes (target: flat from 50,000 to 200,000).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from _common import RULES, load_average, peak_rss_mb, scratch_database, speed_probe
from recompute import CHANGED_RULE, build_fixture, drain_with_processes, queue_profile
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _proposed_rules() -> list[dict[str, Any]]:
    changed = (CHANGED_RULE[0], CHANGED_RULE[1])
    rules = []
    for i, (template_id, dimension, answer_type, point_values) in enumerate(RULES):
        if (template_id, dimension) == changed:
            point_values = CHANGED_RULE[3]
        rule: dict[str, Any] = {
            "signalTemplateId": template_id,
            "dimension": dimension,
            "answerType": answer_type,
            "pointValues": point_values,
        }
        if i % 2 == 0:
            rule["decay"] = {
                "steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0}]
            }
        rules.append(rule)
    return rules


def _child(kind: str, url: str, org_id: str, profile_id: str, results: Any) -> None:
    from signalscore.preview.schemas import PreviewRequest
    from signalscore.preview.service import preview

    db = Database(create_db_engine(url, pool_size=1))
    body = PreviewRequest.model_validate({"rules": _proposed_rules()})
    with db.read() as conn:  # connect and warm up outside the clock
        conn.execute(sa.text("SELECT 1"))
    before = _rss_mb()
    started = time.perf_counter()
    detail = ""
    with db.read() as conn:
        if kind == "baseline":
            rows = conn.execute(
                sa.text(
                    "SELECT object_id, signal_template_id, value FROM signal_values"
                    " WHERE organization_id = :org AND object_type = 'company'"
                ),
                {"org": org_id},
            ).all()
            detail = f"{len(rows):,} values"
            del rows
        else:
            answer = preview(conn, org_id, uuid.UUID(profile_id), body)
            fit = answer.dimensions["fit"]
            detail = (
                f"{answer.objects:,} objects, fit mean {fit.before.mean} -> {fit.after.mean}, "
                f"{sum(t.count for t in fit.tierTransitions)} tier moves"
            )
    seconds = time.perf_counter() - started
    results.put((seconds, peak_rss_mb() - before, detail))
    db.dispose()


def _run(kind: str, url: str, org_id: str, profile_id: str) -> tuple[float, float, str]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_child, args=(kind, url, org_id, profile_id, results))
    process.start()
    outcome = results.get(timeout=3600)
    process.join()
    return outcome  # type: ignore[no-any-return]


def run_size(backend: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n== {backend}: {count:,} companies ==", flush=True)
    with scratch_database(backend, "pv") as scratch:
        engine = create_db_engine(scratch.url)
        db = Database(engine)
        upgrade_to_head(engine)
        started = time.perf_counter()
        fixture = build_fixture(db, count, args.seed)
        workers = args.workers if backend == "postgresql" else 1
        drain_with_processes(
            scratch, workers, 500, lambda: queue_profile(db, fixture), "initial", None, 0.0
        )
        if backend == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        print(f"  setup and initial scoring: {time.perf_counter() - started:.0f} s", flush=True)
        org, profile = fixture.org_id, str(fixture.profile_id)
        figures: dict[str, list[tuple[float, float, str]]] = {"baseline": [], "preview": []}
        for _ in range(args.repeats):
            for kind in ("baseline", "preview"):
                outcome = _run(kind, scratch.url, org, profile)
                figures[kind].append(outcome)
                print(
                    f"  {kind}: {outcome[0]:.2f} s, peak +{outcome[1]:.0f} MB ({outcome[2]})",
                    flush=True,
                )
        db.dispose()
    baseline = min(f[0] for f in figures["baseline"])
    best = min(f[0] for f in figures["preview"])
    memory = max(f[1] for f in figures["preview"])
    print(
        f"  => preview {best:.2f} s / SELECT {baseline:.2f} s = {best / baseline:.2f}x "
        f"(target on PostgreSQL: <= 1.5x); preview peak +{memory:.0f} MB",
        flush=True,
    )
    return {"count": count, "ratio": best / baseline, "memory": memory}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="50000,200000")
    parser.add_argument("--backend", default="postgresql", choices=["postgresql", "sqlite"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"speed probe {speed_probe():.1f} µs, load average {load_average()}")
    results = [run_size(args.backend, int(size), args) for size in args.sizes.split(",")]
    print("\n== summary ==")
    for result in results:
        print(
            f"  {result['count']:>9,} companies: {result['ratio']:.2f}x the SELECT, "
            f"peak +{result['memory']:.0f} MB"
        )
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(
            f"  memory {first['memory']:.0f} MB at {first['count']:,} -> {last['memory']:.0f} MB "
            f"at {last['count']:,} ({last['count'] / first['count']:.0f}x the objects)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
