"""Concurrent requests through the real app: every outcome must be that of some serial order,
and no race may answer 5xx.

Each trial starts its requests together (a `threading.Barrier`) from threads sharing one
TestClient; the routes are sync and run in the app's thread pool on the shared database pool,
so on PostgreSQL they genuinely overlap. SQLite serialises writers (BEGIN IMMEDIATE), so its
half checks the same outcomes without a real race, with fewer trials.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import scoring_rules, signal_templates
from signalscore.profiles import service as profiles
from signalscore.profiles.schemas import ProfileCreate
from signalscore.recompute.worker import Worker, WorkerConfig
from signalscore.signals import service as signals
from signalscore.signals.schemas import TemplateCreate
from tests.api.conftest import build_world
from tests.helpers import Tenant, assert_error, assert_scores_fresh, drain, fan_out

Call = tuple[str, str, dict[str, Any]]


def trials(backend: str, postgresql: int) -> int:
    return postgresql if backend == "postgresql" else 8


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def race(
    client: TestClient, tenant: Tenant, pool: ThreadPoolExecutor, calls: list[Call]
) -> list[httpx.Response]:
    """Send `calls` at the same moment, one thread each; their responses in order."""
    barrier = threading.Barrier(len(calls))

    def send(call: Call) -> httpx.Response:
        method, path, kwargs = call
        barrier.wait(timeout=10)
        return client.request(method, path, headers=tenant.headers, **kwargs)

    futures = [pool.submit(send, call) for call in calls]
    return [future.result(timeout=60) for future in futures]


def run_trials(count: int, trial: Callable[[int], str]) -> Counter[str]:
    """Run every trial, then fail listing every unexpected outcome (not just the first)."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for index in range(count):
        try:
            outcomes[trial(index)] += 1
        except AssertionError as exc:
            failures.append(f"trial {index}: {exc}")
    assert not failures, f"{len(failures)} of {count} trials failed:\n" + "\n".join(failures[:5])
    return outcomes


