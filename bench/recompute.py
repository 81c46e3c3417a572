"""Benchmark the recompute pipeline: one rule upsert over N assigned companies, until the queue
is empty, against the database's own bulk write of the same number of score rows.

    python bench/recompute.py [--objects 200000] [--backend postgresql|sqlite|both]
                              [--workers 2] [--runner mp|cli] [--sizes 25000,50000,...]

For each backend and size, in a scratch database created (and dropped) by this run:

1. Setup (not measured): migrations, an organisation, 20 signal templates, a company profile
   and its 20 rules through the service functions; then N assignments and about 16 values per
   company bulk-loaded in SQL (COPY on PostgreSQL, executemany on SQLite).
2. Initial compute (reported, not the target): the profile's objects are queued in one
   transaction (`enqueue_profile_objects`, as a bulk assignment does) and the workers drain the
   queue, creating 2 score rows per company.
3. The measured run: fresh workers are started and idle; one transaction replaces the points
   of a boolean rule through `upsert_rule` (which queues the first chunk of the N objects and
   leaves the rest to the workers' fan-out) and commits; the clock runs from that commit until
   `recompute_queue` is empty (no pending entry, no lease) and no fan-out is left.
4. A random sample of objects is checked against a from-scratch engine computation over the
   stored rules and values; any difference exits non-zero.
5. Baseline: one `INSERT INTO bench_baseline SELECT ... FROM score_results` in the same
   database, writing as many rows as the recompute wrote (2 per company: real rows, real
   contributions), into a table with the same columns and the same primary key and unique
   constraint. Run twice; the ratio uses the faster one.
6. PostgreSQL: the floor, the least the database must do for this recompute under the
   contract, as set-based statements with no Python (`_FLOOR`): queue and remove every
   object, read every value, write the changed rows with their previous documents, touch
   the identical rows, write the events. It shows how much of the ratio the contract's
   database work alone accounts for.

Workers are the real code path: `--runner mp` (default) starts K processes that each run
`signalscore.recompute.worker.Worker.run` (what `signalscore worker` runs in each process) and
times its steps with thin wrappers around the worker's own functions (claim, the four loads,
the engine, the rest); `--runner cli` starts `signalscore worker --concurrency K` itself, and
`--runner serve` starts `signalscore serve` (its embedded worker: the default deployment).
SQLite always uses one worker. Peak RSS is each worker process's VmHWM.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import queue as queue_module
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from _common import (
    RULES,
    TEMPLATES,
    VENV_BIN,
    ScratchDatabase,
    company_ids,
    company_values,
    copy_assignments,
    count_mismatches,
    free_port,
    load_average,
    peak_rss_mb,
    scratch_database,
    speed_probe,
)
from signalscore.auth.service import create_organization
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import score_results, scoring_rules, signal_values
from signalscore.engine import Rule, compile_profile
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.recompute.queue import enqueue_profile_objects
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import TemplateCreate
from signalscore.signals.service import create_template

# The measured change: b2b's `true` points 20 → 25. Its maxPoints changes, so every object's
# `fit` row gets a new version; `urgency` rows compute identical and are only touched.
CHANGED_RULE = ("b2b", "fit", "boolean", {"true": 25, "false": -10})

STEPS = (
    "claim",
    "load assignments",
    "load rules",
    "load values",
    "load scores",
    "compile",
    "engine",
    "score (rest)",
    "compare + write",
    "lock + complete + 2 transactions",
    "commit + connect",
)


@dataclass
class Fixture:
    org_id: str
    profile_id: uuid.UUID
    objects: list[str]
    values: int


@dataclass
class WorkerReport:
    pid: int
    computed: int
    peak_rss_mb: float
    timings: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0


@dataclass
class DrainResult:
    seconds: float
    reports: list[WorkerReport]
    # CPU seconds over the drain (`--runner cli`): the worker processes', and their
    # database sessions' (every backend of the scratch database), from /proc.
    cpu: tuple[float, float] | None = None


@dataclass
class SizeResult:
    backend: str
    objects: int
    workers: int
    setup_s: float
    initial: DrainResult
    measured: DrainResult
    updated_rows: int
    touched_rows: int
    baseline_s: list[float]
    verified: int
    mismatches: int

    @property
    def ratio(self) -> float:
        return self.measured.seconds / min(self.baseline_s)


# --- setup -----------------------------------------------------------------------------------


def _naive_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def build_fixture(db: Database, count: int, seed: int) -> Fixture:
    """Configuration through the services; assignments and values in bulk SQL."""
    with db.write() as conn:
        org, _key = create_organization(conn, "bench")
    with db.write(org=org.id, structure=True) as conn:
        for template_id, answer_type in TEMPLATES:
            create_template(
                conn,
                org.id,
                TemplateCreate(
                    id=template_id, name=template_id, objectType="company", answerType=answer_type
                ),
            )
        profile = create_profile(
            conn, org.id, ProfileCreate(profileType="company", name="Bench ICP")
        )
        for template_id, dimension, answer_type, point_values in RULES:
            upsert_rule(
                conn,
                org.id,
                profile.id,
                RuleUpsert(
                    signalTemplateId=template_id,
                    dimension=dimension,
                    answerType=answer_type,
                    pointValues=point_values,
                ),
            )
    objects = company_ids(count)
    if db.dialect == "postgresql":
        values = _bulk_load_postgresql(db, org.id, profile.id, objects, seed)
    else:
        values = _bulk_load_sqlite(db, org.id, profile.id, objects, seed)
    return Fixture(org.id, profile.id, objects, values)


def _bulk_load_postgresql(
    db: Database, org_id: str, profile_id: uuid.UUID, objects: list[str], seed: int
) -> int:
    now = _naive_utc()
    values = 0
    raw = db.engine.raw_connection()
    try:
        pg: Any = raw.driver_connection
        with pg.cursor() as cur:
            copy_assignments(cur, org_id, profile_id, objects, now)
            columns = (
                "organization_id, object_type, object_id, signal_template_id, value, "
                "observed_at, updated_at"
            )
            with cur.copy(f"COPY signal_values ({columns}) FROM STDIN") as copy:
                for object_id, template_id, value in company_values(len(objects), seed):
                    row = (org_id, "company", object_id, template_id, json.dumps(value), now, now)
                    copy.write_row(row)
                    values += 1
        pg.commit()
    finally:
        raw.close()
    # What autovacuum would have done by the time anyone edits a rule.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    return values


def _bulk_load_sqlite(
    db: Database, org_id: str, profile_id: uuid.UUID, objects: list[str], seed: int
) -> int:
    # The formats SQLAlchemy itself stores: hex UUIDs, "YYYY-MM-DD HH:MM:SS.ffffff", JSON text.
    now = _naive_utc().strftime("%Y-%m-%d %H:%M:%S.%f")
    raw = db.engine.raw_connection()
    try:
        lite: Any = raw.driver_connection
        lite.execute("BEGIN IMMEDIATE")
        lite.executemany(
            "INSERT INTO profile_assignments (organization_id, id, profile_id, object_type, "
            "object_id, assigned_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                (org_id, uuid.uuid4().hex, profile_id.hex, "company", object_id, now)
                for object_id in objects
            ),
        )
        cursor = lite.executemany(
            "INSERT INTO signal_values (organization_id, object_type, object_id, "
            "signal_template_id, value, observed_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (org_id, "company", object_id, template_id, json.dumps(value), now, now)
                for object_id, template_id, value in company_values(len(objects), seed)
            ),
        )
        values = int(cursor.rowcount)
        lite.execute("COMMIT")
        lite.execute("ANALYZE")
    finally:
        raw.close()
    return values


def queue_profile(db: Database, fixture: Fixture) -> None:
    """Queue every assigned object, in one transaction, as a bulk assignment would."""
    with db.write() as conn:
        enqueue_profile_objects(conn, fixture.org_id, fixture.profile_id)


def fan_out_chunk() -> int:
    from signalscore.recompute import queue

    return queue.FAN_OUT_CHUNK


def change_one_rule(db: Database, fixture: Fixture) -> None:
    """The measured trigger: replace one rule's points; queues all N objects."""
    template_id, dimension, answer_type, point_values = CHANGED_RULE
    with db.write(org=fixture.org_id, structure=True) as conn:
        upsert_rule(
            conn,
            fixture.org_id,
            fixture.profile_id,
            RuleUpsert(
                signalTemplateId=template_id,
                dimension=dimension,
                answerType=answer_type,
                pointValues=point_values,
            ),
        )


