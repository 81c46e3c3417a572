"""The error hierarchy and the one renderer of the SPEC §3 envelope.

Routes raise `AppError` subclasses; framework errors (unknown route, wrong method, bad JSON,
validation) are translated here too, so every non-2xx body has the same shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import orjson
from pydantic import BaseModel, Field
from starlette.responses import Response

ErrorAction = Literal["FIX_REQUEST", "CHECK_CREDENTIALS", "RETRY", "NONE"]


class FieldError(BaseModel):
    """One wrong field: where (a JSON path), why (a code) and what to do (a message)."""

    field: str = Field(description="JSON path of the offending field, e.g. `values[7].value`.")
    message: str
    code: str = Field(
        default="INVALID_FIELD",
        description="The specific reason for this field in UPPER_SNAKE_CASE, e.g. "
        "`INVALID_DOMAIN`; the envelope's `errorCode` is the code of the first listed field.",
    )


class FieldProblem(ValueError):
    """Raised by a check that knows why a value is wrong but not where it sits in the request
    (an object id, a signal value); the caller places it with `at(path)`. `suffix` is a path
    below the value, e.g. `[3]` for a list item."""

    def __init__(self, code: str, message: str, suffix: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.suffix = suffix

    def at(self, path: str) -> FieldError:
        return FieldError(field=path + self.suffix, code=self.code, message=self.message)


class Problems:
    """Collects every wrong field of a request, so one 422 lists them all."""

    def __init__(self) -> None:
        self.fields: list[FieldError] = []

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def add(self, field: str, code: str, message: str) -> None:
        self.fields.append(FieldError(field=field, code=code, message=message))

    def extend(self, fields: Sequence[FieldError]) -> None:
        self.fields.extend(fields)

    def raise_if_any(self, *, what: str = "fields", error: type[Invalid] | None = None) -> None:
        """Raise one `Invalid` (or the given subclass) listing every collected field."""
        if self.fields:
            raise (error or Invalid).listing(self.fields, what=what)


class ErrorDebug(BaseModel):
    cause: str


class ErrorBody(BaseModel):
    type: str = Field(description="Broad class: VALIDATION, AUTHENTICATION, NOT_FOUND, ...")
    code: str = Field(description="Machine code of the HTTP-level error, e.g. VALIDATION_ERROR.")
    message: str
    errorCode: str = Field(description="The specific reason in UPPER_SNAKE_CASE.")
    errorAction: ErrorAction
    details: dict[str, Any]
    requestId: str = Field(description="Also sent as the X-Request-Id header.")
    fields: list[FieldError]
    debug: ErrorDebug | None = Field(
        default=None, description="Only present when the server runs with debug enabled."
    )


class ErrorEnvelope(BaseModel):
    """The body of every non-2xx response."""

    error: ErrorBody


class AppError(Exception):
    """Base of every error the application raises on purpose."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "INTERNAL"
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_error_code: ClassVar[str] = "INTERNAL_ERROR"
    error_action: ClassVar[ErrorAction] = "NONE"

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        fields: Sequence[FieldError] = (),
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or self.default_error_code
        self.fields = list(fields)
        self.details = dict(details or {})
        self.headers = dict(headers or {})


class BadRequest(AppError):
    status = 400
    type = "VALIDATION"
    code = "VALIDATION_ERROR"
    default_error_code = "MALFORMED_JSON"
    error_action = "FIX_REQUEST"


class Unauthorized(AppError):
    status = 401
    type = "AUTHENTICATION"
    code = "UNAUTHORIZED"
    default_error_code = "INVALID_API_KEY"
    error_action = "CHECK_CREDENTIALS"


class NotFound(AppError):
    status = 404
    type = "NOT_FOUND"
    code = "NOT_FOUND"
    default_error_code = "NOT_FOUND"
    error_action = "FIX_REQUEST"


class MethodNotAllowed(AppError):
    status = 405
    type = "VALIDATION"
    code = "METHOD_NOT_ALLOWED"
    default_error_code = "METHOD_NOT_ALLOWED"
    error_action = "FIX_REQUEST"


class Conflict(AppError):
    status = 409
    type = "CONFLICT"
    code = "CONFLICT"
    default_error_code = "CONFLICT"
    error_action = "FIX_REQUEST"


class PayloadTooLarge(AppError):
    status = 413
    type = "VALIDATION"
    code = "PAYLOAD_TOO_LARGE"
    default_error_code = "PAYLOAD_TOO_LARGE"
    error_action = "FIX_REQUEST"


class Gone(AppError):
    status = 410
    type = "GONE"
    code = "GONE"
    default_error_code = "GONE"
    error_action = "NONE"


class UnsupportedMediaType(AppError):
    status = 415
    type = "VALIDATION"
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_error_code = "UNSUPPORTED_MEDIA_TYPE"
    error_action = "FIX_REQUEST"


