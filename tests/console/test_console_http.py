"""The console over HTTP (SPEC §14), on both backends: sessions, CSRF, tenancy, headers,
the key's secrecy, and the pages' forms against the API's own validation."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.app import create_app
from signalscore.auth import service as auth_service
from signalscore.config import Settings
from signalscore.db.engine import Database
from signalscore.db.tables import console_sessions, scoring_rules
from signalscore.db.types import utcnow
from tests.api.conftest import World, build_world, snapshot
from tests.console.conftest import hidden_value, second_client, sign_in
from tests.helpers import Tenant, drain, fan_out

PAGES = (
    "/console/profiles",
    "/console/webhooks",
    "/console/queue",
    "/console/objects?objectType=company&objectId=acme.com",
)


def _sessions(database: Database) -> int:
    with database.read() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(console_sessions)).scalar_one()
        )


def _session_cookie(response: Any) -> str:
    cookies = [c for c in response.headers.get_list("set-cookie") if "signalscore_console=" in c]
    assert len(cookies) == 1, cookies
    return str(cookies[0])


# --- Sessions ------------------------------------------------------------------------


def test_signing_in_opens_a_server_side_session_with_a_strict_cookie(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": tenant.key},
        follow_redirects=False,
    )
    assert response.status_code == 303
    cookie = _session_cookie(response)
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
    assert "Max-Age=43200" in cookie
    value = cookie.split(";", 1)[0].split("=", 1)[1]
    assert tenant.key not in cookie
    with database.read() as conn:
        rows = conn.execute(sa.select(console_sessions)).all()
    assert len(rows) == 1
    assert rows[0].organization_id == tenant.org_id
    # Only a hash of the cookie's secret is stored.
    secret = value.split(".", 1)[1]
    assert secret not in repr(rows[0])
    assert rows[0].expires_at - rows[0].created_at == timedelta(hours=12)
    assert client.get("/console/profiles").status_code == 200


def test_the_cookie_is_secure_when_the_request_came_over_https(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    app = create_app(settings, database)
    with TestClient(app, base_url="https://testserver") as secure_client:
        page = secure_client.get("/console/login")
        assert "Secure" in page.headers["set-cookie"]  # the sign-in token's cookie too
        response = secure_client.post(
            "/console/login",
            data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": tenant.key},
            follow_redirects=False,
        )
        assert "Secure" in _session_cookie(response)


@pytest.mark.parametrize(
    "key",
    ["", "sk_live_" + "x" * 40, "not a key", "sk_live_short"],
    ids=["empty", "unknown", "malformed", "short"],
)
def test_a_bad_key_opens_no_session(client: TestClient, database: Database, key: str) -> None:
    page = client.get("/console/login")
    response = client.post(
        "/console/login",
        data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": key},
        follow_redirects=False,
    )
    assert response.status_code == 401
    assert "not valid" in response.text
    assert not [c for c in response.headers.get_list("set-cookie") if "signalscore_console=" in c]
    assert _sessions(database) == 0
    assert client.get("/console/profiles", follow_redirects=False).status_code == 303


def test_a_revoked_key_ends_its_sessions(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    sign_in(client, tenant.key)
    with database.write() as conn:
        auth_service.revoke_api_key(conn, auth_service.list_api_keys(conn, tenant.org_id)[0].prefix)
    response = client.get("/console/profiles", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"


def test_an_expired_session_is_refused(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    sign_in(client, tenant.key)
    with database.write() as conn:
        conn.execute(sa.update(console_sessions).values(expires_at=utcnow()))
    assert client.get("/console/profiles", follow_redirects=False).status_code == 303
    # The organisation's expired sessions go at its next sign-in.
    sign_in(client, tenant.key)
    assert _sessions(database) == 1


@pytest.mark.parametrize(
    "path", [*PAGES, "/console/profiles/" + "0" * 8 + "-0000-0000-0000-" + "0" * 12]
)
def test_unauthenticated_pages_redirect_to_the_sign_in_page(client: TestClient, path: str) -> None:
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"


def test_forged_cookies_open_nothing(client: TestClient, tenant: Tenant) -> None:
    for value in (
        "garbage",
        f"{tenant.org_id}.{'A' * 43}",
        f"{tenant.org_id}.../../etc",
        tenant.key,
    ):
        client.cookies.set("signalscore_console", value, path="/console")
        response = client.get("/console/profiles", follow_redirects=False)
        assert response.status_code == 303, value


def test_sign_out_ends_the_session_on_the_server(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    csrf = sign_in(client, tenant.key)
    cookie = client.cookies.get("signalscore_console")
    assert cookie
    response = client.post("/console/logout", data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"
    assert "Max-Age=0" in _session_cookie(response)
    assert _sessions(database) == 0
    # The old cookie, replayed, opens nothing: the session is gone, not just forgotten.
    replay = second_client(client)
    replay.cookies.set("signalscore_console", cookie, path="/console")
    assert replay.get("/console/profiles", follow_redirects=False).status_code == 303


# --- CSRF ------------------------------------------------------------------------------


def test_posts_without_the_right_csrf_token_are_refused_and_change_nothing(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    before = snapshot(database)
    # The right token but its last character: a guess that is almost right.
    near_miss = csrf[:-1] + ("1" if csrf[-1] == "0" else "0")
    create = {"profileType": "company", "name": "Forged", "description": ""}
    rule_delete = f"/console/profiles/{world.profile_id}/rules/{world.rule_id}/delete"
    tiers = f"/console/profiles/{world.profile_id}/tiers"
    attempts: list[tuple[str, dict[str, str], dict[str, str]]] = [
        ("/console/profiles", create, {}),
        ("/console/profiles", {**create, "csrf": "0" * 64}, {}),
        ("/console/profiles", {**create, "csrf": ""}, {}),
        (rule_delete, {}, {}),
        (rule_delete, {"csrf": near_miss}, {}),
        (tiers, {"tiers.fit[0].name": "A", "tiers.fit[0].minScore": "0"}, {}),
        ("/console/logout", {}, {}),
        # The right token, sent from another site's page.
        ("/console/profiles", {**create, "csrf": csrf}, {"Origin": "https://evil.example"}),
        ("/console/profiles", {**create, "csrf": csrf}, {"Origin": "null"}),
        ("/console/profiles", {**create, "csrf": csrf}, {"Origin": "http://testserver.evil"}),
        (rule_delete, {"csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for path, data, headers in attempts:
        response = client.post(path, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (path, data, headers)
        assert "text/html" in response.headers["content-type"]
    # Not a form at all.
    response = client.post("/console/profiles", json={**create, "csrf": csrf})
    assert response.status_code == 403
    assert snapshot(database) == before
    assert _sessions(database) == 1  # the failed sign-out did not sign out
    # The same post from the console's own origin works.
    response = client.post(
        "/console/profiles",
        data={**create, "csrf": csrf},
        headers={"Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert response.status_code == 303


def test_the_sign_in_form_is_protected_too(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    page = client.get("/console/login")
    token = hidden_value(page.text, "loginToken")
    for data, headers in (
        ({"apiKey": tenant.key}, {}),
        ({"apiKey": tenant.key, "loginToken": "x" * 43}, {}),
        ({"apiKey": tenant.key, "loginToken": token}, {"Origin": "https://evil.example"}),
    ):
        response = client.post("/console/login", data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403
    # A login token without its cookie (another browser's form) is refused as well.
    other = second_client(client)
    response = other.post(
        "/console/login", data={"apiKey": tenant.key, "loginToken": token}, follow_redirects=False
    )
    assert response.status_code == 403
    assert _sessions(database) == 0


# --- Tenancy ---------------------------------------------------------------------------


def test_another_organisation_sees_and_changes_nothing_of_a_profile(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    fan_out(database)
    drain(database)
    intruder = second_client(client)
    csrf = sign_in(intruder, other_tenant.key)
    before = snapshot(database)
    pid, rid = world.profile_id, world.rule_id
    for path in (
        f"/console/profiles/{pid}",
        f"/console/profiles/{pid}/rules/edit?template=employees&dimension=fit",
        f"/console/profiles/{pid}/rules/{rid}/delete",
        "/console/objects?objectType=company&objectId=acme.com",
    ):
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert "acme.com" not in response.text or "objects" in path
        assert "ICP" not in response.text
    rule = {
        "csrf": csrf,
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "pointValues.ranges[0].min": "0",
        "pointValues.ranges[0].max": "10",
        "pointValues.ranges[0].points": "1",
    }
    for path, data in (
        (f"/console/profiles/{pid}/rules", {**rule, "action": "save"}),
        (f"/console/profiles/{pid}/rules", {**rule, "action": "preview"}),
        (f"/console/profiles/{pid}/rules/{rid}/delete", {"csrf": csrf}),
        (
            f"/console/profiles/{pid}/tiers",
            {"csrf": csrf, "tiers.fit[0].name": "A", "tiers.fit[0].minScore": "0"},
        ),
    ):
        response = intruder.post(path, data=data, follow_redirects=False)
        assert response.status_code == 404, path
    assert snapshot(database) == before
    # Its own console lists none of them.
    assert "ICP" not in intruder.get("/console/profiles").text


# --- Headers and secrecy ---------------------------------------------------------------


def _script_sources(policy: str) -> str:
    directives = dict(
        ([*part.strip().split(" ", 1), ""])[:2] for part in policy.split(";") if part.strip()
    )
    return directives.get("script-src", directives.get("default-src", ""))


def test_every_console_response_has_a_content_security_policy_without_inline_scripts(
    client: TestClient, tenant: Tenant
) -> None:
    responses = [
        client.get("/console/login"),
        client.get("/console/profiles", follow_redirects=False),
    ]
    css = re.search(r'href="(/console/static/console\.css\?v=\w+)"', responses[0].text)
    assert css is not None
    sign_in(client, tenant.key)
    responses += [client.get(path) for path in PAGES]
    responses += [client.get("/console/nowhere"), client.get(css.group(1))]
    for response in responses:
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "unsafe-inline" not in _script_sources(policy)
        assert "unsafe-eval" not in policy
        assert "frame-ancestors 'none'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    assert responses[-1].headers["content-type"].startswith("text/css")
    assert "immutable" in responses[-1].headers["cache-control"]
    assert responses[-2].status_code == 404
    assert all(r.headers["cache-control"] == "no-store" for r in responses[:-1])
    # No script at all, inline or not.
    assert all("<script" not in r.text for r in responses[:-1])


def test_the_key_never_appears_in_a_page_or_a_log_line(
    client: TestClient, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    world = build_world(client, tenant)
    bodies: list[str] = []
    page = client.get("/console/login")
    bodies.append(page.text)
    failed = client.post(
        "/console/login",
        data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": tenant.key + "x"},
    )
    assert failed.status_code == 401
    bodies.append(failed.text)
    page = client.get("/console/login")
    done = client.post(
        "/console/login",
        data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": tenant.key},
    )
    bodies.append(done.text)
    for path in (*PAGES, f"/console/profiles/{world.profile_id}"):
        response = client.get(path)
        assert response.status_code == 200, path
        bodies.append(response.text)
        assert tenant.key not in str(response.url)
        assert tenant.key not in str(response.headers)
    secret = tenant.key[len("sk_live_") :]
    for body in bodies:
        assert secret not in body
    logged = [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    assert any("/console/login" in line for line in logged)  # the access log did run
    for line in logged:
        assert secret not in line
    # The access log names the organisation of a console request, like an API request.
    lines = [r for r in caplog.records if r.name == "signalscore.access"]
    assert any(
        getattr(r, "fields", {}).get("organizationId") == tenant.org_id
        and getattr(r, "fields", {}).get("path") == "/console/profiles"
        for r in lines
    )


# --- Pages -----------------------------------------------------------------------------


def _rule_form(csrf: str, ranges: list[tuple[str, str, str]], action: str) -> dict[str, str]:
    data = {
        "csrf": csrf,
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "action": action,
    }
    for i, (low, high, points) in enumerate(ranges):
        data |= {
            f"pointValues.ranges[{i}].min": low,
            f"pointValues.ranges[{i}].max": high,
            f"pointValues.ranges[{i}].points": points,
        }
    return data


def _field_html(html: str, field_id: str) -> str:
    """The `.field` block of the input with this id: its label, input and errors."""
    start = html.index(f'<label for="{field_id}"')
    end = html.index("</div>", start)
    return html[start:end]


def test_a_rule_with_a_bad_range_shows_the_error_at_its_field_and_writes_nothing(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    before = snapshot(database)
    path = f"/console/profiles/{world.profile_id}/rules"
    # Row 1 left blank: the API sees two ranges, and its `ranges[1].max` is row 2 here.
    data = _rule_form(csrf, [("0", "100", "5"), ("", "", ""), ("500", "100", "3")], "save")
    response = client.post(path, data=data)
    assert response.status_code == 422
    html = response.text
    field = _field_html(html, "f-pointValues-ranges-2-max")
    assert 'aria-invalid="true"' in field
    assert "&#39;min&#39; must be less than &#39;max&#39;" in field
    assert 'href="#f-pointValues-ranges-2-max"' in html  # the summary links to it
    assert 'aria-invalid="true"' not in _field_html(html, "f-pointValues-ranges-0-max")
    # The form comes back as it was sent.
    assert 'name="pointValues.ranges[2].min" type="text" value="500"' in html
    # Overlapping ranges are a row's error; a non-number is its field's.
    data = _rule_form(csrf, [("0", "100", "5"), ("50", "200", "x")], "save")
    html = client.post(path, data=data).text
    assert "must be a finite number" in _field_html(html, "f-pointValues-ranges-1-points")
    data = _rule_form(csrf, [("0", "100", "5"), ("50", "200", "1")], "preview")
    html = client.post(path, data=data).text
    row = html[html.index('id="f-pointValues-ranges-1"') :]
    assert "overlap" in row[: row.index("</fieldset>")]
    assert snapshot(database) == before


def test_a_rule_is_saved_through_the_api_service_and_queues_the_profile(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    editor = client.get(
        f"/console/profiles/{world.profile_id}/rules/edit?template=employees&dimension=fit"
    )
    assert editor.status_code == 200
    assert 'name="pointValues.ranges[0].max" type="text" value="100"' in editor.text
    data = _rule_form(csrf, [("0", "100", "5"), ("100", "", "12")], "save")
    data |= {"decay.steps[0].afterDays": "30", "decay.steps[0].factor": "0.5"}
    response = client.post(
        f"/console/profiles/{world.profile_id}/rules", data=data, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    rules = world.call("GET", "/v1/scoring/profiles/{pid}/rules").json()
    assert len(rules) == 1
    assert rules[0]["id"] == world.rule_id  # a replace keeps the rule's id
    assert rules[0]["pointValues"] == {
        "ranges": [
            {"min": 0, "max": 100, "points": 5},
            {"min": 100, "max": None, "points": 12},
        ]
    }
    assert rules[0]["decay"] == {"steps": [{"afterDays": 30, "factor": 0.5}]}
    page = client.get(response.headers["location"])
    assert "Rule saved." in page.text
    assert "[100, …) 12" in page.text


def test_a_list_rule_maps_choice_errors_to_their_rows(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    editor = client.get(
        f"/console/profiles/{world.profile_id}/rules/edit?template=crm&dimension=fit"
    )
    assert 'name="pointValues.mode"' in editor.text
    data = {
        "csrf": csrf,
        "signalTemplateId": "crm",
        "dimension": "fit",
        "answerType": "list",
        "pointValues.mode": "best-match",
        "pointValues.choices[0].label": "HubSpot",
        "pointValues.choices[0].points": "5",
        "pointValues.choices[1].label": "hubspot",
        "pointValues.choices[1].points": "3",
        "pointValues.choices[2].label": "Salesforce",
        "pointValues.choices[2].points": "lots",
        "action": "save",
    }
    before = snapshot(database)
    html = client.post(f"/console/profiles/{world.profile_id}/rules", data=data).text
    for index, text in ((1, "repeats"), (2, "finite number")):
        row = html[html.index(f'id="f-pointValues-choices-{index}"') :]
        assert text in row[: row.index("</fieldset>")]
    assert snapshot(database) == before
    data["pointValues.choices[1].label"] = "Pipedrive"
    data["pointValues.choices[2].points"] = "10"
    response = client.post(
        f"/console/profiles/{world.profile_id}/rules", data=data, follow_redirects=False
    )
    assert response.status_code == 303
    crm = [
        r
        for r in world.call("GET", "/v1/scoring/profiles/{pid}/rules").json()
        if r["signalTemplateId"] == "crm"
    ]
    assert crm[0]["pointValues"] == {
        "choices": {"HubSpot": 5, "Pipedrive": 3, "Salesforce": 10},
        "mode": "best-match",
    }


def _scored_world(client: TestClient, database: Database, tenant: Tenant) -> World:
    world = build_world(client, tenant)
    items = [
        {
            "objectType": "company",
            "objectId": f"c{i:02}.com",
            "signalTemplateId": "employees",
            "value": i * 4,
        }
        for i in range(60)
    ]
    assert world.call("PUT", "/v1/signals/values", json={"values": items}).status_code == 200
    bulk = world.call(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={
            "profileId": world.profile_id,
            "objectType": "company",
            "objectIds": [i["objectId"] for i in items],
        },
    )
    assert bulk.status_code == 201
    # Two rules, so scores spread: employees 0-100 earns 5, and 100 or more 10.
    put = world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        json={
            "signalTemplateId": "employees",
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {
                "ranges": [{"min": 0, "max": 100, "points": 5}, {"min": 100, "points": 10}]
            },
        },
    )
    assert put.status_code == 200
    tiers = world.call(
        "PUT",
        "/v1/scoring/profiles/{pid}",
        json={
            "name": "ICP",
            "tiers": {"fit": [{"name": "A", "minScore": 75}, {"name": "B", "minScore": 0}]},
        },
    )
    assert tiers.status_code == 200
    fan_out(database)
    drain(database)
    return world


def test_the_profile_page_shows_distributions_ranked_objects_and_tiers(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = _scored_world(client, database, tenant)
    sign_in(client, tenant.key)
    page = client.get(f"/console/profiles/{world.profile_id}")
    html = page.text
    assert page.status_code == 200
    assert '<svg viewBox="0 0 600 220" role="img"' in html
    assert 'data-testid="scored-fit">60<' in html
    # Tier counts: 35 objects of 100+ employees score 100 (A), 25 score 50 (B).
    assert re.search(r'<th scope="row">A</th><td>75</td><td>35</td>', html)
    assert re.search(r'<th scope="row">B</th><td>0</td><td>25</td>', html)
    ranked = re.findall(r"objectId=(c\d\d\.com)", html[html.index('id="ranked-table"') :])
    assert len(ranked) == 50
    assert ranked[0] == "c25.com"  # highest score, then objectId ascending
    next_link = re.search(r'href="(/console/profiles/[^"]+cursor=[^"#]+)#ranked" rel="next"', html)
    assert next_link is not None
    second = client.get(next_link.group(1).replace("&amp;", "&")).text
    rest = re.findall(r"objectId=(c\d\d\.com)", second[second.index('id="ranked-table"') :])
    assert len(rest) == 10
    assert not set(rest) & set(ranked)
    assert 'rel="next"' not in second
    only_b = client.get(f"/console/profiles/{world.profile_id}?dimension=fit&tier=B").text
    in_b = re.findall(r"objectId=(c\d\d\.com)", only_b[only_b.index('id="ranked-table"') :])
    assert in_b[0] == "c00.com"
    assert "c25.com" not in in_b
    bad_cursor = client.get(f"/console/profiles/{world.profile_id}?cursor=nonsense")
    assert bad_cursor.status_code == 200
    assert "cursor" in bad_cursor.text.lower()


def test_tiers_are_saved_and_their_errors_shown_at_their_fields(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    path = f"/console/profiles/{world.profile_id}/tiers"
    before = snapshot(database)
    data = {
        "csrf": csrf,
        "tiers.fit[0].name": "A",
        "tiers.fit[0].minScore": "80",
        "tiers.fit[1].name": "",
        "tiers.fit[1].minScore": "",
        "tiers.fit[2].name": "a",
        "tiers.fit[2].minScore": "150",
    }
    response = client.post(path, data=data)
    assert response.status_code == 422
    assert "from 0 to 100" in _field_html(response.text, "f-tiers-fit-2-minScore")
    assert snapshot(database) == before
    data["tiers.fit[2].minScore"] = "10"
    response = client.post(path, data=data)
    assert response.status_code == 422
    assert "used twice" in _field_html(response.text, "f-tiers-fit-2-name")
    data["tiers.fit[2].name"] = "C"
    assert client.post(path, data=data, follow_redirects=False).status_code == 303
    profile = world.call("GET", "/v1/scoring/profiles/{pid}").json()
    assert profile["tiers"] == {
        "fit": [{"name": "A", "minScore": 80}, {"name": "C", "minScore": 10}]
    }


def test_a_preview_shows_before_and_after_and_writes_nothing_until_applied(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = _scored_world(client, database, tenant)
    csrf = sign_in(client, tenant.key)
    before = snapshot(database)
    data = _rule_form(csrf, [("0", "50", "10"), ("50", "", "2")], "preview")
    response = client.post(f"/console/profiles/{world.profile_id}/rules", data=data)
    assert response.status_code == 200
    html = response.text
    assert "Preview: 60 objects" in html
    assert html.count('class="histogram"') == 2  # before and after
    assert re.search(r"<td>A</td><td>B</td><td class=\"num\">35</td>", html)
    assert re.search(r"<td>B</td><td>A</td><td class=\"num\">13</td>", html)
    movers = html[html.index('id="movers-fit"') :]
    movers = movers[: movers.index("</table>")]
    # The 20 largest moves: 100 -> 20 (100+ employees, now 2 of 10 points), by objectId.
    assert movers.count("<tr>") == 21
    assert "c25.com" in movers
    assert "c44.com" in movers
    assert "c45.com" not in movers
    assert "-80.00" in movers
    assert snapshot(database) == before
    # The previewed rule rides along in the form; "apply" saves exactly it.
    assert 'name="pointValues.ranges[1].min" type="text" value="50"' in html
    data["action"] = "save"
    applied = client.post(
        f"/console/profiles/{world.profile_id}/rules", data=data, follow_redirects=False
    )
    assert applied.status_code == 303
    with database.read() as conn:
        stored = conn.execute(sa.select(scoring_rules.c.point_values)).scalars().all()
    assert stored == [
        {"ranges": [{"min": 0, "max": 50, "points": 10}, {"min": 50, "max": None, "points": 2}]}
    ]


def test_a_large_profile_is_previewed_on_a_sample_and_every_object_on_request(
    client: TestClient, database: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The editor's Preview scores a uniform sample of `PREVIEW_SAMPLE` objects of a larger
    profile and says so; "Preview every object" scores them all."""
    from signalscore.console import router as console_router

    monkeypatch.setattr(console_router, "PREVIEW_SAMPLE", 25)
    world = _scored_world(client, database, tenant)
    csrf = sign_in(client, tenant.key)
    before = snapshot(database)
    path = f"/console/profiles/{world.profile_id}/rules"
    data = _rule_form(csrf, [("0", "50", "10"), ("50", "", "2")], "preview")
    sampled = client.post(path, data=data)
    assert sampled.status_code == 200
    assert "Preview: a random sample of 25 of the 60 objects" in sampled.text
    assert 'value="preview-all"' in sampled.text
    data["action"] = "preview-all"
    everything = client.post(path, data=data)
    assert everything.status_code == 200
    assert "Preview: 60 objects" in everything.text
    assert 'value="preview-all"' not in everything.text
    assert snapshot(database) == before