# --- workers -----------------------------------------------------------------------------------


def _install_step_timers(totals: dict[str, float]) -> None:
    """Wrap the worker's own functions with timers; behaviour is unchanged."""
    import signalscore.recompute.compute as compute_module
    import signalscore.recompute.worker as worker_module
    from signalscore.engine._profile import CompiledProfile

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] += time.perf_counter() - started

        return wrapper

    worker_module.claim_batch = timed("claim_batch", worker_module.claim_batch)
    worker_module.compute_claimed = timed("compute_claimed", worker_module.compute_claimed)
    # The worker's two steps: read and score (no lock), then store (a short write).
    for name in ("compute_objects", "store_results"):
        setattr(worker_module, name, timed(name, getattr(compute_module, name)))
    for name in ("_load_assignments", "_load_rules", "_load_values", "_load_scores"):
        setattr(compute_module, name, timed(name, getattr(compute_module, name)))
    compute_module._compiled = timed("_compiled", compute_module._compiled)
    CompiledProfile.score_many = timed("score_many", CompiledProfile.score_many)  # type: ignore[method-assign]
    worker_module.Worker.run_once = timed("run_once", worker_module.Worker.run_once)  # type: ignore[method-assign]


def step_breakdown(raw: dict[str, float]) -> dict[str, float]:
    """Seconds per pipeline step, from the wrapped functions' totals."""
    loads = {
        "load assignments": raw.get("_load_assignments", 0.0),
        "load rules": raw.get("_load_rules", 0.0),
        "load values": raw.get("_load_values", 0.0),
        "load scores": raw.get("_load_scores", 0.0),
    }
    read_and_score = raw.get("compute_objects", 0.0)
    store = raw.get("store_results", 0.0)
    compute_claimed = raw.get("compute_claimed", 0.0)
    engine, compile_ = raw.get("score_many", 0.0), raw.get("_compiled", 0.0)
    reads = sum(loads.values()) - loads["load scores"]
    return {
        "claim": raw.get("claim_batch", 0.0),
        **loads,
        "compile": compile_,
        "engine": engine,
        "score (rest)": read_and_score - reads - engine - compile_,
        "compare + write": store - loads["load scores"],
        "lock + complete + 2 transactions": compute_claimed - read_and_score - store,
        "commit + connect": raw.get("run_once", 0.0)
        - raw.get("claim_batch", 0.0)
        - compute_claimed,
    }


