"""Exceptions: every non-2xx answer becomes an `ApiError` carrying the SPEC §3 envelope."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx


class SignalscoreError(Exception):
    """Base of every error this client raises."""


class ApiError(SignalscoreError):
    """The server answered with an error status. The envelope's fields are attributes."""

    def __init__(self, status: int, body: dict[str, Any] | None, *, method: str, url: str) -> None:
        error = (body or {}).get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        self.status = status
        self.method = method
        self.url = url
        self.type: str = str(error.get("type", ""))
        self.code: str = str(error.get("code", ""))
        self.error_code: str = str(error.get("errorCode", ""))
        self.error_action: str = str(error.get("errorAction", ""))
        self.message: str = str(error.get("message", f"HTTP {status}"))
        self.details: dict[str, Any] = dict(error.get("details") or {})
        self.request_id: str | None = error.get("requestId")
        self.fields: list[dict[str, Any]] = list(error.get("fields") or [])
        self.body = body
        super().__init__(f"{method} {url}: {status} {self.error_code or self.code}: {self.message}")


class TransportError(SignalscoreError):
    """The request could not be completed (connection refused, dropped, timed out) and was
    not retried, or its retries ran out. `sent` tells whether the request may have reached
    the server (a write may then have been applied)."""

    def __init__(self, message: str, *, sent: bool, cause: httpx.TransportError) -> None:
        super().__init__(message)
        self.sent = sent
        self.cause = cause


def error_for(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    return ApiError(
        response.status_code,
        body if isinstance(body, dict) else None,
        method=response.request.method,
        url=str(response.request.url),
    )
