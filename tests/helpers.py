"""Assertions shared by the HTTP tests."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx2 as httpx

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database

# Written out by hand from SPEC §3 rather than derived from the application's own model,
# so a drift in the model cannot make the test agree with itself.
ENVELOPE_KEYS = {
    "type": str,
    "code": str,
    "message": str,
    "errorCode": str,
    "errorAction": str,
    "details": dict,
    "requestId": str,
    "fields": list,
}
ERROR_ACTIONS = {"FIX_REQUEST", "CHECK_CREDENTIALS", "RETRY", "NONE"}


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    type_: str | None = None,
    error_code: str | None = None,
    fields: list[str] | None = None,
) -> dict[str, Any]:
    """Check `response` is a well-formed SPEC §3 envelope with the given status and codes."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) - {"debug"} == set(ENVELOPE_KEYS), error
    for key, kind in ENVELOPE_KEYS.items():
        assert isinstance(error[key], kind), (key, error[key])
    assert error["code"] == code
    if type_ is not None:
        assert error["type"] == type_
    assert error["errorAction"] in ERROR_ACTIONS
    assert error["errorCode"] == error["errorCode"].upper()
    assert error["errorCode"].replace("_", "").isalnum()
    assert error["message"]
    assert str(uuid.UUID(error["requestId"])) == error["requestId"]
    assert response.headers["x-request-id"] == error["requestId"]
    for item in error["fields"]:
        assert set(item) == {"field", "message", "code"}
        assert isinstance(item["field"], str)
        assert isinstance(item["message"], str)
        assert item["code"] == item["code"].upper()
        assert item["code"].replace("_", "").isalnum()
    if error["fields"]:
        assert error["errorCode"] == error["fields"][0]["code"]
    if "debug" in error:
        assert isinstance(error["debug"], dict)
        assert isinstance(error["debug"]["cause"], str)
    if error_code is not None:
        assert error["errorCode"] == error_code
    if fields is not None:
        assert [f["field"] for f in error["fields"]] == fields
    return dict(error)


@dataclass(frozen=True)
class Tenant:
    """An organisation and a valid key for it."""

    org_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(database: Database, name: str = "Acme") -> Tenant:
    with database.write() as conn:
        org, issued = auth_service.create_organization(conn, name)
    return Tenant(org_id=org.id, key=issued.key)


def drain(
    database: Database, *, max_batches: int = 10_000, clock: Callable[[], datetime] | None = None
) -> int:
    """Run a worker until the queue is empty (computing at `clock`'s time, default the wall
    clock's); returns how many entries it processed."""
    from signalscore.recompute.worker import Worker, WorkerConfig

    config = WorkerConfig(batch_size=200, lease_seconds=30)
    if clock is not None:
        config.clock = clock
    worker = Worker(database, config)
    processed = 0
    for _ in range(max_batches):
        claimed = worker.run_once()
        if claimed == 0:
            return processed
        processed += claimed
    raise AssertionError("the queue did not drain")


