"""Typed dependencies: every route states what it needs."""

from __future__ import annotations

from typing import Annotated, NoReturn

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database
from signalscore.errors import Problems, RateLimited, Unauthorized, bounded_text
from signalscore.objects import MAX_RAW_LENGTH, object_id_schema
from signalscore.ratelimit import RateLimiter

_bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer sk_live_...`; keys come from `signalscore key create`.",
)


def get_database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


DatabaseDep = Annotated[Database, Depends(get_database)]


def authenticate(request: Request) -> str:
    """The organisation of the request's API key, checked once per request (the result is
    kept in the request's state), then the rate limits of the key and its organisation. The
    only source of tenancy.

    No database write, and usually no database read: a valid key is answered from the
    process's key cache (`SIGNALSCORE_AUTH_CACHE_SECONDS`), and the counters are kept apart
    from the request's transaction (ratelimit.py). A client address that has failed to
    authenticate too often in this minute is refused with 429 before its key is looked up.

    `V1Route` calls it before the body is read; the `CurrentOrgId` dependency then finds the
    answer already there."""
    state = request.state
    known: str | None = getattr(state, "organization_id", None)
    if known is not None:
        return known
    app_state = request.app.state
    limiter: RateLimiter | None = app_state.rate_limiter
    address = request.client.host if request.client is not None else "unknown"
    if limiter is not None:
        wait = limiter.address_blocked(address)
        if wait is not None:
            raise _too_many_failures(limiter.limits.auth_failures, wait)
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        _authentication_failed(
            limiter,
            address,
            Unauthorized(
                "missing API key: send 'Authorization: Bearer sk_live_...'",
                error_code="MISSING_API_KEY",
                headers={"WWW-Authenticate": "Bearer"},
            ),
        )
    db: Database = app_state.database
    cache: auth_service.KeyCache | None = getattr(app_state, "key_cache", None)
    found = auth_service.authenticate_cached(db, secret.strip(), cache)
    if found is None:
        _authentication_failed(
            limiter,
            address,
            Unauthorized(
                "invalid API key: it is malformed, unknown or revoked",
                error_code="INVALID_API_KEY",
                headers={"WWW-Authenticate": "Bearer"},
            ),
        )
    org_id, key_id = found
    state.organization_id = org_id
    if limiter is not None:
        kind = "read" if request.method in ("GET", "HEAD") else "write"
        decision = limiter.check(key_id, org_id, kind)
        if decision is not None:
            # The middleware copies these onto whatever response this request ends with.
            state.rate_limit_headers = decision.headers()
            if not decision.allowed:
                whose = "this key" if decision.scope == "key" else "this organization"
                raise RateLimited(
                    f"rate limit of {decision.limit} {kind}s per minute exceeded for {whose}",
                    details={"limit": decision.limit, "kind": kind, "scope": decision.scope},
                    headers={"Retry-After": str(decision.reset_seconds)},
                )
    return org_id


def _too_many_failures(limit: int, retry_after: int) -> RateLimited:
    return RateLimited(
        f"too many failed authentications from this address (at most {limit} per minute); "
        f"retry in {retry_after} s",
        details={"limit": limit, "kind": "authentication", "scope": "address"},
        headers={"Retry-After": str(retry_after)},
    )


def _authentication_failed(
    limiter: RateLimiter | None, address: str, error: Unauthorized
) -> NoReturn:
    """Count the failure against the client address: the 401, or a 429 past the limit."""
    if limiter is not None:
        decision = limiter.authentication_failed(address)
        if decision is not None and not decision.allowed:
            raise _too_many_failures(decision.limit, decision.reset_seconds)
    raise error


def current_organization_id(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The organisation of the request's API key (`_credentials` only documents the scheme
    in the OpenAPI document)."""
    return authenticate(request)


CurrentOrgId = Annotated[str, Depends(current_organization_id)]

MAX_OBJECT_IDS_PER_READ = 100

# `objectId` in a query: one or 1-100 repeated. The document states both id forms (whether
# the form fits `objectType` is checked by the server: parameters cannot depend on each other).
ObjectIdQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=MAX_RAW_LENGTH,
        description="For company the domain; for contact the LinkedIn profile URL.",
        json_schema_extra=object_id_schema(),
    ),
]
ObjectIdsQuery = Annotated[
    list[str],
    Query(
        alias="objectId",
        min_length=1,
        max_length=MAX_OBJECT_IDS_PER_READ,
        description="Repeatable (1-100). For company the domain; for contact the LinkedIn "
        "profile URL.",
        json_schema_extra={"items": object_id_schema()},
    ),
]


# An unknown parameter's name is echoed back cut to this many characters.
MAX_ECHOED_NAME = 100

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
    problems = Problems()
    for name in unknown:
        shown = bounded_text(name, MAX_ECHOED_NAME)
        problems.add(shown, "UNKNOWN_FIELD", f"unknown query parameter '{shown}'")
    problems.raise_if_any(what="query parameters")
