"""`/v1/webhooks` (SPEC §11): HTTP only, the work is in `webhooks.service`."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from signalscore.body import V1Route
from signalscore.deps import CurrentOrgId, DatabaseDep
from signalscore.ids import uuid_or_404
from signalscore.webhooks import service
from signalscore.webhooks.schemas import (
    Delivery,
    Webhook,
    WebhookCreate,
    WebhookPatch,
    WebhookWithSecret,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], route_class=V1Route)


def _allow_private(request: Request) -> bool:
    return bool(request.app.state.settings.webhook_allow_private)


def _id(webhook_id: str) -> uuid.UUID:
    return uuid_or_404(webhook_id, "webhook", "WEBHOOK_NOT_FOUND")


@router.post("", response_model=WebhookWithSecret, status_code=status.HTTP_201_CREATED)
def create_webhook(
    body: WebhookCreate, request: Request, org_id: CurrentOrgId, db: DatabaseDep
) -> WebhookWithSecret:
    """Subscribe a URL to score events; the answer is the only one that shows `secret`."""
    with db.write() as conn:
        return service.create(conn, org_id, body, allow_private=_allow_private(request))


@router.get("", response_model=list[Webhook])
def list_webhooks(org_id: CurrentOrgId, db: DatabaseDep) -> list[Webhook]:
    """The organisation's subscriptions, ordered by `createdAt`, then `id`."""
    with db.read() as conn:
        return service.list_webhooks(conn, org_id)


@router.get("/{webhook_id}", response_model=Webhook)
def get_webhook(webhook_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Webhook:
    """One subscription (without its secret)."""
    with db.read() as conn:
        return service.get(conn, org_id, _id(webhook_id))


@router.patch("/{webhook_id}", response_model=Webhook)
def patch_webhook(
    webhook_id: str, body: WebhookPatch, request: Request, org_id: CurrentOrgId, db: DatabaseDep
) -> Webhook:
    """Change a subscription; `{"enabled": true}` resumes a disabled one where it stopped."""
    with db.write() as conn:
        return service.patch(
            conn, org_id, _id(webhook_id), body, allow_private=_allow_private(request)
        )


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(webhook_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> Response:
    """Delete a subscription and its delivery log."""
    with db.write() as conn:
        service.delete(conn, org_id, _id(webhook_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecret)
def rotate_secret(webhook_id: str, org_id: CurrentOrgId, db: DatabaseDep) -> WebhookWithSecret:
    """A new secret, shown once; the old one signs nothing from now on."""
    with db.write() as conn:
        return service.rotate_secret(conn, org_id, _id(webhook_id))


@router.post("/{webhook_id}/test", response_model=Delivery)
def test_webhook(
    webhook_id: str, request: Request, org_id: CurrentOrgId, db: DatabaseDep
) -> Delivery:
    """Deliver one `webhook.test` event now and answer with the attempt (its status code,
    duration or error): whether the receiver is reachable and verifies signatures."""
    with db.write() as conn:
        return service.send_test_event(
            conn,
            org_id,
            _id(webhook_id),
            allow_private=_allow_private(request),
            timeout=request.app.state.settings.webhook_timeout_seconds,
        )


@router.get("/{webhook_id}/deliveries", response_model=list[Delivery])
def list_deliveries(
    webhook_id: str,
    org_id: CurrentOrgId,
    db: DatabaseDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Delivery]:
    """The subscription's delivery attempts, newest first."""
    with db.read() as conn:
        return service.deliveries(conn, org_id, _id(webhook_id), limit)
