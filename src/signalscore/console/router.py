"""`/console`: the web console (SPEC §14). Server-rendered pages over the API's own
services, so validation has one source of truth; see docs/console.md.

Every route runs under `ConsoleRoute`: the security headers on every response, a missing
session redirected to the sign-in page, and the API's errors rendered as pages (a 404 of
another organisation's profile is the same 404 page as an unknown one). Handlers are plain
`def`s run in the thread pool, one unit of work each, as the API's routes are.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, cast
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.routing import APIRoute
from starlette.responses import RedirectResponse, Response

from signalscore.assignments import service as assignments_service
from signalscore.auth import service as auth_service
from signalscore.console import sessions
from signalscore.console.charts import histogram, line_chart
from signalscore.console.csrf import (
    CSRF_FIELD,
    LOGIN_COOKIE,
    Forbidden,
    Form,
    check_origin,
    read_form,
)
from signalscore.console.forms import (
    MAX_TIER_ROWS,
    FieldErrors,
    RuleForm,
    TiersForm,
    validated,
)
from signalscore.console.pages import render, secure, static_response
from signalscore.db.engine import Database
from signalscore.errors import AppError, Invalid, NotFound
from signalscore.events import service as events_service
from signalscore.events.log import EVENT_TYPES
from signalscore.ids import uuid_or_404
from signalscore.objects import normalize_object_ids
from signalscore.preview import service as preview_service
from signalscore.preview.schemas import PreviewRequest
from signalscore.profiles import service as profiles_service
from signalscore.profiles.schemas import ProfileCreate, ProfileUpdate
from signalscore.ratelimit import RateLimiter
from signalscore.recompute import queue_status
from signalscore.rules import service as rules_service
from signalscore.rules.schemas import RuleUpsert
from signalscore.scores import counts as score_counts
from signalscore.scores import service as scores_service
from signalscore.scores.schemas import ScoreRow
from signalscore.signals import service as signals_service
from signalscore.vocabulary import DIMENSIONS, LIST_MODES, OBJECT_TYPES, Dimension
from signalscore.webhooks import service as webhooks_service
from signalscore.webhooks.schemas import WebhookCreate

#: Rows of a ranked page in the console.
RANKED_PAGE = 50
#: Events of an object's history a page shows (and charts).
HISTORY_PAGE = 100
DELIVERIES_SHOWN = 50
HISTOGRAM_BUCKETS = 10
# The rule editor's Preview scores a uniform random sample of this many objects of a larger
# profile (SPEC §12's `sampleSize`), so it answers at once at any size; "Preview every
# object" scores them all.
PREVIEW_SAMPLE = 2_000


class LoginRequired(Exception):
    """No live session: the route answers with a redirect to the sign-in page."""


class ConsoleRoute(APIRoute):
    """Security headers on every response; sign-in redirects; errors as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoginRequired:
                response = RedirectResponse("/console/login", status_code=303)
            except AppError as error:
                response = error_page(request, error)
            return secure(response)

        return console_handler


router = APIRouter(prefix="/console", route_class=ConsoleRoute, include_in_schema=False)


def error_page(request: Request, error: AppError) -> Response:
    titles = {403: "Refused", 404: "Not found", 422: "Not valid", 429: "Too many requests"}
    title = titles.get(error.status, "Something went wrong")
    message = error.message if error.status < 500 else "Quote the request id when reporting it."
    request_id = str(request.scope.get("state", {}).get("request_id", ""))
    response = render(
        request,
        "error.html",
        status=error.status,
        title=title,
        message=message,
        request_id=request_id,
        session=getattr(request.state, "console_session", None),
    )
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


# --- Dependencies ----------------------------------------------------------------------


def _database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


