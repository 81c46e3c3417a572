"""Fair claims (recompute/worker.py `claim_batch`): interactive entries before background ones,
each lane shared between organisations, each organisation's oldest first; and the lanes of
queue entries (recompute/queue.py). Every test here fails with a first-in-first-out claim."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from signalscore.assignments.service import assign_many
from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue
from signalscore.db.types import utcnow
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.recompute import queue
from signalscore.recompute.queue import Lane, enqueue_objects
from signalscore.recompute.worker import (
    QueueKey,
    Worker,
    WorkerConfig,
    claim_batch,
    compute_claimed,
    fair_shares,
)
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
from signalscore.signals.service import create_template, write_values
from tests.helpers import Tenant, fan_out, make_tenant

q = recompute_queue


def enqueue(
    database: Database, org_id: str, ids: Iterable[str], lane: Lane, *, seconds_ago: float = 0
) -> None:
    """Queue `ids` for one organisation, as if `seconds_ago` seconds ago."""
    ids = list(ids)
    with database.write() as conn:
        enqueue_objects(conn, org_id, "company", ids, lane=lane)
        if seconds_ago:
            conn.execute(
                sa.update(q)
                .where(q.c.organization_id == org_id, q.c.object_id.in_(ids))
                .values(enqueued_at=utcnow() - timedelta(seconds=seconds_ago))
            )


def claim(database: Database, batch_size: int, worker_id: str = "w") -> list[QueueKey]:
    with database.write() as conn:
        return claim_batch(conn, worker_id, batch_size, 60)


def by_org(claimed: Iterable[QueueKey]) -> Counter[str]:
    return Counter(org_id for org_id, _, _ in claimed)


def entry(database: Database, org_id: str, object_id: str) -> sa.Row:  # type: ignore[type-arg]
    with database.read() as conn:
        return conn.execute(
            sa.select(q).where(q.c.organization_id == org_id, q.c.object_id == object_id)
        ).one()


def companies(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i:05d}.com" for i in range(count)]


# --- across organisations -------------------------------------------------------------------


def test_one_interactive_entry_is_in_the_next_claim_behind_another_orgs_backlog(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    """B changed a rule over 2,000 objects a minute ago; A then wrote one value."""
    enqueue(database, other_tenant.org_id, companies("b", 2000), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["a.com"], Lane.INTERACTIVE)
    claimed = claim(database, 500)
    assert (tenant.org_id, "company", "a.com") in claimed
    assert by_org(claimed) == {tenant.org_id: 1, other_tenant.org_id: 499}  # B gets the rest
    # B's share is its oldest entries, in order.
    b_claimed = sorted(k[2] for k in claimed if k[0] == other_tenant.org_id)
    assert b_claimed == companies("b", 499)


def test_the_same_holds_when_both_are_interactive(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    """B bulk-assigned 2,000 objects (interactive too): A's one write still waits one claim at
    most, not for B's whole backlog."""
    enqueue(database, other_tenant.org_id, companies("b", 2000), Lane.INTERACTIVE, seconds_ago=60)
    enqueue(database, tenant.org_id, ["a.com"], Lane.INTERACTIVE)
    claimed = claim(database, 100)
    assert by_org(claimed) == {tenant.org_id: 1, other_tenant.org_id: 99}


