"""Webhook subscriptions (SPEC §11): every function is scoped to one organisation in its
SQL. Deliveries are in delivery.py."""

from __future__ import annotations

import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import (
    event_counters,
    scoring_profiles,
    webhook_deliveries,
    webhook_subscriptions,
)
from signalscore.db.types import utcnow
from signalscore.errors import NotFound, Problems
from signalscore.webhooks import delivery
from signalscore.webhooks.schemas import (
    Delivery,
    Webhook,
    WebhookCreate,
    WebhookPatch,
    WebhookWithSecret,
)
from signalscore.webhooks.signing import new_secret
from signalscore.webhooks.urls import check_url

w = webhook_subscriptions
d = webhook_deliveries


def _not_found() -> NotFound:
    return NotFound("webhook not found", error_code="WEBHOOK_NOT_FOUND")


def _checked_profiles(
    conn: Connection, org_id: str, profile_ids: list[uuid.UUID] | None
) -> list[str] | None:
    """The profile filter as stored (distinct, in request order), each a profile of this
    organisation (422 `PROFILE_NOT_FOUND` at `profileIds[i]` otherwise)."""
    if profile_ids is None:
        return None
    unique = list(dict.fromkeys(profile_ids))
    known = set(
        conn.execute(
            sa.select(scoring_profiles.c.id).where(
                scoring_profiles.c.organization_id == org_id, scoring_profiles.c.id.in_(unique)
            )
        ).scalars()
    )
    problems = Problems()
    for i, profile_id in enumerate(profile_ids):
        if profile_id not in known:
            problems.add(f"profileIds[{i}]", "PROFILE_NOT_FOUND", "no such scoring profile")
    problems.raise_if_any(what="profileIds")
    return [str(p) for p in unique]


def _row(conn: Connection, org_id: str, webhook_id: uuid.UUID, *, lock: bool = False) -> Any:
    query = sa.select(w).where(w.c.organization_id == org_id, w.c.id == webhook_id)
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise _not_found()
    return row


def create(
    conn: Connection, org_id: str, body: WebhookCreate, *, allow_private: bool
) -> WebhookWithSecret:
    """A subscription receives the events written after it is created."""
    url = check_url(body.url, allow_private=allow_private)
    profiles = _checked_profiles(conn, org_id, body.profileIds)
    last = conn.execute(
        sa.select(event_counters.c.last_sequence).where(event_counters.c.organization_id == org_id)
    ).scalar_one_or_none()
    now = utcnow()
    secret = new_secret()
    row = conn.execute(
        w.insert()
        .values(
            organization_id=org_id,
            id=uuid.uuid4(),
            url=url,
            event_types=list(dict.fromkeys(body.eventTypes)),
            profile_ids=profiles,
            description=body.description,
            secret=secret,
            enabled=True,
            disabled_reason=None,
            delivered_through=last or 0,
            attempt=0,
            created_at=now,
            updated_at=now,
        )
        .returning(*w.c)
    ).one()
    return WebhookWithSecret(**Webhook.from_row(row).model_dump(), secret=secret)


def list_webhooks(conn: Connection, org_id: str) -> list[Webhook]:
    rows = conn.execute(
        sa.select(w).where(w.c.organization_id == org_id).order_by(w.c.created_at, w.c.id)
    )
    return [Webhook.from_row(row) for row in rows]


def get(conn: Connection, org_id: str, webhook_id: uuid.UUID) -> Webhook:
    return Webhook.from_row(_row(conn, org_id, webhook_id))


def patch(
    conn: Connection, org_id: str, webhook_id: uuid.UUID, body: WebhookPatch, *, allow_private: bool
) -> Webhook:
    """Change what is sent; `enabled: true` resumes a disabled subscription where it stopped
    (its batch in flight, if any, is retried at once)."""
    sent = body.model_fields_set
    values: dict[str, Any] = {"updated_at": utcnow()}
    if "url" in sent and body.url is not None:
        values["url"] = check_url(body.url, allow_private=allow_private)
    if "eventTypes" in sent and body.eventTypes is not None:
        values["event_types"] = list(dict.fromkeys(body.eventTypes))
    if "profileIds" in sent:
        values["profile_ids"] = _checked_profiles(conn, org_id, body.profileIds)
    if "description" in sent:
        values["description"] = body.description
    current = _row(conn, org_id, webhook_id, lock=True)
    if "enabled" in sent and body.enabled is not None:
        values["enabled"] = body.enabled
        if body.enabled and not current.enabled:
            values |= {
                "disabled_reason": None,
                "failing_since": None,
                "next_attempt_at": None,
                "lease_until": None,
            }
        elif not body.enabled:
            values["disabled_reason"] = "disabled by a PATCH"
    row = conn.execute(
        sa.update(w)
        .where(w.c.organization_id == org_id, w.c.id == webhook_id)
        .values(**values)
        .returning(*w.c)
    ).one()
    return Webhook.from_row(row)


def delete(conn: Connection, org_id: str, webhook_id: uuid.UUID) -> None:
    deleted = conn.execute(
        sa.delete(w).where(w.c.organization_id == org_id, w.c.id == webhook_id)
    ).rowcount
    if not deleted:
        raise _not_found()


def rotate_secret(conn: Connection, org_id: str, webhook_id: uuid.UUID) -> WebhookWithSecret:
    """A new secret signs every delivery from now on, retries of a batch included."""
    secret = new_secret()
    row = conn.execute(
        sa.update(w)
        .where(w.c.organization_id == org_id, w.c.id == webhook_id)
        .values(secret=secret, updated_at=utcnow())
        .returning(*w.c)
    ).one_or_none()
    if row is None:
        raise _not_found()
    return WebhookWithSecret(**Webhook.from_row(row).model_dump(), secret=secret)


def deliveries(conn: Connection, org_id: str, webhook_id: uuid.UUID, limit: int) -> list[Delivery]:
    _row(conn, org_id, webhook_id)
    rows = conn.execute(
        sa.select(d)
        .where(d.c.organization_id == org_id, d.c.subscription_id == webhook_id)
        .order_by(d.c.created_at.desc(), d.c.id)
        .limit(limit)
    )
    return [Delivery.from_row(row) for row in rows]


def send_test_event(
    conn: Connection,
    org_id: str,
    webhook_id: uuid.UUID,
    *,
    allow_private: bool,
    timeout: float = delivery.TIMEOUT_SECONDS,
) -> Delivery:
    """Send one `webhook.test` event now (signed like any delivery, outside the log: it
    takes no sequence and does not move the subscription), and log the attempt."""
    row = _row(conn, org_id, webhook_id)
    now = utcnow()
    test_id = uuid.uuid4()
    event = {
        "id": str(test_id),
        "type": "webhook.test",
        "createdAt": now.isoformat().replace("+00:00", "Z"),
        "webhookId": str(row.id),
    }
    message_id = uuid.uuid4()
    headers, body = delivery.message(
        row.secret, str(message_id), [json.dumps(event, separators=(",", ":")).encode()], now
    )
    check_url(row.url, allow_private=allow_private)
    outcome = delivery.post(row.url, headers, body, timeout)
    conn.execute(delivery.attempt_row(row, message_id, [str(test_id)], 1, outcome, now))
    return Delivery(
        id=message_id,
        eventIds=[test_id],
        attempt=1,
        statusCode=outcome.status_code,
        durationMs=round(outcome.duration_ms, 2),
        error=outcome.error,
        createdAt=now,
    )