def expected_scores(
    database: Database, now: datetime | None = None
) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Every score row that should exist, computed from scratch by the engine now over the
    current rules (with their decay), assignments and values (with their observedAt), with
    its tier by `reference_tier` over the profile's current tiers: {(org, profile, type,
    object, dimension): (score, contributions, coverage, total rules, tier, next change)}."""
    import sqlalchemy as sa

    from signalscore.db.dialect import instant
    from signalscore.db.tables import (
        profile_assignments,
        scoring_profiles,
        scoring_rules,
        signal_values,
    )
    from signalscore.db.types import utcnow
    from signalscore.engine import Rule, score_object

    with database.read() as conn:
        rules: dict[tuple[str, Any], list[Rule]] = {}
        for r in conn.execute(
            sa.select(scoring_rules).order_by(scoring_rules.c.created_at, scoring_rules.c.id)
        ):
            rules.setdefault((r.organization_id, r.profile_id), []).append(
                Rule(
                    str(r.id),
                    r.signal_template_id,
                    r.dimension,
                    r.answer_type,
                    r.point_values,
                    r.decay,
                )
            )
        values: dict[tuple[str, str, str], dict[str, Any]] = {}
        observed: dict[tuple[str, str, str], dict[str, str]] = {}
        for v in conn.execute(sa.select(signal_values)):
            key = (v.organization_id, v.object_type, v.object_id)
            values.setdefault(key, {})[v.signal_template_id] = v.value
            observed.setdefault(key, {})[v.signal_template_id] = v.observed_at.strftime(
                "%Y-%m-%dT%H:%M:%S.%fZ"
            )
        assignments = list(conn.execute(sa.select(profile_assignments)))
        tiers = {
            (p.organization_id, p.id): p.tiers or {}
            for p in conn.execute(sa.select(scoring_profiles))
        }
    expected = {}
    now = now or utcnow()
    for a in assignments:
        profile_rules = rules.get((a.organization_id, a.profile_id), [])
        key = (a.organization_id, a.object_type, a.object_id)
        object_values, times = values.get(key, {}), observed.get(key, {})
        profile_tiers = tiers[(a.organization_id, a.profile_id)]
        scored = score_object(profile_rules, object_values, observed=times, now=now)
        for dimension, result in scored.items():
            expected[(a.organization_id, a.profile_id, a.object_type, a.object_id, dimension)] = (
                result.score,
                result.contributions,
                result.signal_coverage,
                result.total_rules,
                reference_tier(profile_tiers.get(dimension), result.score),
                instant(result.next_change_at),
            )
    return expected


def stored_scores(database: Database) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    import sqlalchemy as sa

    from signalscore.db.tables import score_results

    with database.read() as conn:
        return {
            (r.organization_id, r.profile_id, r.object_type, r.object_id, r.dimension): (
                r.score,
                r.contributions,
                r.signal_coverage,
                r.total_rules,
                r.tier,
                r.next_change_at,
            )
            for r in conn.execute(sa.select(score_results))
        }


def assert_scores_fresh(database: Database, now: datetime | None = None) -> None:
    """The SPEC §7 invariant, as §13 states it with decay: with the queue empty and no
    `nextChangeAt` before `now` (default: the wall clock's time), every stored score equals
    a from-scratch computation at `now`, and no row exists that should not."""
    import sqlalchemy as sa

    from signalscore.db.tables import recompute_profiles, recompute_queue, score_results
    from signalscore.db.types import utcnow

    now = now or utcnow()
    with database.read() as conn:
        due = sa.select(sa.func.count()).where(score_results.c.next_change_at < now)
        assert conn.execute(due).scalar() == 0, "rows past their nextChangeAt: sweep first"
        assert conn.execute(sa.select(sa.func.count()).select_from(recompute_queue)).scalar() == 0
        assert (
            conn.execute(sa.select(sa.func.count()).select_from(recompute_profiles)).scalar() == 0
        )
    expected = expected_scores(database, now)
    stored = stored_scores(database)
    assert stored.keys() == expected.keys(), (
        f"missing {sorted(expected.keys() - stored.keys())[:5]}, "
        f"extra {sorted(stored.keys() - expected.keys())[:5]}"
    )
    for key, value in expected.items():
        assert stored[key] == value, (key, stored[key], value)
    assert_events_replay(database)
    assert_counts_exact(database)


def assert_counts_exact(database: Database) -> None:
    """The counts of `scores/counts.py` equal a count of the rows: score rows for every
    organisation, profile, dimension, score and tier, with no row at 0; assignments for
    every profile."""
    import sqlalchemy as sa

    from signalscore.db.tables import (
        assignment_counts,
        profile_assignments,
        score_counts,
        score_results,
    )

    s, t = score_results, score_counts
    with database.read() as conn:
        expected = {
            (row[0], row[1], row[2], row[3], row[4] or ""): row[5]
            for row in conn.execute(
                sa.select(
                    s.c.organization_id,
                    s.c.profile_id,
                    s.c.dimension,
                    s.c.score,
                    s.c.tier,
                    sa.func.count(),
                ).group_by(s.c.organization_id, s.c.profile_id, s.c.dimension, s.c.score, s.c.tier)
            )
        }
        kept = {
            (row[0], row[1], row[2], row[3], row[4]): row[5]
            for row in conn.execute(
                sa.select(
                    t.c.organization_id,
                    t.c.profile_id,
                    t.c.dimension,
                    t.c.score,
                    t.c.tier,
                    t.c.count,
                )
            )
        }
    assert kept == expected, {
        key: (kept.get(key), expected.get(key))
        for key in kept.keys() | expected.keys()
        if kept.get(key) != expected.get(key)
    }
    a, n = profile_assignments, assignment_counts
    with database.read() as conn:
        assigned: dict[Any, int] = {}
        for profile_id, count in conn.execute(
            sa.select(a.c.profile_id, sa.func.count()).group_by(a.c.profile_id)
        ):
            assigned[profile_id] = count
        counted = {
            profile_id: count
            for profile_id, count in conn.execute(sa.select(n.c.profile_id, n.c.assigned))
            if count  # a profile whose objects were all unassigned keeps a row at 0
        }
    assert counted == assigned


def fan_out(database: Database) -> int:
    """Do every pending profile fan-out step (what workers do before each claim): queue the
    objects of profiles whose rules changed. Returns how many it queued."""
    from signalscore.recompute.queue import queue_next_profile_chunk

    queued = 0
    while True:
        with database.write() as conn:
            step = queue_next_profile_chunk(conn)
        if step is None:
            return queued
        queued += step


def reference_tier(tiers: list[dict[str, Any]] | None, score: float) -> str | None:
    """SPEC §9, written from its words: the name of the tier with the largest `minScore`
    at or below the score; None when none holds it or there are no tiers."""
    holding = [t for t in tiers or [] if t["minScore"] <= score]
    if not holding:
        return None
    name: str = max(holding, key=lambda t: t["minScore"])["name"]
    return name


def _fold(parts: dict[str, Any], changes: list[dict[str, Any]], event: Any) -> dict[str, Any]:
    """Apply an event's `changes` to a row's contributions (rule id -> {matchedValue,
    pointsEarned, maxPoints}), checking each `before` is what the row had."""
    folded = dict(parts)
    for change in changes:
        rule = change["ruleId"]
        assert folded.get(rule) == change["before"], ("before", event, rule, folded.get(rule))
        if change["after"] is None:
            folded.pop(rule, None)
        else:
            folded[rule] = change["after"]
    return folded


def assert_events_replay(database: Database) -> int:
    """SPEC §10 against the stored rows: each organisation's log is numbered 1, 2, 3, ...
    with no gap; folding it (created and changed set a row, deleted removes it, each
    event's `changes` applied rule by rule to the row's contributions, every `before` being
    what the row had) gives exactly the stored rows' score, tier, version and contributions;
    versions move by one; a tier_changed event follows the created or changed event it
    belongs to, with the same fields. Returns how many events it read."""
    import sqlalchemy as sa

    from signalscore.db.tables import score_events, score_results

    def parts(contributions: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("matchedValue", "pointsEarned", "maxPoints", "observedAt", "decayFactor")
        return {c["ruleId"]: {k: c[k] for k in keys} for c in contributions}

    with database.read() as conn:
        events = list(
            conn.execute(
                sa.select(score_events).order_by(
                    score_events.c.organization_id, score_events.c.sequence
                )
            )
        )
        stored = {
            (r.organization_id, r.profile_id, r.object_type, r.object_id, r.dimension): (
                r.score,
                r.tier,
                r.version,
                parts(r.contributions),
            )
            for r in conn.execute(sa.select(score_results))
        }
    state: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    expected_sequence: dict[str, int] = {}
    previous = None
    for event in events:
        org = event.organization_id
        assert event.sequence == expected_sequence.get(org, 0) + 1, ("gap", org, event.sequence)
        expected_sequence[org] = event.sequence
        key = (org, event.profile_id, event.object_type, event.object_id, event.dimension)
        current = state.get(key)
        if event.type == "score.created":
            assert current is None, (event, current)
            assert event.version == 1, event
            state[key] = (event.score, event.tier, 1, _fold({}, event.changes, event))
        elif event.type == "score.changed":
            assert current is not None, event
            assert event.version == current[2] + 1, (event, current)
            assert (event.previous_score, event.previous_tier) == current[:2], (event, current)
            folded = _fold(current[3], event.changes, event)
            state[key] = (event.score, event.tier, event.version, folded)
        elif event.type == "score.deleted":
            assert current is not None, event
            assert event.version == current[2], (event, current)
            assert (event.previous_score, event.previous_tier) == current[:2], (event, current)
            assert _fold(current[3], event.changes, event) == {}, event
            del state[key]
        else:
            assert event.type == "score.tier_changed", event
            assert previous is not None
            assert previous.sequence == event.sequence - 1, (previous, event)
            assert previous.type in ("score.created", "score.changed"), previous
            assert event.tier != event.previous_tier, event
            same = ("score", "previous_score", "tier", "previous_tier", "version", "changes")
            assert all(getattr(event, f) == getattr(previous, f) for f in same), event
        previous = event
    # A row from before the log existed would have no events: every test starts after it.
    assert state == stored, (
        f"replayed but not stored: {sorted(state.keys() - stored.keys())[:3]}; "
        f"stored but not replayed: {sorted(stored.keys() - state.keys())[:3]}; "
        f"different: {[k for k in state.keys() & stored.keys() if state[k] != stored[k]][:3]}"
    )
    return len(events)
