"""Computing and storing the scores of a set of objects (SPEC §6 storage rules).

`recompute_objects` loads everything a batch needs in a few statements (assignments, rules,
values and the keys of the stored score rows), scores each profile's objects with one
`score_many` call and writes the results back:

- new rows are inserted (version 1);
- stored rows are updated: when the score or contributions differ, `version + 1` and the old
  values moved into `previous_*` by the database itself (`previous_score = score`, ...); when
  they are identical, only `computed_at` changes;
- rows that should no longer exist (a dimension that lost its rules, an assignment that is
  gone) are deleted.

On PostgreSQL each of those is one statement per batch over array parameters (`unnest`,
`= ANY(:ids)`), and the comparison of old and new happens in the UPDATE itself (JSONB
equality), so the stored contributions are never sent to Python. On SQLite the stored rows are
loaded and compared in Python, and the writes use short `IN` lists.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from signalscore.db.tables import profile_assignments, score_results, scoring_rules, signal_values
from signalscore.db.types import UTCDateTime, utcnow
from signalscore.engine import CompiledProfile, Rule, compile_profile

# Bound parameters per IN list (SQLite): well under its limit.
IN_CHUNK = 900

s = score_results

# Compiled profiles keyed by (profile id, repr of its rules).
ProfileCache = dict[tuple[uuid.UUID, str], CompiledProfile]


@dataclass
class RecomputeStats:
    objects: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0

    def add(self, other: RecomputeStats) -> None:
        self.objects += other.objects
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.deleted += other.deleted


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


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


def _load_assignments(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[uuid.UUID, list[str]]:
    a = profile_assignments
    by_profile: dict[uuid.UUID, list[str]] = defaultdict(list)
    for among in id_filters(conn, a.c.object_id, object_ids):
        rows = conn.execute(
            sa.select(a.c.profile_id, a.c.object_id).where(
                a.c.organization_id == org_id, a.c.object_type == object_type, among
            )
        )
        for profile_id, object_id in rows:
            by_profile[profile_id].append(object_id)
    return by_profile


def _load_rules(
    conn: Connection, org_id: str, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Rule]]:
    r = scoring_rules
    rules: dict[uuid.UUID, list[Rule]] = defaultdict(list)
    for among in id_filters(conn, r.c.profile_id, profile_ids):
        rows = conn.execute(
            sa.select(
                r.c.profile_id,
                r.c.id,
                r.c.signal_template_id,
                r.c.dimension,
                r.c.answer_type,
                r.c.point_values,
            )
            .where(r.c.organization_id == org_id, among)
            .order_by(r.c.profile_id, r.c.created_at, r.c.id)
        )
        for profile_id, rule_id, template_id, dimension, answer_type, point_values in rows:
            rules[profile_id].append(
                Rule(str(rule_id), template_id, dimension, answer_type, point_values)
            )
    return rules


def _load_values(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    template_ids: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """The objects' values for the given templates. The template filter is applied here, not
    in SQL: with both lists PostgreSQL probes the primary key once per (object, template)."""
    v = signal_values
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    wanted = frozenset(template_ids)
    if not wanted:
        return values
    for among in id_filters(conn, v.c.object_id, object_ids):
        rows = conn.execute(
            sa.select(v.c.object_id, v.c.signal_template_id, v.c.value).where(
                v.c.organization_id == org_id, v.c.object_type == object_type, among
            )
        )
        for object_id, template_id, value in rows:
            if template_id in wanted:
                values[object_id][template_id] = value
    return values


def _load_scores(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[tuple[uuid.UUID, str, str], Any]:
    """The stored rows of these objects, keyed by (profile, object, dimension). On PostgreSQL
    only their ids and versions: the comparison with the new result happens in the UPDATE."""
    columns = [s.c.id, s.c.profile_id, s.c.object_id, s.c.dimension, s.c.version]
    if not is_postgresql(conn):
        columns += [s.c.score, s.c.contributions]
    stored: dict[tuple[uuid.UUID, str, str], Any] = {}
    for among in id_filters(conn, s.c.object_id, object_ids):
        rows = conn.execute(
            sa.select(*columns).where(
                s.c.organization_id == org_id, s.c.object_type == object_type, among
            )
        )
        for row in rows:
            stored[(row.profile_id, row.object_id, row.dimension)] = row
    return stored


@dataclass
class _Pending:
    """The writes of one batch, built while scoring."""

    # (profile id, object id, dimension, result) for rows that do not exist yet.
    inserts: list[tuple[uuid.UUID, str, str, Any]]
    # (stored row, result) for rows that exist.
    updates: list[tuple[Any, Any]]


def recompute_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    *,
    profiles: ProfileCache | None = None,
    now: datetime | None = None,
) -> RecomputeStats:
    """Recompute every score row of the given objects (all their profiles) and store the
    changes on `conn`. `profiles` is an optional cache of compiled profiles."""
    now = now or utcnow()
    object_ids = list(dict.fromkeys(object_ids))
    stats = RecomputeStats(objects=len(object_ids))
    assigned = _load_assignments(conn, org_id, object_type, object_ids)
    rules = _load_rules(conn, org_id, sorted(assigned))
    template_ids = sorted({rule.signal_template_id for rs in rules.values() for rule in rs})
    values = _load_values(conn, org_id, object_type, object_ids, template_ids)
    stored = _load_scores(conn, org_id, object_type, object_ids)

    pending = _Pending(inserts=[], updates=[])
    empty: dict[str, Any] = {}
    for profile_id, members in assigned.items():
        profile_rules = rules.get(profile_id, [])
        if not profile_rules:
            continue
        compiled = _compiled(profile_id, profile_rules, profiles)
        results = compiled.score_many([values.get(o, empty) for o in members])
        for object_id, by_dimension in zip(members, results, strict=True):
            for dimension, result in by_dimension.items():
                old = stored.pop((profile_id, object_id, dimension), None)
                if old is None:
                    pending.inserts.append((profile_id, object_id, dimension, result))
                else:
                    pending.updates.append((old, result))
    # Whatever is left has no reason to exist any more.
    deleted = [row.id for row in stored.values()]

    if is_postgresql(conn):
        _write_postgresql(conn, org_id, object_type, now, pending, stats)
    else:
        _write_generic(conn, org_id, object_type, now, pending, stats)
    for among in id_filters(conn, s.c.id, deleted):
        conn.execute(sa.delete(s).where(s.c.organization_id == org_id, among))
    stats.inserted, stats.deleted = len(pending.inserts), len(deleted)
    return stats


def _insert_rows(
    org_id: str, object_type: str, now: datetime, pending: _Pending
) -> list[dict[str, Any]]:
    return [
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
            "previous_contributions": [],
            "signal_coverage": result.signal_coverage,
            "total_rules": result.total_rules,
            "computed_at": now,
            "version": 1,
        }
        for profile_id, object_id, dimension, result in pending.inserts
    ]


def _write_generic(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    pending: _Pending,
    stats: RecomputeStats,
) -> None:
    """Any backend: compare in Python, executemany the changed rows, touch the others."""
    if pending.inserts:
        conn.execute(s.insert(), _insert_rows(org_id, object_type, now, pending))
    changed: list[dict[str, Any]] = []
    touched: list[uuid.UUID] = []
    for old, result in pending.updates:
        if old.score == result.score and old.contributions == result.contributions:
            touched.append(old.id)
        else:
            changed.append(
                {
                    "row_id": old.id,
                    "score": result.score,
                    "contributions": result.contributions,
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                }
            )
    if changed:
        # The old values move into previous_* on the database side (SET expressions all see
        # the row as it was before the UPDATE).
        conn.execute(
            sa.update(s)
            .where(s.c.organization_id == org_id, s.c.id == sa.bindparam("row_id"))
            .values(
                previous_score=s.c.score,
                previous_contributions=s.c.contributions,
                version=s.c.version + 1,
                score=sa.bindparam("score"),
                contributions=sa.bindparam("contributions", type_=s.c.contributions.type),
                signal_coverage=sa.bindparam("signal_coverage"),
                total_rules=sa.bindparam("total_rules"),
                computed_at=sa.bindparam("computed_at", now, type_=s.c.computed_at.type),
            ),
            changed,
        )
    for among in id_filters(conn, s.c.id, touched):
        conn.execute(
            sa.update(s).where(s.c.organization_id == org_id, among).values(computed_at=now)
        )
    stats.updated, stats.unchanged = len(changed), len(touched)


# `same`: the stored row has the same score and contributions. That is JSONB equality, for
# which key order and number spelling do not matter, exactly like comparing the decoded
# documents in Python. It is computed once per row, from the row as this statement found it
# (`o`, which is `s` itself: the batch's queue rows are locked, so nothing else writes it).
_PG_UPDATE = sa.text(
    """
    UPDATE score_results AS s SET
        previous_score = CASE WHEN same THEN s.previous_score ELSE s.score END,
        previous_contributions =
            CASE WHEN same THEN s.previous_contributions ELSE s.contributions END,
        version = CASE WHEN same THEN s.version ELSE s.version + 1 END,
        score = CASE WHEN same THEN s.score ELSE v.score END,
        contributions = CASE WHEN same THEN s.contributions ELSE v.contributions END,
        signal_coverage = v.signal_coverage,
        total_rules = v.total_rules,
        computed_at = :now
    FROM (
        SELECT n.*, (o.score = n.score AND o.contributions = n.contributions) AS same
        FROM unnest(
            CAST(:ids AS uuid[]),
            CAST(:scores AS double precision[]),
            CAST(:contributions AS jsonb[]),
            CAST(:coverages AS integer[]),
            CAST(:totals AS integer[])
        ) AS n (id, score, contributions, signal_coverage, total_rules)
        JOIN score_results AS o ON o.organization_id = :org AND o.id = n.id
    ) AS v
    WHERE s.organization_id = :org AND s.id = v.id
    RETURNING s.id, s.version
    """
).bindparams(sa.bindparam("now", type_=UTCDateTime()))

_PG_INSERT = sa.text(
    """
    INSERT INTO score_results (
        organization_id, id, profile_id, object_type, object_id, dimension, score,
        previous_score, contributions, previous_contributions, signal_coverage, total_rules,
        computed_at, version
    )
    SELECT :org, v.id, v.profile_id, :object_type, v.object_id, v.dimension, v.score,
        NULL, v.contributions, '[]'::jsonb, v.signal_coverage, v.total_rules, :now, 1
    FROM unnest(
        CAST(:ids AS uuid[]),
        CAST(:profile_ids AS uuid[]),
        CAST(:object_ids AS varchar[]),
        CAST(:dimensions AS varchar[]),
        CAST(:scores AS double precision[]),
        CAST(:contributions AS jsonb[]),
        CAST(:coverages AS integer[]),
        CAST(:totals AS integer[])
    ) AS v (
        id, profile_id, object_id, dimension, score, contributions, signal_coverage,
        total_rules
    )
    """
).bindparams(sa.bindparam("now", type_=UTCDateTime()))


def _write_postgresql(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    pending: _Pending,
    stats: RecomputeStats,
) -> None:
    """PostgreSQL: one INSERT and one UPDATE per batch, each over arrays (`unnest`)."""
    dumps = json.dumps
    if pending.inserts:
        inserts = pending.inserts
        conn.execute(
            _PG_INSERT,
            {
                "org": org_id,
                "object_type": object_type,
                "now": now,
                "ids": [uuid.uuid4() for _ in inserts],
                "profile_ids": [row[0] for row in inserts],
                "object_ids": [row[1] for row in inserts],
                "dimensions": [row[2] for row in inserts],
                "scores": [row[3].score for row in inserts],
                "contributions": [dumps(row[3].contributions) for row in inserts],
                "coverages": [row[3].signal_coverage for row in inserts],
                "totals": [row[3].total_rules for row in inserts],
            },
        )
    if pending.updates:
        updates = pending.updates
        versions = {old.id: old.version for old, _ in updates}
        rows = conn.execute(
            _PG_UPDATE,
            {
                "org": org_id,
                "now": now,
                "ids": [old.id for old, _ in updates],
                "scores": [result.score for _, result in updates],
                "contributions": [dumps(result.contributions) for _, result in updates],
                "coverages": [result.signal_coverage for _, result in updates],
                "totals": [result.total_rules for _, result in updates],
            },
        )
        for row_id, version in rows:
            if version == versions[row_id]:
                stats.unchanged += 1
            else:
                stats.updated += 1


def _compiled(
    profile_id: uuid.UUID,
    rules: list[Rule],
    cache: ProfileCache | None,
) -> CompiledProfile:
    if cache is None:
        return compile_profile(rules)
    # Keyed by the rules themselves, so an edited rule can never reuse a stale compilation.
    key = (profile_id, repr(rules))
    compiled = cache.get(key)
    if compiled is None:
        if len(cache) > 256:
            cache.clear()
        compiled = cache[key] = compile_profile(rules)
    return compiled