def current_session(request: Request) -> sessions.ConsoleSession:
    """The request's live session, or a redirect to the sign-in page. The organisation is
    the session's, never the request's: every service call below is scoped to it."""
    cookie = request.cookies.get(sessions.COOKIE_NAME)
    found = None
    if sessions.parse_cookie(cookie) is not None:
        with _database(request).read() as conn:
            found = sessions.find_session(conn, cookie)
    if found is None:
        raise LoginRequired
    request.state.organization_id = found.organization_id  # for the access log
    request.state.console_session = found
    return found


SessionDep = Annotated[sessions.ConsoleSession, Depends(current_session)]


async def checked_form(request: Request, session: SessionDep) -> Form:
    """A POST's form after the CSRF checks: same origin, and the session's token."""
    check_origin(request)
    form = await read_form(request)
    if not sessions.same_token(form.get(CSRF_FIELD) or None, session.csrf_token):
        raise Forbidden(
            "the form's CSRF token is missing or wrong; reload the page and try again",
            error_code="CSRF_TOKEN_INVALID",
        )
    return form


FormDep = Annotated[Form, Depends(checked_form)]


def _redirect(path: str, **query: str) -> RedirectResponse:
    target = path + ("?" + urlencode(query) if query else "")
    return RedirectResponse(target, status_code=303)


def _profile_id(value: str) -> uuid.UUID:
    return uuid_or_404(value, "scoring profile", "PROFILE_NOT_FOUND")


# --- Sign-in and sign-out ----------------------------------------------------------------


@router.get("")
def console_home() -> Response:
    return _redirect("/console/profiles")


@router.get("/")
def console_home_slash() -> Response:
    return _redirect("/console/profiles")


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    found = static_response(name)
    if found is None:
        raise NotFound("no such file")
    return found


def _login_page(request: Request, status: int = 200, error: str | None = None) -> Response:
    """The sign-in form, with a fresh double-submit token in a cookie and the form."""
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status=status,
        login_token=token,
        error=error,
        session_hours=sessions.SESSION_HOURS,
    )
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, **_cookie(request, "/console"))
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    """The sign-in page (a signed-in visitor goes straight to the profiles)."""
    cookie = request.cookies.get(sessions.COOKIE_NAME)
    if sessions.parse_cookie(cookie) is not None:
        with _database(request).read() as conn:
            if sessions.find_session(conn, cookie) is not None:
                return _redirect("/console/profiles")
    return _login_page(request)


def _cookie(request: Request, path: str) -> dict[str, Any]:
    """Every console cookie's attributes: HttpOnly, SameSite=Strict, Secure behind HTTPS."""
    return {
        "path": path,
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
    }


def _limiter(request: Request) -> RateLimiter | None:
    limiter: RateLimiter | None = request.app.state.rate_limiter
    return limiter


async def _login_form(request: Request) -> Form:
    check_origin(request)
    form = await read_form(request)
    expected = request.cookies.get(LOGIN_COOKIE)
    if not expected or not sessions.same_token(form.get("loginToken") or None, expected):
        raise Forbidden(
            "the sign-in form expired or came from elsewhere; reload it and sign in again",
            error_code="CSRF_TOKEN_INVALID",
        )
    return form


@router.post("/login")
def login(request: Request, form: Annotated[Form, Depends(_login_form)]) -> Response:
    """Exchange an API key for a session. The key is checked by the API's own key service
    (and failures count against the client address as the API's do); it is never stored,
    logged or shown again: only the session's hash is kept."""
    limiter = _limiter(request)
    address = request.client.host if request.client is not None else "unknown"
    if limiter is not None and limiter.address_blocked(address) is not None:
        return _login_page(
            request, 429, "Too many failed sign-ins from this address; wait a minute."
        )
    key = form.get("apiKey").strip()
    db = _database(request)
    found = auth_service.authenticate_cached(db, key, request.app.state.key_cache) if key else None
    if found is None:
        if limiter is not None:
            limiter.authentication_failed(address)
        return _login_page(
            request, 401, "That key is not valid: it is malformed, unknown or revoked."
        )
    org_id, key_id = found
    with db.write() as conn:
        opened = sessions.open_session(conn, org_id, key_id)
    request.state.organization_id = org_id
    response = _redirect("/console/profiles")
    response.set_cookie(
        sessions.COOKIE_NAME,
        opened.cookie,
        max_age=sessions.SESSION_HOURS * 3600,
        **_cookie(request, sessions.COOKIE_PATH),
    )
    response.delete_cookie(LOGIN_COOKIE, **_cookie(request, "/console"))
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, _form: FormDep) -> Response:
    """Sign out: the session's row is deleted, so its cookie opens nothing any more."""
    with _database(request).write() as conn:
        sessions.close_session(conn, session)
    response = _redirect("/console/login")
    response.delete_cookie(sessions.COOKIE_NAME, **_cookie(request, sessions.COOKIE_PATH))
    return response


