"""Typed dependencies: every route states what it needs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database
from signalscore.errors import FieldError, Invalid, RateLimited, Unauthorized
from signalscore.ratelimit import RateLimiter

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
        found = auth_service.authenticate(conn, credentials.credentials)
    if found is None:
        raise Unauthorized(
            "invalid API key: it is malformed, unknown or revoked",
            error_code="INVALID_API_KEY",
            headers={"WWW-Authenticate": "Bearer"},
        )
    org_id, key_id = found
    request.state.organization_id = org_id
    limiter: RateLimiter | None = request.app.state.rate_limiter
    if limiter is not None:
        kind = "read" if request.method in ("GET", "HEAD") else "write"
        decision = limiter.check(key_id, kind)
        if decision is not None:
            # The middleware copies these onto whatever response this request ends with.
            request.state.rate_limit_headers = decision.headers()
            if not decision.allowed:
                raise RateLimited(
                    f"rate limit of {decision.limit} {kind}s per minute exceeded for this key",
                    details={"limit": decision.limit, "kind": kind},
                    headers={"Retry-After": str(decision.reset_seconds)},
                )
    return org_id


CurrentOrgId = Annotated[str, Depends(current_organization_id)]


_known_query_params: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def reject_unknown_query_params(request: Request, _org_id: CurrentOrgId) -> None:
    """Unknown query parameters are a 422 like unknown body fields, so a typo such as
    `?objectTyp=company` never silently widens a listing. Runs after authentication."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _known_query_params.get(id(route))
    if known is None:
        known = _known_query_params[id(route)] = frozenset(_query_names(route.dependant))
    unknown = [name for name in dict.fromkeys(request.query_params) if name not in known]
    if unknown:
        raise Invalid(
            f"unknown query parameter '{unknown[0]}'"
            if len(unknown) == 1
            else f"{len(unknown)} unknown query parameters",
            error_code="UNKNOWN_FIELD",
            fields=[
                FieldError(field=name, message=f"unknown query parameter '{name}'")
                for name in unknown
            ],
        )
