"""Computing and storing the scores of a set of objects (SPEC §6 storage rules).

`recompute_objects` loads everything a batch needs in a few statements (assignments, rules,
values and stored score rows), scores each profile's objects with one `score_many` call and
writes back only what changed: new rows, rows whose score or contributions moved (version + 1),
a single `computed_at` touch for identical results, and deletes for rows that should no longer
exist (a dimension that lost its rules, an assignment that is gone).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import profile_assignments, score_results, scoring_rules, signal_values
from signalscore.db.types import utcnow
from signalscore.engine import CompiledProfile, Rule, compile_profile

# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits.
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


def _load_assignments(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[uuid.UUID, list[str]]:
    a = profile_assignments
    by_profile: dict[uuid.UUID, list[str]] = defaultdict(list)
    for part in chunks(object_ids):
        rows = conn.execute(
            sa.select(a.c.profile_id, a.c.object_id).where(
                a.c.organization_id == org_id,
                a.c.object_type == object_type,
                a.c.object_id.in_(part),
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
    if not profile_ids:
        return rules
    rows = conn.execute(
        sa.select(
            r.c.profile_id,
            r.c.id,
            r.c.signal_template_id,
            r.c.dimension,
            r.c.answer_type,
            r.c.point_values,
        )
        .where(r.c.organization_id == org_id, r.c.profile_id.in_(profile_ids))
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
    v = signal_values
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    if not template_ids:
        return values
    for part in chunks(object_ids):
        rows = conn.execute(
            sa.select(v.c.object_id, v.c.signal_template_id, v.c.value).where(
                v.c.organization_id == org_id,
                v.c.object_type == object_type,
                v.c.object_id.in_(part),
                v.c.signal_template_id.in_(template_ids),
            )
        )
        for object_id, template_id, value in rows:
            values[object_id][template_id] = value
    return values


def _load_scores(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> dict[tuple[uuid.UUID, str, str], Any]:
    stored: dict[tuple[uuid.UUID, str, str], Any] = {}
    for part in chunks(object_ids):
        rows = conn.execute(
            sa.select(
                s.c.id,
                s.c.profile_id,
                s.c.object_id,
                s.c.dimension,
                s.c.score,
                s.c.contributions,
                s.c.version,
            ).where(
                s.c.organization_id == org_id,
                s.c.object_type == object_type,
                s.c.object_id.in_(part),
            )
        )
        for row in rows:
            stored[(row.profile_id, row.object_id, row.dimension)] = row
    return stored


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

    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    touched: list[uuid.UUID] = []
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
                row = {
                    "score": result.score,
                    "contributions": result.contributions,
                    "signal_coverage": result.signal_coverage,
                    "total_rules": result.total_rules,
                    "computed_at": now,
                }
                if old is None:
                    inserts.append(
                        {
                            **row,
                            "organization_id": org_id,
                            "id": uuid.uuid4(),
                            "profile_id": profile_id,
                            "object_type": object_type,
                            "object_id": object_id,
                            "dimension": dimension,
                            "previous_score": None,
                            "previous_contributions": [],
                            "version": 1,
                        }
                    )
                elif old.score == result.score and old.contributions == result.contributions:
                    touched.append(old.id)
                else:
                    updates.append(
                        {
                            **row,
                            "row_id": old.id,
                            "previous_score": old.score,
                            "previous_contributions": old.contributions,
                            "version": old.version + 1,
                        }
                    )
    # Whatever is left has no reason to exist any more.
    deleted = [row.id for row in stored.values()]

    if inserts:
        conn.execute(s.insert(), inserts)
    if updates:
        conn.execute(
            sa.update(s)
            .where(s.c.organization_id == org_id, s.c.id == sa.bindparam("row_id"))
            .values(
                score=sa.bindparam("score"),
                contributions=sa.bindparam("contributions", type_=s.c.contributions.type),
                signal_coverage=sa.bindparam("signal_coverage"),
                total_rules=sa.bindparam("total_rules"),
                computed_at=sa.bindparam("computed_at", type_=s.c.computed_at.type),
                previous_score=sa.bindparam("previous_score"),
                previous_contributions=sa.bindparam(
                    "previous_contributions", type_=s.c.previous_contributions.type
                ),
                version=sa.bindparam("version"),
            ),
            updates,
        )
    for part in chunks(touched):
        conn.execute(
            sa.update(s)
            .where(s.c.organization_id == org_id, s.c.id.in_(part))
            .values(computed_at=now)
        )
    for part in chunks(deleted):
        conn.execute(sa.delete(s).where(s.c.organization_id == org_id, s.c.id.in_(part)))
    stats.inserted, stats.updated = len(inserts), len(updates)
    stats.unchanged, stats.deleted = len(touched), len(deleted)
    return stats


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
