"""The event log's write side (SPEC §10): what a transaction records, and the sequence.

A transaction that changes score rows records one event per change (`record`, or
`record_profile_deletion` for a whole profile's rows). Nothing is written then: the events
wait in the unit of work and are written by its last step before the commit
(`db.engine.before_commit`), which hands out their sequence numbers:

    INSERT INTO event_counters ... ON CONFLICT DO UPDATE SET last_sequence = last_sequence + n
    RETURNING last_sequence

That statement reserves n numbers and keeps the organisation's counter row locked until the
commit. So the transactions that write events for one organisation take their numbers and
commit one at a time, in number order: when an event with sequence s is visible, every event
below s either is visible already or was never written. A consumer reading
`sequence > after` therefore never finds an event appear below what it read past (the naive
design, a database sequence at insert time, breaks exactly this: numbers are taken in one
order and committed in another).

The counter is the last lock such a transaction takes but for the score counts it keeps
(`scores/counts.py`), which only transactions holding the counter touch; it waits for
nothing else while holding it: no deadlock can involve it. What it costs is that the
event-writing tails of one organisation's transactions (the events' INSERT, the counts and
the commit) run one at a time.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from signalscore.db import dialect
from signalscore.db.engine import before_commit
from signalscore.db.types import utcnow
from signalscore.scores import counts as score_counts

CREATED = "score.created"
CHANGED = "score.changed"
DELETED = "score.deleted"
TIER_CHANGED = "score.tier_changed"
EVENT_TYPES = (CREATED, CHANGED, DELETED, TIER_CHANGED)

_PENDING = "signalscore.pending_events"

# The namespace of event ids: uuid5(namespace, "<organisation>:<sequence>").
EVENT_ID_NAMESPACE = uuid.UUID("0b4f2a47-5c1e-4f53-9d0a-2f6f1c2e8a11")


def event_id(org_id: str, sequence: int) -> uuid.UUID:
    """An event's id: stable, unique, and derived from what identifies it (not stored)."""
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{org_id}:{sequence}")


# The third hex digit of a uuid's fourth group, by the digest's: the variant bits (10xx).
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def event_id_texts(org_id: str) -> Callable[[int], str]:
    """`str(event_id(org_id, sequence))` by sequence, without the `uuid.UUID` (SHA-1 of the
    namespace and the name, from the organisation's part hashed once; version 5 and the
    variant set in the hex digits): webhook deliveries name thousands of events a second."""
    # As uuid.uuid5: a name, not a secret.
    prefix = hashlib.sha1(EVENT_ID_NAMESPACE.bytes + f"{org_id}:".encode(), usedforsecurity=False)

    def text(sequence: int) -> str:
        sha = prefix.copy()
        sha.update(b"%d" % sequence)
        digest = sha.hexdigest()
        return (
            f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-"
            f"{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"
        )

    return text


def event_id_text(org_id: str, sequence: int) -> str:
    return event_id_texts(org_id)(sequence)


@dataclass(slots=True)
class NewEvent:
    """An event before it has a sequence (the columns of `score_events`)."""

    type: str
    profile_id: uuid.UUID
    object_type: str
    object_id: str
    dimension: str
    score: float | None
    previous_score: float | None
    tier: str | None
    previous_tier: str | None
    version: int
    # Built by `changes`, or by the database as JSON text (`dialect.write_scores`).
    changes: dialect.Changes


@dataclass
class _Pending:
    """One organisation's events waiting for the commit of this unit of work."""

    events: list[NewEvent] = field(default_factory=list)
    profile_deletions: bool = False


class _Log:
    """This unit of work's events, by organisation; called right before its commit."""

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}

    def __call__(self, conn: Connection) -> None:
        now = utcnow()
        for org_id in sorted(self.pending):
            waiting = self.pending[org_id]
            stashed = dialect.count_stashed_deletions(conn) if waiting.profile_deletions else 0
            total = len(waiting.events) + stashed
            if not total:
                continue
            last = dialect.reserve_sequences(conn, org_id, total)
            first = last - total + 1
            dialect.insert_events(conn, org_id, first, now, waiting.events)
            score_counts.apply(conn, org_id, score_counts.deltas(waiting.events))
            if stashed:
                score_counts.forget(conn, org_id, dialect.stashed_profiles(conn))
                dialect.insert_stashed_deletions(conn, org_id, first + len(waiting.events), now)


def _part(contribution: dict[str, Any]) -> dict[str, Any]:
    # With the decay of SPEC §13, a score also moves because a value was observed anew or a
    # step passed: `observedAt` and `decayFactor` say so.
    return {
        "matchedValue": contribution.get("matchedValue"),
        "pointsEarned": contribution.get("pointsEarned"),
        "maxPoints": contribution.get("maxPoints"),
        "observedAt": contribution.get("observedAt"),
        "decayFactor": contribution.get("decayFactor", 1),
    }


def changes(
    before: Sequence[dict[str, Any]] | None, after: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """One entry per rule whose contribution differs between two versions of a row, in the
    new row's rule order, then the rules only the old one had: `{ruleId, signalTemplateId,
    before, after}`, each side `{matchedValue, pointsEarned, maxPoints}` or null where the
    rule did not exist; with `observedAt` and `decayFactor` (SPEC §13)."""
    old = {c["ruleId"]: c for c in before or ()}
    result = []
    seen = set()
    for contribution in after or ():
        rule_id = contribution["ruleId"]
        seen.add(rule_id)
        previous = old.get(rule_id)
        now = _part(contribution)
        if previous is not None and _part(previous) == now:
            continue
        result.append(
            {
                "ruleId": rule_id,
                "signalTemplateId": contribution["signalTemplateId"],
                "before": None if previous is None else _part(previous),
                "after": now,
            }
        )
    for rule_id, previous in old.items():
        if rule_id not in seen:
            result.append(
                {
                    "ruleId": rule_id,
                    "signalTemplateId": previous["signalTemplateId"],
                    "before": _part(previous),
                    "after": None,
                }
            )
    return result


def _pending(conn: Connection, org_id: str) -> _Pending:
    log = before_commit(conn, _PENDING, _Log)
    return log.pending.setdefault(org_id, _Pending())


def record(conn: Connection, org_id: str, events: Sequence[NewEvent]) -> None:
    """Record events of this transaction; they are written, numbered, right before its
    commit, and dropped if it rolls back."""
    if events:
        _pending(conn, org_id).events.extend(events)


def record_profile_deletion(conn: Connection, org_id: str, profile_id: uuid.UUID) -> None:
    """Delete the profile's score rows now, keeping what their `score.deleted` events need
    in a temporary table (`dialect.stash_deleted_scores`); the events are written from it
    before the commit. The rows are locked (deleted) here, before the counter: the counter is
    always the last lock."""
    dialect.stash_deleted_scores(conn, org_id, profile_id)
    _pending(conn, org_id).profile_deletions = True