# --- Profiles ----------------------------------------------------------------------------


def _profiles_page(
    request: Request,
    session: sessions.ConsoleSession,
    *,
    status: int = 200,
    values: dict[str, str] | None = None,
    errors: FieldErrors | None = None,
) -> Response:
    with _database(request).read() as conn:
        profiles = profiles_service.list_profiles(conn, session.organization_id)
    return render(
        request,
        "profiles.html",
        status=status,
        session=session,
        profiles=profiles,
        values=values or {"profileType": "company", "name": "", "description": ""},
        errors=errors or FieldErrors.none(),
    )


@router.get("/profiles")
def profiles_list(request: Request, session: SessionDep) -> Response:
    return _profiles_page(request, session)


@router.post("/profiles")
def profile_create(request: Request, session: SessionDep, form: FormDep) -> Response:
    values = {name: form.get(name) for name in ("profileType", "name", "description")}
    body: dict[str, Any] = {"profileType": values["profileType"], "name": values["name"]}
    if values["description"].strip():
        body["description"] = values["description"]
    try:
        checked = validated(ProfileCreate, body)
        with _database(request).write() as conn:
            profile = profiles_service.create_profile(conn, session.organization_id, checked)
    except Invalid as error:
        errors = FieldErrors.place(error, {"profileType", "name", "description"})
        return _profiles_page(request, session, status=422, values=values, errors=errors)
    return _redirect(f"/console/profiles/{profile.id}", saved="profile")


_SAVED = {
    "profile": "Profile created.",
    "rule": "Rule saved. Scores are being recomputed.",
    "deleted": "Rule deleted. Scores are being recomputed.",
    "tiers": "Tiers saved. Scores are being re-tiered.",
}


def _choice(value: str | None, allowed: tuple[str, ...], default: str) -> str:
    return value if value is not None and value in allowed else default


def _dimension(value: str | None, default: str = "fit") -> Dimension:
    return cast(Dimension, _choice(value, DIMENSIONS, default))


