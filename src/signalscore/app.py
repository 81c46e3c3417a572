"""The application factory."""

from __future__ import annotations

import gc
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import sqlalchemy.exc
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from signalscore import __version__
from signalscore.assignments.router import router as assignments_router
from signalscore.auth.router import router as organization_router
from signalscore.auth.service import KeyCache
from signalscore.config import Settings, get_settings
from signalscore.console.router import router as console_router
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.integrity import app_error_for_integrity_error
from signalscore.deps import reject_unknown_query_params
from signalscore.errors import (
    AppError,
    BadRequest,
    InternalError,
    MethodNotAllowed,
    NotFound,
    Unavailable,
    error_response,
    error_responses,
)
from signalscore.events.router import router as events_router
from signalscore.health import router as health_router
from signalscore.middleware import BodyLimitMiddleware, HeadMiddleware, RequestContextMiddleware
from signalscore.observability import Metrics
from signalscore.preview.router import router as preview_router
from signalscore.profiles.router import router as profiles_router
from signalscore.ratelimit import create_rate_limiter
from signalscore.recompute.runner import EmbeddedWorker
from signalscore.rules.router import router as rules_router
from signalscore.scores.router import router as scores_router
from signalscore.signals.router import router as signals_router
from signalscore.validation import validation_error
from signalscore.webhooks.router import router as webhooks_router

log = logging.getLogger("signalscore")

# Deadlock detected, serialization failure: retryable, not an outage.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})

V1_ERROR_STATUSES = (400, 401, 404, 405, 413, 422, 429, 500, 503)


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    if database is None:
        database = Database(
            create_db_engine(
                settings.database_url,
                connect_timeout=settings.db_connect_timeout,
                pool_size=settings.db_pool_size,
            )
        )
    owned_database = database

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        embedded = EmbeddedWorker(owned_database, settings) if settings.embedded_worker else None
        if embedded is not None:
            metrics.computed_sources.append(lambda: embedded.computed)
            embedded.start()
        yield
        if embedded is not None:
            # Finishes the batch in hand and releases any lease before the pool closes.
            embedded.shutdown()
        owned_database.dispose()

    app = FastAPI(
        title="signalscore",
        version=__version__,
        description=(
            "Explainable 0–100 fit and urgency scores for companies and contacts. "
            "Every error response has the envelope documented as `ErrorEnvelope`."
        ),
        lifespan=lifespan,
        # No trailing-slash redirect: Starlette's builds an absolute URL from the client's
        # Host header (an open redirect); `/v1/scoring/profiles/` is simply a 404.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.rate_limiter = create_rate_limiter(database.engine, settings)
    app.state.key_cache = (
        KeyCache(settings.auth_cache_seconds) if settings.auth_cache_seconds else None
    )

    metrics = Metrics()
    metrics.watch_queue(database)
    app.state.metrics = metrics

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests, latencies, queue depth, worker lag."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    _install_error_handlers(app, settings)
    app.include_router(health_router)
    # The web console (SPEC §14): pages, not API; signed in with a session, not a key.
    app.include_router(console_router)
    routers = (
        organization_router,
        profiles_router,
        rules_router,
        preview_router,
        assignments_router,
        scores_router,
        signals_router,
        events_router,
        webhooks_router,
    )
    for router in routers:
        app.include_router(
            router,
            responses=error_responses(*V1_ERROR_STATUSES),
            dependencies=[Depends(reject_unknown_query_params)],
        )

    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(HeadMiddleware)
    # Added last, so outermost: it sees every response, including the 413 above.
    app.add_middleware(RequestContextMiddleware, debug=settings.debug, metrics=metrics)
    return app


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


def _allowed_methods(request: Request) -> list[str]:
    """Every method served on this path. Starlette's 405 names only the first matching
    route's methods; the OpenAPI document (the public route table) knows them all. A literal
    path (`/assignments/bulk`) wins over a template that would also match it."""
    table: dict[str, tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_table", None
    )
    if table is None:
        table = {}
        for template, operations in request.app.openapi()["paths"].items():
            regex = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
            methods = {m.upper() for m in operations}
            if "GET" in methods:
                methods.add("HEAD")  # HeadMiddleware answers HEAD wherever GET is served
            table[template] = (re.compile(f"^{regex}$"), methods)
        request.app.state.allow_table = table
    path = request.url.path
    if path in table:
        return sorted(table[path][1])
    allowed: set[str] = set()
    for compiled, methods in table.values():
        if compiled.match(path):
            allowed |= methods
    return sorted(allowed)


def _install_error_handlers(app: FastAPI, settings: Settings) -> None:
    def render(request: Request, error: AppError, cause: BaseException | None = None) -> Response:
        if error.status == 503:
            error.headers.setdefault("Retry-After", str(settings.retry_after_seconds))
        debug = f"{type(cause).__name__}: {cause}" if settings.debug and cause else None
        return error_response(error, _request_id(request), debug_cause=debug)

    @app.exception_handler(AppError)
    async def on_app_error(request: Request, exc: AppError) -> Response:
        return render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return render(request, validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = dict(exc.headers or {})
        error: AppError
        if exc.status_code == 404:
            error = NotFound(f"no route for {request.method} {request.url.path}")
        elif exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
            error = MethodNotAllowed(
                f"method {request.method} is not allowed on {request.url.path}", headers=headers
            )
        elif exc.status_code == 400:
            error = BadRequest("the request body could not be read", headers=headers)
        else:
            error = InternalError("internal error; quote the requestId when reporting it")
        return render(request, error)

    @app.exception_handler(sqlalchemy.exc.IntegrityError)
    async def on_integrity_error(request: Request, exc: sqlalchemy.exc.IntegrityError) -> Response:
        # A constraint stopped a write the service's own checks let through (a race they do
        # not close); the transaction was rolled back whole.
        error = app_error_for_integrity_error(exc)
        log.warning(
            "integrity error on %s answered %s %s", request.url.path, error.status, error.error_code
        )
        return render(request, error, cause=exc)

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def on_database_unavailable(request: Request, exc: Exception) -> Response:
        sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
        if sqlstate in TRANSIENT_SQLSTATES:
            # The database is fine; this transaction lost a race and was rolled back whole.
            log.warning("transient conflict %s on %s", sqlstate, request.url.path)
            error = Unavailable(
                "the request collided with concurrent writes and changed nothing; retry it",
                error_code="TRANSIENT_CONFLICT",
                headers={"Retry-After": "1"},
            )
            return render(request, error, cause=exc)
        log.warning("database unavailable: %s", type(exc).__name__)
        return render(request, Unavailable("the database is unavailable; retry shortly"), cause=exc)


def create_served_app(
    settings: Settings | None = None, database: Database | None = None
) -> FastAPI:
    """`create_app` for a server process (`signalscore serve`): then everything allocated so
    far (modules, the app, its routes and schemas), which lives as long as the process, is
    moved out of the collector's way, so a full collection walks only what requests allocate
    (measured: a full collection ~54 ms -> under 1 ms, the p95 of a ranked page 66 -> 35 ms;
    docs/benchmarks.md). Not in `create_app`: a test process builds many apps."""
    app = create_app(settings, database)
    gc.freeze()
    return app
