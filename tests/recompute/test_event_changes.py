"""A changed row's `changes` (SPEC §10) as the store writes them: on PostgreSQL the UPDATE
builds them from the row's old and new contributions (`dialect._PG_CHANGES`), elsewhere
Python does (`events.log.changes`). Both must give exactly what `events.log.changes` gives,
entry for entry and in its order, over random pairs of documents: rules kept in place with
some sides changed (PostgreSQL pairs them by position), rules added, removed or moved
(matched by rule id), empty sides, and differences that are no difference (5 and 5.0, a
missing key and null, a missing `decayFactor` and 1, a key outside the change's sides), and
numbers jsonb keeps as exact decimals (0.1 + 0.2, 1e308)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

from signalscore.db import dialect
from signalscore.db.engine import Database, load_json
from signalscore.db.tables import score_results
from signalscore.engine import DimensionResult
from signalscore.events.log import changes
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from tests.helpers import make_tenant

RULES = [f"rule-{i}" for i in range(6)]
TEXTS = ["874 (100–1000)", 'say "hi"', "", "ünïcode ≥ 5", None]
STAMPS = ["2026-11-30T12:00:00.000000Z", "2026-12-01T08:30:00.000000Z", None]


def contribution(rng: random.Random, rule: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ruleId": rule,
        "signalTemplateId": f"template-{rule}",
        "matchedValue": rng.choice(TEXTS),
        "pointsEarned": rng.choice([0, 5, -10, 2.5, 12.25, 0.1 + 0.2, 1e308]),
        "maxPoints": rng.choice([10, 25, 7.5]),
        "observedAt": rng.choice(STAMPS),
    }
    if rng.random() < 0.7:
        entry["decayFactor"] = rng.choice([1, 0.5, 0])
    return entry


def same_in_effect(rng: random.Random, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry written differently, with the same change sides."""
    twin = dict(entry)
    what = rng.randrange(5)
    if what == 0:  # a number as the float it equals
        twin["pointsEarned"] = float(twin["pointsEarned"])
    elif what == 1 and twin["matchedValue"] is None:  # null as a missing key
        del twin["matchedValue"]
    elif what == 2 and twin.get("decayFactor", 1) == 1:  # 1 as a missing decayFactor
        twin.pop("decayFactor", None) if "decayFactor" in twin else twin.update(decayFactor=1)
    elif what == 3:  # a key no side shows
        twin["note"] = rng.choice(["a", "b"])
    return twin


def mutated(rng: random.Random, entry: dict[str, Any]) -> dict[str, Any]:
    """The entry, kept as it is, written differently to the same effect, or changed."""
    roll = rng.random()
    if roll < 0.4:
        return entry
    if roll < 0.7:
        return same_in_effect(rng, entry)
    changed = dict(entry)
    field = rng.choice(["matchedValue", "pointsEarned", "maxPoints", "observedAt", "decayFactor"])
    fresh = contribution(rng, entry["ruleId"])
    changed[field] = fresh.get(field, 0.25)
    return changed


def pair(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Old and new contributions of one row."""
    old_rules = rng.sample(RULES, rng.randrange(len(RULES) + 1))
    old = [contribution(rng, rule) for rule in old_rules]
    if rng.random() < 0.6:  # the same rules in the same order
        return old, [mutated(rng, entry) for entry in old]
    by_rule = {entry["ruleId"]: entry for entry in old}
    new_rules = rng.sample(RULES, rng.randrange(len(RULES) + 1))
    new = [
        mutated(rng, by_rule[rule]) if rule in by_rule else contribution(rng, rule)
        for rule in new_rules
    ]
    return old, new


def result(contributions: list[dict[str, Any]]) -> DimensionResult:
    return DimensionResult(50.0, 5.0, 10.0, 1, len(contributions), contributions)


def test_a_changed_rows_changes_are_what_python_builds(database: Database) -> None:
    rng = random.Random(20261207)
    pairs = [pair(rng) for _ in range(400)]
    pairs += [([], []), ([contribution(rng, "rule-0")], []), ([], [contribution(rng, "rule-0")])]
    tenant = make_tenant(database)
    with database.write(org=tenant.org_id, structure=True) as conn:
        profile = create_profile(
            conn, tenant.org_id, ProfileCreate(profileType="company", name="Changes")
        )
    now = datetime.now(UTC)
    objects = [f"o{i}.example" for i in range(len(pairs))]
    with database.write() as conn:
        inserts: list[dialect.NewRow] = [
            (profile.id, object_id, "fit", result(old), 0, None)
            for object_id, (old, _) in zip(objects, pairs, strict=True)
        ]
        dialect.write_scores(conn, tenant.org_id, "company", now, inserts, [], changes)
    with database.read() as conn:
        ids: dict[str, uuid.UUID] = dict(
            conn.execute(
                score_results.select()
                .with_only_columns(score_results.c.object_id, score_results.c.id)
                .where(score_results.c.organization_id == tenant.org_id)
            )
            .tuples()
            .all()
        )
    with database.write() as conn:
        changed: list[dialect.ChangedRow] = [
            (ids[object_id], result(new), 1, None)
            for object_id, (_, new) in zip(objects, pairs, strict=True)
        ]
        written = dialect.write_scores(conn, tenant.org_id, "company", now, [], changed, changes)
    assert len(written) == len(pairs)
    kinds = {"none": 0, "some": 0}
    for object_id, (old, new) in zip(objects, pairs, strict=True):
        got = written[ids[object_id]]
        document = load_json(got) if isinstance(got, str) else got
        expected = changes(old, new)
        assert document == expected, (old, new)
        kinds["some" if expected else "none"] += 1
    # Both outcomes are well represented, so neither is tested by accident.
    assert min(kinds.values()) > 50, kinds
