"""Time decay through the pipeline (SPEC §13): decayed points and the two new contribution
keys on stored rows, `nextChangeAt`, the sweep that rescores a row once it passes, a value
observed anew, and the invariant with random decay."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue, score_results
from signalscore.db.types import utcnow
from signalscore.recompute.worker import Worker, WorkerConfig
from tests.api.conftest import World
from tests.helpers import assert_scores_fresh, drain, fan_out

RULES = "/v1/scoring/profiles/{pid}/rules"
DECAY = {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0}]}


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def setup(world: World, database: Database, observed: dict[str, datetime]) -> None:
    """A fit rule with DECAY on `is_b2b` (10 points for true) beside the world's employees
    rule; each object's is_b2b observed at the given time; all assigned and scored."""
    rule = {
        "signalTemplateId": "is_b2b",
        "dimension": "fit",
        "answerType": "boolean",
        "pointValues": {"true": 10},
        "decay": DECAY,
    }
    assert world.call("PUT", RULES, json=rule).status_code == 200
    items = [
        {
            "objectType": "company",
            "objectId": o,
            "signalTemplateId": "is_b2b",
            "value": True,
            "observedAt": iso(at),
        }
        for o, at in observed.items()
    ]
    assert world.call("PUT", "/v1/signals/values", json={"values": items}).status_code == 200
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": world.profile_id, "objectType": "company", "objectIds": list(observed)},
    )
    assert bulk.status_code == 201, bulk.text
    fan_out(database)
    drain(database)


def fit_row(world: World, object_id: str) -> dict[str, Any]:
    rows = world.call(
        "GET",
        "/v1/scoring/scores",
        params={"objectType": "company", "objectId": object_id, "profileId": world.profile_id},
    ).json()
    (row,) = [r for r in rows if r["dimension"] == "fit"]
    return dict(row)


def b2b(row: dict[str, Any]) -> dict[str, Any]:
    (contribution,) = [c for c in row["contributions"] if c["signalTemplateId"] == "is_b2b"]
    return dict(contribution)


def test_decayed_points_and_next_change(world: World, database: Database) -> None:
    now = utcnow()
    ages = {"fresh.com": 1, "month.com": 45, "old.com": 400}
    setup(world, database, {o: now - timedelta(days=d) for o, d in ages.items()})
    fresh, month, old = (fit_row(world, o) for o in ages)
    assert (b2b(fresh)["pointsEarned"], b2b(fresh)["decayFactor"]) == (10, 1)
    assert (b2b(month)["pointsEarned"], b2b(month)["decayFactor"]) == (5.0, 0.5)
    assert (b2b(old)["pointsEarned"], b2b(old)["decayFactor"]) == (0.0, 0)
    for row, days in zip((fresh, month, old), ages.values(), strict=True):
        assert b2b(row)["maxPoints"] == 10
        assert b2b(row)["observedAt"] == iso(now - timedelta(days=days))
    # The employees rule has no decay and (for these objects) no value.
    (other,) = [c for c in fresh["contributions"] if c["signalTemplateId"] == "employees"]
    assert (other["observedAt"], other["decayFactor"]) == (None, 1)
    # The next step of each: fresh passes 30 days after its observation, month 90 days
    # after, old none.
    observed = {o: datetime.fromisoformat(b2b(r)["observedAt"]) for o, r in
                zip(ages, (fresh, month, old), strict=True)}  # fmt: skip
    assert datetime.fromisoformat(fresh["nextChangeAt"]) == observed["fresh.com"] + timedelta(30)
    assert datetime.fromisoformat(month["nextChangeAt"]) == observed["month.com"] + timedelta(90)
    assert old["nextChangeAt"] is None
    assert fresh["score"] > month["score"] > old["score"]
    assert_scores_fresh(database)


