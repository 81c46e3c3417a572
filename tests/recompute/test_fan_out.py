"""Rule writes on profiles larger than one fan-out chunk (recompute/queue.py).

The rule write queues no object itself: it leaves a cursor at the start of the profile, and
workers queue its objects, a chunk per batch. Here the chunk is 2 so that six companies need
three.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_profiles, recompute_queue
from signalscore.recompute import queue
from signalscore.recompute.worker import Worker, WorkerConfig
from tests.helpers import Tenant, assert_scores_fresh, drain

COMPANIES = [f"co{i}.com" for i in range(6)]


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json() if response.content else None


class World:
    def __init__(self, client: TestClient, tenant: Tenant, database: Database) -> None:
        self.client, self.h, self.db = client, tenant.headers, database
        _ok(
            client.post(
                "/v1/signals/templates",
                headers=self.h,
                json={"id": "b2b", "name": "B2B", "objectType": "company", "answerType": "boolean"},
            )
        )
        self.profile = _ok(
            client.post(
                "/v1/scoring/profiles",
                headers=self.h,
                json={"profileType": "company", "name": "ICP"},
            )
        )["id"]
        _ok(
            client.put(
                "/v1/signals/values",
                headers=self.h,
                json={
                    "values": [
                        {
                            "objectType": "company",
                            "objectId": c,
                            "signalTemplateId": "b2b",
                            "value": True,
                        }
                        for c in COMPANIES
                    ]
                },
            )
        )
        _ok(
            client.post(
                "/v1/scoring/assignments/bulk",
                headers=self.h,
                json={"profileId": self.profile, "objectType": "company", "objectIds": COMPANIES},
            )
        )

    def rule(self, points: int) -> None:
        _ok(
            self.client.put(
                f"/v1/scoring/profiles/{self.profile}/rules",
                headers=self.h,
                json={
                    "signalTemplateId": "b2b",
                    "dimension": "fit",
                    "answerType": "boolean",
                    "pointValues": {"true": points, "false": 1},
                },
            )
        )

    def queued(self) -> list[str]:
        with self.db.read() as conn:
            return sorted(conn.execute(sa.select(recompute_queue.c.object_id)).scalars())

    def cursor(self) -> str | None:
        with self.db.read() as conn:
            return conn.execute(sa.select(recompute_profiles.c.cursor_id)).scalar()

    def status(self) -> Any:
        return _ok(self.client.get("/v1/scoring/compute/status", headers=self.h))

    def earned(self) -> dict[str, float]:
        rows = _ok(
            self.client.get(
                "/v1/scoring/scores",
                headers=self.h,
                params=[("objectType", "company"), *[("objectId", c) for c in COMPANIES]],
            )
        )
        return {r["objectId"]: r["contributions"][0]["pointsEarned"] for r in rows}


@pytest.fixture
def world(
    client: TestClient, tenant: Tenant, database: Database, monkeypatch: pytest.MonkeyPatch
) -> World:
    monkeypatch.setattr(queue, "FAN_OUT_CHUNK", 2)
    built = World(client, tenant, database)
    drain(database)
    return built


def test_a_rule_write_leaves_a_cursor_and_workers_queue_its_objects(
    world: World, database: Database
) -> None:
    world.rule(5)
    assert world.queued() == []
    assert world.cursor() == ""
    # Status counts every object still to compute, queued or not yet fanned out.
    assert world.status()["pending"] == 6
    assert "\nsignalscore_profile_fan_outs 1.0\n" in world.client.get("/metrics").text
    drain(database)
    assert_scores_fresh(database)
    assert world.earned() == dict.fromkeys(COMPANIES, 5)
    assert world.cursor() is None
    assert "\nsignalscore_profile_fan_outs 0.0\n" in world.client.get("/metrics").text


def test_a_worker_continues_the_fan_out_a_chunk_per_batch(world: World, database: Database) -> None:
    world.rule(5)
    worker = Worker(database, WorkerConfig(batch_size=1))
    worker.run_once()  # queues co0, co1; computes co0
    assert world.queued() == COMPANIES[1:2]
    assert world.cursor() == COMPANIES[1]
    assert world.status()["pending"] == 5
    worker.run_once()  # queues co2, co3; computes co1
    worker.run_once()  # queues co4, co5: the last chunk ends the fan-out; computes co2
    assert world.cursor() is None
    assert world.queued() == COMPANIES[3:]


def test_a_new_rule_change_restarts_the_fan_out(world: World, database: Database) -> None:
    """Objects an earlier fan-out already queued and computed must be computed again."""
    world.rule(5)
    worker = Worker(database, WorkerConfig(batch_size=10))
    worker.run_once()  # fans out co0, co1; computes them with 5 points
    worker.run_once()  # fans out co2, co3; computes them
    assert world.cursor() == COMPANIES[3]
    assert {k: v for k, v in world.earned().items() if v == 5} == dict.fromkeys(COMPANIES[:4], 5)
    world.rule(9)
    assert world.cursor() == ""  # restarted from the first object
    drain(database)
    assert_scores_fresh(database)
    assert world.earned() == dict.fromkeys(COMPANIES, 9)


def test_status_counts_an_object_queued_and_not_yet_fanned_out_once(
    world: World, database: Database
) -> None:
    world.rule(5)
    _ok(
        world.client.post(
            "/v1/scoring/compute",
            headers=world.h,
            json={"objectType": "company", "objectIds": COMPANIES[4:]},
        )
    )
    assert world.queued() == COMPANIES[4:]
    assert world.status()["pending"] == 6


def test_deleting_the_profile_ends_its_fan_out(world: World, database: Database) -> None:
    world.rule(5)
    assert world.cursor() is not None
    assert (
        world.client.delete(f"/v1/scoring/profiles/{world.profile}", headers=world.h).status_code
        == 204
    )
    assert world.cursor() is None
    drain(database)
    assert_scores_fresh(database)


def test_status_reads_queue_and_fan_outs_in_one_statement(world: World, database: Database) -> None:
    """On PostgreSQL each statement sees its own snapshot: a fan-out step committing between
    two reads could make its objects vanish from both, and the status say "nothing pending"
    while scores are still stale."""
    world.rule(5)
    org_id = world_org(world)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.read() as conn:
            assert queue.queue_status(conn, org_id)[0] == 6
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", record)
    assert len([s for s in statements if "recompute_queue" in s]) == 1
    assert len([s for s in statements if "recompute_profiles" in s]) == 1
    assert len([s for s in statements if s != "BEGIN"]) == 1, statements


def world_org(world: World) -> str:
    return str(_ok(world.client.get("/v1/organization", headers=world.h))["id"])


@pytest.mark.parametrize("raw", ["0", "-5", "abc", "1.5", ""])
def test_a_bad_fan_out_chunk_setting_is_refused_clearly(raw: str) -> None:
    with pytest.raises(ValueError, match="SIGNALSCORE_FAN_OUT_CHUNK must be a whole number"):
        queue._fan_out_chunk(raw)
    assert queue._fan_out_chunk(" 25 ") == 25