def _worker_process(
    url: str,
    batch_size: int,
    profile_dir: str | None,
    events: Any,
    stop: Any,
) -> None:
    """One worker process: the real `Worker.run` loop until `stop` is set."""
    from signalscore.recompute.worker import Worker, WorkerConfig

    totals: dict[str, float] = defaultdict(float)
    _install_step_timers(totals)
    db = Database(create_db_engine(url))
    worker = Worker(db, WorkerConfig(batch_size=batch_size))
    with db.read() as conn:  # connect before reporting ready
        conn.execute(sa.text("SELECT 1"))
    local_stop = threading.Event()

    def relay() -> None:
        stop.wait()
        local_stop.set()
        worker.wakeup.set()

    threading.Thread(target=relay, daemon=True).start()
    profiler = cProfile.Profile() if profile_dir else None
    events.put(("ready", os.getpid()))
    started = time.perf_counter()
    if profiler is not None:
        profiler.runcall(worker.run, local_stop)
        profiler.dump_stats(os.path.join(profile_dir or ".", f"worker-{os.getpid()}.prof"))
    else:
        worker.run(local_stop)
    wall = time.perf_counter() - started
    db.dispose()
    events.put(
        ("done", WorkerReport(os.getpid(), worker.computed, peak_rss_mb(), dict(totals), wall))
    )


def _queue_is_empty(conn: sa.Connection) -> bool:
    """No queue entry and no rule change still fanning out to a profile's objects."""
    return (
        conn.execute(sa.text("SELECT 1 FROM recompute_queue LIMIT 1")).first() is None
        and conn.execute(sa.text("SELECT 1 FROM recompute_profiles LIMIT 1")).first() is None
    )


