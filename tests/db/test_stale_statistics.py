"""The hot lookups keep the full key when PostgreSQL's statistics are stale (issue 12).

A fresh database during its first big load: the tables were analysed while empty (or never),
then 100,000 values arrive and nothing analyses them (autovacuum is off on these machines,
and in production it lags a large load). With `object_id = ANY(:ids)` the planner then took
500 ids for every row, used only the (organisation, object type) prefix of the index and
filtered `object_id` over every row of the organisation.

These tests read the plans, not the clock: they capture the statements of one worker batch
(and of one value write) while the real code runs them, EXPLAIN each with its parameters at
that moment, in its transaction, and check that every scan of a hot table is an index probe
whose Index Cond has the lookup's key column (the full key), or a TID scan of rows such a
probe found in the same statement. PostgreSQL only.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import score_events
from signalscore.events.service import feed
from signalscore.recompute.queue import enqueue_objects
from signalscore.recompute.worker import claim_batch, compute_claimed
from signalscore.scores import counts as score_counts
from signalscore.scores.service import RankedRead, distribution, ranked_page
from signalscore.signals import service as signals
from signalscore.signals.schemas import SignalValueIn
from tests.conftest import scratch_postgres_engine
from tests.helpers import make_tenant

COMPANIES = 5_000
TEMPLATES = 20  # 100,000 values
BATCH = 500

HOT = ("signal_values", "score_results", "profile_assignments", "recompute_queue")
# The column each table is looked up by: an object's rows, or a score row by its id.
KEYS = {
    "signal_values": ("object_id",),
    "score_results": ("object_id", "id"),
    "profile_assignments": ("object_id",),
    "recompute_queue": ("object_id",),
}
INDEX_SCANS = ("Index Scan", "Index Only Scan", "Bitmap Index Scan")


# Templates t00..t19 (boolean); a profile with rules on every other template, on both
# dimensions; every company assigned to it; 100,000 values; stored scores: outdated rows for
# every other company (the batch updates them) and rows of a profile no company is assigned to
# (the batch deletes them); and every company queued, as the load would have.
LOAD = (
    """INSERT INTO signal_templates (organization_id, id, name, object_type, answer_type,
        created_at, updated_at)
    SELECT :org, 't' || to_char(t, 'FM00'), 'T', 'company', 'boolean', now(), now()
    FROM generate_series(0, :templates - 1) AS t""",
    """INSERT INTO scoring_profiles (organization_id, id, type, name, created_at, updated_at)
    VALUES (:org, CAST(:profile AS uuid), 'company', 'ICP', now(), now()),
        (:org, CAST(:other AS uuid), 'company', 'Other', now(), now())""",
    """INSERT INTO scoring_rules (organization_id, id, profile_id, signal_template_id,
        dimension, answer_type, point_values, created_at, updated_at)
    SELECT :org, gen_random_uuid(), CAST(:profile AS uuid), 't' || to_char(t, 'FM00'),
        CASE WHEN t % 4 = 0 THEN 'urgency' ELSE 'fit' END, 'boolean',
        '{"true": 10, "false": 1}', now(), now()
    FROM generate_series(0, :templates - 1, 2) AS t""",
    """INSERT INTO profile_assignments (organization_id, id, profile_id, object_type, object_id,
        assigned_at)
    SELECT :org, gen_random_uuid(), CAST(:profile AS uuid), 'company', 'c' || g || '.com', now()
    FROM generate_series(1, :companies) AS g""",
    """INSERT INTO signal_values (organization_id, object_type, object_id, signal_template_id,
        value, observed_at, updated_at)
    SELECT :org, 'company', 'c' || g || '.com', 't' || to_char(t, 'FM00'), to_jsonb(g % 3 = 0),
        now(), now()
    FROM generate_series(1, :companies) AS g, generate_series(0, :templates - 1) AS t""",
    """INSERT INTO score_results (organization_id, id, profile_id, object_type, object_id,
        dimension, score, previous_score, contributions, previous_contributions,
        signal_coverage, total_rules, computed_at, version)
    SELECT :org, gen_random_uuid(), CAST(p AS uuid), 'company', 'c' || g || '.com', d, 0, NULL,
        '[]', '[]', 0, 0, now(), 1
    FROM generate_series(1, :companies) AS g, unnest(ARRAY['fit', 'urgency']) AS d,
        unnest(ARRAY[:profile, :other]) AS p
    WHERE g % 2 = 0 OR p = :other""",
    """INSERT INTO recompute_queue (organization_id, object_type, object_id, enqueued_at, lane)
    SELECT :org, 'company', 'c' || g || '.com', now() AT TIME ZONE 'UTC', 0
    FROM generate_series(1, :companies) AS g""",
    # The event log: 100,000 events, one in ten a creation.
    """INSERT INTO score_events (organization_id, sequence, type, created_at, profile_id,
        object_type, object_id, dimension, score, previous_score, version, changes)
    SELECT :org, g, CASE WHEN g % 10 = 0 THEN 'score.created' ELSE 'score.changed' END, now(),
        CAST(:profile AS uuid), 'company', 'c' || (g % :companies + 1) || '.com', 'fit', 1, 0,
        1, '[]'
    FROM generate_series(1, :events) AS g""",
    """INSERT INTO event_counters (organization_id, last_sequence, expired_through)
    VALUES (:org, :events, 0)
    ON CONFLICT (organization_id) DO UPDATE SET last_sequence = excluded.last_sequence""",
)
EVENTS = 100_000


@dataclass
class Stale:
    db: Database
    org_id: str
    profile: str
    other_profile: str
    current: bool = False  # statistics describe the loaded tables (the control)


def _analyse(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as admin:
        admin.exec_driver_sql("ANALYZE")


@pytest.fixture(
    scope="module", params=["analysed empty", "never analysed", "analysed after the load"]
)
def stale(request: pytest.FixtureRequest) -> Iterator[Stale]:
    """A migrated database loaded in bulk, with the statistics of empty tables (analysed
    before the load), with none, or (the control) with statistics of the loaded tables."""
    with scratch_postgres_engine("signalscore_stale") as engine:
        upgrade_to_head(engine)
        if request.param == "analysed empty":
            _analyse(engine)
        db = Database(engine)
        org_id = make_tenant(db, "Stale").org_id
        profile, other = str(uuid.uuid4()), str(uuid.uuid4())
        p: dict[str, Any] = {"org": org_id, "profile": profile, "other": other}
        p |= {"companies": COMPANIES, "templates": TEMPLATES, "events": EVENTS}
        with db.engine.begin() as conn:
            for statement in LOAD:
                conn.execute(sa.text(statement), p)
            score_counts.rebuild(conn, org_id)  # what a direct load must do (scores/counts.py)
        if request.param == "analysed after the load":
            _analyse(engine)
        yield Stale(db, org_id, profile, other, request.param == "analysed after the load")
        db.dispose()


@dataclass
class Plans:
    """The plan of every statement on a hot table run inside `capture()`: (statement, plan)."""

    plans: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    active: bool = False
    tables: tuple[str, ...] = HOT  # a statement is captured when it names one of these

    @contextlib.contextmanager
    def capture(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


@pytest.fixture
def plans(stale: Stale) -> Iterator[Plans]:
    """The plans of each statement right before it runs, on its connection (so in its
    transaction, with its parameters, against the data it sees): the custom plan PostgreSQL
    makes for these parameters, and the generic plan it may switch to once psycopg has
    prepared the statement (after 5 runs on a connection; with stale statistics the generic
    plan of `object_id = ANY($3)` took seconds per batch)."""
    captured = Plans()

    def explain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not captured.active or many or not any(t in statement for t in captured.tables):
            return
        driver = cursor.connection
        found = driver.execute(f"EXPLAIN (FORMAT JSON) {statement}", parameters)
        captured.plans.append((statement, found.fetchone()[0][0]["Plan"]))
        captured.plans.append(
            (f"(generic) {statement}", _generic_plan(driver, statement, parameters))
        )

    sa.event.listen(stale.db.engine, "before_cursor_execute", explain)
    try:
        yield captured
    finally:
        sa.event.remove(stale.db.engine, "before_cursor_execute", explain)


_PLACEHOLDER = re.compile(r"%\((\w+)\)[sb]")


def _generic_plan(driver: psycopg.Connection[Any], statement: str, parameters: Any) -> Any:
    """The generic plan of a driver statement: PREPAREd with $n parameters, EXPLAIN EXECUTE
    under `plan_cache_mode = force_generic_plan` (for this moment only), arguments as literals
    of the types PostgreSQL inferred."""
    names = list(dict.fromkeys(m.group(1) for m in _PLACEHOLDER.finditer(statement)))
    numbered = _PLACEHOLDER.sub(lambda m: f"${names.index(m.group(1)) + 1}", statement)
    driver.execute("PREPARE stale_check AS " + numbered.replace("%%", "%"))
    try:
        types = driver.execute(
            "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'stale_check'"
        ).fetchone()
        assert types is not None
        arguments = ", ".join(f"CAST(%({n})s AS {t})" for n, t in zip(names, types[0], strict=True))
        mode = driver.execute(
            "SELECT current_setting('plan_cache_mode'),"
            " set_config('plan_cache_mode', 'force_generic_plan', true)"
        ).fetchone()
        assert mode is not None
        literal = psycopg.ClientCursor(driver)
        literal.execute(f"EXPLAIN (FORMAT JSON) EXECUTE stale_check({arguments})", parameters)
        found = literal.fetchone()
        assert found is not None
        driver.execute("SELECT set_config('plan_cache_mode', %s, true)", [mode[0]])
        return found[0][0]["Plan"]
    finally:
        driver.execute("DEALLOCATE stale_check")


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def _mentions(text: str | None, column: str) -> bool:
    """Whether a plan condition names this column of the scanned table (`(object_id)::text`,
    `id`; not `wanted.id` nor `organization_id`)."""
    return text is not None and re.search(rf"(?<![\w.]){column}\b", text) is not None


def _table(node: dict[str, Any]) -> str | None:
    """The hot table a plan node scans (a Bitmap Index Scan names only its index)."""
    if node["Node Type"] == "Bitmap Index Scan":
        return next((t for t in HOT if t in node["Index Name"]), None)
    table = node.get("Relation Name")
    return table if table in HOT else None


def _check(plans: Plans) -> set[str]:
    """Assert every scan of a hot table is a full-key index probe, or a TID scan of rows a
    full-key probe of the same statement found; return the tables looked up."""
    looked_up: set[str] = set()
    problems: list[str] = []
    for statement, plan in plans.plans:
        nodes = [(node, _table(node)) for node in _nodes(plan)]
        probed = {
            table
            for node, table in nodes
            if table is not None
            and node["Node Type"] in INDEX_SCANS
            and any(_mentions(node.get("Index Cond"), key) for key in KEYS[table])
        }
        for node, table in nodes:
            kind = node["Node Type"]
            if table is None or kind == "ModifyTable":
                continue
            where = f"{kind} on {table} in: {' '.join(statement.split())[:160]}"
            if _mentions(node.get("Filter"), "object_id"):
                problems.append(f"object_id filtered, not probed ({node['Filter'][:80]}), {where}")
            elif kind in INDEX_SCANS:
                condition = node.get("Index Cond")
                if any(_mentions(condition, key) for key in KEYS[table]):
                    looked_up.add(table)
                else:
                    problems.append(f"index prefix only ({condition}), {where}")
            elif kind == "Tid Scan":
                if table not in probed:
                    problems.append(f"TID scan without a full-key probe, {where}")
            elif kind != "Bitmap Heap Scan":  # its Bitmap Index Scan is checked
                problems.append(where)
    assert not problems, "\n".join(problems)
    return looked_up


def test_a_worker_batch_keeps_the_full_key_on_postgresql(stale: Stale, plans: Plans) -> None:
    db = stale.db
    with db.write(notify=False) as conn:
        claimed = claim_batch(conn, "stale-worker", BATCH, 60)
    assert len(claimed) == BATCH
    ids = [object_id for _, _, object_id in claimed]
    with db.write(notify=False) as conn:  # a trigger while computing: `rerun`, released again
        conn.execute(
            # Entered now: a rerun older than the worker's grace period is stored anyway,
            # and this module's data may have been loaded a while ago.
            sa.text(
                "UPDATE recompute_queue SET rerun = true,"
                " enqueued_at = now() AT TIME ZONE 'UTC' WHERE object_id = ANY(:ids)"
            ),
            {"ids": ids[:10]},
        )
    with plans.capture():
        stats = compute_claimed(db, "stale-worker", stale.org_id, "company", ids)
    assert stats.objects == BATCH - 10
    assert stats.inserted > 0
    assert stats.updated > 0
    assert stats.deleted > 0
    # The same objects once more (now the oldest): their rows compute identical, so they get
    # `computed_at` touches.
    with db.write(notify=False) as conn:
        enqueue_objects(conn, stale.org_id, "company", ids[10:])
        conn.execute(
            sa.text(
                "UPDATE recompute_queue SET enqueued_at = '2000-01-01' WHERE object_id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        again = claim_batch(conn, "stale-worker", BATCH, 60)
    assert sorted(again) == sorted(claimed)
    with plans.capture():
        stats = compute_claimed(db, "stale-worker", stale.org_id, "company", ids)
    assert stats.unchanged == 2 * (BATCH - 10)

    assert _check(plans) == set(HOT)


def test_a_value_write_keeps_the_full_key_on_postgresql(stale: Stale, plans: Plans) -> None:
    items = [
        SignalValueIn.model_validate(
            {
                "objectType": "company",
                "objectId": f"c{n}.com",
                "signalTemplateId": f"t{t:02d}",
                "value": n % 3 != 0,  # the opposite of the load: every value changes
            }
        )
        for n in range(4001, 4501)
        for t in (0, 1)
    ]
    shaped, templates = signals.shape_items(items)
    with plans.capture(), stale.db.write(org=stale.org_id, value_templates=templates) as conn:
        result = signals.write_values(conn, stale.org_id, shaped)
    assert result.written == len(items)
    # The existing values, and the assignments of the objects whose changed values a rule
    # reads (t00 has rules, t01 none).
    assert _check(plans) >= {"signal_values", "profile_assignments"}


def _rank_scans(plans: Plans) -> list[tuple[str, dict[str, Any]]]:
    """Every scan of score_results in the captured plans, with its statement."""
    return [
        (statement, node)
        for statement, plan in plans.plans
        for node in _nodes(plan)
        if _table(node) == "score_results"
    ]


def _rank_range_or_key_probe(node: dict[str, Any]) -> bool:
    """A range read of the rank index (positions), or a probe of a row's full key (the
    page's rows, read whole once the positions are known)."""
    if node["Node Type"] not in ("Index Scan", "Index Only Scan"):
        return False
    condition = node.get("Index Cond")
    if node.get("Index Name") == "ix_score_results_rank":
        return _mentions(condition, "dimension")
    return node.get("Index Name") == "uq_score_results_object_profile_dimension" and all(
        _mentions(condition, column) for column in ("object_id", "profile_id", "dimension")
    )


