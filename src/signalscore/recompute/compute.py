"""Computing and storing the scores of a set of objects (SPEC §6 storage rules).

Two steps, which a worker runs in two transactions (`worker.compute_claimed`) and
`recompute_objects` in one:

- `compute_objects` reads everything a batch needs in a few statements (assignments, rules,
  values) and scores each profile's objects with one `score_many` call. Reads only.
- `store_results` reads the stored score rows, compares each result with its row in Python
  and writes back only what changed:

  - new rows are inserted (version 1);
  - rows whose score or contributions moved get `version + 1`, and the database itself moves
    the old values into `previous_*` (`SET previous_score = score, ...`);
  - rows that compute identical get a single `computed_at` touch;
  - rows that should no longer exist (a dimension that lost its rules, an assignment that is
    gone) are deleted.

On PostgreSQL every id list is one array parameter (`= ANY(:ids)`), and inserts and updates
are one statement per batch over arrays (`unnest`); SQLite gets `IN` lists and executemany.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from signalscore.db.dialect import id_filters, is_postgresql
from signalscore.db.tables import (
    profile_assignments,
    score_results,
    scoring_profiles,
    scoring_rules,
    signal_values,
)
from signalscore.db.types import utcnow
from signalscore.engine import CompiledProfile, DimensionResult, Rule, compile_profile

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
    if is_postgresql(conn):
        # One row per object (its values as one JSON object): a sixteenth of the rows and of
        # the driver's per-row work.
        by_object = sa.func.jsonb_object_agg(
            v.c.signal_template_id, v.c.value, type_=postgresql.JSONB
        )
        for among in id_filters(conn, v.c.object_id, object_ids):
            rows = conn.execute(
                sa.select(v.c.object_id, by_object)
                .where(v.c.organization_id == org_id, v.c.object_type == object_type, among)
                .group_by(v.c.object_id)
            )
            for object_id, document in rows:
                values[object_id] = {k: x for k, x in document.items() if k in wanted}
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


# A new row: (profile id, object id, dimension, result, JSON text of its contributions or
# None), and an update: (row id, result, JSON text or None). The text is made on PostgreSQL.
_Insert = tuple[uuid.UUID, str, str, DimensionResult, str | None]
_Update = tuple[uuid.UUID, DimensionResult, str | None]


def _load_scores(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[tuple[uuid.UUID, str, str], Any]:
    """The stored rows of these objects, keyed by (profile, object, dimension). On PostgreSQL
    `contributions` comes as PostgreSQL's text of the JSONB document (see `_Document`)."""
    contributions: sa.ColumnElement[Any] = s.c.contributions
    if is_postgresql(conn):
        contributions = sa.cast(s.c.contributions, sa.Text)
    stored: dict[tuple[uuid.UUID, str, str], Any] = {}
    for among in id_filters(conn, s.c.object_id, object_ids):
        rows = conn.execute(
            sa.select(
                s.c.id,
                s.c.profile_id,
                s.c.object_id,
                s.c.dimension,
                s.c.score,
                contributions.label("contributions"),
            ).where(s.c.organization_id == org_id, s.c.object_type == object_type, among)
        )
        for row in rows:
            stored[(row.profile_id, row.object_id, row.dimension)] = row
    return stored


# PostgreSQL prints a JSONB object's keys shortest first, then bytewise; `_jsonb_text` writes
# the new contributions the same way, so an unchanged document usually compares equal as text.
_key_orders: dict[tuple[str, ...], tuple[str, ...] | None] = {}


def _jsonb_order(keys: tuple[str, ...]) -> tuple[str, ...] | None:
    """JSONB's key order for these keys, or None when they already are in it."""
    order = _key_orders.get(keys, ())
    if order == ():
        ordered = tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))
        order = _key_orders[keys] = None if ordered == keys else ordered
    return order


def _jsonb_text(contributions: list[dict[str, Any]]) -> str:
    entries = []
    for entry in contributions:
        order = _jsonb_order(tuple(entry))
        entries.append(entry if order is None else {k: entry[k] for k in order})
    return json.dumps(entries, ensure_ascii=False)