class Invalid(AppError):
    status = 422
    type = "VALIDATION"
    code = "VALIDATION_ERROR"
    default_error_code = "INVALID_FIELD"
    error_action = "FIX_REQUEST"

    @classmethod
    def listing(cls, fields: Sequence[FieldError], *, what: str = "fields") -> Invalid:
        """One error for every bad field, summarised: the field itself when there is one,
        else how many `what` (e.g. "object ids") were bad. The `errorCode` is the first
        field's code."""
        if len(fields) == 1:
            message = f"validation failed for '{fields[0].field}': {fields[0].message}"
        else:
            message = f"validation failed for {len(fields)} {what}; nothing was changed"
        return cls(message, error_code=fields[0].code if fields else None, fields=fields)

    @classmethod
    def one(cls, field: str, code: str, message: str, **kwargs: Any) -> Invalid:
        """A 422 about a single field, whose message is the error's message."""
        return cls(
            message,
            error_code=code,
            fields=[FieldError(field=field, code=code, message=message)],
            **kwargs,
        )


class InvalidPointValues(Invalid):
    code = "INVALID_POINT_VALUES"
    default_error_code = "INVALID_POINT_VALUES"


class RateLimited(AppError):
    status = 429
    type = "RATE_LIMIT"
    code = "TOO_MANY_REQUESTS"
    default_error_code = "RATE_LIMITED"
    error_action = "RETRY"


class InternalError(AppError):
    pass


class Unavailable(AppError):
    status = 503
    type = "UNAVAILABLE"
    code = "SERVICE_UNAVAILABLE"
    default_error_code = "DATABASE_UNAVAILABLE"
    error_action = "RETRY"


# Bounds on every error body, whatever the request held: at most this many `fields` (the
# total is then in `details.fieldCount`), and every text cut to this many characters.
MAX_LISTED_FIELDS = 100
MAX_ERROR_TEXT = 300
_MAX_DETAIL_ITEMS = 100
_SURROGATES = re.compile("[\ud800-\udfff]")


def bounded_text(value: object, limit: int = MAX_ERROR_TEXT) -> str:
    """`value` as text that any JSON encoder accepts (lone surrogates become U+FFFD) and at
    most `limit` characters (longer text ends with `…`)."""
    text = _SURROGATES.sub("\ufffd", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bounded(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return bounded_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth > 4:
        return bounded_text(value)
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_DETAIL_ITEMS]
        return {bounded_text(k, 100): _bounded(v, depth + 1) for k, v in items}
    if isinstance(value, list | tuple):
        return [_bounded(v, depth + 1) for v in value[:_MAX_DETAIL_ITEMS]]
    return bounded_text(value)


def _envelope(error: AppError, request_id: str, debug_cause: str | None) -> bytes:
    details = dict(error.details)
    fields = error.fields
    if len(fields) > MAX_LISTED_FIELDS:
        details["fieldCount"] = len(fields)
        fields = fields[:MAX_LISTED_FIELDS]
    body: dict[str, Any] = {
        "type": error.type,
        "code": error.code,
        "message": bounded_text(error.message),
        "errorCode": bounded_text(error.error_code, 100),
        "errorAction": error.error_action,
        "details": _bounded(details),
        "requestId": request_id,
        "fields": [
            {
                "field": bounded_text(f.field),
                "message": bounded_text(f.message),
                "code": bounded_text(f.code, 100),
            }
            for f in fields
        ],
    }
    if debug_cause is not None:
        body["debug"] = {"cause": bounded_text(debug_cause, 2000)}
    return orjson.dumps({"error": body})


def error_response(error: AppError, request_id: str, *, debug_cause: str | None = None) -> Response:
    """Render the SPEC §3 envelope for `error`. Never fails, whatever the error carries."""
    try:
        content = _envelope(error, request_id, debug_cause)
    except Exception:  # the renderer of last resort must not become a 500 of its own
        minimal = {
            "type": error.type,
            "code": error.code,
            "message": "the error could not be described",
            "errorCode": error.default_error_code,
            "errorAction": error.error_action,
            "details": {},
            "requestId": request_id,
            "fields": [],
        }
        content = orjson.dumps({"error": minimal})
    headers = {"X-Request-Id": request_id, **error.headers}
    return Response(
        content, status_code=error.status, media_type="application/json", headers=headers
    )


# Every documented error status, for the OpenAPI document.
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Body is not parseable JSON",
    401: "API key missing, malformed, unknown or revoked",
    404: "Unknown route, or the resource does not exist in your organisation",
    405: "Wrong method on a known path",
    409: "Conflict with the current state (duplicate id, resource in use)",
    410: "What was asked for is no longer kept (events past their retention)",
    413: "Body over 5 MiB (8 GiB for a bulk import)",
    415: "A bulk import's body is neither NDJSON nor CSV",
    422: "A field is invalid; every bad field is listed in `fields`",
    429: "Rate limit exceeded",
    500: "Unexpected failure",
    502: "Every dispatch failed",
    503: "Database unreachable; retry after `Retry-After` seconds",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting the envelope for the given statuses."""
    return {s: {"model": ErrorEnvelope, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}