def test_ranked_reads_and_distributions_walk_the_rank_index_on_postgresql(
    stale: Stale, plans: Plans
) -> None:
    """A page is a few range reads of `ix_score_results_rank`, each cut to `limit + 1` by the
    index order itself (only those few positions are merged and sorted), then one full-key
    probe per row, whatever the statistics say. The distribution reads the kept counts, not
    `score_results`."""
    profile = uuid.UUID(stale.profile)
    with plans.capture(), stale.db.read() as conn:
        first, cursor = ranked_page(
            conn, stale.org_id, profile, RankedRead(dimension="fit", limit=100)
        )
        assert len(first) == 100
        assert cursor is not None
        for order in ("desc", "asc"):
            ranked_page(
                conn,
                stale.org_id,
                profile,
                RankedRead(dimension="fit", order=order, limit=100, min_score=0, max_score=50),
            )
        read = RankedRead(dimension="fit", limit=100, cursor=cursor)
        second, _ = ranked_page(conn, stale.org_id, profile, read)
        assert second[0].object_id > first[-1].object_id  # one big tie at 0, by objectId
        found = distribution(conn, stale.org_id, profile, "fit", 10)
    assert found.scored > 0
    scans = _rank_scans(plans)
    assert len(scans) >= 5
    problems = [
        f"{node['Node Type']} on {node.get('Index Name')} in: {' '.join(statement.split())[:120]}"
        for statement, node in scans
        if not (stale.current and "GROUP BY" in statement) and not _rank_range_or_key_probe(node)
    ]
    assert not problems, "\n".join(problems)
    # No page sorts what it read from the table: each range read's ORDER BY ... LIMIT is the
    # index order itself; what is sorted is their few positions (under their LIMITs).
    sorts = [
        " ".join(statement.split())[:120]
        for statement, plan in plans.plans
        if "GROUP BY" not in statement
        for node in _nodes(plan)
        if node["Node Type"] in ("Sort", "Incremental Sort") and _unlimited_scan(node)
    ]
    assert not sorts, "\n".join(sorts)