def _queue_length(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT count(*) FROM recompute_queue")).scalar_one())


def wait_until_empty(
    probe: sa.Engine,
    alive: Callable[[], bool],
    label: str,
    analyze_every: float = 0.0,
    timeout: float = 7200.0,
) -> float:
    """Poll every 20 ms until the queue is empty; returns the seconds since the call.

    With `analyze_every` (PostgreSQL), ANALYZE the two tables the drain changes that often:
    the stand-in for autovacuum's auto-analyze on a server that runs with autovacuum off.
    """
    started = time.perf_counter()
    last_report = last_analyze = started
    while True:
        with probe.connect() as conn:
            if _queue_is_empty(conn):
                return time.perf_counter() - started
            now = time.perf_counter()
            if now - last_report > 15:
                last_report = now
                print(f"    {label}: {_queue_length(conn)} queued after {now - started:.0f} s")
        if analyze_every and now - last_analyze > analyze_every:
            last_analyze = now
            with probe.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE recompute_queue, score_results")
        if not alive():
            raise RuntimeError("a worker process died while the queue was not empty")
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"queue not empty after {timeout} s")
        time.sleep(0.02)


def drain_with_processes(
    scratch: ScratchDatabase,
    workers: int,
    batch_size: int,
    trigger: Callable[[], None],
    label: str,
    profile_dir: str | None = None,
    analyze_every: float = 0.0,
) -> DrainResult:
    """Start `workers` idle worker processes, run `trigger` (one committed transaction), and
    time from its commit until the queue is empty."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    stop = context.Event()
    processes = [
        context.Process(
            target=_worker_process,
            args=(scratch.url, batch_size, profile_dir, events, stop),
            name=f"bench-worker-{i}",
        )
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    probe = create_db_engine(scratch.url, pool_size=1)
    try:
        for _ in processes:
            kind, _pid = events.get(timeout=120)
            assert kind == "ready"
        time.sleep(0.3)  # every worker has made its first (empty) claim and is idle
        trigger()
        alive = lambda: all(p.is_alive() for p in processes)  # noqa: E731
        seconds = wait_until_empty(probe, alive, label, analyze_every)
    finally:
        stop.set()
        reports = []
        for _ in processes:
            try:
                kind, report = events.get(timeout=120)
            except queue_module.Empty:
                break
            reports.append(report)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        probe.dispose()
    return DrainResult(seconds, reports)


def _children(pid: int) -> list[int]:
    """The worker processes `signalscore worker` spawned (not multiprocessing's tracker)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    workers = []
    for child in text.split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(int(child))
    return workers


def _cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """utime + stime of each process still alive, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def _backends(probe: sa.Engine) -> list[int]:
    """The server processes of every session on the scratch database (same machine)."""
    with probe.connect() as conn:
        return list(
            conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            ).scalars()
        )


def _cpu_since(before: dict[int, float], now: dict[int, float]) -> float:
    """CPU used since `before` by the processes of `now` (a process born since: all of it;
    one gone since is not counted, which only undercounts)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items())


