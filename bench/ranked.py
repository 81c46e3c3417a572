"""Benchmark ranked reads and distributions (issue 13): a profile's score rows ranked by score
with a keyset cursor, and its score distribution, over HTTP, on a profile of 1,000,000 rows.

    python bench/ranked.py [--backend postgresql|sqlite] [--rows 1000000] [--stale]
                           [--first-pages 200] [--walk 300] [--random 200] [--tie-pages 100]
                           [--distributions 10] [--keep]

Results and plans are recorded in docs/benchmarks.md ("Ranked reads and distributions").
In a scratch database created (and dropped) by this run:

1. Setup (timed, not a target): migrations, an organisation and its API key, the 11 fit
   templates and rules of bench/recompute.py and one company profile with fit tiers A >= 80,
   B >= 50, C >= 20, D >= 0, through the service functions; then `--rows` assignments and as
   many `fit` score rows loaded in SQL (PostgreSQL `COPY`, SQLite `executemany` in
   transactions of 100,000 rows). Scores have 2 decimals and large ties: 30% exactly 0, 2%
   exactly 100, the rest from a skewed beta distribution; the stored tier is the one of the
   score; contributions are real engine output (11 rules) for random company values;
   object ids `co0000123.com` in random order of score. Then, as autovacuum would have by
   the time anyone reads, `VACUUM ANALYZE` (PostgreSQL) or `ANALYZE` (SQLite).
   `--stale` instead analyses the tables while they are empty, before the load, and never
   after (statistics of an empty table and no visibility map on PostgreSQL).
2. `signalscore serve` (no embedded worker: nothing is queued) on a free port, log level
   info: the server logs one JSON line per request with its `durationMs` (the middleware's
   clock, from the request's arrival to the end of the response), which the bench matches
   to its requests by `X-Request-Id`. One client, one keep-alive connection, one request at
   a time, after a short warm-up:
   - `GET /healthz` (`--first-pages` times): the fixed cost of a request (HTTP baseline);
   - the first page, `limit=100`, `order=desc` (`--first-pages` times);
   - a walk of `--walk` pages from the top by `nextCursor` (desc; it crosses the tie of the
     20,000 rows at 100); the pages are checked against an `ORDER BY score DESC, object_id`
     of the same rows in SQL;
   - `--random` pages, each continuing from a cursor at a random row of the ranking (desc;
     the cursor is built with `scores.service.encode_cursor`, as the server builds it):
     "any page reached by cursor";
   - the 0-score tie (`tier=D&maxScore=0`, 300,000 rows of equal score): its first page, a
     walk of `--tie-pages` pages, and `--tie-pages` pages from random rows inside it;
   - ascending order: a walk of `--tie-pages` pages from the bottom, and `--random` pages
     from random rows;
   - `tier=B`: its first page and a walk of `--tie-pages` pages;
   - the distribution, `buckets=10` (`--distributions` times).
   Each is reported as server time (durationMs) and client round trip, p50 and p95.
3. Baselines, in the same run, measured by the bench on one open database connection:
   `SELECT <the columns of a page> FROM score_results WHERE organization_id, profile_id,
   dimension = 'fit' ORDER BY score DESC LIMIT 100` (`--first-pages` times) for pages, and
   `SELECT count(*)` over the same rows (`--distributions` times) for the distribution.
   Ratios are the server's p95 over the baseline's p95.
4. Targets, PostgreSQL: every kind of page p95 <= 20 ms of server time; distribution <= 1 s
   (its slowest request). Printed PASS/FAIL for either backend.
5. Plans: the SQL statements `scores.service` runs for a first page, a cursor page (desc,
   with its three range reads), an ascending cursor page, a page inside the 0 tie and a
   distribution are captured as the service executes them on the bench's own connection and
   explained: `EXPLAIN (ANALYZE, BUFFERS)` on PostgreSQL, with its parameters (the custom
   plan) and as a prepared statement under `plan_cache_mode = force_generic_plan` (the plan
   psycopg's prepared statements may get from the sixth execution on); `EXPLAIN QUERY PLAN`
   on SQLite. Each statement's median time of 5 runs is printed with it. On PostgreSQL the
   scans of `score_results` during the HTTP runs are counted (`pg_stat_user_tables`,
   `pg_stat_user_indexes`): a sequential scan there would be a plan not using the index.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa

from _common import (
    RULES,
    TEMPLATES,
    VENV_BIN,
    ScratchDatabase,
    announce,
    copy_assignments,
    free_port,
    load_average,
    percentile,
    scratch_database,
    value_generators,
)
from signalscore.auth.service import create_organization
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import score_results
from signalscore.engine import Rule, compile_profile
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.scores import counts as score_counts
from signalscore.scores import service
from signalscore.signals.schemas import TemplateCreate
from signalscore.signals.service import create_template

SIGNALSCORE = str(VENV_BIN / "signalscore")
TIERS = [("A", 80), ("B", 50), ("C", 20), ("D", 0)]
FIT_RULES = [(t, a, pv) for t, d, a, pv in RULES if d == "fit"]
PAGE_TARGET_MS = 20.0
DISTRIBUTION_TARGET_MS = 1000.0
s = score_results


@dataclass
class Fixture:
    org_id: str
    api_key: str
    profile_id: uuid.UUID
    rows: int


# --- setup -------------------------------------------------------------------------------------


def configure(db: Database) -> tuple[str, str, uuid.UUID, list[Rule]]:
    """Organisation, key, fit templates, the tiered profile and its fit rules (services)."""
    with db.write() as conn:
        org, issued = create_organization(conn, "ranked bench")
    answer_types = dict(TEMPLATES)
    rules: list[Rule] = []
    with db.write(org=org.id, structure=True) as conn:
        for template_id in dict.fromkeys(t for t, _a, _pv in FIT_RULES):
            create_template(
                conn,
                org.id,
                TemplateCreate(
                    id=template_id,
                    name=template_id,
                    objectType="company",
                    answerType=answer_types[template_id],
                ),
            )
        tiers = {"fit": [{"name": name, "minScore": floor} for name, floor in TIERS]}
        profile = create_profile(
            conn,
            org.id,
            ProfileCreate.model_validate(
                {"profileType": "company", "name": "Ranked bench", "tiers": tiers}
            ),
        )
        for template_id, answer_type, point_values in FIT_RULES:
            rule = upsert_rule(
                conn,
                org.id,
                profile.id,
                RuleUpsert(
                    signalTemplateId=template_id,
                    dimension="fit",
                    answerType=answer_type,
                    pointValues=point_values,
                ),
            )
            rules.append(Rule(str(rule.id), template_id, "fit", answer_type, point_values))
    return org.id, issued.key, profile.id, rules


def contribution_pool(rules: list[Rule], size: int, seed: int) -> list[tuple[str, int, int]]:
    """(contributions JSON, signalCoverage, totalRules) of `size` random companies, as the
    engine computes them for these rules."""
    rnd = random.Random(seed)
    generators = value_generators(rnd)
    profile = compile_profile(rules)
    pool = []
    for _ in range(size):
        values = {
            r.signal_template_id: generators[r.signal_template_id]()
            for r in rules
            if rnd.random() < 0.8
        }
        result = profile.score(values)["fit"]
        pool.append((json.dumps(result.contributions), result.signal_coverage, result.total_rules))
    return pool


def score_of(rnd: random.Random) -> float:
    roll = rnd.random()
    if roll < 0.30:
        return 0.0
    if roll < 0.32:
        return 100.0
    return round(100 * rnd.betavariate(1.6, 4.0), 2)


def tier_of(score: float) -> str:
    return next(name for name, floor in TIERS if score >= floor)


def object_id(i: int) -> str:
    return f"co{i:07d}.com"


def score_rows(
    fixture: Fixture, pool: list[tuple[str, int, int]], seed: int, now: Any, hexes: bool
) -> Iterator[tuple[Any, ...]]:
    """`score_results` rows in the column order of `SCORE_ROW_COLUMNS`."""
    rnd = random.Random(seed)
    profile = fixture.profile_id.hex if hexes else fixture.profile_id
    for i in range(fixture.rows):
        score = score_of(rnd)
        contributions, coverage, total = pool[rnd.randrange(len(pool))]
        row_id = uuid.uuid4()
        yield (
            fixture.org_id,
            row_id.hex if hexes else row_id,
            profile,
            "company",
            object_id(i),
            "fit",
            score,
            None,
            contributions,
            rnd.getrandbits(63),
            "[]",
            coverage,
            total,
            now,
            1,
            tier_of(score),
            None,
        )


SCORE_ROW_COLUMNS = (
    "organization_id, id, profile_id, object_type, object_id, dimension, score, previous_score, "
    "contributions, contributions_hash, previous_contributions, signal_coverage, total_rules, "
    "computed_at, version, tier, previous_tier"
)


def load_postgresql(db: Database, fixture: Fixture, pool: list[Any], seed: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    raw = db.engine.raw_connection()
    try:
        pg: Any = raw.driver_connection
        with pg.cursor() as cur:
            objects = [object_id(i) for i in range(fixture.rows)]
            copy_assignments(cur, fixture.org_id, fixture.profile_id, objects, now)
            with cur.copy(f"COPY score_results ({SCORE_ROW_COLUMNS}) FROM STDIN") as copy:
                for row in score_rows(fixture, pool, seed, now, hexes=False):
                    copy.write_row(row)
        pg.commit()
    finally:
        raw.close()


def load_sqlite(db: Database, fixture: Fixture, pool: list[Any], seed: int) -> None:
    # The formats SQLAlchemy itself stores: hex UUIDs, "YYYY-MM-DD HH:MM:SS.ffffff", JSON text.
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    raw = db.engine.raw_connection()
    batch = 100_000
    try:
        lite: Any = raw.driver_connection
        lite.execute("PRAGMA cache_size = -500000")  # this loading connection only
        for start in range(0, fixture.rows, batch):
            lite.execute("BEGIN IMMEDIATE")
            lite.executemany(
                "INSERT INTO profile_assignments (organization_id, id, profile_id, object_type, "
                "object_id, assigned_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    (
                        fixture.org_id,
                        uuid.uuid4().hex,
                        fixture.profile_id.hex,
                        "company",
                        object_id(i),
                        now,
                    )
                    for i in range(start, min(start + batch, fixture.rows))
                ),
            )
            lite.execute("COMMIT")
        rows = score_rows(fixture, pool, seed, now, hexes=True)
        marks = ", ".join("?" * 17)
        for start in range(0, fixture.rows, batch):
            lite.execute("BEGIN IMMEDIATE")
            lite.executemany(
                f"INSERT INTO score_results ({SCORE_ROW_COLUMNS}) VALUES ({marks})",  # noqa: S608
                (next(rows) for _ in range(min(batch, fixture.rows - start))),
            )
            lite.execute("COMMIT")
    finally:
        raw.close()


def analyze(db: Database, *, vacuum: bool) -> None:
    if db.dialect == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE" if vacuum else "ANALYZE")
        return
    raw = db.engine.raw_connection()
    try:
        raw.driver_connection.execute("ANALYZE")  # type: ignore[union-attr]
        raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
    finally:
        raw.close()


def build_profile(
    db: Database, rows: int, seed: int, *, stale: bool = False
) -> tuple[Fixture, list[Rule]]:
    """Step 1 of the docstring on a migrated database: the organisation, key and tiered
    profile, `rows` assignments and score rows loaded in SQL, then analysed (not with
    `stale`). Prints the load's figures."""
    org_id, api_key, profile_id, rules = configure(db)
    fixture = Fixture(org_id, api_key, profile_id, rows)
    if stale:
        analyze(db, vacuum=False)  # statistics of the empty tables, never refreshed
    pool = contribution_pool(rules, 5000, seed)
    started = time.perf_counter()
    if db.dialect == "postgresql":
        load_postgresql(db, fixture, pool, seed)
    else:
        load_sqlite(db, fixture, pool, seed)
    loaded = time.perf_counter() - started
    forget_queue(db)
    started = time.perf_counter()
    with db.write() as conn:  # what the pipeline keeps with every score change
        score_counts.rebuild(conn, org_id)
    print(f"  score counts recounted in {time.perf_counter() - started:.1f} s")
    print(
        f"  load: {rows:,} assignments + {rows:,} score rows in {loaded:.1f} s "
        f"({rows / loaded:,.0f} score rows/s)"
    )
    if stale:
        print("  --stale: no VACUUM / ANALYZE after the load (tables analysed while empty)")
    else:
        started = time.perf_counter()
        analyze(db, vacuum=True)
        what = "VACUUM ANALYZE" if db.dialect == "postgresql" else "ANALYZE + checkpoint"
        print(f"  {what}: {time.perf_counter() - started:.1f} s")
    return fixture, rules