def _profile_page(
    request: Request,
    session: sessions.ConsoleSession,
    profile_id: uuid.UUID,
    *,
    status: int = 200,
    tiers_form: TiersForm | None = None,
    tier_errors: FieldErrors | None = None,
) -> Response:
    org_id = session.organization_id
    query = request.query_params
    with _database(request).read() as conn:
        profile = profiles_service.get_profile(conn, org_id, profile_id)
        rules = rules_service.list_rules(conn, org_id, profile_id)
        templates = signals_service.list_templates(conn, org_id, profile.type)
        ruled = [_dimension(d) for d in DIMENSIONS if any(r.dimension == d for r in rules)]
        dimension = _dimension(query.get("dimension"), ruled[0] if ruled else "fit")
        distributions = {
            d: scores_service.distribution(conn, org_id, profile_id, d, HISTOGRAM_BUCKETS)
            for d in ruled
        }
        tier = (query.get("tier") or "").strip()[:50] or None
        cursor = (query.get("cursor") or "")[:2000] or None
        ranked_error = None
        try:
            read = scores_service.RankedRead(
                dimension=dimension,
                tier=tier,
                limit=RANKED_PAGE,
                cursor=cursor,
            )
            ranked, next_cursor = scores_service.ranked_page(conn, org_id, profile_id, read)
        except Invalid as error:
            ranked, next_cursor, ranked_error = [], None, error.message
    names = {t.id: t.name for t in templates}
    next_query = None
    if next_cursor is not None:
        params = {"dimension": dimension, "cursor": next_cursor}
        if tier:
            params["tier"] = tier
        next_query = urlencode(params)
    return render(
        request,
        "profile.html",
        status=status,
        session=session,
        profile=profile,
        rules=rules,
        templates=templates,
        template_names=names,
        dimensions=DIMENSIONS,
        distributions=distributions,
        histograms={d: histogram(dist.histogram) for d, dist in distributions.items()},
        dimension=dimension,
        tier=tier,
        tiers_of_dimension=(profile.tiers or {}).get(dimension, []),
        ranked=ranked,
        ranked_error=ranked_error,
        first_page=cursor is not None,
        next_query=next_query,
        tiers_form=tiers_form or TiersForm.from_profile(profile.tiers, DIMENSIONS),
        tier_errors=tier_errors or FieldErrors.none(),
        max_tier_rows=MAX_TIER_ROWS,
        notice=_SAVED.get(query.get("saved") or ""),
    )


@router.get("/profiles/{profile_id}")
def profile_detail(profile_id: str, request: Request, session: SessionDep) -> Response:
    return _profile_page(request, session, _profile_id(profile_id))


@router.post("/profiles/{profile_id}/tiers")
def profile_tiers(
    profile_id: str, request: Request, session: SessionDep, form: FormDep
) -> Response:
    """Replace the profile's tiers (blank rows are left out; no rows: no tiers)."""
    pid = _profile_id(profile_id)
    org_id = session.organization_id
    tiers_form = TiersForm.from_post(form, DIMENSIONS)
    db = _database(request)
    with db.read() as conn:
        profile = profiles_service.get_profile(conn, org_id, pid)
    try:
        body = validated(ProfileUpdate, {"name": profile.name, "tiers": tiers_form.body()})
        with db.write(org=org_id) as conn:
            profiles_service.update_profile(conn, org_id, pid, body)
    except Invalid as error:
        errors = FieldErrors.place(error, tiers_form.anchors(), tiers_form.aliases)
        return _profile_page(
            request, session, pid, status=422, tiers_form=tiers_form, tier_errors=errors
        )
    return _redirect(f"/console/profiles/{pid}", saved="tiers")


# --- Rules -------------------------------------------------------------------------------


def _rule_page(
    request: Request,
    session: sessions.ConsoleSession,
    profile: Any,
    template: Any,
    rule_form: RuleForm,
    *,
    existing: bool,
    status: int = 200,
    errors: FieldErrors | None = None,
    preview: Any = None,
    assigned: int = 0,
) -> Response:
    previews = {}
    if preview is not None:
        for dimension, result in preview.dimensions.items():
            previews[dimension] = {
                "result": result,
                "before": histogram(result.before.histogram),
                "after": histogram(result.after.histogram),
            }
    return render(
        request,
        "rule.html",
        status=status,
        session=session,
        profile=profile,
        template=template,
        form=rule_form,
        existing=existing,
        errors=errors or FieldErrors.none(),
        preview=preview,
        previews=previews,
        assigned=assigned,
        list_modes=LIST_MODES,
    )


