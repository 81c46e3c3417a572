"""Where SQLite and PostgreSQL differ, in one module.

Everything else asks these functions instead of testing the dialect itself: the
organisation lock, `INSERT ... ON CONFLICT`, the collation rows are locked in, how a list of
ids becomes a condition, and the recompute pipeline's statements that each backend runs its
own way (the claim's lease, loading values, writing scores). Outside this module only the
engine setup (db/engine.py), the migrations and the rate limiter's choice of counter store
look at the backend.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from signalscore.db.tables import (
    event_counters,
    recompute_queue,
    score_counts,
    score_events,
    score_results,
    signal_values,
)
from signalscore.db.types import UTCDateTime

if TYPE_CHECKING:
    from signalscore.engine import DimensionResult

s = score_results

# Bound parameters per IN list (SQLite): well under its limit.
IN_CHUNK = 900


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def advisory_locks(conn: Connection, locks: Sequence[tuple[str, bool]]) -> None:
    """Transaction-scoped advisory locks on the hash of each key, in the given order, in one
    statement: (key, exclusive) pairs (PostgreSQL evaluates a select list left to right).
    SQLite needs none: every write transaction starts with BEGIN IMMEDIATE, so writers are
    serialised anyway."""
    if not is_postgresql(conn) or not locks:
        return
    calls = ", ".join(
        f"{'pg_advisory_xact_lock' if exclusive else 'pg_advisory_xact_lock_shared'}"
        f"(hashtext(:k{i}))"
        for i, (_, exclusive) in enumerate(locks)
    )
    conn.execute(sa.text(f"SELECT {calls}"), {f"k{i}": key for i, (key, _) in enumerate(locks)})


def upsert(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that supports ON CONFLICT on this backend."""
    if is_postgresql(conn):
        return postgresql.insert(table)
    return sqlite.insert(table)


def kept_with(conn: Connection, p: float) -> sa.ColumnElement[bool]:
    """True for each row with probability `p`, independently (a Bernoulli sample):
    PostgreSQL's `random()` is uniform on [0, 1); SQLite's is a random 64-bit integer, of
    which 30 bits are compared."""
    if is_postgresql(conn):
        return sa.func.random() < sa.literal(p, sa.Float())
    return sa.func.random().op("&")(sa.literal((1 << 30) - 1)) < sa.literal(round(p * (1 << 30)))


def lock_order(conn: Connection, column: Any) -> Any:
    """`column` for an ORDER BY that locks rows: code-point order, on every backend.

    Every writer locks queue rows in one order, so two writers queueing overlapping objects
    cannot deadlock. Python sorts str by code point, SQLite's BINARY collation compares UTF-8
    bytes (the same order), and PostgreSQL's "C" collation does too; the database's default
    collation (en_US, ICU) may not (it can put "u_1" before "u1"), so it is never used here."""
    return column.collate("C") if is_postgresql(conn) else column


def _value_probe(
    table: sa.FromClause, org_id: str, keys: Sequence[tuple[str, str, str]], columns: Sequence[Any]
) -> tuple[Any, Any]:
    """PostgreSQL: `unnest(types, ids, templates) AS wanted` and a LATERAL probe of
    `table` (`signal_values` or an alias) selecting `columns` for each wanted key, down the
    primary key, in the list's order (a nested loop: the lateral side reads `wanted`)."""
    wanted = (
        sa.func.unnest(
            *(
                sa.bindparam(None, list(column), type_=postgresql.ARRAY(sa.Text), unique=True)
                for column in zip(*keys, strict=True)
            )
        )
        .table_valued("object_type", "object_id", "template_id")
        .render_derived(name="wanted")
    )
    probe = sa.select(*columns).where(
        table.c.organization_id == org_id,
        table.c.object_type == wanted.c.object_type,
        table.c.object_id == wanted.c.object_id,
        # An expression, not the column: the probe is the primary key's (organization,
        # type, object), then at most a few rows filtered. With the column, stale statistics
        # chose `ix_signal_values_template` and filtered `object_id` over a template's rows.
        table.c.signal_template_id.concat("") == wanted.c.template_id,
    )
    return wanted, probe.offset(_NO_PULL_UP)


def locked_value_rows(
    conn: Connection,
    org_id: str,
    keys: Sequence[tuple[str, str, str]],
) -> list[Any]:
    """The stored `signal_values` rows (object_type, object_id, signal_template_id, value,
    updated_at, observed_at) of `keys` ((object type, object id, template), in code-point
    order), for a value write that compares them with what it writes.

    PostgreSQL: each row locked `FOR UPDATE` in that order as it is read: one probe per key
    down the primary key, in a nested loop over the list, so two writes of overlapping keys
    lock them in one order, and each row comes as it is under the lock (the latest committed
    version), not as an earlier snapshot saw it. A row committed by another write while the
    statement ran is invisible to it: an upsert of such a key finds it anyway (its insert
    waits for the row), and `delete_value_rows` looks for its rows again.

    SQLite has one writer at a time: each object's values of these templates, down the
    primary key (`rows_by_key`; rows of other keys among them are returned too)."""
    v = signal_values
    columns = [
        v.c.object_type,
        v.c.object_id,
        v.c.signal_template_id,
        v.c.value,
        v.c.updated_at,
        v.c.observed_at,
    ]
    found: list[Any] = []
    if not is_postgresql(conn):
        by_type: dict[str, set[str]] = {}
        for object_type, object_id, _ in keys:
            by_type.setdefault(object_type, set()).add(object_id)
        templates = sorted({key[2] for key in keys})
        for object_type, object_ids in by_type.items():
            for select in rows_by_key(
                conn,
                v,
                "object_id",
                sorted(object_ids),
                columns,
                match={"organization_id": org_id, "object_type": object_type},
                where=[v.c.signal_template_id.in_(templates)],
            ):
                found.extend(conn.execute(select))
        return found
    if keys:
        wanted, probe = _value_probe(v, org_id, keys, columns)
        locked = probe.with_for_update().lateral("found")
        found.extend(conn.execute(sa.select(*locked.c).select_from(wanted.join(locked, sa.true()))))
    return found


