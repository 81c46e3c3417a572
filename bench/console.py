"""Benchmark the console's pages (issue 16, SPEC §14): every page renders in <= 300 ms of
server time with 1,000,000 score rows in a profile, on PostgreSQL.

    python bench/console.py [--backend postgresql|sqlite] [--rows 1000000] [--requests 50]
                            [--previews 5] [--preview-all 0] [--keep]

Results are recorded in docs/benchmarks.md ("Console pages"). In a scratch database created
(and dropped) by this run:

1. Setup (timed, not a target): the profile of bench/ranked.py (`ranked.build_profile`): an
   organisation and its API key, 11 fit templates and rules, one company profile with fit
   tiers A >= 80, B >= 50, C >= 20, D >= 0, and `--rows` assignments and `fit` score rows
   with real contributions loaded in SQL, then `VACUUM ANALYZE` (SQLite: `ANALYZE`). Then,
   through the services as the API and the worker run them, the objects the bench opens get
   values and a history: `--history` rounds of new values for the 11 fit templates
   (`signals.service.write_values`), each followed by their recompute
   (`recompute.compute.recompute_objects`), which stores their rows and writes their
   `score.changed` events. Two webhook subscriptions are created (no deliveries).
2. `signalscore serve` (no embedded worker, log level info, as bench/ranked.py): each
   request's server time is the `durationMs` of its access-log line, matched by
   `X-Request-Id`. The bench signs in through the real sign-in form (the form's double-submit
   token, then the session cookie), reads the session's CSRF token from a page, and then,
   one request at a time on one keep-alive connection, after a warm-up, times `--requests`
   GETs of each page:
   - `GET /healthz` (the fixed cost of a request: the HTTP baseline);
   - the profiles list;
   - the profile page (rules, a histogram, stats and tier counts per dimension with rules,
     the ranked table's first page of 50, the tiers form);
   - the profile page at a next page reached by the page's own "Next page" link (a walk);
   - the profile page from a cursor at a random row of the ranking;
   - the profile page with `tier=B` (first page), and `tier=D` (the 300,000-row tie at 0);
   - the rule editor (the preview's form), for an existing rule;
   - an object page (its scores with contributions, values, history chart) of an object
     with a history;
   - the webhooks list, a webhook's page, the queue page.
   - the form's **Preview** (`POST .../rules`, `action=preview`, the form as the editor
     rendered it with one point value changed), `--previews` times: a profile larger than
     2,000 objects is previewed on a uniform sample of 2,000 (`console.router.PREVIEW_SAMPLE`).
   And, reported apart: the API's preview of the same rules with `sampleSize` 2,000, and,
   with `--preview-all`, the form's **Preview every object** (`action=preview-all`: every one
   of the `--rows` objects scored, SPEC §12's scan) that many times.
3. Baselines in the same run: `GET /healthz` (above); on one open connection of the bench,
   the SQL of a ranked first page (`SELECT <a page's columns> ... ORDER BY score DESC LIMIT
   100`) and a `SELECT count(*)` of the profile's rows (the least any exact distribution
   reads); in process, the profile page's two reads (`scores.service.distribution`,
   `scores.service.ranked_page`) timed apart. Ratios are a page's server p95 over `/healthz`'s
   and over the SQL page's p95.
4. Target: every page's server p95 <= 300 ms, PASS/FAIL printed per page (the preview is
   measured against the same number and reported separately).
5. Plans: the distribution's statements as `scores.service` runs them, explained as in
   bench/ranked.py (`EXPLAIN (ANALYZE, BUFFERS)`, custom and generic plan; SQLite `EXPLAIN
   QUERY PLAN`).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx2 as httpx
import sqlalchemy as sa

from _common import announce, load_average, value_generators
from ranked import (
    FIT_RULES,
    Fixture,
    Series,
    Server,
    database_facts,
    explain,
    forge,
    forget_queue,
    object_id,
    profile_arguments,
    profile_database,
    random_positions,
    sql_baselines,
    statements_of,
)
from signalscore.console.router import HISTOGRAM_BUCKETS, RANKED_PAGE
from signalscore.db.engine import Database
from signalscore.db.tables import score_events
from signalscore.events.log import EVENT_TYPES
from signalscore.recompute.compute import recompute_objects
from signalscore.scores import service
from signalscore.signals.schemas import SignalValueIn
from signalscore.signals.service import shape_items, write_values
from signalscore.webhooks import service as webhooks_service
from signalscore.webhooks.schemas import WebhookCreate

PAGE_TARGET_MS = 300.0
#: The objects whose page the bench opens (they get values and a history).
OPENED = [object_id(i) for i in range(3)]


# --- setup -------------------------------------------------------------------------------------


def add_history(db: Database, fixture: Fixture, rounds: int, seed: int) -> int:
    """`rounds` rounds of new values for the opened objects, each recomputed as the worker
    would: their rows change and `score.changed` events are written. Returns the events."""
    rnd = random.Random(seed)
    generators = value_generators(rnd)
    templates = list(dict.fromkeys(t for t, _a, _pv in FIT_RULES))
    for _ in range(rounds):
        raw = [
            SignalValueIn(
                objectType="company",
                objectId=oid,
                signalTemplateId=template_id,
                value=generators[template_id](),
            )
            for oid in OPENED
            for template_id in templates
        ]
        items, locked = shape_items(raw)
        with db.write(org=fixture.org_id, value_templates=locked) as conn:
            write_values(conn, fixture.org_id, items)
        with db.write() as conn:
            recompute_objects(conn, fixture.org_id, "company", OPENED)
    forget_queue(db)
    e = score_events
    with db.read() as conn:
        return int(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(e)
                .where(e.c.organization_id == fixture.org_id, e.c.object_id.in_(OPENED))
            ).scalar_one()
        )


def add_webhooks(db: Database, fixture: Fixture) -> uuid.UUID:
    with db.write() as conn:
        first = None
        for n in range(2):
            created = webhooks_service.create(
                conn,
                fixture.org_id,
                WebhookCreate.model_validate(
                    {
                        "url": f"https://hooks.example.com/signalscore/{n}",
                        "eventTypes": list(EVENT_TYPES),
                        "description": "bench",
                    }
                ),
                allow_private=True,  # no DNS look-up of the example host
            )
            first = first or created.id
    assert first is not None
    return first


# --- the console client ------------------------------------------------------------------------


class FormFields(HTMLParser):
    """The fields a browser would submit from the form with id `form_id` (no button)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or ("name" not in a and tag != "option"):
            return
        if tag == "input" and a.get("type") not in ("submit", "button"):
            if a.get("type") in ("checkbox", "radio") and "checked" not in a:
                return
            self.fields.append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select = a["name"]
        elif tag == "option" and self._select is not None and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
        elif tag == "textarea":
            self._textarea, self._text = a["name"], ""

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            self.fields.append((self._textarea, self._text))
            self._textarea = None


