"""Real worker processes against PostgreSQL: concurrency with a writer, and a SIGKILL in the
middle of a large batch. SQLite runs one writer at a time by design, so these are
PostgreSQL-only (SPEC §7: any number of workers against PostgreSQL)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.assignments.service import assign_many
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.tables import recompute_profiles, recompute_queue
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.recompute import queue
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
from signalscore.signals.service import create_template, write_values
from tests.helpers import Tenant, assert_scores_fresh

SIGNALSCORE = str(Path(sys.executable).with_name("signalscore"))
TEMPLATES = {"employees": "number", "b2b": "boolean", "crm": "list", "growth": "percentage"}


@pytest.fixture
def postgres_only(backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("PostgreSQL only: SQLite serialises writers by design")


def rule_body(rng: random.Random, template: str, dimension: str) -> RuleUpsert:
    answer_type = TEMPLATES[template]
    if answer_type == "boolean":
        pv: dict[str, Any] = {"true": rng.randint(1, 30), "false": rng.randint(-10, 5)}
    elif answer_type == "list":
        pv = {
            "choices": {"Salesforce": rng.randint(1, 20), "HubSpot": rng.randint(1, 20)},
            "mode": rng.choice(["additive", "best-match", "contains-none"]),
        }
    else:
        cut = rng.randint(10, 90)
        pv = {
            "ranges": [
                {"max": cut, "points": rng.randint(0, 10)},
                {"min": cut, "points": rng.randint(0, 30)},
            ]
        }
    return RuleUpsert(
        signalTemplateId=template, dimension=dimension, answerType=answer_type, pointValues=pv
    )


def random_values(rng: random.Random, companies: list[str], count: int) -> list[SignalValueIn]:
    items = []
    for _ in range(count):
        template = rng.choice(list(TEMPLATES))
        answer_type = TEMPLATES[template]
        value: Any
        if answer_type == "boolean":
            value = rng.random() < 0.5
        elif answer_type == "list":
            value = rng.sample(["Salesforce", "HubSpot", "Pipedrive"], rng.randint(0, 2))
        else:
            value = rng.randint(0, 100)
        items.append(
            SignalValueIn(
                objectType="company",
                objectId=rng.choice(companies),
                signalTemplateId=template,
                value=value,
            )
        )
    return items


def seed_world(database: Database, org_id: str, companies: list[str]) -> uuid.UUID:
    rng = random.Random(3)
    with database.write(org=org_id, structure=True) as conn:
        for template_id, answer_type in TEMPLATES.items():
            create_template(
                conn,
                org_id,
                TemplateCreate(
                    id=template_id, name=template_id, objectType="company", answerType=answer_type
                ),
            )
        profile = create_profile(conn, org_id, ProfileCreate(profileType="company", name="P"))
        for template in TEMPLATES:
            for dimension in ("fit", "urgency"):
                upsert_rule(conn, org_id, profile.id, rule_body(rng, template, dimension))
        for start in range(0, len(companies), 500):
            assign_many(conn, org_id, profile.id, "company", companies[start : start + 500])
        for _ in range(0, len(companies) * 3, 900):
            write_values(conn, org_id, random_values(rng, companies, 900))
    return profile.id


def writer_process(url: str, org_id: str, profile_id: str, companies: list[str], n: int) -> None:
    """Changes rules and values while the workers run, through the service layer."""
    database = Database(create_db_engine(url))
    rng = random.Random(11)
    for _ in range(n):
        with database.write(org=org_id, structure=True) as conn:
            if rng.random() < 0.3:
                upsert_rule(
                    conn,
                    org_id,
                    uuid.UUID(profile_id),
                    rule_body(rng, rng.choice(list(TEMPLATES)), rng.choice(["fit", "urgency"])),
                )
            else:
                write_values(conn, org_id, random_values(rng, companies, rng.randint(1, 40)))
        time.sleep(rng.uniform(0, 0.02))
    database.dispose()


def start_workers(url: str, count: int, audit: Path, *extra: str) -> list[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "SIGNALSCORE_DATABASE_URL": url,
        "SIGNALSCORE_WORKER_AUDIT_LOG": str(audit),
        "SIGNALSCORE_WORKER_POLL_SECONDS": "0.02",
    }
    return [
        subprocess.Popen(
            [SIGNALSCORE, "worker", "--log-level", "warning", *extra],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(count)
    ]


def wait_for_claim(database: Database, timeout: float = 60) -> str:
    """The lease holder of the first queue entry seen leased: a worker is at work."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.read() as conn:
            claimed_by = conn.execute(
                sa.select(recompute_queue.c.claimed_by)
                .where(recompute_queue.c.claimed_by.is_not(None))
                .limit(1)
            ).scalar()
        if claimed_by:
            return str(claimed_by)
        time.sleep(0.005)
    raise AssertionError("no worker claimed a batch")