def _same_contributions(stored: Any, new: list[dict[str, Any]], new_text: str | None) -> bool:
    """Whether the stored contributions equal the new ones, exactly as comparing the decoded
    documents in Python. `stored` is text on PostgreSQL: equal text is a fast yes (the text
    decodes to `new`); any other text is decoded and compared, so a difference in spelling
    (say `1e-05` against `0.00001`) never counts as a change."""
    if isinstance(stored, str):
        return stored == new_text or bool(json.loads(stored) == new)
    return bool(stored == new)


@dataclass
class Computed:
    """The scores of some objects, computed from one read of their inputs (`compute_objects`)
    and not yet stored (`store_results`)."""

    object_ids: list[str]
    # (profile id, object id, {dimension: result}) for every assigned (profile, object).
    results: list[tuple[uuid.UUID, str, dict[str, DimensionResult]]]


def compute_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    *,
    profiles: ProfileCache | None = None,
) -> Computed:
    """Read the objects' assignments, rules and values (four statements), and score them.
    Reads only: a worker runs this outside any write transaction, holding no lock."""
    object_ids = list(dict.fromkeys(object_ids))
    assigned = _load_assignments(conn, org_id, object_type, object_ids)
    rules = _load_rules(conn, org_id, sorted(assigned))
    template_ids = sorted({rule.signal_template_id for rs in rules.values() for rule in rs})
    values = _load_values(conn, org_id, object_type, object_ids, template_ids)
    results: list[tuple[uuid.UUID, str, dict[str, DimensionResult]]] = []
    empty: dict[str, Any] = {}
    for profile_id, members in assigned.items():
        profile_rules = rules.get(profile_id, [])
        if not profile_rules:
            continue
        compiled = _compiled(profile_id, profile_rules, profiles)
        scored = compiled.score_many([values.get(o, empty) for o in members])
        results.extend(
            (profile_id, object_id, by_dimension)
            for object_id, by_dimension in zip(members, scored, strict=True)
        )
    return Computed(object_ids, results)


def _existing_profiles(
    conn: Connection, org_id: str, profile_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these profiles still exist, each held (`FOR KEY SHARE` on PostgreSQL) until
    the transaction ends: a profile deleted after a worker's read gets no new score row (its
    foreign key would fail), and one being deleted now waits for this write, whose rows its
    cascade then removes."""
    p = scoring_profiles
    found: set[uuid.UUID] = set()
    for among in id_filters(conn, p.c.id, sorted(profile_ids)):
        found.update(
            conn.execute(
                sa.select(p.c.id)
                .where(p.c.organization_id == org_id, among)
                .order_by(p.c.id)
                .with_for_update(key_share=True, read=True)
            ).scalars()
        )
    return found


def store_results(
    conn: Connection,
    org_id: str,
    object_type: str,
    computed: Computed,
    *,
    only: Sequence[str] | None = None,
    now: datetime | None = None,
) -> RecomputeStats:
    """Store `computed` for its objects (or `only` these of them) against the rows stored
    now, which are read here, in the write transaction: inserts, updates with `version + 1`,
    `computed_at` touches and deletes, as SPEC §6 says."""
    now = now or utcnow()
    object_ids = computed.object_ids if only is None else list(dict.fromkeys(only))
    wanted = frozenset(object_ids)
    results = [r for r in computed.results if r[1] in wanted]
    existing = _existing_profiles(conn, org_id, list({r[0] for r in results}))
    stats = RecomputeStats(objects=len(object_ids))
    stored = _load_scores(conn, org_id, object_type, object_ids)
    postgresql = is_postgresql(conn)

    inserts: list[_Insert] = []
    # Rows whose score or contributions moved.
    changed: list[_Update] = []
    # Rows that compute identical: only `computed_at` changes.
    touched: list[uuid.UUID] = []
    for profile_id, object_id, by_dimension in results:
        if profile_id not in existing:
            continue
        for dimension, result in by_dimension.items():
            old = stored.pop((profile_id, object_id, dimension), None)
            text = _jsonb_text(result.contributions) if postgresql else None
            if old is None:
                inserts.append((profile_id, object_id, dimension, result, text))
            elif old.score == result.score and _same_contributions(
                old.contributions, result.contributions, text
            ):
                touched.append(old.id)
            else:
                changed.append((old.id, result, text))
    # Whatever is left has no reason to exist any more.
    deleted = [row.id for row in stored.values()]

    if postgresql:
        _write_postgresql(conn, org_id, object_type, now, inserts, changed)
    else:
        _write_generic(conn, org_id, object_type, now, inserts, changed)
    for among in id_filters(conn, s.c.id, touched):
        conn.execute(
            sa.update(s).where(s.c.organization_id == org_id, among).values(computed_at=now)
        )
    for among in id_filters(conn, s.c.id, deleted):
        conn.execute(sa.delete(s).where(s.c.organization_id == org_id, among))
    stats.inserted, stats.updated = len(inserts), len(changed)
    stats.unchanged, stats.deleted = len(touched), len(deleted)
    return stats


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
    changes, all on `conn`. `profiles` is an optional cache of compiled profiles."""
    computed = compute_objects(conn, org_id, object_type, object_ids, profiles=profiles)
    return store_results(conn, org_id, object_type, computed, now=now)