def form_fields(html: str, form_id: str) -> list[tuple[str, str]]:
    parser = FormFields(form_id)
    parser.feed(html)
    return parser.fields


def hidden(html: str, name: str) -> str:
    marker = f'name="{name}" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


class Console:
    """A signed-in browser: the session cookie, one keep-alive connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.base, timeout=600, follow_redirects=False)
        self.csrf = ""

    def sign_in(self, api_key: str) -> None:
        page = self.http.get("/console/login")
        done = self.http.post(
            "/console/login",
            data={"loginToken": hidden(page.text, "loginToken"), "apiKey": api_key},
        )
        if done.status_code != 303 or done.headers["location"] != "/console/profiles":
            raise RuntimeError(f"sign-in failed: {done.status_code} {done.text[:300]}")
        self.csrf = hidden(self.get("/console/profiles", None), "csrf")

    def request(
        self, method: str, path: str, series: Series | None, **kwargs: Any
    ) -> httpx.Response:
        rid = str(uuid.uuid4())
        headers = {"x-request-id": rid, **kwargs.pop("headers", {})}
        started = time.perf_counter()
        response = self.http.request(method, path, headers=headers, **kwargs)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path} → {response.status_code}: {response.text[:500]}")
        if series is not None:
            series.client_ms.append(elapsed)
            series.request_ids.append(rid)
        return response

    def get(self, path: str, series: Series | None) -> str:
        return self.request("GET", path, series).text

    def finish(self, series: Series) -> Series:
        series.server_ms = self.server.server_times(series.request_ids, timeout=60)
        return series

    def repeat(self, label: str, path: str, n: int, check: str | None = None) -> Series:
        series = Series(label, "page")
        for _ in range(n):
            text = self.get(path, series)
            if check is not None and check not in text:
                raise RuntimeError(f"{label}: {check!r} is not in the page")
        return self.finish(series)

    def walk(self, label: str, path: str, n: int) -> Series:
        """`n` pages by the page's own "Next page" link, from `path`."""
        series = Series(label, "page")
        for _ in range(n):
            text = self.get(path, series)
            marker = '" rel="next">Next page'
            if marker not in text:
                break
            end = text.index(marker)
            path = text[text.rindex('href="', 0, end) + 6 : end].replace("&amp;", "&")
        return self.finish(series)

    def from_paths(self, label: str, paths: list[str]) -> Series:
        series = Series(label, "page")
        for path in paths:
            self.get(path, series)
        return self.finish(series)