class Clock:
    """A clock the test moves: the worker's computations and sweeps read it
    (`WorkerConfig.clock`), and the invariant is checked at its time."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def test_with_no_write_at_all_a_score_moves_when_its_step_passes(
    world: World, database: Database
) -> None:
    observed = utcnow() - timedelta(days=30) + timedelta(hours=1)
    setup(world, database, {"soon.com": observed})
    before = fit_row(world, "soon.com")
    assert b2b(before)["decayFactor"] == 1
    step = observed + timedelta(days=30)
    assert datetime.fromisoformat(before["nextChangeAt"]) == step
    clock = Clock(utcnow())
    worker = Worker(database, WorkerConfig(batch_size=100, clock=clock))
    assert worker.sweep_decayed() == 0  # not yet due: nothing queued
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(recompute_queue)).scalar() == 0
    clock.now = step
    assert worker.sweep_decayed() == 0  # exactly on it: not past yet
    # A second later the step has passed, for the sweep, the worker and the check alike.
    clock.now = step + timedelta(seconds=1)
    assert worker.sweep_decayed() == 1
    with database.read() as conn:
        cleared = sa.select(score_results.c.next_change_at).where(
            score_results.c.object_id == "soon.com", score_results.c.dimension == "fit"
        )
        assert conn.execute(cleared).scalar() is None  # the queue entry brings the next one
    assert worker.sweep_decayed() == 0  # a second sweep finds nothing more
    drain(database, clock=clock)
    after = fit_row(world, "soon.com")
    assert (b2b(after)["pointsEarned"], b2b(after)["decayFactor"]) == (5.0, 0.5)
    assert after["version"] == before["version"] + 1
    assert after["score"] < before["score"]
    assert datetime.fromisoformat(after["nextChangeAt"]) == observed + timedelta(days=90)
    # The event explains the move: the decay factor of the rule.
    history = world.call(
        "GET", "/v1/scoring/history", params={"objectType": "company", "objectId": "soon.com"}
    ).json()["data"]
    (change,) = history[0]["changes"]
    assert change["before"]["decayFactor"] == 1
    assert change["after"]["decayFactor"] == 0.5
    assert_scores_fresh(database, clock.now)
    # Past the last step: 0 points, no next change.
    clock.now = observed + timedelta(days=90, seconds=1)
    assert worker.sweep_decayed() == 1
    drain(database, clock=clock)
    last = fit_row(world, "soon.com")
    assert (b2b(last)["pointsEarned"], b2b(last)["decayFactor"]) == (0, 0)
    assert last["nextChangeAt"] is None
    assert_scores_fresh(database, clock.now)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_time_aware_invariant_under_random_operations_and_clock_jumps(
    world: World, database: Database, seed: int
) -> None:
    """SPEC §13: after random rule changes (with random decay), value writes (observed at
    random past times) and jumps of the clock, once the sweep has run and the queue is
    empty, every stored score equals a from-scratch computation at the clock's time."""
    rnd = random.Random(seed)
    real = utcnow()
    clock = Clock(real)
    worker = Worker(database, WorkerConfig(batch_size=100, clock=clock))
    objects = [f"t{i:02d}.com" for i in range(25)]
    setup(world, database, {o: real - timedelta(days=rnd.randint(0, 120)) for o in objects})
    moves = 0
    for _ in range(12):
        roll = rnd.random()
        if roll < 0.3:
            steps, day, factor = [], 0, 1.0
            for _ in range(rnd.randint(1, 3)):
                day += rnd.randint(1, 40)
                factor = round(factor * rnd.choice([1, 0.8, 0.5, 0]), 2)
                steps.append({"afterDays": day, "factor": factor})
            template = rnd.choice(["employees", "is_b2b"])
            rule = {
                "signalTemplateId": template,
                "dimension": rnd.choice(["fit", "urgency"]),
                "answerType": "number" if template == "employees" else "boolean",
                "pointValues": (
                    {"ranges": [{"max": 50, "points": rnd.choice([3, -2])},
                                {"min": 50, "points": 8}]}
                    if template == "employees" else {"true": rnd.choice([4, 10]), "false": -1}
                ),
                "decay": {"steps": steps} if rnd.random() < 0.8 else None,
            }  # fmt: skip
            assert world.call("PUT", RULES, json=rule).status_code == 200
        elif roll < 0.6:
            items: list[dict[str, Any]] = [
                {"objectType": "company", "objectId": o,
                 "signalTemplateId": rnd.choice(["employees", "is_b2b"]),
                 "value": None, "observedAt": iso(real - timedelta(days=rnd.randint(0, 150),
                                                                   hours=rnd.randint(0, 23)))}
                for o in rnd.sample(objects, 6)
            ]  # fmt: skip
            for item in items:
                is_number = item["signalTemplateId"] == "employees"
                item["value"] = rnd.randint(0, 100) if is_number else rnd.random() < 0.7
            assert (
                world.call("PUT", "/v1/signals/values", json={"values": items}).status_code == 200
            )
        else:
            # The clock jumps ahead, often past some steps; no write at all.
            clock.now += timedelta(days=rnd.randint(0, 45), hours=rnd.randint(0, 23))
        moves += worker.sweep_decayed()
        fan_out(database)
        drain(database, clock=clock)
        assert_scores_fresh(database, clock.now)
    assert moves > 0  # the sweep had work: time alone moved scores