def drain_with_cli(
    scratch: ScratchDatabase,
    workers: int,
    batch_size: int,
    trigger: Callable[[], None],
    label: str,
    analyze_every: float = 0.0,
    *,
    serve: bool = False,
) -> DrainResult:
    """The same, with `signalscore worker --concurrency K` as the workers, or (`serve=True`)
    with `signalscore serve` and its embedded worker, as a new user runs it."""
    command = [
        str(VENV_BIN / "signalscore"),
        "worker",
        "--database-url",
        scratch.url,
        "--concurrency",
        str(workers),
        "--batch-size",
        str(batch_size),
        "--log-level",
        "info",
    ]
    if serve:
        command = [str(VENV_BIN / "signalscore"), "serve", "--database-url", scratch.url,
                   "--port", str(free_port()), "--log-level", "info"]  # fmt: skip
        workers = 1
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    started_lines: list[str] = []
    stopped_lines: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if (" started" in line and "worker" in line) or (serve and "Uvicorn running" in line):
                started_lines.append(line)
                if len(started_lines) == workers:
                    ready.set()
            elif "stopped after" in line:
                stopped_lines.append(line)
            elif "ERROR" in line or "Traceback" in line:
                sys.stderr.write(line)

    reader = threading.Thread(target=read_log, daemon=True)
    reader.start()
    probe = create_db_engine(scratch.url, pool_size=1)
    pids: list[int] = []
    try:
        if not ready.wait(120):
            raise RuntimeError("signalscore worker did not start")
        time.sleep(0.3)
        pids = _children(process.pid) if workers > 1 else [process.pid]
        scratch_pg = scratch.backend == "postgresql"
        workers_before = _cpu_seconds(pids)
        backends_before = _cpu_seconds(_backends(probe)) if scratch_pg else {}
        trigger()
        seconds = wait_until_empty(probe, lambda: process.poll() is None, label, analyze_every)
        cpu = (
            _cpu_since(workers_before, _cpu_seconds(pids)),
            _cpu_since(backends_before, _cpu_seconds(_backends(probe))) if scratch_pg else 0.0,
        )
        peaks = {pid: peak_rss_mb(pid) for pid in pids}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        reader.join(timeout=5)
        probe.dispose()
    computed = [int(line.rsplit("after", 1)[1].split()[0]) for line in stopped_lines]
    computed += [0] * (len(pids) - len(computed))
    reports = [
        WorkerReport(pid, done, peaks[pid]) for pid, done in zip(pids, computed, strict=False)
    ]
    return DrainResult(seconds, reports, cpu)


# --- verification and baseline -----------------------------------------------------------------


def verify_sample(db: Database, fixture: Fixture, sample_size: int, seed: int) -> tuple[int, int]:
    """Stored rows of a random sample vs a from-scratch computation. (checked, mismatches)
    A sample of 0 checks nothing (`--verify 0`: timing code from before decay, whose rules
    and engine this check cannot read)."""
    if sample_size <= 0:
        return 0, 0
    sample = random.Random(seed).sample(fixture.objects, min(sample_size, len(fixture.objects)))
    r, v, s = scoring_rules, signal_values, score_results
    with db.read() as conn:
        rules = [
            Rule(
                str(row.id),
                row.signal_template_id,
                row.dimension,
                row.answer_type,
                row.point_values,
                row.decay,
            )
            for row in conn.execute(
                sa.select(r)
                .where(r.c.organization_id == fixture.org_id, r.c.profile_id == fixture.profile_id)
                .order_by(r.c.created_at, r.c.id)
            )
        ]
        profile = compile_profile(rules)
        values: dict[str, dict[str, Any]] = defaultdict(dict)
        observed: dict[str, dict[str, str]] = defaultdict(dict)
        stored: dict[str, dict[str, Any]] = defaultdict(dict)
        for start in range(0, len(sample), 500):
            part = sample[start : start + 500]
            for row in conn.execute(
                sa.select(v.c.object_id, v.c.signal_template_id, v.c.value, v.c.observed_at).where(
                    v.c.organization_id == fixture.org_id, v.c.object_id.in_(part)
                )
            ):
                values[row.object_id][row.signal_template_id] = row.value
                observed[row.object_id][row.signal_template_id] = row.observed_at.strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                )
            for row in conn.execute(
                sa.select(s).where(s.c.organization_id == fixture.org_id, s.c.object_id.in_(part))
            ):
                stored[row.object_id][row.dimension] = row
    mismatches = count_mismatches(sample, profile, values, stored, observed)
    return len(sample), mismatches


def count_versions(db: Database, fixture: Fixture) -> tuple[int, int]:
    """(rows at version >= 2, rows still at version 1) after the measured run."""
    s = score_results
    with db.read() as conn:
        updated = conn.execute(
            sa.select(sa.func.count()).where(s.c.organization_id == fixture.org_id, s.c.version > 1)
        ).scalar_one()
        same = conn.execute(
            sa.select(sa.func.count()).where(
                s.c.organization_id == fixture.org_id, s.c.version == 1
            )
        ).scalar_one()
    return int(updated), int(same)