# --- reporting ---------------------------------------------------------------------------------


def print_results(series: list[Series], health: Series, sql_page: Series) -> bool:
    print("\nResults (ms; server = the server's durationMs, client = round trip)")
    print(
        "| page | requests | server p50 | server p95 | server max | client p50 | client p95 | "
        "p95 / healthz p95 | p95 / SQL page p95 | target (server p95) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for x in series:
        passed = x.p(95) <= PAGE_TARGET_MS
        if x.kind == "page":
            ok = ok and passed
        verdict = f"<= {PAGE_TARGET_MS:g} ms: {'PASS' if passed else 'FAIL'}"
        if x.kind != "page":
            verdict += " (reported apart)"
        print(
            f"| {x.label} | {len(x.server_ms)} | {x.p(50):.2f} | {x.p(95):.2f} | "
            f"{max(x.server_ms):.2f} | {x.p(50, server=False):.2f} | "
            f"{x.p(95, server=False):.2f} | {x.p(95) / health.p(95):.1f}x | "
            f"{x.p(95) / sql_page.p(95):.1f}x | {verdict} |"
        )
    return ok


def print_baselines(baselines: Sequence[Series]) -> None:
    for base in baselines:
        print(
            f"| baseline: {base.label} | {len(base.server_ms)} | {base.p(50):.2f} | "
            f"{base.p(95):.2f} | {max(base.server_ms):.2f} | | | | | |"
        )


def in_process(db: Database, fixture: Fixture, runs: int) -> list[Series]:
    """The profile page's two reads, in process (no HTTP, no rendering)."""
    org, pid = fixture.org_id, fixture.profile_id
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        (
            f"in process: scores.service.distribution (buckets={HISTOGRAM_BUCKETS})",
            lambda c: service.distribution(c, org, pid, "fit", HISTOGRAM_BUCKETS),
        ),
        (
            f"in process: scores.service.ranked_page (limit={RANKED_PAGE})",
            lambda c: service.ranked_page(
                c, org, pid, service.RankedRead("fit", limit=RANKED_PAGE)
            ),
        ),
    ]
    out = []
    for label, call in calls:
        series = Series(label, "sql")
        with db.read() as conn:
            call(conn)
        for _ in range(runs):
            started = time.perf_counter()
            with db.read() as conn:
                call(conn)
            series.client_ms.append((time.perf_counter() - started) * 1000)
        series.server_ms = list(series.client_ms)
        out.append(series)
    return out


# --- the run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    with profile_database(args.backend, "console", args.rows, args.seed, keep=args.keep) as (
        scratch,
        db,
        fixture,
    ):
        started = time.perf_counter()
        events = add_history(db, fixture, args.history, args.seed + 2)
        webhook_id = add_webhooks(db, fixture)
        print(
            f"  history: {args.history} rounds of values + recompute for {len(OPENED)} objects, "
            f"{events} score events ({time.perf_counter() - started:.1f} s)"
        )
        print(f"  {database_facts(db, fixture)}")
        pid = fixture.profile_id
        spread = random_positions(db, fixture, args.requests, args.seed + 1, lambda x: True)
        cursors = forge(fixture, service.RankedRead("fit", limit=RANKED_PAGE), spread)
        profile = f"/console/profiles/{pid}"

        server = Server(scratch.url)
        console = None
        try:
            console = Console(server)
            server.wait_ready(console.http)
            console.sign_in(fixture.api_key)
            n = args.requests
            pages: list[tuple[str, str, str | None]] = [
                ("profiles list", "/console/profiles", "Ranked bench"),
                ("profile page (first page of the ranking)", profile, 'rel="next"'),
                ("profile page, tier=B", f"{profile}?dimension=fit&tier=B", 'rel="next"'),
                ("profile page, tier=D (the 0 tie)", f"{profile}?dimension=fit&tier=D", None),
                (
                    "rule editor (the preview's form)",
                    f"{profile}/rules/edit?template=employees&dimension=fit",
                    "Preview",
                ),
                (
                    "object page (scores, values, history)",
                    f"/console/objects?objectType=company&objectId={OPENED[0]}",
                    "employees",
                ),
                ("webhooks list", "/console/webhooks", "hooks.example.com"),
                ("webhook page", f"/console/webhooks/{webhook_id}", "hooks.example.com"),
                ("queue page", "/console/queue", None),
            ]
            for _label, path, _check in pages:  # warm-up: not measured
                for _ in range(3):
                    console.get(path, None)
            health = Series("GET /healthz", "health")
            for _ in range(n):
                console.request("GET", "/healthz", health)
            console.finish(health)
            series = []
            for label, path, check in pages[:2]:
                series.append(console.repeat(label, path, n, check))
            series.append(console.walk(f"profile page, walk of {n} pages by Next", profile, n))
            series.append(
                console.from_paths(
                    "profile page, cursor at a random row",
                    [f"{profile}?dimension=fit&cursor={c}" for c in cursors],
                )
            )
            for label, path, check in pages[2:]:
                series.append(console.repeat(label, path, n, check))
            previews = preview_series(console, fixture, profile, args.previews, args.preview_all)
            series += previews
        finally:
            if console is not None:
                console.http.close()
            server.stop()
        if server.failed():
            return 1
        sql_page, sql_count = sql_baselines(db, fixture, args.requests, 10)
        reads = in_process(db, fixture, 10)
        ok = print_results(series, health, sql_page)
        print_baselines([health, sql_page, sql_count, *reads])
        print(
            f"  ratios: over /healthz p95 ({health.p(95):.2f} ms) and over the SQL of a ranked "
            f"first page p95 ({sql_page.p(95):.2f} ms), both measured in this run"
        )
        print("\nPlans of the distribution (statements captured as scores.service runs them)")
        explain(
            db,
            scratch.url,
            "distribution, buckets=10",
            statements_of(
                db,
                lambda c: service.distribution(
                    c, fixture.org_id, fixture.profile_id, "fit", HISTOGRAM_BUCKETS
                ),
            ),
        )
    print(
        f"\nRESULT {args.backend}, {args.rows:,} rows: every page <= {PAGE_TARGET_MS:g} ms p95: "
        f"{'met' if ok else 'NOT met'} (the full preview apart); load average at the end "
        f"{load_average()}"
    )
    return 0


