"""Benchmark what a rule change on a large profile costs the writers around it.

    python bench/fan_out.py [--objects 200000] [--repeat 3]

PostgreSQL only (SQLite serialises every writer anyway). In a scratch database (created and
dropped by this run): one organisation, one boolean
template, one company profile with one rule on it, N companies assigned (COPY on PostgreSQL),
and a value for each. Then, several times and alternating between the two ways of queueing:

- **inline**: the rule write queues all N objects in its own transaction (what every rule
  write did before the fan-out; here `FAN_OUT_CHUNK` is set above N);
- **chunked**: the rule write queues the first `FAN_OUT_CHUNK` (2,000) objects and leaves a
  cursor for the workers (the service's behaviour).

Each round clears the queue, then starts a rule write (`upsert_rule`, one transaction) and,
50 ms later on another thread, a value write for one assigned company (`write_values`, which
takes the organisation lock shared, so it waits for the rule write's exclusive lock). It
prints the rule write's duration and the value write's latency, next to the baseline measured
in the same run: the same value write with no rule write running.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from _common import (
    company_ids,
    copy_assignments,
    load_average,
    scratch_database,
    speed_probe,
)
from signalscore.auth.service import create_organization
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import recompute_profiles, recompute_queue
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.recompute import queue
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
from signalscore.signals.service import create_template, write_values


def setup(db: Database, count: int) -> tuple[str, uuid.UUID, list[str]]:
    with db.write() as conn:
        org, _key = create_organization(conn, "bench")
        create_template(
            conn,
            org.id,
            TemplateCreate(id="b2b", name="B2B", objectType="company", answerType="boolean"),
        )
        profile = create_profile(conn, org.id, ProfileCreate(profileType="company", name="ICP"))
    objects = company_ids(count)
    raw = db.engine.raw_connection()
    try:
        pg: Any = raw.driver_connection
        with pg.cursor() as cur:
            copy_assignments(
                cur, org.id, profile.id, objects, datetime.now(UTC).replace(tzinfo=None)
            )
        pg.commit()
    finally:
        raw.close()
    with db.write(org=org.id, structure=True) as conn:
        rule(conn, org.id, profile.id, 1)
    clear_queue(db)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    return org.id, profile.id, objects


def rule(conn: sa.Connection, org_id: str, profile_id: uuid.UUID, points: int) -> None:
    upsert_rule(
        conn,
        org_id,
        profile_id,
        RuleUpsert(
            signalTemplateId="b2b",
            dimension="fit",
            answerType="boolean",
            pointValues={"true": points, "false": 0},
        ),
    )


def clear_queue(db: Database) -> None:
    with db.write() as conn:
        conn.execute(sa.delete(recompute_queue))
        conn.execute(sa.delete(recompute_profiles))


def value_write(db: Database, org_id: str, object_id: str, value: bool) -> float:
    started = time.perf_counter()
    with db.write(org=org_id, value_templates=["b2b"]) as conn:
        write_values(
            conn,
            org_id,
            [SignalValueIn(objectType="company", objectId=object_id, signalTemplateId="b2b",
                           value=value)],
        )  # fmt: skip
    return time.perf_counter() - started


def one_round(
    db: Database, org_id: str, profile_id: uuid.UUID, target: str, points: int
) -> tuple[float, float]:
    clear_queue(db)
    rule_seconds: list[float] = []

    def write_rule() -> None:
        started = time.perf_counter()
        with db.write(org=org_id, structure=True) as conn:
            rule(conn, org_id, profile_id, points)
        rule_seconds.append(time.perf_counter() - started)

    thread = threading.Thread(target=write_rule)
    thread.start()
    time.sleep(0.05)
    waited = value_write(db, org_id, target, points % 2 == 0)
    thread.join()
    return rule_seconds[0], waited


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    chunk = queue.FAN_OUT_CHUNK
    print(f"python {sys.version.split()[0]}, load average {load_average()}, "
          f"speed probe {speed_probe():.1f} µs; {args.objects:,} assigned companies, "
          f"PostgreSQL, FAN_OUT_CHUNK {chunk:,}")  # fmt: skip
    with scratch_database("postgresql", "fanout") as scratch:
        db = Database(create_db_engine(scratch.url))
        upgrade_to_head(db.engine)
        started = time.perf_counter()
        org_id, profile_id, objects = setup(db, args.objects)
        print(f"setup: {time.perf_counter() - started:.1f} s")
        target = objects[len(objects) // 2]
        alone = [value_write(db, org_id, target, i % 2 == 0) for i in range(5 * args.repeat)]
        results: dict[str, list[tuple[float, float]]] = {"inline": [], "chunked": []}
        points = 2
        for _ in range(args.repeat):
            for mode in ("inline", "chunked"):
                queue.FAN_OUT_CHUNK = args.objects + 1 if mode == "inline" else chunk
                points += 1
                results[mode].append(one_round(db, org_id, profile_id, target, points))
        queue.FAN_OUT_CHUNK = chunk
        db.engine.dispose()
    base = statistics.median(alone)
    print(f"baseline: value write with no rule write running: median {base * 1000:.1f} ms "
          f"({len(alone)} writes)")  # fmt: skip
    print("| queueing | rule write (median, runs) | value write behind it (median, runs) "
          "| value write / baseline |")  # fmt: skip
    print("|---|---|---|---|")
    for mode, rounds in results.items():
        rule_s = [r for r, _ in rounds]
        wait_s = [w for _, w in rounds]
        print(f"| {mode} | {statistics.median(rule_s) * 1000:,.0f} ms "
              f"({', '.join(f'{r * 1000:,.0f}' for r in rule_s)}) "
              f"| {statistics.median(wait_s) * 1000:,.0f} ms "
              f"({', '.join(f'{w * 1000:,.0f}' for w in wait_s)}) "
              f"| {statistics.median(wait_s) / base:,.1f}x |")  # fmt: skip
    inline = statistics.median(r for r, _ in results["inline"])
    chunked = statistics.median(r for r, _ in results["chunked"])
    print(f"rule write, inline / chunked: {inline / chunked:,.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