@router.get("/profiles/{profile_id}/rules/edit")
def rule_editor(profile_id: str, request: Request, session: SessionDep) -> Response:
    """The editor of the rule for (template, dimension): prefilled when it exists."""
    pid = _profile_id(profile_id)
    org_id = session.organization_id
    template_id = request.query_params.get("template") or ""
    dimension = _dimension(request.query_params.get("dimension"))
    with _database(request).read() as conn:
        profile = profiles_service.get_profile(conn, org_id, pid)
        template = signals_service.get_template(conn, org_id, template_id)
        rules = rules_service.list_rules(conn, org_id, pid)
    if template.objectType != profile.type:
        raise NotFound(f"signal template {template_id!r} is not for {profile.type} objects")
    rule = next(
        (r for r in rules if r.signalTemplateId == template.id and r.dimension == dimension), None
    )
    rule_form = (
        RuleForm.blank(template.id, dimension, template.answerType)
        if rule is None
        else RuleForm.from_rule(rule)
    )
    return _rule_page(request, session, profile, template, rule_form, existing=rule is not None)


def _proposed_rules(current: list[Any], edited: RuleUpsert) -> tuple[list[RuleUpsert], int]:
    """The current rules with `edited` in place of the one it replaces (or appended), and
    its index in the list."""
    proposed: list[RuleUpsert] = []
    index = None
    for rule in current:
        if (rule.signalTemplateId, rule.dimension) == (edited.signalTemplateId, edited.dimension):
            index = len(proposed)
            proposed.append(edited)
            continue
        proposed.append(
            RuleUpsert.model_validate(
                {
                    "signalTemplateId": rule.signalTemplateId,
                    "dimension": rule.dimension,
                    "answerType": rule.answerType,
                    "pointValues": rule.pointValues,
                    "decay": rule.decay,
                }
            )
        )
    if index is None:
        index = len(proposed)
        proposed.append(edited)
    return proposed, index


@router.post("/profiles/{profile_id}/rules")
def rule_save(profile_id: str, request: Request, session: SessionDep, form: FormDep) -> Response:
    """`action=preview`: the profile's rules with this one edited, previewed (writes
    nothing). `action=save`: the rule upserted, as `PUT .../rules` does."""
    pid = _profile_id(profile_id)
    org_id = session.organization_id
    db = _database(request)
    rule_form = RuleForm.from_post(form)
    with db.read() as conn:
        profile = profiles_service.get_profile(conn, org_id, pid)
        template = signals_service.get_template(conn, org_id, rule_form.template_id)
        current = rules_service.list_rules(conn, org_id, pid)
    existing = any(
        (r.signalTemplateId, r.dimension) == (rule_form.template_id, rule_form.dimension)
        for r in current
    )

    def page(**answer: Any) -> Response:
        return _rule_page(
            request, session, profile, template, rule_form, existing=existing, **answer
        )

    strip = ""
    try:
        body = rule_form.body()
        duplicates = rule_form.duplicate_labels()
        if duplicates:
            raise Invalid.listing(duplicates)
        edited: RuleUpsert = validated(RuleUpsert, body)
        if form.get("action") in ("preview", "preview-all"):
            proposed, index = _proposed_rules(current, edited)
            strip = f"rules[{index}]."
            with db.read() as conn:
                assigned = score_counts.assigned(conn, org_id, pid)
                sample = (
                    PREVIEW_SAMPLE
                    if form.get("action") == "preview" and assigned > PREVIEW_SAMPLE
                    else None
                )
                result = preview_service.preview(
                    conn, org_id, pid, PreviewRequest(rules=proposed, sampleSize=sample)
                )
            return page(preview=result, assigned=assigned)
        with db.write(org=org_id, rule_template=edited.signalTemplateId) as conn:
            rules_service.upsert_rule(conn, org_id, pid, edited)
    except Invalid as error:
        errors = FieldErrors.place(
            error, rule_form.anchors(), rule_form.aliases, strip_prefix=strip
        )
        return page(status=422, errors=errors)
    return RedirectResponse(f"/console/profiles/{pid}?saved=rule#rules", status_code=303)


def _rule_of(conn: Any, org_id: str, pid: uuid.UUID, rule_id: str) -> Any:
    rid = uuid_or_404(rule_id, "scoring rule", "RULE_NOT_FOUND")
    for rule in rules_service.list_rules(conn, org_id, pid):
        if rule.id == rid:
            return rule
    raise NotFound("scoring rule not found in this profile", error_code="RULE_NOT_FOUND")


