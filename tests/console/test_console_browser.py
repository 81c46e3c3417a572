"""The console end to end in a real browser: headless Chromium from Debian's `chromium`
package (`scripts/bootstrap dev` installs it), driven by Playwright for Python with its
`executable_path` (Playwright's own browser download is never used), against a real
`signalscore serve` on a fresh SQLite file with its embedded worker.

Without Chromium (or Playwright) these tests skip with the reason, except under `CI=true`,
where that is a failure, as for PostgreSQL. Select them with `-m browser`.

`SIGNALSCORE_CONSOLE_SCREENSHOTS=DIR` keeps a screenshot of each page in DIR (the ones in
docs/console/ were made so).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head

pytestmark = pytest.mark.browser

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM = os.environ.get("SIGNALSCORE_CHROMIUM", "/usr/bin/chromium")
SERVER_BIN = Path(sys.executable).parent / "signalscore"
SCREENSHOTS = os.environ.get("SIGNALSCORE_CONSOLE_SCREENSHOTS")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable() -> str | None:
    if shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (scripts/bootstrap dev installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (scripts/bootstrap dev)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _unavailable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: the browser tests must run", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@dataclass
class Server:
    url: str
    key: str
    log: Path

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kwargs)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`signalscore serve` on a fresh SQLite file, its organisation made beforehand (so the
    server prints no key); the server's whole log is kept to be searched for the key.
    (After `browser`: without a browser there is nothing to serve.)"""
    folder = tmp_path_factory.mktemp("console-e2e")
    database_url = f"sqlite:///{folder / 'signalscore.db'}"
    engine = create_db_engine(database_url)
    upgrade_to_head(engine)
    database = Database(engine)
    with database.write() as conn:
        _, issued = auth_service.create_organization(conn, "Browser tests")
    database.dispose()
    port = _free_port()
    log = folder / "server.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                str(SERVER_BIN),
                "serve",
                "--port",
                str(port),
                "--database-url",
                database_url,
                "--log-level",
                "info",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    running = Server(f"http://127.0.0.1:{port}", issued.key, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{running.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready in 60 s"
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    # Whatever the tests did, the key never reached the server's log.
    text = log.read_text()
    assert "/console/login" in text  # the access log was on
    assert issued.key[len("sk_live_") :] not in text


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    """A fresh browser context (no cookies) at the desktop size; CSP reports collected."""
    context = browser.new_context(viewport=DESKTOP, base_url=server.url)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    violations: list[str] = []

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            violations.append(message.text)

    opened.on("console", on_console)
    yield opened
    context.close()
    assert violations == [], violations


def _shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def _sign_in(page: Any, server: Server) -> None:
    page.goto("/console/profiles")
    assert page.url.endswith("/console/login")  # not signed in: sent to sign in
    page.get_by_label("API key").fill(server.key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/console/profiles")


def _until(page: Any, check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Reload the page until `check()` holds: the embedded worker scores in the background."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not show within {seconds} s"
        time.sleep(0.3)
        page.reload()


_WIDER_THAN = """width => Array.from(document.querySelectorAll("body *"))
    .filter(e => e.getBoundingClientRect().right > width).slice(0, 8)
    .map(e => `${e.tagName}#${e.id}.${e.className} ${e.getBoundingClientRect().right}`)"""


def _no_overflow(page: Any, width: int) -> None:
    """No horizontal scrolling of the page itself (a wide table scrolls in its own box)."""
    scroll = page.evaluate("document.documentElement.scrollWidth")
    if scroll > width:
        wide = page.evaluate(_WIDER_THAN, width)
        pytest.fail(f"{page.url} is {scroll} px wide in a {width} px viewport: {wide}")


def _template(server: Server, template_id: str, answer_type: str) -> None:
    created = server.api(
        "POST",
        "/v1/signals/templates",
        json={
            "id": template_id,
            "name": template_id.title(),
            "objectType": "company",
            "answerType": answer_type,
        },
    )
    assert created.status_code in (201, 409), created.text


def _create_profile(page: Any, name: str) -> str:
    page.goto("/console/profiles")
    page.get_by_label("Scores").select_option("company")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_role("button", name="Create profile").click()
    page.wait_for_url(re.compile(r".*/console/profiles/[0-9a-f-]{36}\?saved=profile"))
    assert page.get_by_role("heading", level=1).inner_text() == name
    return str(page.url.split("/console/profiles/")[1].split("?")[0])


def test_sign_in_configure_score_explain_preview_apply_and_sign_out(
    page: Any, server: Server
) -> None:
    _template(server, "employees", "number")
    _sign_in(page, server)
    _shot(page, "profiles")

    # A profile, and a rule whose bad range shows its error at the field.
    profile_id = _create_profile(page, "Ideal customers")
    page.get_by_label("Signal").select_option("employees")
    page.get_by_label("Dimension", exact=True).first.select_option("fit")
    page.get_by_role("button", name="Add or edit rule").click()
    page.wait_for_url("**/rules/edit?*")
    page.locator("#f-pointValues-ranges-0-min").fill("0")
    page.locator("#f-pointValues-ranges-0-max").fill("100")
    page.locator("#f-pointValues-ranges-0-points").fill("5")
    page.locator("#f-pointValues-ranges-1-min").fill("1000")
    page.locator("#f-pointValues-ranges-1-max").fill("100")
    page.locator("#f-pointValues-ranges-1-points").fill("25")
    page.get_by_role("button", name="Save without preview").click()
    bad = page.locator("#f-pointValues-ranges-1-max")
    assert bad.get_attribute("aria-invalid") == "true"
    error_id = bad.get_attribute("aria-describedby")
    assert "must be less than" in page.locator(f"#{error_id}").inner_text()
    assert page.locator("#f-pointValues-ranges-1-max-error-1").is_visible()
    assert page.locator("#f-pointValues-ranges-0-max").get_attribute("aria-invalid") is None
    _shot(page, "rule-error")
    rules = server.api("GET", f"/v1/scoring/profiles/{profile_id}/rules").json()
    assert rules == []  # nothing written
    page.locator("#f-pointValues-ranges-1-min").fill("100")
    page.locator("#f-pointValues-ranges-1-max").fill("")
    page.get_by_role("button", name="Save without preview").click()
    page.wait_for_url(f"**/console/profiles/{profile_id}?saved=rule*")
    assert "Rule saved" in page.locator(".notice").inner_text()
    assert "[100, …) 25" in page.locator("#rules").inner_text()

    # Values and assignments through the API; the worker scores them; the page shows it.
    companies = [f"co{i:02}.example.com" for i in range(12)]
    values = [
        {"objectType": "company", "objectId": c, "signalTemplateId": "employees", "value": i * 20}
        for i, c in enumerate(companies)
    ]
    assert server.api("PUT", "/v1/signals/values", json={"values": values}).status_code == 200
    assigned = server.api(
        "POST",
        "/v1/scoring/assignments/bulk",
        json={"profileId": profile_id, "objectType": "company", "objectIds": companies},
    )
    assert assigned.status_code == 201
    page.goto(f"/console/profiles/{profile_id}")
    scored = page.locator('[data-testid="scored-fit"]')
    _until(page, lambda: scored.count() == 1 and scored.inner_text() == "12", "12 scored objects")
    assert page.locator("svg.histogram rect.bar").count() == 10
    ranked = page.locator("#ranked-table tbody tr")
    assert ranked.count() == 12
    # 100+ employees earn 25 of 25: co05 to co11 score 100, first by objectId.
    assert ranked.first.locator("th").inner_text() == "co05.example.com"
    assert ranked.first.locator("td").first.inner_text() == "100.00"
    _shot(page, "profile")

    # An object's explanation, then a new value: the page explains the step.
    ranked.first.get_by_role("link").click()
    page.wait_for_url("**/console/objects?*")
    assert "100 (≥100)" in page.locator("#scores").inner_text()
    write = server.api(
        "PUT",
        "/v1/signals/values",
        json={
            "values": [
                {
                    "objectType": "company",
                    "objectId": "co05.example.com",
                    "signalTemplateId": "employees",
                    "value": 40,
                    "observedAt": "2026-03-04T05:06:07Z",
                }
            ]
        },
    )
    assert write.status_code == 200
    _until(
        page,
        lambda: "40 (0–100)" in page.locator("#scores").inner_text(),
        "the new contribution",
    )
    scores = page.locator("#scores").inner_text()
    assert "20.00" in scores  # 5 of 25 points
    assert "2026-03-04 05:06:07" in scores  # the contribution's observedAt
    history = page.locator("#history")
    assert "100.00 → 20.00" in history.inner_text()
    assert "100 (≥100) (25/25) → 40 (0–100) (5/25)" in re.sub(r"\s+", " ", history.inner_text())
    assert page.locator("svg.linechart circle").count() == 2
    _shot(page, "object")

    # Preview a change of the rule, then apply it.
    page.goto(f"/console/profiles/{profile_id}/rules/edit?template=employees&dimension=fit")
    page.locator("#f-pointValues-ranges-0-points").fill("50")
    page.get_by_role("button", name="Preview", exact=True).click()
    heading = page.get_by_role("heading", name=re.compile(r"^Preview: 12 objects"))
    heading.wait_for()  # the click posts a form; is_visible() alone would not wait for it
    assert heading.is_visible()
    assert page.locator("#preview svg.histogram").count() == 2
    movers = page.locator("#movers-fit tbody tr")
    # co00-co05 (under 100 employees) go from 5/25 to 50/50 points: +80; the rest -50.
    assert movers.count() == 12
    assert movers.first.locator("td").last.inner_text() == "+80.00"
    assert (
        server.api("GET", f"/v1/scoring/profiles/{profile_id}/rules").json()[0]["pointValues"][
            "ranges"
        ][0]["points"]
        == 5
    )  # a preview writes nothing
    _shot(page, "preview")
    page.get_by_role("button", name="Apply this rule").click()
    page.wait_for_url(f"**/console/profiles/{profile_id}?saved=rule*")
    rule = server.api("GET", f"/v1/scoring/profiles/{profile_id}/rules").json()[0]
    assert rule["pointValues"]["ranges"][0]["points"] == 50

    # Sign out: the session is gone, the pages want a sign-in again.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto(f"/console/profiles/{profile_id}")
    assert page.url.endswith("/console/login")
    _shot(page, "login")


def test_the_console_works_with_the_keyboard_alone(page: Any, server: Server) -> None:
    page.goto("/console/login")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to main content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Tab")  # the brand link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "f-apiKey"
    page.keyboard.type(server.key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/profiles")

    # Tab order reaches the main controls: navigation, sign-out, the create form.
    reached: list[str] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "(() => { const e = document.activeElement;"
                " return e.id || e.textContent.trim() || e.name; })()"
            )
        )
        if reached[-1] == "f-name":
            break
    for control in ("Skip to main content", "Profiles", "Webhooks", "Queue", "Sign out"):
        assert control in reached, reached
    assert reached[-1] == "f-name", reached
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.type("Made with the keyboard")
    page.keyboard.press("Enter")  # submits the create form
    page.wait_for_url(re.compile(r".*/console/profiles/[0-9a-f-]{36}\?saved=profile"))
    assert page.get_by_role("heading", level=1).inner_text() == "Made with the keyboard"

    # The skip link moves focus to the main content.
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_every_page_fits_a_phone_screen(page: Any, server: Server) -> None:
    _template(server, "employees", "number")
    _template(server, "crm", "list")
    page.set_viewport_size(PHONE)
    _sign_in(page, server)
    profile_id = _create_profile(page, "A profile with a rather long name to wrap on a phone")
    put = server.api(
        "PUT",
        f"/v1/scoring/profiles/{profile_id}/rules",
        json={
            "signalTemplateId": "employees",
            "dimension": "fit",
            "answerType": "number",
            "pointValues": {
                "ranges": [{"min": 0, "max": 100, "points": 5}, {"min": 100, "points": 9}]
            },
            "decay": {"steps": [{"afterDays": 30, "factor": 0.5}]},
        },
    )
    assert put.status_code == 200
    company = "a-very-long-subdomain-name-for-testing.wrapping.example.com"
    value = {"objectType": "company", "objectId": company, "signalTemplateId": "employees"}
    assert (
        server.api(
            "PUT", "/v1/signals/values", json={"values": [{**value, "value": 120}]}
        ).status_code
        == 200
    )
    assert server.api(
        "POST",
        "/v1/scoring/assignments",
        json={"profileId": profile_id, "objectType": "company", "objectId": company},
    ).status_code in (200, 201)
    assert (
        server.api(
            "PUT", "/v1/signals/values", json={"values": [{**value, "value": 50}]}
        ).status_code
        == 200
    )
    pages = {
        "profiles": "/console/profiles",
        "profile": f"/console/profiles/{profile_id}",
        "rule": f"/console/profiles/{profile_id}/rules/edit?template=employees&dimension=fit",
        "rule-list": f"/console/profiles/{profile_id}/rules/edit?template=crm&dimension=urgency",
        "object": f"/console/objects?objectType=company&objectId={company}",
        "webhooks": "/console/webhooks",
        "queue": "/console/queue",
    }
    for name, path in pages.items():
        page.goto(path)
        if name == "object":
            _until(page, lambda: "50 (0–100)" in page.locator("#scores").inner_text(), "the score")
        _no_overflow(page, PHONE["width"])
        _shot(page, f"phone-{name}")
    page.goto(pages["rule"])
    page.get_by_role("button", name="Preview", exact=True).click()
    # The click posts a form: wait for the answer before measuring the page.
    page.get_by_role("heading", name=re.compile(r"^Preview: ")).wait_for()
    _no_overflow(page, PHONE["width"])
    page.set_viewport_size(DESKTOP)
    for name, path in pages.items():
        page.goto(path)
        _no_overflow(page, DESKTOP["width"])
        if name in ("webhooks", "queue", "rule-list"):
            _shot(page, name)