def test_a_value_observed_anew_resets_its_decay(world: World, database: Database) -> None:
    setup(world, database, {"seen.com": utcnow() - timedelta(days=45)})
    assert b2b(fit_row(world, "seen.com"))["decayFactor"] == 0.5
    item = {"objectType": "company", "objectId": "seen.com", "signalTemplateId": "is_b2b",
            "value": True}  # fmt: skip
    write = world.call("PUT", "/v1/signals/values", json={"values": [item]})
    assert write.json() == {"written": 0, "deleted": 0, "unchanged": 1}
    drain(database)
    row = fit_row(world, "seen.com")
    assert (b2b(row)["pointsEarned"], b2b(row)["decayFactor"]) == (10, 1)
    assert_scores_fresh(database)
    # The same value with the same observedAt queues nothing.
    again = {**item, "observedAt": b2b(row)["observedAt"]}
    assert world.call("PUT", "/v1/signals/values", json={"values": [again]}).status_code == 200
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(recompute_queue)).scalar() == 0


def test_a_bulk_import_of_the_same_values_observed_anew_resets_decay(
    world: World, database: Database
) -> None:
    setup(world, database, {"a.com": utcnow() - timedelta(days=45), "b.com": utcnow()})
    body = "\n".join(
        f'{{"objectType": "company", "objectId": "{o}", "signalTemplateId": "is_b2b", '
        f'"value": true, "observedAt": "{iso(utcnow())}"}}'
        for o in ("a.com",)
    )
    imported = world.call(
        "POST",
        "/v1/signals/values/import",
        content=body.encode(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert imported.status_code == 200, imported.text
    assert imported.json()["written"] == 0
    fan_out(database)
    drain(database)
    assert b2b(fit_row(world, "a.com"))["decayFactor"] == 1
    assert_scores_fresh(database)


def test_invariant_with_random_decay(world: World, database: Database) -> None:
    rnd = random.Random(11)
    now = utcnow()
    objects = {
        f"r{i:02d}.com": now
        - timedelta(days=rnd.choice([0, 10, 29, 31, 60, 89, 91, 500]), hours=rnd.randint(0, 23))
        for i in range(30)
    }
    setup(world, database, objects)
    for _ in range(4):
        steps, day, factor = [], 0, 1.0
        for _ in range(rnd.randint(1, 3)):
            day += rnd.randint(5, 60)
            factor = round(factor * rnd.choice([1, 0.75, 0.5, 0]), 2)
            steps.append({"afterDays": day, "factor": factor})
        rule = {"signalTemplateId": "employees", "dimension": "fit", "answerType": "number",
                "pointValues": {"ranges": [{"min": 0, "max": 100, "points": rnd.choice([5, -4])},
                                           {"min": 100, "points": 7.5}]},
                "decay": {"steps": steps}}  # fmt: skip
        assert world.call("PUT", RULES, json=rule).status_code == 200
        items = [{"objectType": "company", "objectId": o, "signalTemplateId": "employees",
                  "value": rnd.randint(0, 300),
                  "observedAt": iso(now - timedelta(days=rnd.randint(0, 200)))}
                 for o in rnd.sample(sorted(objects), 10)]  # fmt: skip
        assert world.call("PUT", "/v1/signals/values", json={"values": items}).status_code == 200
        fan_out(database)
        drain(database)
        assert_scores_fresh(database)


def test_a_running_worker_rescores_a_decayed_row_by_itself(
    world: World, database: Database
) -> None:
    """The sweep is part of the worker's loop: with nothing but a running worker (sweeping
    every 0.2 s here; 10 s by default), a row is rescored soon after its step passes."""
    observed = utcnow() - timedelta(days=30) + timedelta(seconds=5)
    setup(world, database, {"loop.com": observed})
    assert b2b(fit_row(world, "loop.com"))["decayFactor"] == 1
    worker = Worker(
        database,
        WorkerConfig(
            batch_size=100, poll_seconds=0.05, decay_sweep_seconds=0.2, deliver_webhooks=False
        ),
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while b2b(fit_row(world, "loop.com"))["decayFactor"] != 0.5:
            assert time.monotonic() < deadline, "not rescored within 20 s"
            time.sleep(0.1)
    finally:
        stop.set()
        worker.wakeup.set()
        thread.join(timeout=30)
    rescored = fit_row(world, "loop.com")
    assert utcnow() - (observed + timedelta(days=30)) < timedelta(seconds=20)
    assert datetime.fromisoformat(rescored["nextChangeAt"]) == observed + timedelta(days=90)
    assert_scores_fresh(database)