def test_the_object_page_explains_scores_values_and_history(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = _scored_world(client, database, tenant)
    write = world.call(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "c30.com",
                    "signalTemplateId": "employees",
                    "value": 20,
                    "observedAt": "2026-01-02T03:04:05Z",
                }
            ]
        },
    )
    assert write.status_code == 200
    drain(database)
    sign_in(client, tenant.key)
    page = client.get("/console/objects?objectType=company&objectId=C30.COM")
    assert page.status_code == 200
    html = page.text
    assert "20 (0–100)" in html  # the contribution's matchedValue
    assert "2026-01-02 03:04:05" in html  # observedAt of the value and the contribution
    assert 'class="linechart"' in html
    assert "120 (≥100)" in html
    assert "→" in html
    events = html[html.index('class="events"') :]
    assert events.count("<li>") >= 2
    assert (
        client.get("/console/objects?objectType=company&objectId=nobody.example").status_code == 404
    )
    assert (
        client.get("/console/objects?objectType=company&objectId=https://bad/").status_code == 404
    )
    assert client.get("/console/objects?objectType=robot&objectId=c30.com").status_code == 404


def test_rules_are_deleted_after_a_confirmation(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    world = build_world(client, tenant)
    csrf = sign_in(client, tenant.key)
    path = f"/console/profiles/{world.profile_id}/rules/{world.rule_id}/delete"
    confirm = client.get(path)
    assert confirm.status_code == 200
    assert "Delete rule" in confirm.text
    assert world.call("GET", "/v1/scoring/profiles/{pid}/rules").json() != []
    response = client.post(path, data={"csrf": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert world.call("GET", "/v1/scoring/profiles/{pid}/rules").json() == []
    assert client.post(path, data={"csrf": csrf}).status_code == 404


def test_profiles_are_created_with_the_apis_validation(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    csrf = sign_in(client, tenant.key)
    before = snapshot(database)
    response = client.post(
        "/console/profiles",
        data={"csrf": csrf, "profileType": "robot", "name": "   ", "description": ""},
    )
    assert response.status_code == 422
    assert "1-200 characters" in _field_html(response.text, "f-name")
    assert 'aria-invalid="true"' in response.text[response.text.index('id="f-profileType"') :][:200]
    assert snapshot(database) == before
    response = client.post(
        "/console/profiles",
        data={"csrf": csrf, "profileType": "contact", "name": "Buyers <b>", "description": "x"},
        follow_redirects=False,
    )
    assert response.status_code == 303
    page = client.get(response.headers["location"]).text
    assert "Buyers &lt;b&gt;" in page  # escaped
    assert "Profile created." in page


def test_webhooks_are_created_with_their_secret_shown_once(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    csrf = sign_in(client, tenant.key)
    response = client.post(
        "/console/webhooks",
        data={"csrf": csrf, "url": "http://127.0.0.1/hook", "eventTypes": "score.changed"},
    )
    assert response.status_code == 422
    assert 'aria-invalid="true"' in _field_html(response.text, "f-url")
    response = client.post(
        "/console/webhooks",
        # A public address, written as one: nothing to resolve on a machine without DNS.
        data={
            "csrf": csrf,
            "url": "https://93.184.215.14/in",
            "eventTypes": ["score.changed", "score.tier_changed"],
            "description": "",
        },
    )
    assert response.status_code == 200
    assert "whsec_" in response.text
    listing = client.get("/console/webhooks").text
    assert "93.184.215.14" in listing
    assert "whsec_" not in listing
    detail = re.search(r'href="(/console/webhooks/[0-9a-f-]{36})"', listing)
    assert detail is not None
    assert "No deliveries yet" in client.get(detail.group(1)).text
    assert client.get("/console/queue").status_code == 200


def test_a_webhook_test_event_is_sent_and_its_delivery_listed(
    client: TestClient, tenant: Tenant
) -> None:
    from tests.api.test_webhooks import Receiver

    state = client.app.state  # type: ignore[attr-defined]
    state.settings = state.settings.model_copy(update={"webhook_allow_private": True})
    receiver = Receiver()
    try:
        csrf = sign_in(client, tenant.key)
        created = client.post(
            "/console/webhooks",
            data={"csrf": csrf, "url": receiver.url, "eventTypes": ["score.changed"]},
        )
        assert created.status_code == 200, created.text
        found = re.search(r'href="(/console/webhooks/[0-9a-f-]{36})"', created.text)
        assert found is not None
        detail = found.group(1)
        refused = client.post(f"{detail}/test", data={}, follow_redirects=False)
        assert refused.status_code == 403
        assert receiver.requests == []
        sent = client.post(f"{detail}/test", data={"csrf": csrf}, follow_redirects=False)
        assert sent.status_code == 303
        assert [e["type"] for e in receiver.events()] == ["webhook.test"]
        page = client.get(sent.headers["location"]).text
        assert "Test event sent" in page
        assert "HTTP 200" in page
    finally:
        receiver.close()
