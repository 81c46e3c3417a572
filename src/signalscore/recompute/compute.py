"""Computing and storing the scores of a set of objects (SPEC §6 storage rules).

Two steps, which a worker runs in two transactions (`worker.compute_claimed`) and
`recompute_objects` in one:

- `compute_objects` reads everything a batch needs in a few statements (assignments, rules,
  values) and scores each profile's objects with one `score_many` call. Reads only.
- `store_results` reads the stored score rows, compares each result with its row in Python
  and writes back only what changed:

  - new rows are inserted (version 1);
  - rows whose score, contributions or tier moved get `version + 1`, and the database itself
    moves the old values into `previous_*` (`SET previous_score = score, ...`);
  - rows that compute identical get a single `computed_at` touch;
  - rows that should no longer exist (a dimension that lost its rules, an assignment that is
    gone) are deleted.

On PostgreSQL every id list is one array parameter, and inserts and updates are one
statement per batch over arrays (`unnest`); SQLite gets `IN` lists and executemany. Rows are
looked up by object or by id with `dialect.rows_by_key` / `dialect.key_filters`, which probe
the index with the full key once per id whatever the planner's statistics say.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db import dialect
from signalscore.db.dialect import id_filters, key_filters, rows_by_key
from signalscore.db.tables import (
    profile_assignments,
    score_results,
    scoring_profiles,
    scoring_rules,
)
from signalscore.db.types import utcnow
from signalscore.engine import (
    CompiledProfile,
    DimensionResult,
    Rule,
    TierTable,
    compile_profile,
    tier_tables,
)
from signalscore.events import log as events

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
    for select in rows_by_key(
        conn,
        a,
        "object_id",
        object_ids,
        [a.c.profile_id, a.c.object_id],
        match={"organization_id": org_id, "object_type": object_type},
    ):
        for profile_id, object_id in conn.execute(select):
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
                r.c.decay,
            )
            .where(r.c.organization_id == org_id, among)
            .order_by(r.c.profile_id, r.c.created_at, r.c.id)
        )
        for profile_id, rule_id, template_id, dimension, answer_type, point_values, decay in rows:
            rules[profile_id].append(
                Rule(str(rule_id), template_id, dimension, answer_type, point_values, decay)
            )
    return rules


def _load_tiers(
    conn: Connection, org_id: str, profile_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, TierTable]]:
    """The profiles' tiers (SPEC §9), per dimension that has them."""
    p = scoring_profiles
    tiers: dict[uuid.UUID, dict[str, TierTable]] = {}
    for among in id_filters(conn, p.c.id, profile_ids):
        for profile_id, document in conn.execute(
            sa.select(p.c.id, p.c.tiers).where(
                p.c.organization_id == org_id, among, p.c.tiers.is_not(None)
            )
        ):
            tiers[profile_id] = tier_tables(document)
    return tiers


def _load_values(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    template_ids: Sequence[str],
) -> dialect.LoadedValues:
    """The objects' values for the given templates, with their `observedAt`
    (`dialect.load_values`)."""
    return dialect.load_values(conn, org_id, object_type, object_ids, frozenset(template_ids))


