"""The lock protocol (docs/architecture.md): no request waits for a worker's compute, and
structural writes race value writes and workers without a change being missed (SPEC §7)."""

from __future__ import annotations

import copy
import random
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue, score_results
from signalscore.recompute import (
    LockNotHeld,
    compute_now,
    enqueue_profile,
    enqueue_value_changes,
)
from signalscore.recompute.compute import compute_objects
from signalscore.recompute.worker import Worker, WorkerConfig
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from tests.helpers import Tenant, assert_scores_fresh, drain
from tests.recompute.test_invariant import Session

COMPANIES = [f"p{i}.com" for i in range(30)]


def ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


class RacingSession(Session):
    """test_invariant's random operations, from one of several concurrent clients: another
    may delete the rule or assignment this one just listed (404)."""

    @staticmethod
    def ok(response: Any) -> Any:
        if response.status_code == 404:
            return []
        assert response.status_code < 300, response.text
        return response.json() if response.content else None


class HeldWorker:
    """A worker stopped between reading its batch and storing it: the moment a long compute
    would be in. `release()` lets it store."""

    def __init__(self, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reading_done, self.go = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self.claimed = 0
        real = compute_objects

        def held(*args: Any, **kwargs: Any) -> Any:
            computed = real(*args, **kwargs)
            self.reading_done.set()
            assert self.go.wait(60), "never released"
            return computed

        monkeypatch.setattr("signalscore.recompute.worker.compute_objects", held)
        self.worker = Worker(database, WorkerConfig(batch_size=500, lease_seconds=60))
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.claimed = self.worker.run_once()
        except BaseException as exc:  # reported by release()
            self.errors.append(exc)
            self.reading_done.set()

    def start(self) -> None:
        self.thread.start()
        assert self.reading_done.wait(30), "the worker never read its batch"
        assert not self.errors, self.errors

    def release(self) -> None:
        self.go.set()
        self.thread.join(60)
        assert not self.thread.is_alive()
        assert not self.errors, self.errors


def within(seconds: float, action: Callable[[], None]) -> bool:
    """Whether `action` finishes in `seconds` (run on another thread; re-raises its error)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(seconds)
    if failure:
        raise failure[0]
    return not thread.is_alive()


@pytest.fixture
def world(client: TestClient, tenant: Tenant, database: Database) -> dict[str, str]:
    h = tenant.headers
    for template_id, answer_type in (("b2b", "boolean"), ("employees", "number")):
        ok(
            client.post(
                "/v1/signals/templates",
                headers=h,
                json={"id": template_id, "name": template_id, "objectType": "company",
                      "answerType": answer_type},
            )
        )  # fmt: skip
    profiles = {}
    for name in ("main", "doomed"):
        profile = ok(
            client.post(
                "/v1/scoring/profiles", headers=h, json={"profileType": "company", "name": name}
            )
        )["id"]
        profiles[name] = profile
        ok(
            client.put(
                f"/v1/scoring/profiles/{profile}/rules",
                headers=h,
                json={"signalTemplateId": "b2b", "dimension": "fit", "answerType": "boolean",
                      "pointValues": {"true": 30, "false": 5}},
            )
        )  # fmt: skip
    ok(
        client.put(
            "/v1/signals/values",
            headers=h,
            json={"values": [
                {"objectType": "company", "objectId": c, "signalTemplateId": "b2b",
                 "value": i % 2 == 0}
                for i, c in enumerate(COMPANIES)
            ]},
        )
    )  # fmt: skip
    ok(
        client.post(
            "/v1/scoring/assignments/bulk",
            headers=h,
            json={"profileId": profiles["main"], "objectType": "company", "objectIds": COMPANIES},
        )
    )
    drain(database)
    return profiles


def test_no_request_waits_for_a_worker_batch_in_compute(
    client: TestClient,
    tenant: Tenant,
    database: Database,
    world: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a worker holds a batch between its read and its store (a long compute), every
    kind of write to the same objects completes; once it stores and the queue drains, every
    score equals a from-scratch computation. The old protocol held the organisation lock
    (shared) for the whole compute, and these writes waited for it."""
    h, main, doomed = tenant.headers, world["main"], world["doomed"]
    # The batch: every company (a rule change on `main`), plus ten new assignments to
    # `doomed`, whose rows the worker will want to insert.
    ok(
        client.put(
            f"/v1/scoring/profiles/{main}/rules",
            headers=h,
            json={"signalTemplateId": "b2b", "dimension": "fit", "answerType": "boolean",
                  "pointValues": {"true": 40, "false": 0}},
        )
    )  # fmt: skip
    ok(
        client.post(
            "/v1/scoring/assignments/bulk",
            headers=h,
            json={"profileId": doomed, "objectType": "company", "objectIds": COMPANIES[:10]},
        )
    )
    held = HeldWorker(database, monkeypatch)
    held.start()
    assert held.worker.computed == 0

    created: dict[str, str] = {}

    def writes() -> None:
        # A value write for an object in the held batch.
        ok(
            client.put(
                "/v1/signals/values",
                headers=h,
                json={"values": [{"objectType": "company", "objectId": COMPANIES[0],
                                  "signalTemplateId": "b2b", "value": False}]},
            )
        )  # fmt: skip
        # Structural writes: a rule on `main`, an assignment computed in its own request,
        # an unassignment, and the deletion of the profile the batch holds results for.
        ok(
            client.put(
                f"/v1/scoring/profiles/{main}/rules",
                headers=h,
                json={"signalTemplateId": "employees", "dimension": "urgency",
                      "answerType": "number",
                      "pointValues": {"ranges": [{"min": 0, "points": 7}]}},
            )
        )  # fmt: skip
        other = ok(
            client.post(
                "/v1/scoring/profiles", headers=h, json={"profileType": "company", "name": "x"}
            )
        )["id"]
        created["other"] = other
        ok(
            client.put(
                f"/v1/scoring/profiles/{other}/rules",
                headers=h,
                json={"signalTemplateId": "b2b", "dimension": "fit", "answerType": "boolean",
                      "pointValues": {"true": 11}},
            )
        )  # fmt: skip
        assigned = client.post(
            "/v1/scoring/assignments",
            headers=h,
            json={"profileId": other, "objectType": "company", "objectId": COMPANIES[2]},
        )
        assert assigned.status_code == 201, assigned.text
        current = ok(
            client.get(
                "/v1/scoring/assignments",
                headers=h,
                params={"objectType": "company", "objectId": COMPANIES[4]},
            )
        )
        main_assignment = next(a for a in current if a["profileId"] == main)
        ok(client.delete(f"/v1/scoring/assignments/{main_assignment['id']}", headers=h))
        ok(client.delete(f"/v1/scoring/profiles/{doomed}", headers=h))

    assert within(20, writes), "a write waited for the worker's compute"

    # The single assignment's score is there right after its response, as SPEC §4 says...
    def scored_by_other() -> list[float]:
        rows = ok(
            client.get(
                "/v1/scoring/scores",
                headers=h,
                params={"objectType": "company", "objectId": COMPANIES[2]},
            )
        )
        return [r["score"] for r in rows if r["profileId"] == created["other"]]

    assert scored_by_other() == [100.0]  # 11 of at most 11 points
    held.release()
    assert held.claimed > 0
    # ...and the held worker, which read before the assignment, did not store over it (its
    # result has no row for this profile: storing it would have deleted this one).
    assert scored_by_other() == [100.0]
    with database.read() as conn:  # nothing stored for the deleted profile, nothing failed
        assert not conn.execute(
            sa.select(score_results.c.id).where(score_results.c.profile_id == uuid.UUID(doomed))
        ).first()
    drain(database)
    assert_scores_fresh(database)


def test_structural_writes_race_value_writes_and_workers(
    client: TestClient, tenant: Tenant, database: Database
) -> None:
    """Four clients make random score-changing writes of every kind (tests/recompute/
    test_invariant.py's mix) at once, while two workers drain the queue continuously. Once
    they stop and the queue drains, every stored score equals a from-scratch computation."""
    base = Session(client, tenant, database, seed=7)
    stop = threading.Event()
    workers = [Worker(database, WorkerConfig(batch_size=4, lease_seconds=30)) for _ in range(2)]
    threads = [threading.Thread(target=w.run, args=(stop,)) for w in workers]
    failures: list[BaseException] = []
    done: list[str] = []

    def client_loop(seed: int) -> None:
        session = copy.copy(base)
        session.__class__ = RacingSession
        session.rng = random.Random(seed)
        try:
            for _ in range(60):
                done.append(session.step())
        except BaseException as exc:
            failures.append(exc)

    clients = [threading.Thread(target=client_loop, args=(seed,)) for seed in range(4)]
    for thread in threads + clients:
        thread.start()
    for thread in clients:
        thread.join(240)
    stop.set()
    for w in workers:
        w.wakeup.set()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert len(done) == 240
    assert {"upsert", "assign", "bulk", "unassign", "values"} <= set(done)
    assert sum(w.computed for w in workers) > 0, "the workers never ran during the writes"
    drain(database)
    assert_scores_fresh(database)


def test_queueing_decisions_need_the_unit_of_work_lock(database: Database, tenant: Tenant) -> None:
    """A service that reads structure to decide what to queue fails loudly outside a unit of
    work that declared (and so locked) what it decides on, on every backend, rather than
    racing silently on PostgreSQL."""
    changed = {"company": {"a.com": {"b2b"}}}
    with pytest.raises(LockNotHeld), database.write() as conn:
        enqueue_value_changes(conn, tenant.org_id, changed)
    with pytest.raises(LockNotHeld), database.write(org=tenant.org_id) as conn:
        enqueue_value_changes(conn, tenant.org_id, changed)  # b2b not declared
    with pytest.raises(LockNotHeld), database.write(org="another-org-id-xxxxxxxx") as conn:
        enqueue_value_changes(conn, tenant.org_id, changed)
    with pytest.raises(LockNotHeld), database.write(org=tenant.org_id) as conn:
        compute_now(conn, tenant.org_id, "company", ["a.com"])  # assignments not declared
    with pytest.raises(LockNotHeld), database.write() as conn:
        enqueue_profile(conn, tenant.org_id, "00000000-0000-0000-0000-000000000000")
    with database.write(org=tenant.org_id, value_templates=["b2b"]) as conn:
        enqueue_value_changes(conn, tenant.org_id, changed)  # declared: fine (nothing assigned)
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(recompute_queue)).scalar() == 0