@router.get("/profiles/{profile_id}/rules/{rule_id}/delete")
def rule_delete_confirm(
    profile_id: str, rule_id: str, request: Request, session: SessionDep
) -> Response:
    pid = _profile_id(profile_id)
    with _database(request).read() as conn:
        profile = profiles_service.get_profile(conn, session.organization_id, pid)
        rule = _rule_of(conn, session.organization_id, pid, rule_id)
    return render(request, "rule_delete.html", session=session, profile=profile, rule=rule)


@router.post("/profiles/{profile_id}/rules/{rule_id}/delete")
def rule_delete(
    profile_id: str, rule_id: str, request: Request, session: SessionDep, _form: FormDep
) -> Response:
    pid = _profile_id(profile_id)
    rid = uuid_or_404(rule_id, "scoring rule", "RULE_NOT_FOUND")
    with _database(request).write(org=session.organization_id) as conn:
        rules_service.delete_rule(conn, session.organization_id, pid, rid)
    return RedirectResponse(f"/console/profiles/{pid}?saved=deleted#rules", status_code=303)


# --- Objects -----------------------------------------------------------------------------

_OBJECT_NOT_FOUND = "object not found"


@router.get("/objects")
def object_detail(request: Request, session: SessionDep) -> Response:
    """An object's scores with each rule's contribution, its values, and its score history
    (charted, each step explained). Another organisation's object, like an unknown one, is
    a 404: nothing of it is in this organisation."""
    org_id = session.organization_id
    query = request.query_params
    object_type = query.get("objectType") or ""
    raw_id = (query.get("objectId") or "")[:600]
    cursor = (query.get("cursor") or "")[:2000] or None
    if object_type not in OBJECT_TYPES or not raw_id:
        raise NotFound(_OBJECT_NOT_FOUND, error_code="OBJECT_NOT_FOUND")
    try:
        (object_id,) = normalize_object_ids(object_type, [raw_id], field="objectId")
    except Invalid:
        raise NotFound(_OBJECT_NOT_FOUND, error_code="OBJECT_NOT_FOUND") from None
    with _database(request).read() as conn:
        scores = [
            ScoreRow.from_row(row)
            for row in scores_service.read_scores(
                conn, org_id, object_type, [object_id], None, None
            )
        ]
        values = signals_service.read_values(conn, org_id, object_type, [object_id])
        assignments = assignments_service.list_assignments(conn, org_id, object_type, object_id)
        read = events_service.HistoryRead(object_type, object_id, limit=HISTORY_PAGE, cursor=cursor)
        events, next_cursor = events_service.history(conn, org_id, read)
        if not (scores or values or assignments or events):
            raise NotFound(_OBJECT_NOT_FOUND, error_code="OBJECT_NOT_FOUND")
        profiles = {p.id: p for p in profiles_service.list_profiles(conn, org_id)}
        templates = {t.id: t for t in signals_service.list_templates(conn, org_id, object_type)}
    series: dict[tuple[uuid.UUID, str], list[Any]] = {}
    for event in reversed(events):  # oldest first
        series.setdefault((event.profile_id, event.dimension), []).append(
            (event.created_at, event.score)
        )

    def profile_name(profile_id: uuid.UUID) -> str:
        found = profiles.get(profile_id)
        return found.name if found is not None else "(deleted profile)"

    chart = line_chart(
        [(f"{profile_name(pid)} · {dim}", points) for (pid, dim), points in series.items()]
    )
    older = None
    if next_cursor is not None:
        older = urlencode({"objectType": object_type, "objectId": object_id, "cursor": next_cursor})
    return render(
        request,
        "object.html",
        session=session,
        object_type=object_type,
        object_id=object_id,
        scores=scores,
        values=values,
        assignments=assignments,
        events=events,
        chart=chart,
        older=older,
        profile_name=profile_name,
        templates=templates,
    )