def wait_for_empty_queue(database: Database, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.read() as conn:
            if not any(
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
                for table in (recompute_queue, recompute_profiles)
            ):
                return
        time.sleep(0.1)
    raise AssertionError("the queue did not drain in time")


def stop(processes: list[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    """SIGTERM each worker and wait for it to exit 0; one that has not exited within
    `timeout` is asked for its threads' stacks (SIGUSR1), killed, and the
    test fails showing them. Each worker's output."""
    outputs = []
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"a worker did not exit within {timeout} s of SIGTERM:\n{output}")
        assert process.returncode == 0, output
        outputs.append(output)
    return outputs


def audit_intervals(path: Path) -> dict[str, list[tuple[float, float, str]]]:
    by_object: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for line in path.read_text().splitlines():
        _org, _type, object_id, start, end, worker = line.split(" ")
        by_object[object_id].append((float(start), float(end), worker))
    return by_object


@pytest.mark.usefixtures("postgres_only")
@pytest.mark.parametrize(
    "fan_out_chunk",
    [
        None,  # the default: every rule write queues all 400 companies itself
        # Rule writes queue 30 and the three workers fan out the rest concurrently (their
        # steps race on the profile's recompute_profiles row) while rule writes restart it.
        "30",
    ],
)
def test_three_workers_and_a_writer_keep_scores_fresh_without_overlap(
    database_url: str,
    database: Database,
    tenant: Tenant,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fan_out_chunk: str | None,
) -> None:
    if fan_out_chunk is not None:
        # Inherited by the worker and writer processes; this process's module too.
        monkeypatch.setenv("SIGNALSCORE_FAN_OUT_CHUNK", fan_out_chunk)
        monkeypatch.setattr(queue, "FAN_OUT_CHUNK", int(fan_out_chunk))
    companies = [f"c{i}.com" for i in range(400)]
    profile_id = seed_world(database, tenant.org_id, companies)
    audit = tmp_path / "audit.log"
    workers = start_workers(database_url, 3, audit, "--batch-size", "25")
    try:
        writer = multiprocessing.get_context("spawn").Process(
            target=writer_process,
            args=(database_url, tenant.org_id, str(profile_id), companies, 120),
        )
        writer.start()
        writer.join(timeout=180)
        assert writer.exitcode == 0
        wait_for_empty_queue(database)
    finally:
        stop(workers)
    assert_scores_fresh(database)

    intervals = audit_intervals(audit)
    assert len(intervals) == len(companies)  # every object was computed at least once
    workers_seen = {worker for spans in intervals.values() for _, _, worker in spans}
    assert len(workers_seen) == 3, "all three workers must have taken part"
    recomputed = sum(len(spans) > 1 for spans in intervals.values())
    assert recomputed > 0, "the writer's changes must have caused recomputations"
    for object_id, spans in intervals.items():
        spans.sort()
        for (_start_a, end_a, worker_a), (start_b, _end_b, worker_b) in itertools.pairwise(spans):
            assert start_b >= end_a, f"{object_id} computed by {worker_a} and {worker_b} at once"


@pytest.mark.usefixtures("postgres_only")
def test_a_worker_killed_mid_batch_loses_nothing(
    database_url: str, database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    companies = [f"k{i}.com" for i in range(4000)]
    seed_world(database, tenant.org_id, companies)
    audit = tmp_path / "audit.log"
    [victim] = start_workers(database_url, 1, audit, "--batch-size", "4000", "--lease-seconds", "2")
    try:
        claimed_by = wait_for_claim(database)
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    with database.read() as conn:
        left = conn.execute(
            sa.select(sa.func.count())
            .select_from(recompute_queue)
            .where(recompute_queue.c.claimed_by == claimed_by)
        ).scalar()
    assert left, "the kill landed after the batch finished; nothing was tested"

    [survivor] = start_workers(database_url, 1, audit, "--lease-seconds", "2")
    try:
        wait_for_empty_queue(database)
    finally:
        stop([survivor])
    assert_scores_fresh(database)


def test_sigterm_at_any_moment_stops_a_busy_worker_which_releases_its_leases(
    database_url: str, database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    """A worker SIGTERMed at a random moment of its work exits 0 and leaves nothing leased
    (the signal is taken by a thread that holds no lock: a handler setting an event could
    deadlock the loop). SIGUSR1 prints its threads' stacks and it carries on."""
    companies = [f"t{i}.com" for i in range(3000)]
    seed_world(database, tenant.org_id, companies)
    audit = tmp_path / "audit.log"
    rng = random.Random(5)
    for round_ in range(3):
        [worker] = start_workers(database_url, 1, audit, "--batch-size", "20")
        wait_for_claim(database)
        time.sleep(rng.uniform(0, 0.3))
        if round_ == 0:
            worker.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            assert worker.poll() is None, "SIGUSR1 must not stop the worker"
        [output] = stop([worker])
        if round_ == 0:
            assert "signalscore/recompute/worker.py" in output, output  # the stacks
        with database.read() as conn:
            leased = conn.execute(
                sa.select(sa.func.count())
                .select_from(recompute_queue)
                .where(recompute_queue.c.claimed_by.is_not(None))
            ).scalar()
        assert leased == 0
    [survivor] = start_workers(database_url, 1, audit)
    try:
        wait_for_claim(database)  # work was left for it, and it is at work (signals handled)
        wait_for_empty_queue(database)
    finally:
        stop([survivor])
    assert_scores_fresh(database)


def test_a_worker_paused_and_resumed_carries_on(
    database_url: str, database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    """SIGSTOP then SIGCONT (a worker paused by Ctrl-Z and `fg`, or by a debugger) neither
    stops the worker nor loses its work: it resumes and drains the queue. (Python's
    `sigtimedwait`, interrupted by SIGCONT, returned a struct of garbage that the worker took
    for a stop signal.)"""
    companies = [f"p{i}.com" for i in range(1500)]
    seed_world(database, tenant.org_id, companies)
    [worker] = start_workers(database_url, 1, tmp_path / "audit.log", "--batch-size", "50")
    try:
        wait_for_claim(database)
        for _ in range(3):
            worker.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            worker.send_signal(signal.SIGCONT)
            time.sleep(1.0)  # the signal wait times out every 0.5 s: past it, twice
            assert worker.poll() is None, "a paused and resumed worker must carry on"
        wait_for_empty_queue(database)
    finally:
        stop([worker])
    assert_scores_fresh(database)