def no_5xx(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code < 500, f"{response.status_code} {response.text}"


def test_concurrent_profile_updates_lose_nothing(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """`{"name": "N1"}` keeps the description it finds; racing `{"name": "N0", "description":
    "D2"}`, it must find D2 or run first. The lost update is N1 with the original description."""
    count = trials(backend, 60)
    with database.write() as conn:
        ids = [
            profiles.create_profile(
                conn,
                tenant.org_id,
                ProfileCreate(profileType="company", name="N", description="D0"),
            ).id
            for _ in range(count)
        ]

    def trial(index: int) -> str:
        path = f"/v1/scoring/profiles/{ids[index]}"
        keep, both = race(
            client,
            tenant,
            pool,
            [
                ("PUT", path, {"json": {"name": "N1"}}),
                ("PUT", path, {"json": {"name": "N0", "description": "D2"}}),
            ],
        )
        no_5xx([keep, both])
        assert keep.status_code == both.status_code == 200, (keep.text, both.text)
        final = client.get(path, headers=tenant.headers).json()
        state = (final["name"], final["description"])
        assert both.json()["name"] == "N0"
        assert both.json()["description"] == "D2"
        if state == ("N1", "D2"):  # N0/D2, then N1 (which kept D2)
            assert keep.json() == final
            return "N0/D2 then N1"
        if state == ("N0", "D2"):  # N1, then N0/D2
            assert (keep.json()["name"], keep.json()["description"]) == ("N1", "D0")
            assert both.json() == final
            return "N1 then N0/D2"
        raise AssertionError(f"no serial order ends in {state} (lost update)")

    outcomes = run_trials(count, trial)
    assert sum(outcomes.values()) == count


def test_concurrent_template_creates_with_one_id_make_one(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """Three POSTs with the same id: one 201, two 409 TEMPLATE_ID_TAKEN, like in sequence."""
    count = trials(backend, 60)

    def trial(index: int) -> str:
        template_id = f"race.{index}"
        body = {
            "id": template_id,
            "name": f"Race {index}",
            "objectType": "company",
            "answerType": "number",
        }
        responses = race(
            client, tenant, pool, [("POST", "/v1/signals/templates", {"json": body})] * 3
        )
        no_5xx(responses)
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409, 409], [r.text for r in responses]
        [created] = [r for r in responses if r.status_code == 201]
        assert created.json()["id"] == template_id
        for loser in (r for r in responses if r.status_code == 409):
            error = assert_error(loser, 409, "CONFLICT", error_code="TEMPLATE_ID_TAKEN")
            assert error["details"] == {"id": template_id}
        fetched = client.get(f"/v1/signals/templates/{template_id}", headers=tenant.headers)
        assert fetched.json() == created.json()
        return "one created"

    run_trials(count, trial)
    with database.read() as conn:
        stored = conn.execute(
            sa.select(sa.func.count())
            .select_from(signal_templates)
            .where(signal_templates.c.organization_id == tenant.org_id)
        ).scalar_one()
    assert stored == count


def test_template_delete_racing_a_rule_write_on_it(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """Either the rule is written (200) and the delete is refused (409 TEMPLATE_IN_USE), or the
    delete wins (204) and the rule is refused (422 TEMPLATE_NOT_FOUND): never a 5xx, never a
    rule on a template that is gone."""
    count = trials(backend, 60)
    with database.write() as conn:
        profile_ids = [
            profiles.create_profile(
                conn, tenant.org_id, ProfileCreate(profileType="company", name=f"P{i}")
            ).id
            for i in range(count)
        ]
        for i in range(count):
            signals.create_template(
                conn,
                tenant.org_id,
                TemplateCreate(
                    id=f"doomed.{i}", name=f"Doomed {i}", objectType="company", answerType="number"
                ),
            )

    def trial(index: int) -> str:
        template_id = f"doomed.{index}"
        rule = {
            "signalTemplateId": template_id,
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {"ranges": [{"min": 0, "points": 5}]},
        }
        delete, put = race(
            client,
            tenant,
            pool,
            [
                ("DELETE", f"/v1/signals/templates/{template_id}", {}),
                ("PUT", f"/v1/scoring/profiles/{profile_ids[index]}/rules", {"json": rule}),
            ],
        )
        no_5xx([delete, put])
        with database.read() as conn:
            template_exists = conn.execute(
                sa.select(signal_templates.c.id).where(
                    signal_templates.c.organization_id == tenant.org_id,
                    signal_templates.c.id == template_id,
                )
            ).first()
            rule_ids = [
                str(rule_id)
                for rule_id in conn.execute(
                    sa.select(scoring_rules.c.id).where(
                        scoring_rules.c.organization_id == tenant.org_id,
                        scoring_rules.c.signal_template_id == template_id,
                    )
                ).scalars()
            ]
        if put.status_code == 200:
            error = assert_error(delete, 409, "CONFLICT", error_code="TEMPLATE_IN_USE")
            assert error["details"] == {"ruleIds": [put.json()["id"]]}
            assert template_exists is not None
            assert rule_ids == [put.json()["id"]]
            return "rule, then delete refused"
        assert delete.status_code == 204, (delete.text, put.text)
        assert_error(
            put,
            422,
            "VALIDATION_ERROR",
            error_code="TEMPLATE_NOT_FOUND",
            fields=["signalTemplateId"],
        )
        assert template_exists is None
        assert rule_ids == []
        return "delete, then rule refused"

    run_trials(count, trial)


def test_template_patches_racing_each_other_keep_both_fields(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """A PATCH of the name and a PATCH of the description both land, and each answer shows
    the template as it was right after that PATCH in some serial order."""
    count = trials(backend, 30)
    with database.write() as conn:
        for i in range(count):
            signals.create_template(
                conn,
                tenant.org_id,
                TemplateCreate(
                    id=f"patched.{i}",
                    name="Old",
                    description="old",
                    objectType="company",
                    answerType="number",
                ),
            )

    def trial(index: int) -> str:
        path = f"/v1/signals/templates/patched.{index}"
        by_name, by_description = race(
            client,
            tenant,
            pool,
            [
                ("PATCH", path, {"json": {"name": "New"}}),
                ("PATCH", path, {"json": {"description": "new"}}),
            ],
        )
        no_5xx([by_name, by_description])
        final = client.get(path, headers=tenant.headers).json()
        assert (final["name"], final["description"]) == ("New", "new")
        first_name = by_name.json()["description"] == "old"
        first_description = by_description.json()["name"] == "Old"
        assert first_name != first_description, (by_name.json(), by_description.json())
        assert (by_description if first_name else by_name).json() == final
        return "name first" if first_name else "description first"

    run_trials(count, trial)


def test_a_rule_deletion_and_an_upsert_of_that_rule_take_their_locks_in_one_order(
    backend: str, client: TestClient, tenant: Tenant, database: Database
) -> None:
    """An upsert records its profile's fan-out (the `recompute_profiles` row) before it changes
    the rule's row; a deletion must take them in that order too. Deleting first deadlocked:
    the upsert, holding the fan-out row, waited for the rule row the deletion held, which
    waited for the fan-out row (PostgreSQL aborted one: 503). Staged deterministically: the
    upsert holds the fan-out row, the deletion starts and must wait for it before it touches
    the rule, then the upsert changes the rule and commits, and the deletion completes."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: no lock order to get wrong")
    from signalscore.recompute import enqueue_profile
    from signalscore.rules import service as rules
    from signalscore.rules.schemas import RuleUpsert

    world = build_world(client, tenant)
    pid = uuid.UUID(world.profile_id)
    answers: list[httpx.Response] = []
    with database.write(org=tenant.org_id, rule_template="employees") as conn:
        enqueue_profile(conn, tenant.org_id, pid)
        deleting = threading.Thread(
            target=lambda: answers.append(
                world.call("DELETE", "/v1/scoring/profiles/{pid}/rules/{rid}")
            )
        )
        deleting.start()
        _wait_until_a_backend_waits_for_a_lock(database)
        rules.upsert_rule(
            conn,
            tenant.org_id,
            pid,
            RuleUpsert(
                signalTemplateId="employees",
                dimension="fit",
                answerType="number",
                pointValues={"ranges": [{"min": 0, "max": 100, "points": 6}]},
            ),
        )
    deleting.join(30)
    assert [a.status_code for a in answers] == [204], [a.text for a in answers]
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(scoring_rules)).scalar() == 0


def _wait_until_a_backend_waits_for_a_lock(database: Database, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.read() as conn:
            waiting = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the deletion never waited for the upsert's fan-out row")


def test_tier_changes_racing_value_writes_rule_writes_and_a_worker_leave_scores_fresh(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """A re-tiering (SPEC §9) overlapping a value write, a rule write and a worker batch on
    the same profile: none answers 5xx or deadlocks, and once the queue is drained every row's
    score and tier equal a from-scratch computation."""
    world = build_world(client, tenant)
    objects = [f"r{i}.com" for i in range(12)]
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": objects},
    )
    assert bulk.status_code == 201
    drain(database)
    worker = Worker(database, WorkerConfig(batch_size=4, lease_seconds=30))
    profile = f"/v1/scoring/profiles/{world.profile_id}"

    def trial(index: int) -> str:
        floor = (index * 7) % 90 + 5
        tiers = {"fit": [{"name": "A", "minScore": floor}, {"name": "B", "minScore": 0}]}
        values = [
            {
                "objectType": "company",
                "objectId": objects[(index + k) % len(objects)],
                "signalTemplateId": "employees",
                "value": (index * 13 + k * 5) % 120,
            }
            for k in range(3)
        ]
        rule = {
            "signalTemplateId": "growth",
            "dimension": "fit",
            "answerType": "percentage",
            "pointValues": {"ranges": [{"min": 0, "max": 50, "points": index % 9}]},
        }
        running = pool.submit(worker.run_once)
        responses = race(
            client,
            tenant,
            pool,
            [
                ("PUT", profile, {"json": {"name": "ICP", "tiers": tiers}}),
                ("PUT", "/v1/signals/values", {"json": {"values": values}}),
                ("PUT", f"{profile}/rules", {"json": rule}),
            ],
        )
        running.result(timeout=60)
        no_5xx(responses)
        assert [r.status_code for r in responses] == [200, 200, 200], [r.text for r in responses]
        fan_out(database)
        drain(database)
        assert_scores_fresh(database)
        return "fresh"

    outcomes = run_trials(trials(backend, 20), trial)
    assert outcomes["fresh"] == trials(backend, 20)


def test_profile_deletions_racing_a_worker_and_value_writes_leave_the_counts_exact(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """A profile deleted while a worker stores its objects' scores and values are written
    for them: the distribution counts (scores/counts.py) still equal a recount of the rows,
    with nothing left of the deleted profile, and the other profile's rows stay fresh."""
    world = build_world(client, tenant)
    objects = [f"d{i}.com" for i in range(16)]
    worker = Worker(database, WorkerConfig(batch_size=4, lease_seconds=30))

    def trial(index: int) -> str:
        created = world.call(
            "POST",
            "/v1/scoring/profiles",
            json={
                "profileType": "company",
                "name": f"Doomed {index}",
                "tiers": {"fit": [{"name": "A", "minScore": 40}, {"name": "B", "minScore": 0}]},
            },
        )
        assert created.status_code == 201, created.text
        doomed = created.json()["id"]
        rule = {
            "signalTemplateId": "employees",
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {"ranges": [{"min": 0, "max": 50, "points": 20 + index}]},
        }
        assert world.call("PUT", f"/v1/scoring/profiles/{doomed}/rules", json=rule).is_success
        for profile_id in (doomed, world.profile_id):
            assigned = world.call(
                "POST",
                "/v1/scoring/assignments/bulk",
                json={"profileId": profile_id, "objectType": "company", "objectIds": objects},
            )
            assert assigned.status_code == 201, assigned.text
        drain(database)

        def values(shift: int) -> list[dict[str, Any]]:
            return [
                {
                    "objectType": "company",
                    "objectId": object_id,
                    "signalTemplateId": "employees",
                    "value": (index * 11 + k * 7 + shift) % 90,
                }
                for k, object_id in enumerate(objects)
            ]

        assert world.call("PUT", "/v1/signals/values", json={"values": values(0)}).is_success
        running = pool.submit(worker.run_once)
        responses = race(
            client,
            tenant,
            pool,
            [
                ("DELETE", f"/v1/scoring/profiles/{doomed}", {}),
                ("PUT", "/v1/signals/values", {"json": {"values": values(37)}}),
            ],
        )
        running.result(timeout=60)
        no_5xx(responses)
        assert [r.status_code for r in responses] == [204, 200], [r.text for r in responses]
        drain(database)
        assert_scores_fresh(database)  # and the counts exact
        return "exact"

    outcomes = run_trials(trials(backend, 15), trial)
    assert outcomes["exact"] == trials(backend, 15)


def test_value_writes_over_the_same_keys_in_opposite_orders_never_deadlock(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """Two value writes list the same 40 (object, template) keys in opposite orders, and a
    third deletes half of them and rewrites the other half: each takes its row locks in one
    order (code-point order of the key, as every other writer of those rows), so none waits
    for another in a cycle. Written in request order they deadlocked, and PostgreSQL aborted
    one (503 TRANSIENT_CONFLICT). Every write must succeed, and the stored values must be
    those of some serial order of the three."""
    build_world(client, tenant)
    companies = [f"c{n:02d}.example" for n in range(20)]
    keys = [(c, t) for c in companies for t in ("employees", "is_b2b")]

    def item(key: tuple[str, str], marker: int | None) -> dict[str, Any]:
        value: Any = None if marker is None else (marker if key[1] == "employees" else True)
        return {
            "objectType": "company",
            "objectId": key[0],
            "signalTemplateId": key[1],
            "value": value,
        }

    def trial(index: int) -> str:
        forward = [item(k, 1000 + index) for k in keys]
        backward = [item(k, 2000 + index) for k in reversed(keys)]
        # Half deleted, half written, interleaved: deletions and upserts lock rows too.
        mixed = [item(k, None if n % 2 else 3000 + index) for n, k in enumerate(keys)]
        mixed = mixed[1::2] + mixed[::2]
        answers = race(
            client,
            tenant,
            pool,
            [
                ("PUT", "/v1/signals/values", {"json": {"values": v}})
                for v in (forward, backward, mixed)
            ],
        )
        no_5xx(answers)
        assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
        stored = client.get(
            "/v1/signals/values",
            headers=tenant.headers,
            params=[("objectType", "company"), *[("objectId", c) for c in companies]],
        ).json()
        employees = {v["value"] for v in stored if v["signalTemplateId"] == "employees"}
        b2b = sum(v["signalTemplateId"] == "is_b2b" for v in stored)
        # Each write holds its rows to its commit, so one of them was last on every key:
        # all 20 employee counts are that write's, and b2b is gone only if it was the mixed.
        assert len(employees) == 1, employees
        last = employees.pop() - index
        assert (last, b2b) in ((1000, 20), (2000, 20), (3000, 0)), (last, b2b)
        return str(last)

    run_trials(trials(backend, 30), trial)
