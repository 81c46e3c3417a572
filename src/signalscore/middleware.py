"""Pure ASGI middleware: request ids, the access log, the 500 envelope and the body limit."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from signalscore.errors import InternalError, PayloadTooLarge, error_response
from signalscore.observability import describe_exception

access_log = logging.getLogger("signalscore.access")
error_log = logging.getLogger("signalscore.error")

MAX_BODY_BYTES = 5 * 1024 * 1024
# Bulk imports (paths ending in `/import`) stream their bodies and hold a chunk at a time.
MAX_IMPORT_BODY_BYTES = 8 * 1024 * 1024 * 1024


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            try:
                return str(uuid.UUID(value.decode("latin-1")))
            except ValueError:
                break
    return str(uuid.uuid4())


class RequestContextMiddleware:
    """Outermost layer: gives every request an id, logs one JSON line per request and turns
    any exception that escaped the application into a 500 envelope without internals."""

    def __init__(self, app: ASGIApp, *, debug: bool = False, metrics: Any = None) -> None:
        self.app = app
        self.debug = debug
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-Id"] = request_id
                for name, value in state.get("rate_limit_headers", {}).items():
                    headers[name] = value
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            error_log.error(
                "unhandled exception request_id=%s\n%s", request_id, describe_exception(exc)
            )
            if started:
                raise
            cause = f"{type(exc).__name__}: {exc}" if self.debug else None
            response = error_response(
                InternalError("internal error; quote the requestId when reporting it"),
                request_id,
                debug_cause=cause,
            )
            await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None)
            line: dict[str, Any] = {
                "event": "request",
                "requestId": request_id,
                "organizationId": state.get("organization_id"),
                "method": scope.get("method"),
                "path": scope.get("path"),
                "route": route,
                "status": status,
                "durationMs": round(elapsed * 1000, 2),
            }
            access_log.info(
                "%s %s %s", scope.get("method"), scope.get("path"), status, extra={"fields": line}
            )
            if self.metrics is not None:
                # Unmatched paths share one label, so junk URLs cannot explode cardinality.
                self.metrics.observe_request(
                    route or "unmatched", str(scope.get("method")), status, elapsed
                )


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` (413) from the Content-Length header, or while streaming
    a chunked body, so an oversized request is never read into memory in full. Bulk imports
    (a path ending in `/import`), which read their bodies as a stream, get `import_max_bytes`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = MAX_BODY_BYTES,
        import_max_bytes: int = MAX_IMPORT_BODY_BYTES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.import_max_bytes = import_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.import_max_bytes if scope["path"].endswith("/import") else self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await self._reject(scope, receive, send, limit)
                    return
        received = 0
        too_large = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework may turn our exception into its own error response; once the
            # body has overflowed, whatever it answers is replaced by the 413 envelope.
            nonlocal rejected
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start" and not rejected:
                rejected = True
                await self._reject(scope, receive, send, limit)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not rejected:
                rejected = True
                await self._reject(scope, receive, send, limit)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        request_id = scope.get("state", {}).get("request_id", str(uuid.uuid4()))
        error = PayloadTooLarge(
            f"request body is larger than {limit // (1024 * 1024)} MiB",
            details={"maxBytes": limit},
        )
        await error_response(error, request_id)(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class HeadMiddleware:
    """`HEAD` on any path answers exactly as `GET` would, without the body (the framework's
    routes list GET only, so HEAD would otherwise be a 405)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)