@contextlib.contextmanager
def profile_database(
    backend: str, tag: str, rows: int, seed: int, *, keep: bool, stale: bool = False
) -> Iterator[tuple[ScratchDatabase, Database, Fixture]]:
    """A scratch database, migrated, with the profile of `build_profile`; dropped after
    (unless `keep`)."""
    with scratch_database(backend, tag, keep=keep) as scratch:
        db = Database(create_db_engine(scratch.url))
        try:
            upgrade_to_head(db.engine)
            if db.dialect == "postgresql":
                print(f"  {postgres_settings(db)}")
            fixture, _rules = build_profile(db, rows, seed, stale=stale)
            yield scratch, db, fixture
        finally:
            db.dispose()


def forget_queue(db: Database) -> None:
    """The rule writes recorded a fan-out of the (then empty) profile: nothing to compute."""
    with db.write() as conn:
        conn.exec_driver_sql("DELETE FROM recompute_profiles")
        conn.exec_driver_sql("DELETE FROM recompute_queue")


def database_facts(db: Database, fixture: Fixture) -> str:
    where = (s.c.organization_id == fixture.org_id) & (s.c.profile_id == fixture.profile_id)
    with db.read() as conn:
        zero, hundred, distinct = conn.execute(
            sa.select(
                sa.func.count().filter(s.c.score == 0),
                sa.func.count().filter(s.c.score == 100),
                sa.func.count(sa.distinct(s.c.score)),
            ).where(where)
        ).one()
        tiers: dict[str | None, int] = {}
        for tier, count in conn.execute(
            sa.select(s.c.tier, sa.func.count()).where(where).group_by(s.c.tier)
        ):
            tiers[tier] = count
        if db.dialect == "postgresql":
            sizes = conn.exec_driver_sql(
                "SELECT pg_size_pretty(pg_table_size('score_results')), "
                "pg_size_pretty(pg_relation_size('ix_score_results_rank'))"
            ).one()
            size = f"table {sizes[0]}, ix_score_results_rank {sizes[1]}"
        else:
            pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
            size = f"database file {pages * 4096 / 1e9:.2f} GB"
    tier_text = ", ".join(f"{t} {tiers.get(t, 0):,}" for t, _f in TIERS)
    return (
        f"{zero:,} rows at 0, {hundred:,} at 100, {distinct:,} distinct scores; "
        f"tiers {tier_text}; {size}"
    )