def baseline_table() -> sa.Table:
    """Same columns and types as score_results (JSONB on PostgreSQL), same primary key and
    unique constraint; no foreign keys (an UPDATE of the real rows does not check them)."""
    s = score_results
    return sa.Table(
        "bench_baseline",
        sa.MetaData(),
        *[sa.Column(c.name, c.type, nullable=c.nullable) for c in s.columns],
        sa.PrimaryKeyConstraint("organization_id", "id"),
        sa.UniqueConstraint(
            "organization_id", "object_type", "object_id", "profile_id", "dimension"
        ),
    )


def time_baseline(db: Database, repeats: int = 2) -> tuple[list[float], int]:
    """Seconds of one INSERT ... SELECT of every score row (committed), `repeats` times."""
    table = baseline_table()
    names = [c.name for c in score_results.columns]
    insert = table.insert().from_select(names, sa.select(*[score_results.c[n] for n in names]))
    timings: list[float] = []
    rows = 0
    for _ in range(repeats):
        table.drop(db.engine, checkfirst=True)
        table.create(db.engine)
        started = time.perf_counter()
        with db.write() as conn:
            conn.execute(insert)
        timings.append(time.perf_counter() - started)
        with db.read() as conn:
            rows = int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
    table.drop(db.engine)
    return timings, rows


# The least a recompute of one rule change must do in the database under the contract, each
# part as one set-based statement, committed: queue every assigned object and remove its
# entry (SPEC §7: queued in the write's transaction); read every object's values with their
# `observedAt` (decay, SPEC §13), aggregated per object as the worker's loader does, without
# sending them anywhere; give each changed row its new document, keeping the old one in
# `previousContributions` and the old score in `previousScore` with `version + 1` (SPEC §6),
# and touch `computedAt` on every identical row (SPEC §6 moves it on each computation);
# write one event per changed row (SPEC §10), copied from the recompute's own events into a
# table with the same columns and indexes. No Python, no batches, no claim, no lock.
_FLOOR = {
    "queue every object": [
        """INSERT INTO recompute_queue (organization_id, object_type, object_id, enqueued_at, lane)
        SELECT organization_id, object_type, object_id, now(), 1 FROM profile_assignments
        WHERE organization_id = %(org)s AND profile_id = %(profile)s""",
    ],
    "remove the entries": ["DELETE FROM recompute_queue WHERE organization_id = %(org)s"],
    "read the values": [
        """SELECT count(*) FROM (
            SELECT object_id, jsonb_object_agg(signal_template_id, value),
                jsonb_object_agg(signal_template_id, observed_at)
            FROM signal_values WHERE organization_id = %(org)s AND object_type = 'company'
            GROUP BY object_id
        ) AS per_object""",
    ],
    "write the changed rows": [
        """UPDATE score_results SET previous_score = score, previous_tier = tier,
            previous_contributions = contributions,
            contributions = (contributions::text)::jsonb,
            contributions_hash = contributions_hash + 1, version = version + 1,
            computed_at = now()
        WHERE organization_id = %(org)s AND dimension = 'fit'""",
    ],
    "touch the identical rows": [
        """UPDATE score_results SET computed_at = now()
        WHERE organization_id = %(org)s AND dimension = 'urgency'""",
    ],
    "write the events": [
        "CREATE TABLE bench_floor_events (LIKE score_events INCLUDING ALL)",
        """INSERT INTO bench_floor_events SELECT * FROM score_events
        WHERE organization_id = %(org)s ORDER BY sequence DESC LIMIT %(changed)s""",
    ],
}


def time_floor(db: Database, fixture: Fixture, changed: int) -> dict[str, float]:
    """Seconds of each part of `_FLOOR` (PostgreSQL), each committed on its own, after the
    VACUUM ANALYZE the measured run had before it (autovacuum's steady state: the changed
    rows' pages have room again for HOT updates)."""
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    parts: dict[str, float] = {}
    parameters = {"org": fixture.org_id, "profile": fixture.profile_id, "changed": changed}
    for name, statements in _FLOOR.items():
        started = time.perf_counter()
        with db.write() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement, parameters)
        parts[name] = time.perf_counter() - started
    with db.write() as conn:
        conn.exec_driver_sql("DROP TABLE bench_floor_events")
    return parts