def test_a_claim_is_shared_evenly_between_organisations_with_backlogs(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    enqueue(database, tenant.org_id, companies("a", 1000), Lane.INTERACTIVE, seconds_ago=120)
    enqueue(database, other_tenant.org_id, companies("b", 1000), Lane.INTERACTIVE, seconds_ago=60)
    for round_ in range(3):
        claimed = claim(database, 100, f"w{round_}")
        assert by_org(claimed) == {tenant.org_id: 50, other_tenant.org_id: 50}
        # Each organisation's share is its oldest entries not yet claimed.
        for org_id, prefix in ((tenant.org_id, "a"), (other_tenant.org_id, "b")):
            got = sorted(k[2] for k in claimed if k[0] == org_id)
            assert got == companies(prefix, 1000)[50 * round_ : 50 * (round_ + 1)]


def test_what_a_small_organisation_leaves_goes_to_the_others(
    database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    third = make_tenant(database, "Tenant C").org_id
    enqueue(database, tenant.org_id, companies("a", 10), Lane.INTERACTIVE, seconds_ago=180)
    enqueue(database, other_tenant.org_id, companies("b", 1000), Lane.INTERACTIVE, seconds_ago=120)
    enqueue(database, third, companies("c", 1000), Lane.INTERACTIVE, seconds_ago=60)
    claimed = claim(database, 100)
    assert len(claimed) == 100
    assert by_org(claimed) == {tenant.org_id: 10, other_tenant.org_id: 45, third: 45}


def test_with_more_organisations_than_room_the_longest_waiting_go_first(
    database: Database,
) -> None:
    orgs = [make_tenant(database, f"Org {i}").org_id for i in range(5)]
    for age, org_id in enumerate(reversed(orgs), start=1):  # orgs[0] has waited longest
        enqueue(database, org_id, companies("x", 2), Lane.INTERACTIVE, seconds_ago=10 * age)
    claimed = claim(database, 3)
    assert by_org(claimed) == dict.fromkeys(orgs[:3], 1)


# --- lanes ----------------------------------------------------------------------------------


def test_interactive_entries_come_before_older_background_ones_of_the_same_organisation(
    database: Database, tenant: Tenant
) -> None:
    enqueue(database, tenant.org_id, companies("fan", 50), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["written.com"], Lane.INTERACTIVE)
    assert claim(database, 1) == [(tenant.org_id, "company", "written.com")]
    assert claim(database, 1) == [(tenant.org_id, "company", companies("fan", 1)[0])]
    # Two lanes, and the database knows no third (its CHECK constraint).
    assert sorted(lane.value for lane in Lane) == [0, 1]
    with pytest.raises(sa.exc.IntegrityError), database.write() as conn:
        conn.execute(sa.update(q).values(lane=2))


def test_an_interactive_trigger_moves_a_background_entry_to_the_interactive_lane(
    database: Database, tenant: Tenant
) -> None:
    enqueue(database, tenant.org_id, companies("fan", 1000), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["zz.com"], Lane.BACKGROUND, seconds_ago=30)
    queued_at = entry(database, tenant.org_id, "zz.com").enqueued_at
    enqueue(database, tenant.org_id, ["zz.com"], Lane.INTERACTIVE)
    row = entry(database, tenant.org_id, "zz.com")
    assert row.lane == Lane.INTERACTIVE
    assert row.enqueued_at == queued_at  # still one entry, with its oldest trigger's age
    assert not row.rerun
    assert claim(database, 1) == [(tenant.org_id, "company", "zz.com")]


def test_a_background_trigger_never_moves_an_entry_down(database: Database, tenant: Tenant) -> None:
    enqueue(database, tenant.org_id, companies("fan", 100), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["zz.com"], Lane.INTERACTIVE, seconds_ago=30)
    queued_at = entry(database, tenant.org_id, "zz.com").enqueued_at
    enqueue(database, tenant.org_id, ["zz.com"], Lane.BACKGROUND)  # a fan-out reaches it
    row = entry(database, tenant.org_id, "zz.com")
    assert (row.lane, row.enqueued_at, row.rerun) == (Lane.INTERACTIVE, queued_at, False)
    assert claim(database, 1) == [(tenant.org_id, "company", "zz.com")]


def test_a_trigger_while_running_reruns_in_the_lane_of_its_most_urgent_trigger(
    database: Database, tenant: Tenant
) -> None:
    enqueue(database, tenant.org_id, companies("fan", 100), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["yy.com"], Lane.INTERACTIVE, seconds_ago=30)
    enqueue(database, tenant.org_id, ["zz.com"], Lane.BACKGROUND, seconds_ago=30)
    with database.write() as conn:  # a worker is computing yy.com and zz.com
        conn.execute(
            sa.update(q)
            .where(q.c.object_id.in_(["yy.com", "zz.com"]))
            .values(lease_until=utcnow() + timedelta(minutes=1), claimed_by="w1")
        )
    enqueue(database, tenant.org_id, ["zz.com"], Lane.INTERACTIVE)  # a value write lands
    enqueue(database, tenant.org_id, ["yy.com"], Lane.BACKGROUND)  # a fan-out reaches it
    for object_id in ("yy.com", "zz.com"):
        row = entry(database, tenant.org_id, object_id)
        assert (row.lane, row.rerun, row.claimed_by) == (Lane.INTERACTIVE, True, "w1")
    compute_claimed(database, "w1", tenant.org_id, "company", ["yy.com", "zz.com"])
    # Released for one more round each, in the interactive lane: ahead of the fan-out.
    assert sorted(claim(database, 2)) == [
        (tenant.org_id, "company", "yy.com"),
        (tenant.org_id, "company", "zz.com"),
    ]


def test_a_worker_computes_its_interactive_entries_first_in_their_own_transaction(
    database: Database, tenant: Tenant
) -> None:
    """The rest of the batch is background work; the value write must not wait for it."""
    enqueue(database, tenant.org_id, companies("fan", 20), Lane.BACKGROUND, seconds_ago=60)
    enqueue(database, tenant.org_id, ["written.com"], Lane.INTERACTIVE)
    held: dict[str, tuple[float, float]] = {}

    def audit(org_id: str, object_type: str, object_id: str, start: float, end: float) -> None:
        held[object_id] = (start, end)

    worker = Worker(database, WorkerConfig(batch_size=21), audit=audit)
    assert worker.run_once() == 21
    first = held.pop("written.com")
    assert len(held) == 20
    assert all(first[1] <= start for start, _ in held.values())  # done before they started


def test_a_busy_worker_serves_the_interactive_lane_meanwhile(
    backend: str, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    """While a worker computes a batch of background work (here: held in the middle of it), a
    value write is computed by the worker's interactive thread, not after the batch."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no second thread, lanes only")
    enqueue(database, other_tenant.org_id, companies("fan", 10), Lane.BACKGROUND)
    batch_held, interactive_done = threading.Event(), threading.Event()
    computed_by: dict[str, str] = {}

    def audit(org_id: str, object_type: str, object_id: str, start: float, end: float) -> None:
        computed_by[object_id] = threading.current_thread().name
        if object_id == "written.com":
            interactive_done.set()
        elif not interactive_done.is_set():  # hold the batch (and its locks) until then
            batch_held.set()
            interactive_done.wait(30)

    worker = Worker(database, WorkerConfig(batch_size=10, poll_seconds=0.05), audit=audit)
    stop = threading.Event()
    main = threading.Thread(target=worker.run, args=(stop,), name="main-loop")
    main.start()
    try:
        assert batch_held.wait(30), "the worker never started its batch"
        enqueue(database, tenant.org_id, ["written.com"], Lane.INTERACTIVE)
        assert interactive_done.wait(30), "the value write waited for the batch"
    finally:
        interactive_done.set()
        stop.set()
        worker.wakeup.set()
        main.join(60)
    assert computed_by["written.com"] == "signalscore-interactive"
    assert {computed_by[c] for c in companies("fan", 10)} == {"main-loop"}
    with database.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(q)).scalar_one() == 0


# --- through the services -------------------------------------------------------------------


def _scored_profile(database: Database, org_id: str, objects: list[str]) -> uuid.UUID:
    with database.write(org=org_id, structure=True) as conn:
        create_template(
            conn,
            org_id,
            TemplateCreate(id="b2b", name="B2B", objectType="company", answerType="boolean"),
        )
        profile = create_profile(conn, org_id, ProfileCreate(profileType="company", name="P")).id
        upsert_rule(conn, org_id, profile, _rule(5))
        assign_many(conn, org_id, profile, "company", objects)
    return profile


def _rule(points: int) -> RuleUpsert:
    return RuleUpsert(
        signalTemplateId="b2b",
        dimension="fit",
        answerType="boolean",
        pointValues={"true": points, "false": 1},
    )


def _value(database: Database, org_id: str, object_id: str) -> None:
    with database.write(org=org_id, value_templates=["b2b"]) as conn:
        write_values(
            conn,
            org_id,
            [SignalValueIn(objectType="company", objectId=object_id, signalTemplateId="b2b",
                           value=True)],
        )  # fmt: skip


def _waiting(database: Database, org_id: str, object_id: str) -> bool:
    with database.read() as conn:
        found = conn.execute(
            sa.select(q.c.object_id).where(
                q.c.organization_id == org_id, q.c.object_id == object_id
            )
        ).first()
    return found is not None


def test_a_value_write_is_scored_in_the_next_batch_behind_rule_changes(
    database: Database, tenant: Tenant, other_tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rule changes fan out in the background lane; value writes, whether for an object the
    fan-out already queued (same organisation) or not (another organisation), are interactive
    and go first."""
    monkeypatch.setattr(queue, "FAN_OUT_CHUNK", 1000)
    a_objects, b_objects = companies("a", 60), companies("b", 60)
    a_profile = _scored_profile(database, tenant.org_id, a_objects)
    b_profile = _scored_profile(database, other_tenant.org_id, b_objects)
    worker = Worker(database, WorkerConfig(batch_size=5))
    while worker.run_once():
        pass
    with database.write(org=other_tenant.org_id, structure=True) as conn:
        upsert_rule(conn, other_tenant.org_id, b_profile, _rule(7))  # B's rule change first
    with database.write(org=tenant.org_id, structure=True) as conn:
        upsert_rule(conn, tenant.org_id, a_profile, _rule(9))
    fan_out(database)  # as workers do before their claims
    _value(database, tenant.org_id, a_objects[-1])  # queued by A's fan-out already
    _value(database, other_tenant.org_id, b_objects[-1])  # queued by B's fan-out already
    with database.read() as conn:
        lanes: dict[str, int] = {r.object_id: r.lane for r in conn.execute(sa.select(q))}
    assert lanes[a_objects[-1]] == lanes[b_objects[-1]] == Lane.INTERACTIVE
    assert sum(lane == Lane.BACKGROUND for lane in lanes.values()) == 118
    assert worker.run_once() == 5
    assert not _waiting(database, tenant.org_id, a_objects[-1])
    assert not _waiting(database, other_tenant.org_id, b_objects[-1])


# --- concurrency ----------------------------------------------------------------------------


def test_concurrent_claims_are_disjoint_and_each_one_is_fair(
    backend: str, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    """Four workers claim at the same moment, each holding its claim uncommitted until all
    four have claimed: the later ones must skip the rows the earlier ones locked and still
    take their even share of each organisation."""
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers: claims cannot overlap")
    a_ids, b_ids = companies("a", 1000), companies("b", 1000)
    enqueue(database, tenant.org_id, a_ids, Lane.INTERACTIVE, seconds_ago=120)
    enqueue(database, other_tenant.org_id, b_ids, Lane.INTERACTIVE, seconds_ago=60)
    enqueue(database, tenant.org_id, companies("bg", 200), Lane.BACKGROUND, seconds_ago=300)
    workers = 4
    claims: list[list[QueueKey]] = []
    failures: list[BaseException] = []
    lock = threading.Lock()
    all_claimed = threading.Barrier(workers, timeout=30)

    def work(worker_id: str) -> None:
        try:
            for _ in range(6):
                with database.write() as conn:
                    claimed = claim_batch(conn, worker_id, 50, 60)
                    all_claimed.wait()  # every claim of this round is in flight at once
                with lock:
                    claims.append(claimed)
        except BaseException as exc:  # collected and re-raised in the test thread
            failures.append(exc)
            all_claimed.abort()

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    everything = [key for claimed in claims for key in claimed]
    assert len(everything) == len(set(everything)), "two workers claimed the same entry"
    assert len(everything) == workers * 6 * 50
    for claimed in claims:  # 1,200 of 2,000 interactive entries: never a background one
        assert by_org(claimed) == {tenant.org_id: 25, other_tenant.org_id: 25}
    with database.read() as conn:
        leased = conn.execute(
            sa.select(sa.func.count()).where(q.c.claimed_by.is_not(None))
        ).scalar_one()
    assert leased == len(everything)


# --- the claim itself -----------------------------------------------------------------------


def test_a_claim_is_two_statements_on_postgresql(
    backend: str, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite leases one share per statement (it is the only writer anyway)")
    enqueue(database, tenant.org_id, companies("a", 100), Lane.INTERACTIVE)
    enqueue(database, other_tenant.org_id, companies("b", 100), Lane.BACKGROUND)
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(database.engine, "before_cursor_execute", record)
    try:
        claimed = claim(database, 150)
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", record)
    assert by_org(claimed) == {tenant.org_id: 100, other_tenant.org_id: 50}
    queue_statements = [s for s in statements if "recompute_queue" in s]
    assert len(queue_statements) == 2, queue_statements


@pytest.mark.parametrize(
    ("capacity", "demands", "shares"),
    [
        (100, [1000, 1000], [50, 50]),
        (100, [10, 1000, 1000], [10, 45, 45]),
        (100, [1, 2, 3], [1, 2, 3]),
        (10, [1000, 1000, 1000], [4, 3, 3]),  # the rest to the first (longest waiting)
        (3, [5, 5, 5, 5, 5], [1, 1, 1, 0, 0]),
        (0, [5, 5], [0, 0]),
        (7, [], []),
        (10, [0, 20], [0, 10]),
        (10, [6, 6, 1], [5, 4, 1]),
    ],
)
def test_fair_shares(capacity: int, demands: list[int], shares: list[int]) -> None:
    assert fair_shares(capacity, demands) == shares


@pytest.mark.parametrize("seed", range(200))
def test_fair_shares_is_max_min_fair(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    demands = [rnd.choice([0, 1, 2, 5, 50, 500]) for _ in range(rnd.randint(1, 12))]
    capacity = rnd.randint(0, 600)
    shares = fair_shares(capacity, demands)
    assert all(0 <= s <= d for s, d in zip(shares, demands, strict=True))
    assert sum(shares) == min(capacity, sum(demands))
    for i, share in enumerate(shares):
        if share < demands[i]:  # someone left wanting has at least everyone else's share - 1
            assert all(share >= other - 1 for other in shares)