def test_a_rule_write_in_progress_stalls_no_value_write_to_another_template(
    client: TestClient, tenant: Tenant, database: Database, world: dict[str, str], backend: str
) -> None:
    """A rule upsert holds its own template's lock until it commits; value writes to other
    templates go through meanwhile, and one to its template waits for it and then queues
    with the new rule. (PostgreSQL: SQLite has one writer at a time by design.)"""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers by design")
    h, main = tenant.headers, world["main"]
    inside, finish = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    def slow_rule_write() -> None:
        try:
            with database.write(org=tenant.org_id, rule_template="employees") as conn:
                upsert_rule(
                    conn,
                    tenant.org_id,
                    uuid.UUID(main),
                    RuleUpsert(
                        signalTemplateId="employees",
                        dimension="fit",
                        answerType="number",
                        pointValues={"ranges": [{"min": 0, "points": 3}]},
                    ),
                )
                inside.set()
                assert finish.wait(30)
        except BaseException as exc:
            failures.append(exc)
            inside.set()

    writer = threading.Thread(target=slow_rule_write)
    writer.start()
    assert inside.wait(30)
    assert not failures, failures

    def value(template: str, value: Any) -> Callable[[], None]:
        def put() -> None:
            ok(
                client.put(
                    "/v1/signals/values",
                    headers=h,
                    json={"values": [{"objectType": "company", "objectId": COMPANIES[1],
                                      "signalTemplateId": template, "value": value}]},
                )
            )  # fmt: skip

        return put

    try:
        assert within(10, value("b2b", True)), "a value write to another template waited"
        same = threading.Thread(target=value("employees", 120))
        same.start()
        same.join(1)
        assert same.is_alive(), "a value write to the rule's template did not wait for it"
    finally:
        finish.set()
        writer.join(30)
    same.join(30)
    assert not same.is_alive()
    assert not failures, failures
    drain(database)
    assert_scores_fresh(database)