def postgres_settings(db: Database) -> str:
    with db.read() as conn:
        parts = [
            f"{name}={conn.exec_driver_sql(f'SHOW {name}').scalar_one()}"
            for name in (
                "server_version",
                "shared_buffers",
                "fsync",
                "synchronous_commit",
                "autovacuum",
            )
        ]
    return ", ".join(parts)


# --- one run -----------------------------------------------------------------------------------


def run_size(backend: str, count: int, args: argparse.Namespace) -> SizeResult:
    workers = args.workers if backend == "postgresql" else 1
    print(f"\n== {backend}: {count:,} companies, {workers} worker(s), runner {args.runner} ==")
    with scratch_database(backend, "rc", keep=args.keep) as scratch:
        engine = create_db_engine(scratch.url)
        db = Database(engine)
        upgrade_to_head(engine)
        analyze_every = args.analyze_every if backend == "postgresql" else 0.0
        if backend == "postgresql":
            print(f"  {postgres_settings(db)}")
            if analyze_every:
                print(f"  ANALYZE recompute_queue, score_results every {analyze_every:g} s")
        started = time.perf_counter()
        fixture = build_fixture(db, count, args.seed)
        setup_s = time.perf_counter() - started
        print(f"  setup: {count:,} assignments, {fixture.values:,} values in {setup_s:.1f} s")

        def drain(trigger: Callable[[], None], label: str, profile: bool) -> DrainResult:
            if args.runner in ("cli", "serve"):
                return drain_with_cli(
                    scratch,
                    workers,
                    args.batch_size,
                    trigger,
                    label,
                    analyze_every,
                    serve=args.runner == "serve",
                )
            profile_dir = args.cprofile if profile else None
            return drain_with_processes(
                scratch, workers, args.batch_size, trigger, label, profile_dir, analyze_every
            )

        initial = drain(lambda: queue_profile(db, fixture), "initial", profile=False)
        print(
            f"  initial compute (creates {2 * count:,} rows): {initial.seconds:.1f} s, "
            f"{count / initial.seconds:,.0f} objects/s, "
            f"peak RSS {_rss_list(initial.reports)}"
        )
        if backend == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")  # autovacuum's steady state
        rule_write: list[float] = []

        def timed_rule_change() -> None:
            started = time.perf_counter()
            change_one_rule(db, fixture)
            rule_write.append(time.perf_counter() - started)

        measured = drain(timed_rule_change, "recompute", profile=True)
        updated, touched = count_versions(db, fixture)
        print(
            f"  the rule write itself (before the clock starts): {rule_write[0]:.2f} s "
            f"(FAN_OUT_CHUNK {fan_out_chunk():,})"
        )
        print(
            f"  recompute after one rule upsert: {measured.seconds:.1f} s, "
            f"{count / measured.seconds:,.0f} objects/s ({updated:,} rows new version, "
            f"{touched:,} identical and touched), peak RSS {_rss_list(measured.reports)}"
        )
        for name, drained in (("initial compute", initial), ("recompute", measured)):
            if drained.cpu is not None:
                print(
                    f"  CPU of the {name}: workers {drained.cpu[0]:.1f} s, their database "
                    f"sessions {drained.cpu[1]:.1f} s, together {sum(drained.cpu):.1f} s"
                )
        checked, mismatches = verify_sample(db, fixture, args.verify, args.seed + 1)
        print(f"  verified {checked} random objects: {mismatches} mismatch(es)")
        baseline_s, rows = time_baseline(db)
        print(
            f"  baseline INSERT ... SELECT of {rows:,} score rows: "
            + ", ".join(f"{b:.2f} s" for b in baseline_s)
        )
        floor: dict[str, float] = {}
        if backend == "postgresql":
            floor = time_floor(db, fixture, updated)
            print("  the database's floor for this recompute (set-based, no Python):")
            for name, seconds in floor.items():
                print(f"    {name:<26} {seconds:6.2f} s")
            total = sum(floor.values())
            print(
                f"    together {total:.2f} s = {total / min(baseline_s):.1f}x the baseline; "
                f"the recompute is {measured.seconds / total:.1f}x this floor"
            )
        result = SizeResult(
            backend,
            count,
            workers,
            setup_s,
            initial,
            measured,
            updated,
            touched,
            baseline_s,
            checked,
            mismatches,
        )
        print(
            f"  => recompute {measured.seconds:.1f} s / baseline {min(baseline_s):.2f} s = "
            f"{result.ratio:.1f}x (target on PostgreSQL: <= 2x)"
        )
        if measured.reports and measured.reports[0].timings:
            print_breakdown(measured)
        if args.cprofile:
            print_profiles(args.cprofile)
        db.dispose()
    return result