def _unlimited_scan(plan: dict[str, Any]) -> bool:
    """Whether a scan of score_results lies below `plan` with no LIMIT in between."""
    return any(
        _table(child) == "score_results"
        or (child["Node Type"] != "Limit" and _unlimited_scan(child))
        for child in plan.get("Plans", [])
    )


def test_the_event_feed_reads_bounded_ranges_of_the_log_on_postgresql(
    stale: Stale, plans: Plans
) -> None:
    """`GET /v1/events?after=` reads the log by its key, a bounded range of sequences at a
    time: whatever the plan (the statistics of an empty log planned `sequence > after ...
    LIMIT` as a bitmap scan of everything after `after`, then a sort of it), it reads no more
    than its range. A filter that matches few events costs a few statements (the ranges
    double), not one per page of the log."""
    plans.tables = ("score_events",)
    profile = uuid.UUID(stale.profile)
    reads = [
        (0, (), None),
        (EVENTS // 2, (), None),
        (EVENTS // 2, ("score.created",), None),
        (EVENTS // 2, (), profile),
        (EVENTS - 10, ("score.changed", "score.created"), profile),
        (EVENTS // 2, (), uuid.uuid4()),  # matches nothing: to the end of the log
    ]
    for after, types, profile_id in reads:
        with stale.db.read() as conn:  # the reference: every event, filtered here
            log = conn.execute(
                sa.select(score_events.c.sequence, score_events.c.type, score_events.c.profile_id)
                .where(score_events.c.organization_id == stale.org_id)
                .order_by(score_events.c.sequence)
            ).all()
        wanted = [
            sequence
            for sequence, kind, profile_of in log
            if sequence > after
            and (not types or kind in types)
            and (profile_id is None or profile_of == profile_id)
        ][:100]
        with plans.capture(), stale.db.read() as conn:
            rows, next_after = feed(conn, stale.org_id, after, types, profile_id, 100)
        assert [r.sequence for r in rows] == wanted
        assert next_after == (wanted[-1] if wanted else after)
    problems = []
    reads_of_the_log = 0
    for statement, plan in plans.plans:
        where = " ".join(statement.split())[:120]
        for node in _nodes(plan):
            if node["Node Type"] not in (*INDEX_SCANS, "Seq Scan", "Bitmap Heap Scan"):
                continue
            if node.get("Relation Name") != "score_events" and "score_events" not in node.get(
                "Index Name", ""
            ):
                continue
            if node["Node Type"] == "Bitmap Heap Scan":
                continue  # its Bitmap Index Scan is checked
            reads_of_the_log += 1
            condition = node.get("Index Cond") or ""
            bounded = re.search(r"sequence > ", condition) and re.search(r"sequence <= ", condition)
            if node["Node Type"] == "Seq Scan" or not bounded:
                problems.append(f"{node['Node Type']} ({condition}) in: {where}")
    assert not problems, "\n".join(problems)
    # Custom and generic plans of each statement: under 10 statements a read here.
    assert 2 * len(reads) <= reads_of_the_log <= 2 * 10 * len(reads)
