"""Rendering: the Jinja2 environment, the security headers of every console response, and
the static files."""

from __future__ import annotations

import hashlib
from datetime import datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from signalscore.console.forms import field_id

#: No script runs in the console (`script-src 'none'`): forms and links do everything, and
#: charts are SVG drawn on the server with presentation attributes (no inline `style`).
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # Not `no-referrer`: under it Chromium sends `Origin: null` with a form post, which the
    # origin check must refuse. `same-origin` keeps URLs from other sites all the same.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

environment = Environment(
    loader=PackageLoader("signalscore.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
STATIC_FILES: dict[str, tuple[bytes, str]] = {}
for _entry in resources.files("signalscore.console").joinpath("static").iterdir():
    _suffix = "." + _entry.name.rsplit(".", 1)[-1]
    if _entry.is_file() and _suffix in _STATIC_TYPES:
        STATIC_FILES[_entry.name] = (_entry.read_bytes(), _STATIC_TYPES[_suffix])
_VERSIONS = {
    name: hashlib.sha256(content).hexdigest()[:12] for name, (content, _) in STATIC_FILES.items()
}


def static_url(name: str) -> str:
    """A static file's URL, versioned by its content (so it can be cached for long)."""
    return f"/console/static/{name}?v={_VERSIONS[name]}"


environment.globals.update(field_id=field_id, static_url=static_url)


def fmt_score(value: Any) -> str:
    if value is None:
        return "–"
    return f"{float(value):.2f}"


def fmt_number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fmt_time(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):  # a contribution's observedAt, stored as RFC 3339 text
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    return str(value.strftime("%Y-%m-%d %H:%M:%S UTC"))


environment.filters.update(score=fmt_score, number=fmt_number, time=fmt_time)


def secure(response: Response, *, cache: bool = False) -> Response:
    """The headers every console response carries."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault(
        "Cache-Control", "public, max-age=86400, immutable" if cache else "no-store"
    )
    return response


def render(request: Request, template_name: str, status: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("session", None)
    context.setdefault("notice", None)
    html = environment.get_template(template_name).render(path=request.url.path, **context)
    return HTMLResponse(html, status_code=status)


def static_response(name: str) -> Response | None:
    found = STATIC_FILES.get(name)
    if found is None:
        return None
    content, media_type = found
    return secure(Response(content, media_type=media_type), cache=True)


def describe_points(answer_type: str, point_values: dict[str, Any]) -> str:
    """A rule's points in a line: `true 20 · false -5`, `[0, 100) 5 · [100, …) 10`, or
    `Salesforce 10 · HubSpot 8 (additive)`."""
    if answer_type == "boolean":
        return " · ".join(
            f"{key} {fmt_number(point_values[key])}"
            for key in ("true", "false")
            if key in point_values
        )
    if answer_type == "list":
        choices = " · ".join(
            f"{label} {fmt_number(points)}"
            for label, points in point_values.get("choices", {}).items()
        )
        return f"{choices} ({point_values.get('mode', 'additive')})"
    parts = []
    for item in point_values.get("ranges", []):
        low = "…" if item.get("min") is None else fmt_number(item["min"])
        high = "…" if item.get("max") is None else fmt_number(item["max"])
        parts.append(f"[{low}, {high}) {fmt_number(item['points'])}")
    return " · ".join(parts)


def describe_decay(decay: dict[str, Any] | None) -> str:
    if not decay:
        return "none"
    return " · ".join(
        f"×{fmt_number(step['factor'])} after {step['afterDays']} d" for step in decay["steps"]
    )


environment.globals.update(describe_points=describe_points, describe_decay=describe_decay)