def _load_scores(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[tuple[uuid.UUID, str, str], Any]:
    """The stored rows of these objects, keyed by (profile, object, dimension): their score
    and the fingerprint of their contributions; the contributions themselves only for a row
    without a fingerprint (stored before it existed)."""
    legacy = sa.case((s.c.contributions_hash.is_(None), s.c.contributions), else_=sa.null())
    stored: dict[tuple[uuid.UUID, str, str], Any] = {}
    for select in rows_by_key(
        conn,
        s,
        "object_id",
        object_ids,
        [
            s.c.id,
            s.c.profile_id,
            s.c.object_id,
            s.c.dimension,
            s.c.score,
            s.c.contributions_hash,
            s.c.tier,
            s.c.version,
            s.c.next_change_at,
            sa.type_coerce(legacy, s.c.contributions.type).label("contributions"),
        ],
        match={"organization_id": org_id, "object_type": object_type},
    ):
        for row in conn.execute(select):
            stored[(row.profile_id, row.object_id, row.dimension)] = row
    return stored


def _same_contributions(stored: Any, new: list[dict[str, Any]], fingerprint: int) -> bool:
    """Whether the stored row's contributions equal the new ones, as Python compares them:
    by fingerprint (`dialect.contributions_fingerprint`), or for a row stored without one,
    by its decoded document."""
    if stored.contributions_hash is not None:
        return bool(stored.contributions_hash == fingerprint)
    return bool(stored.contributions == new)


def _same_instant(stored: datetime | None, text: str | None) -> bool:
    """Whether a stored `next_change_at` is the engine's `next_change_at` text."""
    if stored is None or text is None:
        return stored is None and text is None
    return stored == dialect.instant(text)


@dataclass
class Computed:
    """The scores of some objects, computed from one read of their inputs (`compute_objects`)
    and not yet stored (`store_results`)."""

    object_ids: list[str]
    # (profile id, object id, {dimension: result}) for every assigned (profile, object).
    results: list[tuple[uuid.UUID, str, dict[str, DimensionResult]]]
    # The tiers of the profiles that have some, as read with the rules.
    tiers: dict[uuid.UUID, dict[str, TierTable]]
    # The time the scores were computed at (decay, SPEC §13), and their `computedAt`.
    now: datetime


def compute_objects(
    conn: Connection,
    org_id: str,
    object_type: str,
    object_ids: Sequence[str],
    *,
    profiles: ProfileCache | None = None,
    now: datetime | None = None,
) -> Computed:
    """Read the objects' assignments, rules, tiers and values (five statements), and score
    them at `now` (default: the current time). Reads only: a worker runs this outside any
    write transaction, holding no lock."""
    now = now or utcnow()
    object_ids = list(dict.fromkeys(object_ids))
    assigned = _load_assignments(conn, org_id, object_type, object_ids)
    rules = _load_rules(conn, org_id, sorted(assigned))
    tiers = _load_tiers(conn, org_id, sorted(rules))
    template_ids = sorted({rule.signal_template_id for rs in rules.values() for rule in rs})
    loaded = _load_values(conn, org_id, object_type, object_ids, template_ids)
    values, observed = loaded.values, loaded.observed
    results: list[tuple[uuid.UUID, str, dict[str, DimensionResult]]] = []
    empty: dict[str, Any] = {}
    no_times: dict[str, str] = {}
    for profile_id, members in assigned.items():
        profile_rules = rules.get(profile_id, [])
        if not profile_rules:
            continue
        compiled = _compiled(profile_id, profile_rules, profiles)
        scored = compiled.score_many(
            [values.get(o, empty) for o in members],
            [observed.get(o, no_times) for o in members],
            now=now,
        )
        results.extend(
            (profile_id, object_id, by_dimension)
            for object_id, by_dimension in zip(members, scored, strict=True)
        )
    return Computed(object_ids, results, tiers, now)


def _existing_profiles(
    conn: Connection, org_id: str, profile_ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Which of these profiles still exist, each held (`FOR KEY SHARE` on PostgreSQL) until
    the transaction ends: a profile deleted after a worker's read gets no new score row (its
    foreign key would fail) and no event, and one being deleted now waits for this write,
    whose rows it then removes."""
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
    `computed_at` touches and deletes, as SPEC §6 says. `now` (default: the time of the
    computation) is their `computedAt`."""
    now = now or computed.now
    object_ids = computed.object_ids if only is None else list(dict.fromkeys(only))
    wanted = frozenset(object_ids)
    results = [r for r in computed.results if r[1] in wanted]
    stats = RecomputeStats(objects=len(object_ids))
    stored = _load_scores(conn, org_id, object_type, object_ids)
    # Every profile concerned is held until the commit before any of its rows is written,
    # the order of `profiles.service.delete_profile` (the profile row, then its score
    # rows): one deleted meanwhile is skipped, rows, events and counts alike, and one being
    # deleted now waits for this store, then deletes what it stored.
    concerned = {r[0] for r in results} | {key[0] for key in stored}
    existing = _existing_profiles(conn, org_id, sorted(concerned))
    if existing != concerned:
        results = [r for r in results if r[0] in existing]
        stored = {key: row for key, row in stored.items() if key[0] in existing}
    by_id = {row.id: row for row in stored.values()}
    inserts: list[dialect.NewRow] = []
    # Rows whose score, contributions or tier moved.
    changed: list[dialect.ChangedRow] = []
    # Rows that compute identical: only `computed_at` changes, and `next_change_at` for
    # those whose next decay step moved (a decay rule edited without changing a factor).
    touched: list[uuid.UUID] = []
    retimed: dict[str | None, list[uuid.UUID]] = defaultdict(list)
    no_tiers: dict[str, TierTable] = {}
    for profile_id, object_id, by_dimension in results:
        tables = computed.tiers.get(profile_id, no_tiers)
        for dimension, result in by_dimension.items():
            old = stored.pop((profile_id, object_id, dimension), None)
            fingerprint = dialect.contributions_fingerprint(result.contributions)
            table = tables.get(dimension)
            tier = None if table is None else table.tier_of(result.score)
            if old is None:
                inserts.append((profile_id, object_id, dimension, result, fingerprint, tier))
            elif (
                old.score == result.score
                and old.tier == tier
                and _same_contributions(old, result.contributions, fingerprint)
            ):
                if _same_instant(old.next_change_at, result.next_change_at):
                    touched.append(old.id)
                else:
                    retimed[result.next_change_at].append(old.id)
            else:
                changed.append((old.id, result, fingerprint, tier))
    # Whatever is left has no reason to exist any more.
    deleted = [row.id for row in stored.values()]

    # The deleted rows' events read their contributions before the rows go; the changed
    # rows' `changes` come from their UPDATE, which has the old and the new documents.
    old = _old_contributions(conn, org_id, by_id, deleted)
    changes = dialect.write_scores(
        conn, org_id, object_type, now, inserts, changed, differ=events.changes
    )
    _record_events(conn, org_id, object_type, by_id, inserts, changed, changes, deleted, old)
    same_org = {"organization_id": org_id}
    for among in key_filters(conn, s, "id", touched, match=same_org):
        conn.execute(sa.update(s).where(among).values(computed_at=now))
    for next_change, ids in retimed.items():
        at = dialect.instant(next_change)
        for among in key_filters(conn, s, "id", ids, match=same_org):
            conn.execute(sa.update(s).where(among).values(computed_at=now, next_change_at=at))
    for among in key_filters(conn, s, "id", deleted, match=same_org):
        conn.execute(sa.delete(s).where(among))
    stats.inserted, stats.updated = len(inserts), len(changed)
    stats.unchanged = len(touched) + sum(map(len, retimed.values()))
    stats.deleted = len(deleted)
    return stats


def _old_contributions(
    conn: Connection, org_id: str, rows: dict[uuid.UUID, Any], ids: list[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    """The stored contributions of these rows (the `changes` of their deletion need them):
    read now, for the rows read without them (those with a fingerprint)."""
    found = {i: rows[i].contributions for i in ids if rows[i].contributions_hash is None}
    wanted = [i for i in ids if i not in found]
    for among in key_filters(conn, s, "id", wanted, match={"organization_id": org_id}):
        for row_id, contributions in conn.execute(
            sa.select(s.c.id, s.c.contributions).where(among)
        ):
            found[row_id] = contributions
    return found


def _record_events(
    conn: Connection,
    org_id: str,
    object_type: str,
    stored: dict[uuid.UUID, Any],
    inserts: list[dialect.NewRow],
    changed: list[dialect.ChangedRow],
    changes: dict[uuid.UUID, dialect.Changes],
    deleted: list[uuid.UUID],
    old: dict[uuid.UUID, Any],
) -> None:
    """SPEC §10: one event per created, changed or deleted row, plus `score.tier_changed`
    for a created or changed row whose tier differs from its previous one. `changes`: the
    changed rows' (`dialect.write_scores`); `old`: the deleted rows' contributions."""
    new_events: list[events.NewEvent] = []

    def add(types: tuple[str, ...], *fields: Any) -> None:
        new_events.extend(events.NewEvent(kind, *fields) for kind in types)

    created, both = (events.CREATED,), (events.CREATED, events.TIER_CHANGED)
    for profile_id, object_id, dimension, result, _, tier in inserts:
        change = events.changes(None, result.contributions)
        kinds = created if tier is None else both
        add(
            kinds,
            profile_id,
            object_type,
            object_id,
            dimension,
            result.score,
            None,
            tier,
            None,
            1,
            change,
        )
    for row_id, result, _, tier in changed:
        row = stored[row_id]
        kinds = (events.CHANGED,) if tier == row.tier else (events.CHANGED, events.TIER_CHANGED)
        add(kinds, row.profile_id, object_type, row.object_id, row.dimension, result.score,
            row.score, tier, row.tier, row.version + 1, changes[row_id])  # fmt: skip
    for row_id in deleted:
        row = stored[row_id]
        change = events.changes(old[row_id], None)
        add((events.DELETED,), row.profile_id, object_type, row.object_id, row.dimension, None,
            row.score, None, row.tier, row.version, change)  # fmt: skip
    events.record(conn, org_id, new_events)


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
    computed = compute_objects(conn, org_id, object_type, object_ids, profiles=profiles, now=now)
    return store_results(conn, org_id, object_type, computed, now=now)


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