def delete_value_rows(
    conn: Connection, org_id: str, keys: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """Delete the `signal_values` rows of `keys` that exist when it runs; the keys it
    deleted. Its own statement, so on PostgreSQL it sees a row another write committed
    after this write's first read (one whose insert this write's upserts waited for): one
    statement finding the rows as `locked_value_rows` does, then addressing them by their
    physical address (as `key_filters` does); `IN` chunks of key tuples on SQLite."""
    v = signal_values
    key_columns = (v.c.object_type, v.c.object_id, v.c.signal_template_id)
    deleted: list[tuple[str, str, str]] = []
    if not keys:
        return deleted
    if not is_postgresql(conn):
        for part in chunks(keys):
            deleted.extend(
                conn.execute(
                    sa.delete(v)
                    .where(v.c.organization_id == org_id, sa.tuple_(*key_columns).in_(part))
                    .returning(*key_columns)
                ).tuples()
            )
        return deleted
    keyed = v.alias("keyed")
    wanted, probe = _value_probe(
        keyed, org_id, keys, [sa.literal_column("keyed.ctid").label("tid")]
    )
    found = probe.lateral("found")
    tids = sa.select(found.c.tid).select_from(wanted.join(found, sa.true())).scalar_subquery()
    deleted.extend(
        conn.execute(
            sa.delete(v)
            .where(sa.literal_column("signal_values.ctid") == sa.any_(sa.func.array(tids)))
            .returning(*key_columns)
        ).tuples()
    )
    return deleted


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def id_filters(
    conn: Connection, column: sa.ColumnElement[Any], ids: Sequence[Any]
) -> Iterator[sa.ColumnElement[bool]]:
    """`column` among `ids`, as few conditions as the backend likes: on PostgreSQL a single
    `column = ANY(:array)` (one parameter, so the statement text is always the same and
    psycopg/PostgreSQL parse and plan it once); elsewhere `IN` lists of at most `IN_CHUNK`."""
    if not ids:
        return
    if is_postgresql(conn):
        array = sa.bindparam(None, list(ids), type_=postgresql.ARRAY(column.type), unique=True)
        yield column == sa.any_(array)
        return
    for part in chunks(ids):
        yield column.in_(part)


# Looking rows up by a list of keys, on PostgreSQL whatever its statistics say.
#
# `table.key = ANY(:ids)` leaves the plan to the estimated selectivity of the list, and
# without column statistics (a table analysed while empty, then loaded: autovacuum off, or
# not yet run) each element counts as 0.5% of the rows, so 500 ids count as every row. The
# planner then used only the (organization, object type) prefix of the index and filtered
# the key over every row of the organisation; once psycopg had prepared the statement (its
# fifth run on a connection), PostgreSQL's generic plan did the same, comparing each row
# with the whole array: 2.7 s for the read of one 500-object batch at 200,000 values, 14 s at
# 1,000,000, instead of 20-30 ms. The statements below are driven by the list instead:
# `unnest(:ids)` joined LATERAL to a subquery with `key = wanted.id` that cannot be pulled up
# (OFFSET 0, or an aggregate), so the only plans, custom or generic, are a nested loop that
# probes the index with the full key once per id, or a scan of the whole table once per id,
# which no estimate makes look cheap. Still one array parameter, so the statement text stays
# the same. SQLite keeps `IN` lists.


def _wanted(column: sa.ColumnElement[Any], ids: Sequence[Any]) -> Any:
    """PostgreSQL: `unnest(:ids) AS wanted(id)`, each id once, in code-point order: the
    nested loop probes in this order, so `rows_by_key(lock=True)` locks rows in the order
    every writer locks queue rows in (`lock_order`)."""
    array = sa.bindparam(None, sorted(set(ids)), type_=postgresql.ARRAY(column.type), unique=True)
    return sa.func.unnest(array).table_valued("id").render_derived(name="wanted")


def _matching(table: sa.FromClause, match: dict[str, Any]) -> list[sa.ColumnElement[bool]]:
    return [table.c[name] == value for name, value in match.items()]


_NO_PULL_UP = sa.literal_column("0", sa.Integer)  # OFFSET 0: a subquery the planner keeps


def rows_by_key(
    conn: Connection,
    table: sa.Table,
    key: str,
    ids: Sequence[Any],
    columns: Sequence[Any],
    *,
    match: dict[str, Any],
    where: Sequence[sa.ColumnElement[bool]] = (),
    lock: bool = False,
) -> Iterator[sa.Select[Any]]:
    """SELECTs of `columns` (of `table`; rows come with the same names) from the rows whose
    `key` is among `ids` and whose `match` columns equal the given values (the index's
    prefix), that also meet `where`. `lock`: `FOR UPDATE`, rows locked in code-point order
    of `key` on both backends. Every id list is one statement on PostgreSQL:

        SELECT found.* FROM unnest(:ids) AS wanted (id) CROSS JOIN LATERAL (
            SELECT columns FROM table WHERE match AND key = wanted.id AND where OFFSET 0
        ) AS found

    elsewhere `IN` lists of at most `IN_CHUNK`."""
    if not ids:
        return
    if not is_postgresql(conn):
        for part in chunks(ids):
            select = sa.select(*columns).where(
                *_matching(table, match), table.c[key].in_(part), *where
            )
            if lock:
                select = select.order_by(lock_order(conn, table.c[key])).with_for_update()
            yield select
        return
    wanted = _wanted(table.c[key], ids)
    inner = (
        sa.select(*columns)
        .where(*_matching(table, match), table.c[key] == wanted.c.id, *where)
        .offset(_NO_PULL_UP)
    )
    if lock:
        inner = inner.with_for_update()
    found = inner.lateral("found")
    yield sa.select(*found.c).select_from(wanted.join(found, sa.true()))


def key_filters(
    conn: Connection, table: sa.Table, key: str, ids: Sequence[Any], *, match: dict[str, Any]
) -> Iterator[sa.ColumnElement[bool]]:
    """WHERE conditions for an UPDATE or DELETE of `table`'s rows whose `key` is among `ids`
    and whose `match` columns equal the given values: `IN` chunks on SQLite; on PostgreSQL
    one condition that finds the rows as `rows_by_key` does and then addresses them by
    their physical address (`ctid = ANY(ARRAY(...))`, a TID scan; an UPDATE's or DELETE's
    own table cannot be the inner side of a LATERAL join).

    Only for rows no other transaction changes meanwhile: queue entries this transaction
    has locked, or the score rows of objects whose queue entries it holds (only the holder
    of an object's entry writes its score rows; docs/architecture.md). A row another
    transaction updated after this statement's snapshot would be skipped, where a key
    condition would follow it to its new version; one deleted is skipped either way."""
    if not ids:
        return
    if not is_postgresql(conn):
        for part in chunks(ids):
            yield sa.and_(*_matching(table, match), table.c[key].in_(part))
        return
    keyed = table.alias("keyed")
    wanted = _wanted(keyed.c[key], ids)
    found = (
        sa.select(sa.literal_column("keyed.ctid").label("tid"))
        .where(*_matching(keyed, match), keyed.c[key] == wanted.c.id)
        .offset(_NO_PULL_UP)
        .lateral("found")
    )
    tids = sa.select(found.c.tid).select_from(wanted.join(found, sa.true())).scalar_subquery()
    # Only the address outside: the planner counts an ARRAY(...) as 10 elements, so the TID
    # scan wins over a scan of any table larger than a few pages; a condition on the index's
    # prefix there too would offer the prefix scan again (with stale statistics it took it).
    yield sa.literal_column(f"{table.name}.ctid") == sa.any_(sa.func.array(tids))


# --- The recompute pipeline's statements ----------------------------------------------------


_NUMBERS = (int, float)


def contributions_fingerprint(contributions: list[dict[str, Any]]) -> int:
    """A 64-bit fingerprint of a result's contributions, stored with the row
    (`score_results.contributions_hash`) so the worker compares a new result with the stored
    one without loading the stored document. Equal as Python compares them, equal
    fingerprint: every number counts as the float it equals (5 and 5.0, 0.0 and -0.0 are one
    number), over the entries' values in the engine's key order. Different documents collide
    with probability 2**-64."""
    canonical = [
        [value + 0.0 if type(value) in _NUMBERS else value for value in entry.values()]
        for entry in contributions
    ]
    digest = hashlib.blake2b(orjson.dumps(canonical), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


#: `observedAt` as the engine reads it (SPEC §13): UTC, always 27 characters, so that text
#: order is time order: "2026-11-30T12:00:00.000000Z".
OBSERVED_AT_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'


def observed_text(stored: str) -> str:
    """SQLite's stored form of a timestamp ("2026-11-30 12:00:00.000000", what SQLAlchemy
    writes) as the engine's observedAt text; any other stored form is parsed."""
    if len(stored) == 26 and stored[10] == " ":
        return f"{stored[:10]}T{stored[11:]}Z"
    moment = datetime.fromisoformat(stored)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instant(text: str | None) -> datetime | None:
    """The engine's `next_change_at` text (`OBSERVED_AT_FORMAT`) as an aware datetime."""
    return None if text is None else datetime.fromisoformat(text)


@dataclass
class LoadedValues:
    """Objects' values and their `observedAt` texts, by object id, then template id."""

    values: dict[str, dict[str, Any]]
    observed: dict[str, dict[str, str]]


def load_values(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    wanted: frozenset[str],
) -> LoadedValues:
    """The objects' values for the given templates, with when each was observed
    (`OBSERVED_AT_FORMAT`). The template filter is applied here, not in SQL: with both
    lists PostgreSQL probes the primary key once per (object, template)."""
    v = signal_values
    loaded = LoadedValues({}, {})
    if not object_ids or not wanted:
        return loaded
    values, observed = loaded.values, loaded.observed
    if is_postgresql(conn):
        # One row per object (its values and their times as two JSON objects): a sixteenth
        # of the rows and of the driver's per-row work. The aggregates are taken per id,
        # down the primary key (see `rows_by_key`): the aggregate keeps the subquery apart.
        # An object without values gets NULLs.
        by_object = sa.func.jsonb_object_agg(
            v.c.signal_template_id, v.c.value, type_=postgresql.JSONB
        )
        times = sa.func.json_object_agg(
            v.c.signal_template_id,
            sa.func.to_char(v.c.observed_at, OBSERVED_AT_FORMAT),
            type_=postgresql.JSON,
        )
        wanted_ids = _wanted(v.c.object_id, object_ids)
        found = (
            sa.select(by_object.label("document"), times.label("times"))
            .where(
                v.c.organization_id == org_id,
                v.c.object_type == object_type,
                v.c.object_id == wanted_ids.c.id,
            )
            .lateral("found")
        )
        rows = conn.execute(
            sa.select(wanted_ids.c.id, found.c.document, found.c.times).select_from(
                wanted_ids.join(found, sa.true())
            )
        )
        for object_id, document, at in rows:
            if document is not None:
                values[object_id] = {k: x for k, x in document.items() if k in wanted}
                observed[object_id] = {k: x for k, x in at.items() if k in wanted}
        return loaded
    stored_at = sa.type_coerce(v.c.observed_at, sa.String())
    for among in id_filters(conn, v.c.object_id, object_ids):
        rows = conn.execute(
            sa.select(v.c.object_id, v.c.signal_template_id, v.c.value, stored_at).where(
                v.c.organization_id == org_id, v.c.object_type == object_type, among
            )
        )
        for object_id, template_id, value, at in rows:
            if template_id in wanted:
                values.setdefault(object_id, {})[template_id] = value
                observed.setdefault(object_id, {})[template_id] = observed_text(at)
    return loaded


# A new row: (profile id, object id, dimension, result, fingerprint of its contributions), and
# an update: (row id, result, fingerprint).
# (profile id, object id, dimension, result, contributions fingerprint, tier)
NewRow = tuple[uuid.UUID, str, str, "DimensionResult", int, str | None]
# (row id, result, contributions fingerprint, tier)
ChangedRow = tuple[uuid.UUID, "DimensionResult", int, str | None]


# An event's `changes` (SPEC §10): built in Python (`events.log.changes`), or JSON text built
# by PostgreSQL (`_PG_CHANGES`), which the event's INSERT passes through.
Changes = list[dict[str, Any]] | str
# `events.log.changes`: (old contributions, new contributions) -> their changes.
Differ = Callable[[Any, Any], list[dict[str, Any]]]


def write_scores(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    inserts: list[NewRow],
    changed: list[ChangedRow],
    differ: Differ,
) -> dict[uuid.UUID, Changes]:
    """Insert the new score rows and update the changed ones (`version + 1`, the old values
    moved into `previous_*` by the database): one statement each over arrays on PostgreSQL,
    executemany elsewhere. Returns each changed row's `changes` (its old contributions
    against its new ones), by row id: on PostgreSQL computed by the UPDATE itself, which has
    both documents (`_PG_CHANGES`), so the old ones never travel to Python; elsewhere by
    `differ`, from the old contributions read back from `previous_contributions`."""
    if is_postgresql(conn):
        return _write_scores_postgresql(conn, org_id, object_type, now, inserts, changed)
    _write_scores_generic(conn, org_id, object_type, now, inserts, changed)
    new = {row_id: result.contributions for row_id, result, _, _ in changed}
    found: dict[uuid.UUID, Changes] = {}
    for among in id_filters(conn, s.c.id, list(new)):
        for row_id, old in conn.execute(
            sa.select(s.c.id, s.c.previous_contributions).where(
                s.c.organization_id == org_id, among
            )
        ):
            found[row_id] = differ(old, new[row_id])
    return found


def _write_scores_generic(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    inserts: list[NewRow],
    changed: list[ChangedRow],
) -> None:
    """Any backend: executemany inserts and updates."""
    if inserts:
        conn.execute(
            s.insert(),
            [
                {
                    "organization_id": org_id,
                    "id": uuid.uuid4(),
                    "profile_id": profile_id,
                    "object_type": object_type,
                    "object_id": object_id,
                    "dimension": dimension,
                    "score": result.score,
                    "previous_score": None,
                    "contributions": result.contributions,
                    "contributions_hash": fingerprint,
                    "previous_contributions": [],
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                    "computed_at": now,
                    "version": 1,
                    "tier": tier,
                    "previous_tier": None,
                    "next_change_at": instant(result.next_change_at),
                }
                for profile_id, object_id, dimension, result, fingerprint, tier in inserts
            ],
        )
    if changed:
        # The old values move into previous_* on the database side: every SET expression
        # sees the row as it was before the UPDATE.
        conn.execute(
            sa.update(s)
            .where(s.c.organization_id == org_id, s.c.id == sa.bindparam("row_id"))
            .values(
                previous_score=s.c.score,
                previous_contributions=s.c.contributions,
                previous_tier=s.c.tier,
                version=s.c.version + 1,
                score=sa.bindparam("score"),
                tier=sa.bindparam("tier"),
                contributions=sa.bindparam("contributions", type_=s.c.contributions.type),
                contributions_hash=sa.bindparam("contributions_hash"),
                signal_coverage=sa.bindparam("signal_coverage"),
                total_rules=sa.bindparam("total_rules"),
                computed_at=sa.bindparam("computed_at", now, type_=s.c.computed_at.type),
                next_change_at=sa.bindparam("next_change_at", type_=s.c.next_change_at.type),
            ),
            [
                {
                    "row_id": row_id,
                    "score": result.score,
                    "contributions": result.contributions,
                    "contributions_hash": fingerprint,
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                    "tier": tier,
                    "next_change_at": instant(result.next_change_at),
                }
                for row_id, result, fingerprint, tier in changed
            ],
        )


# PostgreSQL: a whole batch per statement, its columns sent as arrays. `%(name)b` asks
# psycopg for the binary format: its text format for arrays quotes each element in Python,
# which costs about 0.3 s for 1,000 documents of contributions; binary costs a few ms. The
# documents go as text[] and PostgreSQL parses them into jsonb.
_PG_INSERT = """
    INSERT INTO score_results (
        organization_id, id, profile_id, object_type, object_id, dimension, score,
        previous_score, contributions, contributions_hash, previous_contributions,
        signal_coverage, total_rules, computed_at, version, tier, previous_tier,
        next_change_at
    )
    SELECT %(org)s, v.id, v.profile_id, %(object_type)s, v.object_id, v.dimension, v.score,
        NULL, v.contributions::jsonb, v.hash, '[]'::jsonb, v.signal_coverage, v.total_rules,
        %(now)s, 1, v.tier, NULL, v.next_change::timestamp
    FROM unnest(
        %(ids)b::uuid[], %(profile_ids)b::uuid[], %(object_ids)b::text[],
        %(dimensions)b::text[], %(scores)b::float8[], %(contributions)b::text[],
        %(hashes)b::int8[], %(coverages)b::int4[], %(totals)b::int4[], %(tiers)b::text[],
        %(next_changes)b::text[]
    ) AS v (
        id, profile_id, object_id, dimension, score, contributions, hash, signal_coverage,
        total_rules, tier, next_change
    )
"""

# The old values move into previous_* on the database side (SET sees the row as it was).
# The rows are found down the primary key, one probe per id, and updated by address, as
# `key_filters` does: joined by id, with stale statistics the planner read every score row of
# the organisation.
_PG_UPDATE = """
    UPDATE score_results AS s SET
        previous_score = s.score,
        previous_contributions = s.contributions,
        previous_tier = s.tier,
        version = s.version + 1,
        score = v.score,
        tier = v.tier,
        contributions = v.contributions::jsonb,
        contributions_hash = v.hash,
        signal_coverage = v.signal_coverage,
        total_rules = v.total_rules,
        computed_at = %(now)s,
        next_change_at = v.next_change::timestamp
    FROM unnest(
        %(ids)b::uuid[], %(scores)b::float8[], %(contributions)b::text[], %(hashes)b::int8[],
        %(coverages)b::int4[], %(totals)b::int4[], %(tiers)b::text[], %(next_changes)b::text[]
    ) AS v (id, score, contributions, hash, signal_coverage, total_rules, tier, next_change)
    WHERE s.ctid = ANY(ARRAY(
            SELECT found.tid FROM unnest(%(ids)b::uuid[]) AS wanted (id)
            CROSS JOIN LATERAL (
                SELECT keyed.ctid AS tid FROM score_results AS keyed
                WHERE keyed.organization_id = %(org)s AND keyed.id = wanted.id OFFSET 0
            ) AS found
        ))
        AND s.id = v.id
    RETURNING s.id, {changes}::text
"""


# One side of a change (`events.log._part`) from a contribution {c} (jsonb): a missing key
# is null, a missing `decayFactor` 1.
_PG_PART = """jsonb_build_object('matchedValue', {c} -> 'matchedValue',
    'pointsEarned', {c} -> 'pointsEarned', 'maxPoints', {c} -> 'maxPoints',
    'observedAt', {c} -> 'observedAt', 'decayFactor', COALESCE({c} -> 'decayFactor', '1'::jsonb))"""

# The `changes` of a row whose contributions go from {old} to {new} (jsonb), exactly as
# `events.log.changes` builds them: one entry per rule whose side differs, in the new
# document's order, then the rules only the old one had, in its order (jsonb compares numbers
# by value, 5 = 5.0, as Python does). Two ways, the first when it applies: when both
# documents list the same rules in the same order (what a changed value or a rule's new
# points give), the entries are paired by position (`ROWS FROM`, one pass over each);
# otherwise (a rule added, deleted or moved, or an empty side) the first gives NULL and the
# rules are matched by `ruleId` (a full join).
_PG_CHANGES = """COALESCE((
        SELECT CASE WHEN bool_and(COALESCE(z.n -> 'ruleId' = z.o -> 'ruleId', false)) THEN
            COALESCE(jsonb_agg(jsonb_build_object(
                'ruleId', z.n -> 'ruleId', 'signalTemplateId', z.n -> 'signalTemplateId',
                'before', {part_zo}, 'after', {part_zn}) ORDER BY z.i)
                FILTER (WHERE z.n <> z.o AND {part_zn} <> {part_zo}), '[]'::jsonb)
            END
        FROM ROWS FROM (jsonb_array_elements({new}), jsonb_array_elements({old}))
            WITH ORDINALITY AS z (n, o, i)
    ), (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
            'ruleId', CASE WHEN n.c IS NULL THEN o.c -> 'ruleId' ELSE n.c -> 'ruleId' END,
            'signalTemplateId', CASE WHEN n.c IS NULL THEN o.c -> 'signalTemplateId'
                ELSE n.c -> 'signalTemplateId' END,
            'before', CASE WHEN o.c IS NOT NULL THEN {part_oc} END,
            'after', CASE WHEN n.c IS NOT NULL THEN {part_nc} END)
            ORDER BY n.i, o.i), '[]'::jsonb)
        FROM jsonb_array_elements({new}) WITH ORDINALITY AS n (c, i)
        FULL JOIN jsonb_array_elements({old}) WITH ORDINALITY AS o (c, i)
            ON n.c -> 'ruleId' = o.c -> 'ruleId'
        WHERE n.c IS NULL OR o.c IS NULL OR {part_nc} <> {part_oc}
    ))"""


def _pg_changes(old: str, new: str) -> str:
    """`_PG_CHANGES` of the jsonb expressions `old` and `new`."""
    sides = {
        f"part_{name.replace('.', '')}": _PG_PART.format(c=name)
        for name in ("z.o", "z.n", "o.c", "n.c")
    }
    return _PG_CHANGES.format(old=old, new=new, **sides)


# RETURNING sees the updated row: `previous_contributions` holds the old document.
_PG_UPDATE = _PG_UPDATE.format(changes=_pg_changes("s.previous_contributions", "s.contributions"))


def _json_text(document: Any) -> str:
    """JSON text for PostgreSQL to parse into jsonb (orjson: a few times faster than json)."""
    return orjson.dumps(document).decode()


def _write_scores_postgresql(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    inserts: list[NewRow],
    changed: list[ChangedRow],
) -> dict[uuid.UUID, Changes]:
    """PostgreSQL: one INSERT and one UPDATE per batch, each over arrays (`unnest`); the
    UPDATE returns each changed row's `changes` as JSON text."""
    # The driver gets the timestamp as the column stores it: naive UTC.
    naive_now = now.astimezone(UTC).replace(tzinfo=None)
    if inserts:
        conn.exec_driver_sql(
            _PG_INSERT,
            {
                "org": org_id,
                "object_type": object_type,
                "now": naive_now,
                "ids": [uuid.uuid4() for _ in inserts],
                "profile_ids": [row[0] for row in inserts],
                "object_ids": [row[1] for row in inserts],
                "dimensions": [row[2] for row in inserts],
                "scores": [float(row[3].score) for row in inserts],
                "contributions": [_json_text(row[3].contributions) for row in inserts],
                "hashes": [row[4] for row in inserts],
                "coverages": [row[3].signal_coverage for row in inserts],
                "totals": [row[3].total_rules for row in inserts],
                "tiers": [row[5] for row in inserts],
                "next_changes": [row[3].next_change_at for row in inserts],
            },
        )
    changes: dict[uuid.UUID, Changes] = {}
    if changed:
        updated = conn.exec_driver_sql(
            _PG_UPDATE,
            {
                "org": org_id,
                "now": naive_now,
                "ids": [row[0] for row in changed],
                "scores": [float(row[1].score) for row in changed],
                "contributions": [_json_text(row[1].contributions) for row in changed],
                "hashes": [row[2] for row in changed],
                "coverages": [row[1].signal_coverage for row in changed],
                "totals": [row[1].total_rules for row in changed],
                "tiers": [row[3] for row in changed],
                "next_changes": [row[1].next_change_at for row in changed],
            },
        )
        changes = dict(updated.tuples().all())
    return changes


# --- The claim (recompute/worker.py) -----------------------------------------------------------

q = recompute_queue


def plan_each_claim(conn: Connection) -> None:
    """PostgreSQL, for the claim's transaction: psycopg prepares a statement run five times,
    and PostgreSQL may then cache a generic plan. An idle worker runs the claim on an empty
    queue often enough for that plan to be made for an empty table; after a large enqueue it
    ran for minutes. So plan each claim for the queue as it is now. And no JIT: the survey's
    estimated cost passes `jit_above_cost` on a large queue (it cannot know how few rows each
    LIMIT reads), and compiling it took 50-60 ms of a claim that runs in 1-6 ms."""
    if is_postgresql(conn):
        conn.exec_driver_sql(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
            " set_config('jit', 'off', true)"
        )


def derived_commit(conn: Connection) -> None:
    """PostgreSQL, for a worker's transactions (claim, fan-out step, store): commit without
    waiting for the WAL to reach the disk (`synchronous_commit = off`, this transaction only).
    They write only what can be derived again: a crash may lose the last of them, atomically
    and in order, and what they had done is then undone with them: the entries are still
    queued (or leased until their lease expires), so the objects are computed again. Visibility
    is unchanged (other transactions see the commit at once), and a later durable commit (any
    API write) flushes every commit before it. API writes keep waiting for the disk."""
    if is_postgresql(conn):
        conn.exec_driver_sql("SELECT set_config('synchronous_commit', 'off', true)")


def autocommit_reads(conn: Connection) -> Connection:
    """PostgreSQL: `conn` with each statement a transaction of its own (no BEGIN and COMMIT
    round trips around a read; the pool restores the isolation level). For reads that need
    no snapshot across statements. SQLite: unchanged."""
    if is_postgresql(conn):
        return conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


def insert_then(conn: Connection, insert: sa.Insert, then: sa.Update) -> sa.CursorResult[Any]:
    """Run `insert`, then `then`, and return the latter's result: one statement on
    PostgreSQL (the insert as a data-modifying CTE: one round trip), two on SQLite. `then`
    must not read what `insert` writes (a CTE's rows are not visible to its statement)."""
    if is_postgresql(conn):
        return conn.execute(then.add_cte(insert.cte("inserted")))
    conn.execute(insert)
    return conn.execute(then)


def concurrent_writers(name: str) -> bool:
    """Whether write transactions of this backend (by dialect name) run at the same time:
    PostgreSQL yes; SQLite has one writer at a time."""
    return name == "postgresql"


def lease_shares(
    conn: Connection,
    plan: Sequence[tuple[int, str, int]],
    pending: Callable[[Any], sa.ColumnElement[bool]],
    lease: dict[str, Any],
    returning: Sequence[Any],
) -> list[Any]:
    """Lease each (lane, organisation, n) share of `plan`: that organisation's n oldest
    pending entries of the lane. Returns the leased rows (`returning`)."""
    if is_postgresql(conn):
        update = _lease_shares_postgresql(plan, pending).values(**lease).returning(*returning)
        return list(conn.execute(update))
    # SQLite: this transaction is the only writer (BEGIN IMMEDIATE), so nothing can claim
    # meanwhile; one short statement per share.
    rows: list[Any] = []
    for lane, org_id, n in plan:
        oldest = (
            sa.select(q.c.object_type, q.c.object_id)
            .where(q.c.lane == lane, q.c.organization_id == org_id, pending(q))
            .order_by(q.c.enqueued_at)
            .limit(n)
        )
        rows.extend(
            conn.execute(
                sa.update(q)
                .where(
                    q.c.organization_id == org_id,
                    sa.tuple_(q.c.object_type, q.c.object_id).in_(oldest),
                )
                .values(**lease)
                .returning(*returning)
            )
        )
    return rows


def _lease_shares_postgresql(
    plan: Sequence[tuple[int, str, int]], pending: Callable[[Any], sa.ColumnElement[bool]]
) -> sa.Update:
    """PostgreSQL: one UPDATE for every share of the plan.

    Each (lane, organisation, n) takes that organisation's n oldest pending entries of the
    lane (LATERAL, down `ix_recompute_queue_claim`), skipping rows another worker is claiming
    right now (SKIP LOCKED is applied before LIMIT, so it takes the next ones instead). The
    UPDATE then finds the rows it locked by their physical address (`ctid = ANY(ARRAY(...))`,
    a TID scan): joined back by key, the planner may hash the few hundred chosen keys against
    a sequential scan of the whole queue, which it did here at 200,000 entries with stale and
    with fresh statistics alike. A row this transaction has locked cannot move, so its
    address is stable until the UPDATE; and a row that another transaction changed just
    before the lock (so the lock went to a newer version this statement's snapshot does not
    see) is simply not leased this time: it stays pending for the next claim."""
    share = (
        sa.func.unnest(
            sa.bindparam("lanes", [p[0] for p in plan], postgresql.ARRAY(sa.SmallInteger())),
            sa.bindparam("orgs", [p[1] for p in plan], postgresql.ARRAY(sa.String())),
            sa.bindparam("counts", [p[2] for p in plan], postgresql.ARRAY(sa.Integer())),
        )
        .table_valued("lane", "organization_id", "n")
        .render_derived(name="share")
    )
    candidate = q.alias("candidate")
    picked = (
        sa.select(sa.literal_column("candidate.ctid").label("tid"))
        .where(
            candidate.c.lane == share.c.lane,
            candidate.c.organization_id == share.c.organization_id,
            pending(candidate),
        )
        .order_by(candidate.c.enqueued_at)
        .limit(share.c.n)
        .with_for_update(skip_locked=True)
        .lateral("picked")
    )
    tids = sa.select(picked.c.tid).select_from(share.join(picked, sa.true())).scalar_subquery()
    return sa.update(q).where(
        sa.literal_column("recompute_queue.ctid") == sa.any_(sa.func.array(tids))
    )


# --- Bulk imports (signalscore/imports.py) -----------------------------------------------------
#
# An import stages its validated records in a temporary table, a chunk at a time, then merges
# them into the real tables in set-based statements, all in the request's one transaction.
# PostgreSQL stages with COPY into an unindexed table and keeps each key's last (values) or
# first (assignments) record with DISTINCT ON when it merges; SQLite stages with executemany
# into a table keyed like the target (`INSERT OR REPLACE` keeps the last record, `OR IGNORE`
# the first). Every staging table is dropped before the commit; a rollback removes it too.

_staging = sa.MetaData()

#: The values an import changed or deleted (`deleted`), what its queueing reads.
changed_values = sa.Table(
    "signalscore_changed_values",
    _staging,
    sa.Column("object_type", sa.String()),
    sa.Column("object_id", sa.String()),
    sa.Column("signal_template_id", sa.String()),
    sa.Column("deleted", sa.Boolean()),
    # The value is the same, observed anew: no value was written, but the scores that read
    # it explain its `observedAt` (and decay from it, SPEC §13), so they are recomputed.
    sa.Column("observed_only", sa.Boolean()),
    prefixes=["TEMPORARY"],
)

#: The assignments an import stages: a new id for each object.
staged_assignments = sa.Table(
    "signalscore_import_assignments",
    _staging,
    sa.Column("line", sa.BigInteger()),
    sa.Column("id", sa.Uuid()),
    sa.Column("object_id", sa.String(), primary_key=True),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,
)

_staged_values = sa.Table(
    "signalscore_import_values",
    _staging,
    sa.Column("line", sa.BigInteger()),
    sa.Column("object_type", sa.String(), primary_key=True),
    sa.Column("object_id", sa.String(), primary_key=True),
    sa.Column("template_id", sa.String(), primary_key=True),
    sa.Column("value", sa.JSON(none_as_null=True)),
    sa.Column("observed_at", UTCDateTime()),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,  # one b-tree, keyed like the target: cheaper to fill and drop
)

# A staged value row: (line, object type, object id, template id, value or None, observed at).
StagedValue = tuple[int, str, str, str, Any, datetime]


def _no_jit(conn: Connection) -> None:
    """PostgreSQL, for a bulk import's transaction: no JIT. The queueing statement probes the
    assignments once per changed value; its estimated cost passes `jit_above_cost` at a few
    thousand rows, and compiling it took 0.15-0.4 s of a statement that runs in 0.1 s at
    100,000 rows, on every import call (a chunked load pays it per chunk). The set-based
    statements gain nothing from it: they are index probes and sorts, not expressions."""
    conn.exec_driver_sql("SELECT set_config('jit', 'off', true)")


def create_value_staging(conn: Connection) -> None:
    if is_postgresql(conn):
        _no_jit(conn)
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE signalscore_import_values (line int8, object_type text,"
            " object_id text, template_id text, value jsonb, observed_at timestamp)"
            " ON COMMIT DROP"
        )
    else:
        _staged_values.create(conn)
    changed_values.create(conn)


def create_assignment_staging(conn: Connection) -> None:
    if is_postgresql(conn):
        _no_jit(conn)
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE signalscore_import_assignments (line int8, id uuid,"
            " object_id text) ON COMMIT DROP"
        )
    else:
        staged_assignments.create(conn)


def drop_staging(conn: Connection) -> None:
    for name in ("signalscore_import_values", "signalscore_changed_values",
                 "signalscore_import_assignments"):  # fmt: skip
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _copy(conn: Connection, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """PostgreSQL: COPY rows in, on this transaction's connection."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)


def stage_values(conn: Connection, rows: Sequence[StagedValue]) -> None:
    """Stage a chunk of validated values (in line order)."""
    if not rows:
        return
    if is_postgresql(conn):
        _copy(
            conn,
            "COPY signalscore_import_values (line, object_type, object_id, template_id, value,"
            " observed_at) FROM STDIN",
            (
                (
                    line,
                    object_type,
                    object_id,
                    template_id,
                    None if value is None else orjson.dumps(value).decode(),
                    observed_at.astimezone(UTC).replace(tzinfo=None),
                )
                for line, object_type, object_id, template_id, value, observed_at in rows
            ),
        )
        return
    # SQLite: the driver's executemany with the values already in the columns' storage form
    # (SQLAlchemy's per-row parameter processing took most of the staging time): JSON text
    # (orjson's spelling; any JSON text reads back the same), and timestamps as SQLAlchemy
    # stores them, converted once per distinct time (most are the time of the write).
    as_time = _storage_form(conn, _staged_values.c.observed_at)
    times: dict[datetime, Any] = {}
    staged = []
    for line, object_type, object_id, template_id, value, observed_at in rows:
        stored_at = times.get(observed_at)
        if stored_at is None:
            stored_at = times[observed_at] = as_time(observed_at)
        document = None if value is None else orjson.dumps(value).decode()
        staged.append((line, object_type, object_id, template_id, document, stored_at))
    _driver_executemany(
        conn,
        "INSERT OR REPLACE INTO signalscore_import_values (line, object_type, object_id,"
        " template_id, value, observed_at) VALUES (?, ?, ?, ?, ?, ?)",
        staged,
    )


def _storage_form(conn: Connection, column: sa.Column[Any]) -> Callable[[Any], Any]:
    """How SQLAlchemy would send a value of `column` to the driver."""
    processor = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return processor or (lambda value: value)


def _driver_executemany(conn: Connection, statement: str, rows: Sequence[Sequence[Any]]) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.executemany(statement, rows)


def stage_assignments(conn: Connection, rows: Sequence[tuple[int, uuid.UUID, str]]) -> None:
    """Stage a chunk of (line, new id, object id)."""
    if not rows:
        return
    if is_postgresql(conn):
        _copy(conn, "COPY signalscore_import_assignments (line, id, object_id) FROM STDIN", rows)
        return
    as_uuid = _storage_form(conn, staged_assignments.c.id)
    _driver_executemany(
        conn,
        "INSERT OR IGNORE INTO signalscore_import_assignments (line, id, object_id)"
        " VALUES (?, ?, ?)",
        [(line, as_uuid(id_), object_id) for line, id_, object_id in rows],
    )


# PostgreSQL: each key's last staged value, upserted and deleted in one statement. An upserted
# row's `updated_at` becomes this write's time only when its value changed (jsonb equality:
# 5 and 5.0 are equal, true and 1 are not, as in `signals.service._same_value`); that is how
# the RETURNING list tells changed rows from fresh observations of the same value, against
# the row as it is under this transaction's lock, not as a snapshot saw it. A row whose value
# and `observedAt` are both the same is not rewritten (nor returned); one observed anew is
# recorded as `observed_only`. Keys are upserted in code-point order, the order a value write
# locks its rows in (`locked_value_rows`); the deletions' order is the join's (an import that
# deletes values while a value write deletes or writes the same keys can deadlock, and
# PostgreSQL then aborts one of them: 503 TRANSIENT_CONFLICT, changed nothing, retry).
_PG_MERGE_VALUES = """
    WITH src AS (
        SELECT DISTINCT ON (
            object_type COLLATE "C", object_id COLLATE "C", template_id COLLATE "C"
        ) object_type, object_id, template_id, value, observed_at
        FROM signalscore_import_values
        ORDER BY object_type COLLATE "C", object_id COLLATE "C", template_id COLLATE "C",
            line DESC
    ), upserted AS (
        INSERT INTO signal_values AS v (
            organization_id, object_type, object_id, signal_template_id, value, observed_at,
            updated_at
        )
        SELECT %(org)s, object_type, object_id, template_id, value, observed_at, %(now)s
        FROM src WHERE value IS NOT NULL
        ON CONFLICT (organization_id, object_type, object_id, signal_template_id) DO UPDATE SET
            value = CASE WHEN v.value = excluded.value THEN v.value ELSE excluded.value END,
            observed_at = excluded.observed_at,
            updated_at = CASE WHEN v.value = excluded.value THEN v.updated_at
                ELSE excluded.updated_at END
        WHERE v.value <> excluded.value OR v.observed_at <> excluded.observed_at
        RETURNING v.object_type, v.object_id, v.signal_template_id, v.updated_at = %(now)s
            AS changed
    ), removed AS (
        DELETE FROM signal_values AS v USING src
        WHERE src.value IS NULL AND v.organization_id = %(org)s
            AND v.object_type = src.object_type AND v.object_id = src.object_id
            AND v.signal_template_id = src.template_id
        RETURNING v.object_type, v.object_id, v.signal_template_id
    ), recorded AS (
        INSERT INTO signalscore_changed_values
        SELECT object_type, object_id, signal_template_id, false, NOT changed FROM upserted
        UNION ALL
        SELECT object_type, object_id, signal_template_id, true, false FROM removed
    )
    SELECT (SELECT count(*) FROM src),
        (SELECT count(*) FILTER (WHERE changed) FROM upserted),
        (SELECT count(*) FROM removed)
"""

# SQLite: the import's write transaction is the only writer, so comparing with the stored rows
# first and writing after sees exactly what the writes change. Two JSON texts hold the same
# value when their types agree (any two numbers do: 5 and 5.0 are equal, true and 1 are not)
# and so do their values.
_SQLITE_CHANGED_VALUES = """
    INSERT INTO signalscore_changed_values
    SELECT object_type, object_id, template_id, deleted, NOT moved FROM (
        SELECT s.object_type, s.object_id, s.template_id, s.value IS NULL AS deleted,
            CASE WHEN s.value IS NULL THEN v.value IS NOT NULL
                ELSE v.value IS NULL OR NOT (
                    (json_type(v.value) = json_type(s.value)
                        OR (json_type(v.value) IN ('integer', 'real')
                            AND json_type(s.value) IN ('integer', 'real')))
                    AND json_extract(v.value, '$') = json_extract(s.value, '$')
                ) END AS moved,
            s.value IS NOT NULL AND v.observed_at IS NOT s.observed_at AS observed
        FROM signalscore_import_values AS s
        LEFT JOIN signal_values AS v ON v.organization_id = :org
            AND v.object_type = s.object_type AND v.object_id = s.object_id
            AND v.signal_template_id = s.template_id
    ) WHERE moved OR observed
"""

# The same comparison, keeping the stored value and its `updated_at` when equal.
_SQLITE_UPSERT_VALUES = """
    INSERT INTO signal_values AS v (
        organization_id, object_type, object_id, signal_template_id, value, observed_at,
        updated_at
    )
    SELECT :org, object_type, object_id, template_id, value, observed_at, :now
    FROM signalscore_import_values WHERE value IS NOT NULL
    ON CONFLICT (organization_id, object_type, object_id, signal_template_id) DO UPDATE SET
        observed_at = excluded.observed_at,
        value = CASE WHEN (json_type(v.value) = json_type(excluded.value)
                OR (json_type(v.value) IN ('integer', 'real')
                    AND json_type(excluded.value) IN ('integer', 'real')))
            AND json_extract(v.value, '$') = json_extract(excluded.value, '$')
            THEN v.value ELSE excluded.value END,
        updated_at = CASE WHEN (json_type(v.value) = json_type(excluded.value)
                OR (json_type(v.value) IN ('integer', 'real')
                    AND json_type(excluded.value) IN ('integer', 'real')))
            AND json_extract(v.value, '$') = json_extract(excluded.value, '$')
            THEN v.updated_at ELSE excluded.updated_at END
"""

_SQLITE_DELETE_VALUES = """
    DELETE FROM signal_values WHERE organization_id = :org
        AND (object_type, object_id, signal_template_id) IN (
            SELECT object_type, object_id, signal_template_id FROM signalscore_changed_values
            WHERE deleted
        )
"""


def merge_staged_values(conn: Connection, org_id: str, now: datetime) -> tuple[int, int, int]:
    """Write the staged values (`null` deletes) and record what changed in `changed_values`.
    Returns (distinct keys, values written, values deleted)."""
    if is_postgresql(conn):
        naive_now = now.astimezone(UTC).replace(tzinfo=None)
        keys, written, deleted = conn.exec_driver_sql(
            _PG_MERGE_VALUES, {"org": org_id, "now": naive_now}
        ).one()
        # Temporary tables are never analysed automatically: without statistics the queueing
        # join that reads this one was planned as a nested loop over it (5 s at 40,000 rows).
        conn.exec_driver_sql("ANALYZE signalscore_changed_values")
        return int(keys), int(written), int(deleted)
    stored_now = UTCDateTime().process_bind_param(now, conn.dialect)
    conn.execute(sa.text(_SQLITE_CHANGED_VALUES), {"org": org_id})
    keys = conn.execute(sa.text("SELECT count(*) FROM signalscore_import_values")).scalar_one()
    written, deleted = conn.execute(
        sa.text(
            "SELECT coalesce(sum(NOT deleted AND NOT observed_only), 0),"
            " coalesce(sum(deleted), 0) FROM signalscore_changed_values"
        )
    ).one()
    conn.execute(sa.text(_SQLITE_UPSERT_VALUES), {"org": org_id, "now": stored_now})
    if deleted:
        conn.execute(sa.text(_SQLITE_DELETE_VALUES), {"org": org_id})
    return int(keys), int(written), int(deleted)


def staged_assignments_source(conn: Connection) -> Any:
    """The staged assignments, one per object (its first line), as a FROM clause."""
    if not is_postgresql(conn):
        return staged_assignments
    s = staged_assignments
    return (
        sa.select(s.c.line, s.c.id, s.c.object_id)
        .distinct(s.c.object_id)
        .order_by(s.c.object_id, s.c.line)
        .subquery("staged")
    )


# Autovacuum's defaults: a table is analysed once this many rows changed since the last time.
_ANALYZE_THRESHOLD = 50
_ANALYZE_SCALE_FACTOR = 0.1
# Tables smaller than this many pages are planned well enough without statistics.
_ANALYZE_MIN_PAGES = 8


def analyze_if_stale(engine: sa.Engine, tables: Sequence[str]) -> list[str]:
    """PostgreSQL: ANALYZE each of these tables whose statistics autovacuum would refresh now
    (more rows changed since its last analysis than 50 + 10% of its rows), or which has grown
    by more than 10% of its pages since (above 8 pages), each in its own
    short transaction; the tables analysed. A bulk import has it run (`db.statistics`, on a
    thread of its own) for the tables its statements join, before its merge, and for those
    it filled, after its commit: their plans are made from statistics that describe the
    tables, even where autovacuum is off or has not caught up (a fresh database during its
    first load). Elsewhere a no-op."""
    if engine.dialect.name != "postgresql":
        return []
    analysed: list[str] = []
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = conn.execute(
            sa.text(
                "SELECT s.relname, s.n_mod_since_analyze, greatest(c.reltuples, 0), c.relpages,"
                " pg_relation_size(c.oid) / current_setting('block_size')::int"
                " FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid"
                " WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)"
            ),
            {"tables": list(tables)},
        ).all()
        for name, modified, reltuples, relpages, pages in rows:
            # The counters reach pg_stat_user_tables up to a second after a commit; the
            # table's size on disk is current, so growth is seen at once.
            grown = pages > _ANALYZE_MIN_PAGES and pages > relpages * (1 + _ANALYZE_SCALE_FACTOR)
            if grown or modified > _ANALYZE_THRESHOLD + _ANALYZE_SCALE_FACTOR * reltuples:
                conn.exec_driver_sql(f'ANALYZE "{name}"')
                analysed.append(str(name))
    return analysed


# --- The event log (signalscore/events/log.py) ------------------------------------------------

_c = event_counters
_e = score_events


def reserve_sequences(conn: Connection, org_id: str, count: int) -> int:
    """Reserve `count` sequence numbers of the organisation's event log; the last one. The
    counter row stays locked until this transaction ends (SQLite: one writer at a time)."""
    statement = upsert(conn, _c).values(
        organization_id=org_id, last_sequence=count, expired_through=0
    )
    statement = statement.on_conflict_do_update(
        index_elements=[_c.c.organization_id],
        set_={"last_sequence": _c.c.last_sequence + count},
    ).returning(_c.c.last_sequence)
    return int(conn.execute(statement).scalar_one())


_PG_INSERT_EVENTS = """
    INSERT INTO score_events (
        organization_id, sequence, type, created_at, profile_id, object_type, object_id,
        dimension, score, previous_score, tier, previous_tier, version, changes
    )
    SELECT %(org)s, %(first)s - 1 + v.n, v.type, %(now)s, v.profile_id, v.object_type,
        v.object_id, v.dimension, v.score, v.previous_score, v.tier, v.previous_tier,
        v.version, v.changes::jsonb
    FROM unnest(
        %(types)b::text[], %(profile_ids)b::uuid[], %(object_types)b::text[],
        %(object_ids)b::text[], %(dimensions)b::text[], %(scores)b::float8[],
        %(previous_scores)b::float8[], %(tiers)b::text[], %(previous_tiers)b::text[],
        %(versions)b::int4[], %(changes)b::text[]
    ) WITH ORDINALITY AS v (
        type, profile_id, object_type, object_id, dimension, score, previous_score, tier,
        previous_tier, version, changes, n
    )
"""


def insert_events(
    conn: Connection, org_id: str, first: int, now: datetime, events: Sequence[Any]
) -> None:
    """Write `events` (`events.log.NewEvent`) numbered from `first`, in order: one statement
    over arrays on PostgreSQL, executemany elsewhere. `changes` given as JSON text (built
    by PostgreSQL, `write_scores`) go through as they are."""
    if not events:
        return
    if is_postgresql(conn):
        conn.exec_driver_sql(
            _PG_INSERT_EVENTS,
            {
                "org": org_id,
                "first": first,
                "now": now.astimezone(UTC).replace(tzinfo=None),
                "types": [e.type for e in events],
                "profile_ids": [e.profile_id for e in events],
                "object_types": [e.object_type for e in events],
                "object_ids": [e.object_id for e in events],
                "dimensions": [e.dimension for e in events],
                "scores": [e.score for e in events],
                "previous_scores": [e.previous_score for e in events],
                "tiers": [e.tier for e in events],
                "previous_tiers": [e.previous_tier for e in events],
                "versions": [e.version for e in events],
                "changes": [
                    e.changes if isinstance(e.changes, str) else _json_text(e.changes)
                    for e in events
                ],
            },
        )
        return
    conn.execute(
        _e.insert(),
        [
            {
                "organization_id": org_id,
                "sequence": first + i,
                "type": e.type,
                "created_at": now,
                "profile_id": e.profile_id,
                "object_type": e.object_type,
                "object_id": e.object_id,
                "dimension": e.dimension,
                "score": e.score,
                "previous_score": e.previous_score,
                "tier": e.tier,
                "previous_tier": e.previous_tier,
                "version": e.version,
                "changes": orjson.loads(e.changes) if isinstance(e.changes, str) else e.changes,
            }
            for i, e in enumerate(events)
        ],
    )


# --- Score counts (signalscore/scores/counts.py) ------------------------------------------

_PG_ADD_COUNTS = """
    INSERT INTO score_counts (organization_id, profile_id, dimension, score, tier, count)
    SELECT %(org)s, v.profile_id, v.dimension, v.score, v.tier, v.n
    FROM unnest(
        %(profile_ids)b::uuid[], %(dimensions)b::text[], %(scores)b::float8[],
        %(tiers)b::text[], %(counts)b::int8[]
    ) AS v (profile_id, dimension, score, tier, n)
    ON CONFLICT (organization_id, profile_id, dimension, score, tier)
        DO UPDATE SET count = score_counts.count + EXCLUDED.count
    RETURNING profile_id, dimension, score, tier, count
"""

_sc = score_counts
_SC_KEY = ("profile_id", "dimension", "score", "tier")


def add_score_counts(
    conn: Connection, org_id: str, moved: Sequence[tuple[uuid.UUID, str, float, str, int]]
) -> None:
    """Add each (profile, dimension, score, tier, n) to the organisation's score counts, in
    key order (one lock order for every writer), then delete the counts that reached 0: one
    statement over arrays on PostgreSQL (which returns the counts at 0), an executemany
    upsert elsewhere."""
    emptied: list[Sequence[Any]] = []
    if is_postgresql(conn):
        columns = list(zip(*moved, strict=True))
        result = conn.exec_driver_sql(
            _PG_ADD_COUNTS,
            {
                "org": org_id,
                "profile_ids": list(columns[0]),
                "dimensions": list(columns[1]),
                "scores": list(columns[2]),
                "tiers": list(columns[3]),
                "counts": list(columns[4]),
            },
        )
        emptied = [row[:4] for row in result if not row[4]]
    else:  # executemany: SQLite's loop in C; then only keys that lost rows can be at 0
        statement = upsert(conn, _sc).values(
            organization_id=org_id,
            **{c: sa.bindparam(f"k_{c}") for c in _SC_KEY},
            count=sa.bindparam("n"),
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[_sc.c.organization_id, *(_sc.c[c] for c in _SC_KEY)],
                set_={"count": _sc.c.count + statement.excluded.count},
            ),
            [
                {**{f"k_{c}": v for c, v in zip(_SC_KEY, key[:4], strict=True)}, "n": key[4]}
                for key in moved
            ],
        )
        emptied = [key[:4] for key in moved if key[4] < 0]
    if emptied:
        conn.execute(
            sa.delete(_sc).where(
                _sc.c.organization_id == org_id,
                *(_sc.c[c] == sa.bindparam(f"k_{c}") for c in _SC_KEY),
                _sc.c.count == 0,
            ),
            [{f"k_{c}": value for c, value in zip(_SC_KEY, key, strict=True)} for key in emptied],
        )


# A deleted profile's score rows, kept for their `score.deleted` events until the commit.
_deleted_scores = sa.Table(
    "signalscore_deleted_scores",
    _staging,
    sa.Column("profile_id", sa.Uuid()),
    sa.Column("object_type", sa.String()),
    sa.Column("object_id", sa.String()),
    sa.Column("dimension", sa.String()),
    sa.Column("score", sa.Float()),
    sa.Column("tier", sa.String()),
    sa.Column("version", sa.Integer()),
    sa.Column("contributions", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    prefixes=["TEMPORARY"],
)
_STASHED = [c.name for c in _deleted_scores.c]


def stash_deleted_scores(conn: Connection, org_id: str, profile_id: uuid.UUID) -> None:
    """Delete the profile's score rows, keeping what their events need in a temporary table
    (dropped when the events are written, or by a rollback)."""
    where = sa.and_(s.c.organization_id == org_id, s.c.profile_id == profile_id)
    _deleted_scores.create(conn, checkfirst=True)
    if is_postgresql(conn):  # one statement: the rows are locked as they are deleted
        gone = sa.delete(s).where(where).returning(*(s.c[c] for c in _STASHED)).cte("gone")
        conn.execute(_deleted_scores.insert().from_select(_STASHED, sa.select(gone)))
        return
    conn.execute(
        _deleted_scores.insert().from_select(
            _STASHED, sa.select(*(s.c[c] for c in _STASHED)).where(where)
        )
    )
    conn.execute(sa.delete(s).where(where))


def count_stashed_deletions(conn: Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(_deleted_scores)).scalar_one())


def stashed_profiles(conn: Connection) -> list[uuid.UUID]:
    """The profiles whose score rows are stashed (being deleted)."""
    d = _deleted_scores
    return list(conn.execute(sa.select(d.c.profile_id).distinct()).scalars())


# The `changes` of a deleted row: every rule's contribution as `before` (as `events.log.changes`
# builds it), `after` null.
_PG_DELETED_CHANGES = """COALESCE((
    SELECT jsonb_agg(jsonb_build_object(
        'ruleId', c -> 'ruleId', 'signalTemplateId', c -> 'signalTemplateId',
        'before', jsonb_build_object('matchedValue', c -> 'matchedValue',
            'pointsEarned', c -> 'pointsEarned', 'maxPoints', c -> 'maxPoints',
            'observedAt', c -> 'observedAt',
            'decayFactor', COALESCE(c -> 'decayFactor', '1'::jsonb)),
        'after', NULL) ORDER BY n)
    FROM jsonb_array_elements(d.contributions) WITH ORDINALITY AS e (c, n)), '[]'::jsonb)"""
_SQLITE_DELETED_CHANGES = """COALESCE((
    SELECT json_group_array(json_object(
        'ruleId', json_extract(e.value, '$.ruleId'),
        'signalTemplateId', json_extract(e.value, '$.signalTemplateId'),
        'before', json_object('matchedValue', json_extract(e.value, '$.matchedValue'),
            'pointsEarned', json_extract(e.value, '$.pointsEarned'),
            'maxPoints', json_extract(e.value, '$.maxPoints'),
            'observedAt', json_extract(e.value, '$.observedAt'),
            'decayFactor', COALESCE(json_extract(e.value, '$.decayFactor'), 1)),
        'after', NULL))
    FROM json_each(d.contributions) AS e), '[]')"""


_INSERT_DELETED_EVENTS = """INSERT INTO score_events (
        organization_id, sequence, type, created_at, profile_id, object_type, object_id,
        dimension, score, previous_score, tier, previous_tier, version, changes)
    SELECT :org, :first - 1 + row_number() OVER (
            ORDER BY d.object_type, d.object_id, d.dimension),
        'score.deleted', :now, d.profile_id, d.object_type, d.object_id, d.dimension, NULL,
        d.score, NULL, d.tier, d.version, """
_FROM_STASH = " FROM signalscore_deleted_scores AS d"
_DELETED_EVENTS = {
    "postgresql": _INSERT_DELETED_EVENTS + _PG_DELETED_CHANGES + _FROM_STASH,
    "sqlite": _INSERT_DELETED_EVENTS + _SQLITE_DELETED_CHANGES + _FROM_STASH,
}


def insert_stashed_deletions(conn: Connection, org_id: str, first: int, now: datetime) -> None:
    """The `score.deleted` events of the stashed rows, numbered from `first` in (object
    type, object id, dimension) order; then the stash is dropped."""
    conn.execute(
        sa.text(_DELETED_EVENTS[conn.dialect.name]).bindparams(
            sa.bindparam("org", org_id),
            sa.bindparam("first", first),
            sa.bindparam("now", now, type_=UTCDateTime()),
        )
    )
    conn.exec_driver_sql("DROP TABLE signalscore_deleted_scores")