def preview_series(
    console: Console, fixture: Fixture, profile: str, n: int, every: int
) -> list[Series]:
    """The editor's Preview as a browser posts it, `n` times, and its Preview every object
    `every` times; then the API's sampled one."""
    if n <= 0:
        return []
    editor = console.get(f"{profile}/rules/edit?template=employees&dimension=fit", None)
    fields = form_fields(editor, "rule-form")
    changed = False
    for i, (name, value) in enumerate(fields):
        if name.endswith(".points") and value and not changed:
            fields[i] = (name, str(float(value) + 5))
            changed = True
    if not changed:
        raise RuntimeError(f"no point value in the editor's form: {fields}")
    series = []
    for action, label, kind, times in (
        ("preview", "Preview (the editor's form: a sample of 2,000 objects)", "page", n),
        ("preview-all", f"Preview every object (all {fixture.rows:,})", "preview", every),
    ):
        if not times:
            continue
        one = Series(label, kind)
        for _ in range(times):
            answer = console.request(
                "POST",
                f"{profile}/rules",
                one,
                content=urlencode([*fields, ("action", action)]),
                headers={"content-type": "application/x-www-form-urlencoded"},
            ).text
            if "Top movers" not in answer:
                raise RuntimeError("the preview's answer has no top movers")
        console.finish(one)
        series.append(one)
    # The API's preview with the same sample size, for comparison.
    api = httpx.Client(
        base_url=console.server.base,
        headers={"authorization": f"Bearer {fixture.api_key}"},
        timeout=600,
    )
    try:
        rules = api.get(f"/v1/scoring/profiles/{fixture.profile_id}/rules").json()
        body = {
            "rules": [
                {
                    k: r[k]
                    for k in ("signalTemplateId", "dimension", "answerType", "pointValues", "decay")
                    if r.get(k) is not None
                }
                for r in (rules["data"] if isinstance(rules, dict) else rules)
            ],
            "sampleSize": 2000,
        }
        sampled = Series("API preview, sampleSize=2000", "preview")
        for _ in range(n):
            rid = str(uuid.uuid4())
            started = time.perf_counter()
            answer = api.post(
                f"/v1/scoring/profiles/{fixture.profile_id}/preview",
                json=body,
                headers={"x-request-id": rid},
            )
            if answer.status_code != 200:
                raise RuntimeError(f"API preview → {answer.status_code}: {answer.text[:300]}")
            sampled.client_ms.append((time.perf_counter() - started) * 1000)
            sampled.request_ids.append(rid)
        sampled.server_ms = console.server.server_times(sampled.request_ids, timeout=60)
    finally:
        api.close()
    return [*series, sampled]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    profile_arguments(parser, seed=16)
    parser.add_argument("--requests", type=int, default=50, help="GETs of each page")
    parser.add_argument("--previews", type=int, default=5, help="previews (0: none)")
    parser.add_argument(
        "--preview-all", type=int, default=0, help="previews of every object (each a scan)"
    )
    parser.add_argument("--history", type=int, default=6, help="rounds of values + recompute")
    args = parser.parse_args(argv)
    announce(f"console pages: {args.backend}, {args.rows:,} rows")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