# --- the server --------------------------------------------------------------------------------


class Server:
    """`signalscore serve` on a free port, no embedded worker, log level info; its access log
    (one JSON line per request, on stderr) gives each request's `durationMs`."""

    def __init__(self, database_url: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                SIGNALSCORE,
                "serve",
                "--port",
                str(self.port),
                "--database-url",
                database_url,
                "--no-embedded-worker",
                "--log-level",
                "info",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.durations: dict[str, float] = {}
        self.errors: list[str] = []
        self.arrived = threading.Condition()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                if "Traceback" in line or "ERROR" in line:
                    self.errors.append(line.rstrip())
                continue
            if record.get("level") in ("error", "critical"):
                self.errors.append(line.rstrip())
            if record.get("event") == "request":
                with self.arrived:
                    self.durations[record["requestId"]] = float(record["durationMs"])
                    self.arrived.notify_all()

    def server_times(self, request_ids: Sequence[str], timeout: float = 10.0) -> list[float]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while any(r not in self.durations for r in request_ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(r not in self.durations for r in request_ids)
                    raise RuntimeError(f"{missing} requests never appeared in the server's log")
                self.arrived.wait(left)
            return [self.durations[r] for r in request_ids]

    def wait_ready(self, client: httpx.Client, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.errors}")
            try:
                if client.get(f"{self.base}/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not become ready")

    def failed(self) -> bool:
        """Whether the server logged an error (the first five are printed)."""
        if self.errors:
            print("  server errors:", *self.errors[:5], sep="\n    ")
        return bool(self.errors)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Series:
    label: str
    kind: str  # "page", "distribution", "health", "sql"
    client_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    request_ids: list[str] = field(default_factory=list)

    def p(self, pct: float, *, server: bool = True) -> float:
        return percentile(self.server_ms if server else self.client_ms, pct)


class Client:
    def __init__(self, server: Server, api_key: str, profile_id: uuid.UUID) -> None:
        self.server = server
        self.http = httpx.Client(
            base_url=server.base, headers={"authorization": f"Bearer {api_key}"}, timeout=600
        )
        self.scores = f"/v1/scoring/profiles/{profile_id}/scores"
        self.distribution = f"/v1/scoring/profiles/{profile_id}/distribution"

    def get(self, path: str, params: dict[str, Any], series: Series | None) -> Any:
        rid = str(uuid.uuid4())
        started = time.perf_counter()
        response = self.http.get(path, params=params, headers={"x-request-id": rid})
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(
                f"GET {response.request.url} → {response.status_code}: {response.text[:500]}"
            )
        if series is not None:
            series.client_ms.append(elapsed)
            series.request_ids.append(rid)
        return response.json()

    def finish(self, series: Series) -> Series:
        series.server_ms = self.server.server_times(series.request_ids)
        return series

    def repeat(self, label: str, kind: str, path: str, params: dict[str, Any], n: int) -> Series:
        series = Series(label, kind)
        for _ in range(n):
            self.get(path, params, series)
        return self.finish(series)

    def walk(
        self, label: str, params: dict[str, Any], pages: int, cursor: str | None = None
    ) -> tuple[Series, list[tuple[float, str]], list[str]]:
        """`pages` pages by nextCursor: (series, rows read, the cursors that led to each)."""
        series = Series(label, "page")
        rows: list[tuple[float, str]] = []
        cursors: list[str] = []
        for _ in range(pages):
            query = dict(params) if cursor is None else {**params, "cursor": cursor}
            page = self.get(self.scores, query, series)
            rows += [(r["score"], r["objectId"]) for r in page["data"]]
            if cursor is not None:
                cursors.append(cursor)
            cursor = page["nextCursor"]
            if cursor is None:
                break
        return self.finish(series), rows, cursors

    def from_cursors(self, label: str, params: dict[str, Any], cursors: list[str]) -> Series:
        series = Series(label, "page")
        for cursor in cursors:
            page = self.get(self.scores, {**params, "cursor": cursor}, series)
            if not page["data"]:
                raise RuntimeError(f"{label}: an empty page")
        return self.finish(series)


def random_positions(
    db: Database, fixture: Fixture, n: int, seed: int, where: Callable[[float], bool]
) -> list[tuple[float, str]]:
    """(score, objectId) of `n` distinct random rows whose score passes `where`."""
    rnd = random.Random(seed)
    found: dict[str, float] = {}
    with db.read() as conn:
        while len(found) < n:
            ids = list(dict.fromkeys(object_id(rnd.randrange(fixture.rows)) for _ in range(4 * n)))
            scores = {
                oid: score
                for score, oid in conn.execute(
                    sa.select(s.c.score, s.c.object_id).where(
                        s.c.organization_id == fixture.org_id,
                        s.c.profile_id == fixture.profile_id,
                        s.c.dimension == "fit",
                        s.c.object_id.in_(ids),
                    )
                )
            }
            for oid in ids:  # in the random order drawn, not the order rows came back in
                if oid in scores and where(scores[oid]) and len(found) < n:
                    found.setdefault(oid, scores[oid])
    return [(score, oid) for oid, score in found.items()]


def forge(
    fixture: Fixture, read: service.RankedRead, positions: list[tuple[float, str]]
) -> list[str]:
    """The cursors the server would hand out after these rows (`scores.service`)."""
    fingerprint = read.fingerprint(fixture.profile_id)
    return [service.encode_cursor(fingerprint, score, oid) for score, oid in positions]


def sql_baselines(db: Database, fixture: Fixture, pages: int, counts: int) -> list[Series]:
    where = (
        (s.c.organization_id == fixture.org_id)
        & (s.c.profile_id == fixture.profile_id)
        & (s.c.dimension == "fit")
    )
    page = sa.select(*service.SCORE_COLUMNS).where(where).order_by(s.c.score.desc()).limit(100)
    count = sa.select(sa.func.count()).select_from(s).where(where)
    out = []
    with db.engine.connect() as conn:
        for label, query, n in (
            ("SQL: top 100 by score", page, pages),
            ("SQL: count(*)", count, counts),
        ):
            series = Series(label, "sql")
            for _ in range(3):
                with conn.begin():
                    conn.execute(query).all()
            for _ in range(n):
                started = time.perf_counter()
                with conn.begin():
                    conn.execute(query).all()
                series.client_ms.append((time.perf_counter() - started) * 1000)
            series.server_ms = list(series.client_ms)
            out.append(series)
    return out


def check_walk(db: Database, fixture: Fixture, rows: list[tuple[float, str]]) -> None:
    """The walked pages are the ranking (score desc, objectId asc) with nothing missing."""
    with db.read() as conn:
        expected = [
            (r.score, r.object_id)
            for r in conn.execute(
                sa.select(s.c.score, s.c.object_id)
                .where(
                    s.c.organization_id == fixture.org_id,
                    s.c.profile_id == fixture.profile_id,
                    s.c.dimension == "fit",
                )
                .order_by(s.c.score.desc(), s.c.object_id)
                .limit(len(rows))
            )
        ]
    if rows != expected:
        bad = next(i for i, (a, b) in enumerate(zip(rows, expected, strict=False)) if a != b)
        raise RuntimeError(f"the walk differs from the ranking at row {bad}")
    print(f"  the desc walk's {len(rows):,} rows are exactly the top of the ranking")


def scan_counters(db: Database) -> dict[str, int]:
    """Sequential scans of score_results and scans of each of its indexes (PostgreSQL)."""
    with db.read() as conn:
        counters = {
            "seq scans of score_results": conn.exec_driver_sql(
                "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'score_results'"
            ).scalar_one()
        }
        for name, scans in conn.exec_driver_sql(
            "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
            "WHERE relname = 'score_results' ORDER BY indexrelname"
        ):
            counters[f"scans of {name}"] = scans
    return counters


def breakdown(db: Database, fixture: Fixture, cursor: str, runs: int = 50) -> None:
    """Where a page's time goes, in process (no HTTP): the service's read (statements,
    fetching, decoding), the response models, the JSON body; median ms of `runs`. Then the
    top of a cProfile of the same three steps."""
    import cProfile
    import io
    import pstats

    from signalscore.responses import MAX_RESPONSE_BYTES, json_page
    from signalscore.scores.schemas import ScoreRow

    def one(read: service.RankedRead, times: dict[str, list[float]] | None) -> None:
        t0 = time.perf_counter()
        with db.read() as conn:
            rows, next_cursor = service.ranked_page(conn, fixture.org_id, fixture.profile_id, read)
        t1 = time.perf_counter()
        items = [ScoreRow.from_row(r) for r in rows]
        t2 = time.perf_counter()
        json_page(
            items,
            next_cursor,
            max_bytes=MAX_RESPONSE_BYTES,
            cursor_after=lambda item: service.encode_cursor("x", item.score, item.objectId),
        )
        t3 = time.perf_counter()
        if times is not None:
            times["read (scores.service.ranked_page)"].append((t1 - t0) * 1000)
            times["ScoreRow.from_row x rows"].append((t2 - t1) * 1000)
            times["json_page (the body)"].append((t3 - t2) * 1000)
            times["total"].append((t3 - t0) * 1000)

    print(
        "\nWhere a page's time goes, in process without HTTP (median ms of "
        f"{runs} runs; server time minus this total is HTTP, routing, auth)"
    )
    reads = (
        ("first page (desc)", service.RankedRead("fit")),
        ("cursor page (desc)", service.RankedRead("fit", cursor=cursor)),
    )
    for label, read in reads:
        times: dict[str, list[float]] = {
            k: []
            for k in (
                "read (scores.service.ranked_page)",
                "ScoreRow.from_row x rows",
                "json_page (the body)",
                "total",
            )
        }
        for _ in range(5):
            one(read, None)
        for _ in range(runs):
            one(read, times)
        print(
            f"  {label}: " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items())
        )
    # Full collections: every page allocates thousands of containers (rows, decoded
    # contributions, models), so the collector's oldest generation, which walks every object
    # the process holds, runs every few pages. Counted here in this process (its heap is not
    # the server's, but it holds the same modules).
    import gc

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began: list[float] = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append((time.perf_counter() - began[0]) * 1000)

    gc.collect()
    tracked = len(gc.get_objects())
    gc.callbacks.append(on_gc)
    totals = []
    try:
        for _ in range(4 * runs):
            started = time.perf_counter()
            one(service.RankedRead("fit"), None)
            totals.append((time.perf_counter() - started) * 1000)
    finally:
        gc.callbacks.remove(on_gc)
    full = pauses[2]
    print(
        f"  {4 * runs} first pages in process: p50 {percentile(totals, 50):.2f}, p95 "
        f"{percentile(totals, 95):.2f}, max {max(totals):.2f}; full (generation 2) garbage "
        f"collections during them: {len(full)}, {sum(full):.0f} ms in all, longest "
        f"{max(full, default=0):.1f} ms ({tracked:,} objects tracked in this process); "
        f"generations 0-1: {len(pauses[0]) + len(pauses[1])} collections, "
        f"{sum(pauses[0]) + sum(pauses[1]):.0f} ms"
    )
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        one(service.RankedRead("fit"), None)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
    print(f"  cProfile of {runs} first pages in process, top 12 by own time:")
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    print("\n".join("    " + line for line in lines[-14:]))


# --- plans -------------------------------------------------------------------------------------


_CAPTURED = ("score_results", "profile_assignments", "score_counts", "assignment_counts")


class Capture:
    """The statements (with their parameters) the service runs on the bench's engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.statements: list[tuple[str, Any]] = []

    def __enter__(self) -> Capture:
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if any(table in statement for table in _CAPTURED):
            self.statements.append((statement, parameters))


def statements_of(db: Database, call: Callable[[sa.Connection], Any]) -> list[tuple[str, Any]]:
    with Capture(db.engine) as capture, db.read() as conn:
        call(conn)
    return capture.statements


def _median_ms(db: Database, statement: str, parameters: Any, runs: int = 5) -> float:
    times = []
    with db.engine.connect() as conn:
        for _ in range(runs):
            started = time.perf_counter()
            with conn.begin():
                conn.exec_driver_sql(statement, parameters).all()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _generic_plan(url: str, statement: str, parameters: dict[str, Any]) -> list[str]:
    """EXPLAIN ANALYZE of the statement prepared, forced to its generic plan."""
    import psycopg

    names: list[str] = []

    def dollar(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    text = re.sub(r"%\((\w+)\)s", dollar, statement)
    with psycopg.connect(url, autocommit=True, cursor_factory=psycopg.ClientCursor) as pg:
        pg.execute("SET plan_cache_mode = force_generic_plan")
        pg.execute(f"PREPARE bench_q AS {text}")
        marks = ", ".join(["%s"] * len(names))
        rows = pg.execute(
            f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_q({marks})", [parameters[n] for n in names]
        ).fetchall()
    return [r[0] for r in rows]


def explain(db: Database, url: str, label: str, statements: list[tuple[str, Any]]) -> list[bool]:
    """Print each statement, its plan(s) and median time; whether each plan uses the rank
    index (PostgreSQL: custom and generic plan)."""
    print(f"\n  -- {label}")
    uses = []
    for statement, parameters in statements:
        one_line = " ".join(statement.split())
        print(f"    SQL: {one_line}")
        print(f"    parameters: {parameters}")
        print(f"    median of 5 runs: {_median_ms(db, statement, parameters):.2f} ms")
        with db.engine.connect() as conn:
            if db.dialect == "postgresql":
                plan = [
                    r[0]
                    for r in conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
                    )
                ]
            else:
                plan = [
                    r[3]
                    for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                ]
        print("    plan:")
        print("\n".join(f"      {line}" for line in plan))
        ranked = "FROM score_results" in statement  # the rank index is for these
        if ranked:
            uses.append(any("ix_score_results_rank" in line for line in plan))
        if db.dialect == "postgresql":
            generic = _generic_plan(url, statement, parameters)
            print("    generic plan (prepared, plan_cache_mode = force_generic_plan):")
            print("\n".join(f"      {line}" for line in generic))
            if ranked:
                uses.append(any("ix_score_results_rank" in line for line in generic))
    return uses


def explain_all(db: Database, url: str, fixture: Fixture, cursors: dict[str, str]) -> None:
    org, pid = fixture.org_id, fixture.profile_id
    cases: list[tuple[str, Callable[[sa.Connection], Any]]] = [
        ("first page, desc", lambda c: service.ranked_page(c, org, pid, service.RankedRead("fit"))),
        (
            "cursor page, desc (cursor inside a tie of the spread scores)",
            lambda c: service.ranked_page(
                c, org, pid, service.RankedRead("fit", cursor=cursors["desc"])
            ),
        ),
        (
            "cursor page, asc",
            lambda c: service.ranked_page(
                c, org, pid, service.RankedRead("fit", order="asc", cursor=cursors["asc"])
            ),
        ),
        (
            "cursor page inside the 0 tie (tier=D&maxScore=0)",
            lambda c: service.ranked_page(
                c,
                org,
                pid,
                service.RankedRead("fit", tier="D", max_score=0.0, cursor=cursors["tie"]),
            ),
        ),
        (
            "first page, tier=B",
            lambda c: service.ranked_page(c, org, pid, service.RankedRead("fit", tier="B")),
        ),
        ("distribution", lambda c: service.distribution(c, org, pid, "fit", 10)),
    ]
    print("\nPlans (statements captured as scores.service runs them)")
    summary = []
    for label, call in cases:
        statements = statements_of(db, call)
        uses = explain(db, url, label, statements)
        summary.append((label, len(statements), uses))
    print(
        "\n  rank index used, per statement"
        + (" (custom, generic)" if db.dialect == "postgresql" else "")
        + ":"
    )
    for label, n, uses in summary:
        print(
            f"    {label}: {n} statement(s); score_results plans using it: "
            f"{' '.join('yes' if u else 'NO' for u in uses)}"
        )


# --- the run -----------------------------------------------------------------------------------


def postgres_settings(db: Database) -> str:
    with db.read() as conn:
        return ", ".join(
            f"{name}={conn.exec_driver_sql(f'SHOW {name}').scalar_one()}"
            for name in (
                "server_version",
                "shared_buffers",
                "work_mem",
                "autovacuum",
                "max_parallel_workers_per_gather",
            )
        )


def print_results(series: list[Series], baselines: dict[str, Series]) -> bool:
    print("\nResults (ms; server = the server's durationMs, client = round trip)")
    print(
        "| read | requests | server p50 | server p95 | server p99 | client p50 | client p95 | "
        "server p95 / baseline p95 | target (server p95) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for x in series:
        base = baselines.get(x.kind)
        ratio = f"{x.p(95) / base.p(95):.1f}x {base.label}" if base else ""
        if x.kind == "page":
            target, passed = f"<= {PAGE_TARGET_MS:g} ms", x.p(95) <= PAGE_TARGET_MS
        elif x.kind == "distribution":
            target, passed = "<= 1 s (max)", max(x.server_ms) <= DISTRIBUTION_TARGET_MS
        else:
            target, passed = "", True
        ok = ok and passed
        verdict = f"{target}: {'PASS' if passed else 'FAIL'}" if target else ""
        print(
            f"| {x.label} | {len(x.client_ms)} | {x.p(50):.2f} | {x.p(95):.2f} | "
            f"{x.p(99):.2f} | {x.p(50, server=False):.2f} | {x.p(95, server=False):.2f} | "
            f"{ratio} | {verdict} |"
        )
    for base in baselines.values():
        print(
            f"| baseline {base.label} | {len(base.client_ms)} | {base.p(50):.2f} | "
            f"{base.p(95):.2f} | {base.p(99):.2f} | {base.p(50, server=False):.2f} | "
            f"{base.p(95, server=False):.2f} | | |"
        )
    return ok


def run(args: argparse.Namespace) -> int:
    with profile_database(
        args.backend, "ranked", args.rows, args.seed, keep=args.keep, stale=args.stale
    ) as (scratch, db, fixture):
        print(f"  {database_facts(db, fixture)}")

        rnd_seed = args.seed + 1
        spread = random_positions(db, fixture, args.random, rnd_seed, lambda x: True)
        in_tie = random_positions(db, fixture, args.tie_pages, rnd_seed + 1, lambda x: x == 0)
        tie_read = service.RankedRead("fit", tier="D", max_score=0.0)
        random_desc = forge(fixture, service.RankedRead("fit"), spread)
        random_asc = forge(fixture, service.RankedRead("fit", order="asc"), spread)
        random_tie = forge(fixture, tie_read, in_tie)
        plan_cursors = {
            "desc": forge(
                fixture, service.RankedRead("fit"), [p for p in spread if 0 < p[0] < 100][:1]
            )[0],
            "asc": forge(
                fixture,
                service.RankedRead("fit", order="asc"),
                [p for p in spread if 0 < p[0] < 100][1:2],
            )[0],
            "tie": random_tie[0],
        }

        server = Server(scratch.url)
        client = None
        try:
            client = Client(server, fixture.api_key, fixture.profile_id)
            server.wait_ready(client.http)
            desc = {"dimension": "fit", "limit": 100}
            tie = {**desc, "tier": "D", "maxScore": 0}
            asc = {**desc, "order": "asc"}
            tier_b = {**desc, "tier": "B"}
            for params in (desc, tie, asc, tier_b):  # warm-up: not measured
                for _ in range(5):
                    client.get(client.scores, params, None)
            client.get(client.distribution, {"dimension": "fit", "buckets": 10}, None)
            before = scan_counters(db) if db.dialect == "postgresql" else {}
            n = args.first_pages
            series = [client.repeat("GET /healthz", "health", "/healthz", {}, n)]
            series.append(client.repeat("first page (desc)", "page", client.scores, desc, n))
            walked, walked_rows, _ = client.walk(f"walk {args.walk} pages (desc)", desc, args.walk)
            series.append(walked)
            series.append(client.from_cursors("cursor at a random row (desc)", desc, random_desc))
            series.append(
                client.repeat(
                    "0 tie: first page (tier=D, maxScore=0)", "page", client.scores, tie, n
                )
            )
            series.append(
                client.walk(f"0 tie: walk {args.tie_pages} pages", tie, args.tie_pages)[0]
            )
            series.append(client.from_cursors("0 tie: cursor at a random row", tie, random_tie))
            series.append(
                client.walk(
                    f"asc: walk {args.tie_pages} pages from the bottom", asc, args.tie_pages
                )[0]
            )
            series.append(client.from_cursors("asc: cursor at a random row", asc, random_asc))
            series.append(
                client.walk(
                    f"tier=B: first page + {args.tie_pages - 1} by cursor", tier_b, args.tie_pages
                )[0]
            )
            dist = client.repeat(
                "distribution (buckets=10)",
                "distribution",
                client.distribution,
                {"dimension": "fit", "buckets": 10},
                args.distributions,
            )
            series.append(dist)
            answer = client.get(client.distribution, {"dimension": "fit", "buckets": 10}, None)
            if db.dialect == "postgresql":
                time.sleep(1.5)  # backends report their scan counts within a second
                after = scan_counters(db)
                print(
                    "\n  during the HTTP runs: "
                    + ", ".join(f"{k} +{after[k] - before.get(k, 0)}" for k in after)
                )
        finally:
            if client is not None:
                client.http.close()
            server.stop()
        if server.failed():
            return 1
        print(
            f"  distribution answer: scored {answer['scored']:,}, assigned "
            f"{answer['assigned']:,}, mean {answer['mean']}, p50 {answer['p50']}, "
            f"p90 {answer['p90']}, tiers "
            + ", ".join(f"{t['name']} {t['count']:,}" for t in answer["tiers"])
        )
        check_walk(db, fixture, walked_rows)

        sql_page, sql_count = sql_baselines(db, fixture, args.first_pages, args.distributions)
        baselines = {"page": sql_page, "distribution": sql_count}
        ok = print_results(series, baselines)
        print(
            f"  /healthz (no key, no database) is the fixed cost of a request: server p50 "
            f"{series[0].p(50):.2f} ms, client p50 {series[0].p(50, server=False):.2f} ms"
        )
        breakdown(db, fixture, plan_cursors["desc"])
        explain_all(db, scratch.url, fixture, plan_cursors)
    print(
        f"\nRESULT {args.backend}{' --stale' if args.stale else ''}: targets "
        f"{'met' if ok else 'NOT met'}; load average at the end {load_average()}"
    )
    return 0


def profile_arguments(parser: argparse.ArgumentParser, seed: int) -> None:
    """The options of `profile_database`: --backend, --rows, --seed, --keep."""
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=seed)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    profile_arguments(parser, seed=13)
    parser.add_argument(
        "--stale",
        action="store_true",
        help="analyse the tables while empty and never after the load",
    )
    parser.add_argument("--first-pages", type=int, default=200, help="repeats of a first page")
    parser.add_argument("--walk", type=int, default=300, help="pages walked from the top")
    parser.add_argument("--random", type=int, default=200, help="pages from random rows")
    parser.add_argument("--tie-pages", type=int, default=100, help="pages per tie/asc/tier read")
    parser.add_argument("--distributions", type=int, default=10)
    args = parser.parse_args(argv)
    announce(f"ranked reads: {args.backend}{' --stale' if args.stale else ''}, {args.rows:,} rows")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