def _write_generic(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    inserts: list[_Insert],
    changed: list[_Update],
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
                    "previous_contributions": [],
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                    "computed_at": now,
                    "version": 1,
                }
                for profile_id, object_id, dimension, result, _ in inserts
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
                version=s.c.version + 1,
                score=sa.bindparam("score"),
                contributions=sa.bindparam("contributions", type_=s.c.contributions.type),
                signal_coverage=sa.bindparam("signal_coverage"),
                total_rules=sa.bindparam("total_rules"),
                computed_at=sa.bindparam("computed_at", now, type_=s.c.computed_at.type),
            ),
            [
                {
                    "row_id": row_id,
                    "score": result.score,
                    "contributions": result.contributions,
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                }
                for row_id, result, _ in changed
            ],
        )


# PostgreSQL: a whole batch per statement, its columns sent as arrays. `%(name)b` asks
# psycopg for the binary format: its text format for arrays quotes each element in Python,
# which costs about 0.3 s for 1,000 documents of contributions; binary costs a few ms. The
# documents go as text[] and PostgreSQL parses them into jsonb.
_PG_INSERT = """
    INSERT INTO score_results (
        organization_id, id, profile_id, object_type, object_id, dimension, score,
        previous_score, contributions, previous_contributions, signal_coverage, total_rules,
        computed_at, version
    )
    SELECT %(org)s, v.id, v.profile_id, %(object_type)s, v.object_id, v.dimension, v.score,
        NULL, v.contributions::jsonb, '[]'::jsonb, v.signal_coverage, v.total_rules, %(now)s, 1
    FROM unnest(
        %(ids)b::uuid[], %(profile_ids)b::uuid[], %(object_ids)b::text[],
        %(dimensions)b::text[], %(scores)b::float8[], %(contributions)b::text[],
        %(coverages)b::int4[], %(totals)b::int4[]
    ) AS v (
        id, profile_id, object_id, dimension, score, contributions, signal_coverage,
        total_rules
    )
"""

# The old values move into previous_* on the database side (SET sees the row as it was).
_PG_UPDATE = """
    UPDATE score_results AS s SET
        previous_score = s.score,
        previous_contributions = s.contributions,
        version = s.version + 1,
        score = v.score,
        contributions = v.contributions::jsonb,
        signal_coverage = v.signal_coverage,
        total_rules = v.total_rules,
        computed_at = %(now)s
    FROM unnest(
        %(ids)b::uuid[], %(scores)b::float8[], %(contributions)b::text[],
        %(coverages)b::int4[], %(totals)b::int4[]
    ) AS v (id, score, contributions, signal_coverage, total_rules)
    WHERE s.organization_id = %(org)s AND s.id = v.id
"""


def _write_postgresql(
    conn: Connection,
    org_id: str,
    object_type: str,
    now: datetime,
    inserts: list[_Insert],
    changed: list[_Update],
) -> None:
    """PostgreSQL: one INSERT and one UPDATE per batch, each over arrays (`unnest`)."""
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
                "contributions": [row[4] for row in inserts],
                "coverages": [row[3].signal_coverage for row in inserts],
                "totals": [row[3].total_rules for row in inserts],
            },
        )
    if changed:
        conn.exec_driver_sql(
            _PG_UPDATE,
            {
                "org": org_id,
                "now": naive_now,
                "ids": [row[0] for row in changed],
                "scores": [float(row[1].score) for row in changed],
                "contributions": [row[2] for row in changed],
                "coverages": [row[1].signal_coverage for row in changed],
                "totals": [row[1].total_rules for row in changed],
            },
        )


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
