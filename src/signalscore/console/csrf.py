"""Cross-site request forgery defences of the console's forms, three deep:

1. the session cookie is `SameSite=Strict`, so a browser never sends it with a request that
   another site starts;
2. every POST carries the session's CSRF token in a hidden field (`csrf`), compared in
   constant time; sign-in, which has no session yet, uses a double-submit token (a random
   value in a `SameSite=Strict` cookie and in the form);
3. a POST whose `Origin` header names another origin (or `null`), or whose
   `Sec-Fetch-Site` says `cross-site`, is refused before anything else is looked at.

Forms are `application/x-www-form-urlencoded`, parsed here (no multipart dependency).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request

from signalscore.errors import AppError

#: A console form is small; anything larger is not one of ours.
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 2_000
CSRF_FIELD = "csrf"
LOGIN_COOKIE = "signalscore_console_login"


class Forbidden(AppError):
    """403: a cross-site or tokenless form post. Rendered as a page by the console."""

    status = 403
    type = "FORBIDDEN"
    code = "FORBIDDEN"
    default_error_code = "CSRF_CHECK_FAILED"
    error_action = "FIX_REQUEST"


def _default_port(scheme: str) -> int | None:
    return {"http": 80, "https": 443}.get(scheme)


def _host_port(netloc: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{netloc}")
    try:
        port = parts.port
    except ValueError:
        port = -1
    return (parts.hostname or "").lower(), port or _default_port(scheme)


def check_origin(request: Request) -> None:
    """Refuse a cross-origin POST (see the module docstring). Only the host and port are
    compared with the request's own `Host`: behind a proxy that terminates TLS, the browser's
    `https://` origin reaches the server as plain HTTP."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() == "cross-site":
        raise Forbidden("cross-site form posts are refused", error_code="CROSS_SITE_REQUEST")
    origin = request.headers.get("origin")
    if origin is None:
        return
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    if (
        origin == "null"
        or parts.scheme not in ("http", "https")
        or not host
        or _host_port(parts.netloc, parts.scheme) != _host_port(host, parts.scheme)
    ):
        raise Forbidden("cross-origin form posts are refused", error_code="CROSS_ORIGIN_REQUEST")


class Form:
    """A parsed urlencoded form: `get` the last value of a name, `getlist` all of them."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._last = dict(pairs)

    def get(self, name: str, default: str = "") -> str:
        return self._last.get(name, default)

    def getlist(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]

    def __contains__(self, name: object) -> bool:
        return name in self._last


async def read_form(request: Request) -> Form:
    """The fields of a urlencoded form. Anything else is refused (403): a console form is
    always urlencoded, so another body was not sent by one of its pages."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Forbidden("console forms are sent urlencoded", error_code="NOT_A_FORM")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise Forbidden("the form is too large", error_code="FORM_TOO_LARGE")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8", "replace"),
            keep_blank_values=True,
            max_num_fields=MAX_FORM_FIELDS,
            errors="replace",
        )
    except ValueError:
        raise Forbidden("the form has too many fields", error_code="FORM_TOO_LARGE") from None
    return Form(pairs)