# --- Webhooks and the queue --------------------------------------------------------------


def _webhooks_page(
    request: Request,
    session: sessions.ConsoleSession,
    *,
    status: int = 200,
    values: dict[str, Any] | None = None,
    errors: FieldErrors | None = None,
    created: Any = None,
) -> Response:
    with _database(request).read() as conn:
        webhooks = webhooks_service.list_webhooks(conn, session.organization_id)
    return render(
        request,
        "webhooks.html",
        status=status,
        session=session,
        webhooks=webhooks,
        event_types=EVENT_TYPES,
        values=values or {"url": "", "eventTypes": list(EVENT_TYPES), "description": ""},
        errors=errors or FieldErrors.none(),
        created=created,
    )


@router.get("/webhooks")
def webhooks_list(request: Request, session: SessionDep) -> Response:
    return _webhooks_page(request, session)


@router.post("/webhooks")
def webhook_create(request: Request, session: SessionDep, form: FormDep) -> Response:
    """Subscribe a URL; the page that answers is the only one that shows its secret."""
    values: dict[str, Any] = {
        "url": form.get("url"),
        "eventTypes": form.getlist("eventTypes"),
        "description": form.get("description"),
    }
    body: dict[str, Any] = {"url": values["url"], "eventTypes": values["eventTypes"]}
    if values["description"].strip():
        body["description"] = values["description"]
    allow_private = bool(request.app.state.settings.webhook_allow_private)
    try:
        checked = validated(WebhookCreate, body)
        with _database(request).write() as conn:
            created = webhooks_service.create(
                conn, session.organization_id, checked, allow_private=allow_private
            )
    except Invalid as error:
        errors = FieldErrors.place(error, {"url", "eventTypes", "description"})
        return _webhooks_page(request, session, status=422, values=values, errors=errors)
    return _webhooks_page(request, session, created=created)


def _webhook_id(value: str) -> uuid.UUID:
    return uuid_or_404(value, "webhook", "WEBHOOK_NOT_FOUND")


@router.get("/webhooks/{webhook_id}")
def webhook_detail(webhook_id: str, request: Request, session: SessionDep) -> Response:
    wid = _webhook_id(webhook_id)
    with _database(request).read() as conn:
        webhook = webhooks_service.get(conn, session.organization_id, wid)
        deliveries = webhooks_service.deliveries(
            conn, session.organization_id, wid, DELIVERIES_SHOWN
        )
    tested = request.query_params.get("tested") == "1"
    return render(
        request,
        "webhook.html",
        session=session,
        webhook=webhook,
        deliveries=deliveries,
        notice="Test event sent; its attempt is listed below." if tested else None,
    )


@router.post("/webhooks/{webhook_id}/test")
def webhook_test(
    webhook_id: str, request: Request, session: SessionDep, _form: FormDep
) -> Response:
    """Deliver one `webhook.test` event now; the attempt shows in the deliveries."""
    wid = _webhook_id(webhook_id)
    settings = request.app.state.settings
    with _database(request).write() as conn:
        webhooks_service.send_test_event(
            conn,
            session.organization_id,
            wid,
            allow_private=bool(settings.webhook_allow_private),
            timeout=settings.webhook_timeout_seconds,
        )
    return _redirect(f"/console/webhooks/{wid}", tested="1")


@router.get("/queue")
def queue_page(request: Request, session: SessionDep) -> Response:
    with _database(request).read() as conn:
        pending, running, oldest = queue_status(conn, session.organization_id)
    return render(
        request, "queue.html", session=session, pending=pending, running=running, oldest=oldest
    )


@router.get("/{rest:path}")
def console_not_found(rest: str, request: Request) -> Response:
    """Any other console path: the console's 404 page."""
    raise NotFound("no such page")