def _rss_list(reports: Sequence[WorkerReport]) -> str:
    return ", ".join(f"{r.peak_rss_mb:.0f}" for r in reports) + " MB" if reports else "?"


def print_breakdown(result: DrainResult) -> None:
    """Per-step seconds summed over workers, as a share of their busy time."""
    steps: dict[str, float] = defaultdict(float)
    wall = 0.0
    for report in result.reports:
        for name, seconds in step_breakdown(defaultdict(float, report.timings)).items():
            steps[name] += seconds
        wall += report.wall
    busy = sum(steps.values())
    print(
        f"  where the workers' time went (summed over {len(result.reports)} workers, "
        f"{busy:.1f} s busy of {wall:.1f} s alive):"
    )
    for name in STEPS:
        share = steps[name] / busy if busy else 0.0
        print(f"    {name:<18} {steps[name]:8.2f} s  {share:6.1%}")


def print_profiles(directory: str) -> None:
    files = sorted(Path(directory).glob("worker-*.prof"))
    if not files:
        return
    stats = pstats.Stats(str(files[0]), stream=io.StringIO())
    for extra in files[1:]:
        stats.add(str(extra))
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(25)
    print("  cProfile of the measured run's workers (top 25 by own time):")
    print("\n".join("    " + line for line in out.getvalue().splitlines()[-40:]))
    for path in files:
        path.unlink()


def print_summary(results: Sequence[SizeResult]) -> None:
    print("\nSummary")
    header = (
        "| backend | objects | workers | initial compute | recompute | baseline "
        "(INSERT ... SELECT) | ratio | objects/s | peak RSS per worker (initial / recompute) |"
    )
    print(header)
    print("|---" * 9 + "|")
    for r in results:
        print(
            f"| {r.backend} | {r.objects:,} | {r.workers} | {r.initial.seconds:.1f} s | "
            f"{r.measured.seconds:.1f} s | {min(r.baseline_s):.2f} s | {r.ratio:.1f}x | "
            f"{r.objects / r.measured.seconds:,.0f} | "
            f"{_rss_list(r.initial.reports)} / {_rss_list(r.measured.reports)} |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=200_000)
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="PostgreSQL workers [2]")
    parser.add_argument("--runner", choices=["mp", "cli", "serve"], default="mp")
    parser.add_argument("--batch-size", type=int, default=500, help="the worker's default [500]")
    parser.add_argument(
        "--sizes",
        nargs="?",
        const="25000,50000,100000,200000",
        default=None,
        help="run a series of sizes (memory flatness) [25000,50000,100000,200000]",
    )
    parser.add_argument("--verify", type=int, default=500, help="objects checked afterwards")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cprofile", metavar="DIR", help="cProfile the measured run's workers")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument(
        "--analyze-every",
        type=float,
        default=10.0,
        help="PostgreSQL: ANALYZE the queue and score tables this often while draining, "
        "standing in for autovacuum when the server runs without it; 0 = never [10]",
    )
    args = parser.parse_args(argv)
    # Clean up (workers stopped, scratch databases dropped) on Ctrl-C and on SIGTERM.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.objects]
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    if args.cprofile:
        Path(args.cprofile).mkdir(parents=True, exist_ok=True)
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {load_average()}, "
        f"speed probe sum(range(1000)) = {speed_probe():.1f} µs"
    )
    results = [run_size(backend, size, args) for backend in backends for size in sizes]
    print_summary(results)
    print(f"load average at the end: {load_average()}")
    failed = [r for r in results if r.mismatches]
    if failed:
        print("VERIFICATION FAILED: stored scores differ from a from-scratch computation")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
