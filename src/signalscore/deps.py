"""Typed dependencies: every route states what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database
from signalscore.errors import Unauthorized

_bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer sk_live_...`; keys come from `signalscore key create`.",
)


def get_database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


DatabaseDep = Annotated[Database, Depends(get_database)]


def current_organization_id(
    request: Request,
    db: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The organisation of the request's API key; the only source of tenancy."""
    if credentials is None:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer sk_live_...'",
            error_code="MISSING_API_KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with db.read() as conn:
        org_id = auth_service.authenticate(conn, credentials.credentials)
    if org_id is None:
        raise Unauthorized(
            "invalid API key: it is malformed, unknown or revoked",
            error_code="INVALID_API_KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.organization_id = org_id
    return org_id


CurrentOrgId = Annotated[str, Depends(current_organization_id)]
