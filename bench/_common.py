"""Helpers shared by bench/recompute.py and bench/freshness.py.

Scratch databases (created and dropped by the benchmark itself), the 20-template / 20-rule
company profile the pipeline benchmarks use, seeded company values, and small statistics.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import socket
import tempfile
import time
import timeit
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get(
    "SIGNALSCORE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"

# --- scratch databases ---------------------------------------------------------------------------


@dataclass
class ScratchDatabase:
    backend: str  # "postgresql" or "sqlite"
    url: str
    name: str  # database name (PostgreSQL) or file path (SQLite)


def _pg_admin_engine() -> sa.Engine:
    return sa.create_engine(
        PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )


def create_scratch(backend: str, tag: str) -> ScratchDatabase:
    """A fresh, empty database owned by this run."""
    name = f"signalscore_bench_{tag}_{os.getpid()}_{int(time.time()) % 100000}"
    if backend == "postgresql":
        admin = _pg_admin_engine()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return ScratchDatabase(backend, f"{base}/{name}", name)
    path = Path(tempfile.gettempdir()) / f"{name}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return ScratchDatabase(backend, f"sqlite:///{path}", str(path))


def drop_scratch(scratch: ScratchDatabase) -> None:
    if scratch.backend == "postgresql":
        admin = _pg_admin_engine()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)')
        admin.dispose()
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{scratch.name}{suffix}").unlink(missing_ok=True)


@contextlib.contextmanager
def scratch_database(backend: str, tag: str, *, keep: bool = False) -> Iterator[ScratchDatabase]:
    scratch = create_scratch(backend, tag)
    try:
        yield scratch
    finally:
        if keep:
            print(f"  (kept scratch database {scratch.url})")
        else:
            drop_scratch(scratch)


def copy_assignments(
    cursor: Any, org_id: str, profile_id: uuid.UUID, objects: Sequence[str], now: datetime
) -> None:
    """COPY one profile's company assignments (PostgreSQL; `cursor` is a psycopg cursor)."""
    columns = "organization_id, id, profile_id, object_type, object_id, assigned_at"
    with cursor.copy(f"COPY profile_assignments ({columns}) FROM STDIN") as copy:
        for object_id in objects:
            copy.write_row((org_id, uuid.uuid4(), profile_id, "company", object_id, now))


# --- the profile: 20 templates, 20 rules ---------------------------------------------------------

TECH = [
    "Salesforce",
    "HubSpot",
    "Pipedrive",
    "Zoho",
    "Microsoft Dynamics",
    "Close",
    "Copper",
    "Freshsales",
    "Attio",
    "Monday",
    "Snowflake",
    "BigQuery",
    "Redshift",
    "Databricks",
    "dbt",
    "Segment",
    "Amplitude",
    "Mixpanel",
    "Looker",
    "Tableau",
    "Slack",
    "Teams",
    "Zoom",
    "Gong",
    "Outreach",
    "Salesloft",
    "Apollo",
    "Clearbit",
    "ZoomInfo",
    "Marketo",
]
INDUSTRIES = [
    "Software",
    "Fintech",
    "Healthcare",
    "Retail",
    "Manufacturing",
    "Logistics",
    "Education",
    "Media",
    "Energy",
    "Insurance",
    "Telecom",
    "Real Estate",
]
REGIONS = ["EMEA", "North America", "LATAM", "APAC", "Nordics", "DACH", "UK&I", "Benelux"]
ROLES = ["Sales", "RevOps", "Marketing", "Engineering", "Data", "Customer Success", "Finance"]
COUNTRIES = ["US", "DE", "FR", "GB", "NL", "SE", "ES", "IT", "BR", "JP", "IN", "CA", "AU"]

# (template id, answer type): 8 numeric, 6 boolean, 6 list. The last two have no rule (real
# organisations keep signals no profile scores yet); their values are stored all the same.
TEMPLATES: list[tuple[str, str]] = [
    ("employees", "number"),
    ("revenue", "currency"),
    ("growth", "percentage"),
    ("funding", "currency"),
    ("open_roles", "number"),
    ("web_traffic", "number"),
    ("b2b", "boolean"),
    ("has_sales_team", "boolean"),
    ("uses_competitor", "boolean"),
    ("hiring_sales", "boolean"),
    ("recent_funding", "boolean"),
    ("leadership_change", "boolean"),
    ("crm", "list"),
    ("data_stack", "list"),
    ("industry", "list"),
    ("region", "list"),
    ("sales_tools", "list"),
    ("hiring_roles", "list"),
    ("founded_year", "number"),
    ("countries", "list"),
]


def _ranges(*bounds: tuple[float | None, float | None, float]) -> dict[str, Any]:
    return {"ranges": [{"min": lo, "max": hi, "points": p} for lo, hi, p in bounds]}


# (template, dimension, answer type, pointValues): the same 20 rules as bench/engine.py —
# 6 numeric range rules, 6 boolean, 8 list rules over all five modes, on fit and urgency.
RULES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "employees",
        "fit",
        "number",
        _ranges(
            (None, 10, -10),
            (10, 50, 5),
            (50, 200, 15),
            (200, 1000, 25),
            (1000, 5000, 20),
            (5000, None, 10),
        ),
    ),
    (
        "revenue",
        "fit",
        "currency",
        _ranges((0, 1e6, 0), (1e6, 1e7, 10), (1e7, 1e8, 20), (1e8, None, 15)),
    ),
    (
        "growth",
        "urgency",
        "percentage",
        _ranges((None, 5, -5), (5, 20, 5), (20, 50, 12), (50, None, 20)),
    ),
    ("funding", "urgency", "currency", _ranges((0, 5e6, 2), (5e6, 5e7, 10), (5e7, None, 18))),
    (
        "open_roles",
        "urgency",
        "number",
        _ranges((None, 1, 0), (1, 5, 4), (5, 20, 9), (20, None, 14)),
    ),
    (
        "web_traffic",
        "fit",
        "number",
        _ranges(
            (0, 1_000, 0),
            (1_000, 10_000, 3),
            (10_000, 100_000, 6),
            (100_000, 1_000_000, 9),
            (1_000_000, None, 12),
        ),
    ),
    ("b2b", "fit", "boolean", {"true": 20, "false": -10}),
    ("has_sales_team", "fit", "boolean", {"true": 10}),
    ("uses_competitor", "fit", "boolean", {"true": -15, "false": 5}),
    ("hiring_sales", "urgency", "boolean", {"true": 15, "false": 0}),
    ("recent_funding", "urgency", "boolean", {"true": 12}),
    ("leadership_change", "urgency", "boolean", {"true": 8, "false": -2}),
    (
        "crm",
        "fit",
        "list",
        {
            "choices": {"Salesforce": 10, "HubSpot": 8, "Pipedrive": 4, "Zoho": -3},
            "mode": "additive",
        },
    ),
    (
        "data_stack",
        "fit",
        "list",
        {
            "choices": {"Snowflake": 6, "BigQuery": 5, "Databricks": 6, "dbt": 3, "Redshift": 2},
            "mode": "additive",
        },
    ),
    (
        "industry",
        "fit",
        "list",
        {
            "choices": {"Software": 15, "Fintech": 12, "Healthcare": 6, "Retail": 3},
            "mode": "best-match",
        },
    ),
    (
        "region",
        "fit",
        "list",
        {
            "choices": {"EMEA": 5, "North America": 8, "DACH": 6, "Nordics": 4},
            "mode": "best-match",
        },
    ),
    (
        "sales_tools",
        "urgency",
        "list",
        {"choices": {"Gong": 4, "Outreach": 4, "Salesloft": 4}, "mode": "additive"},
    ),
    ("sales_tools", "fit", "list", {"choices": {"Slack": 3, "Zoom": 3}, "mode": "contains-all"}),
    (
        "crm",
        "urgency",
        "list",
        {
            "choices": {"Salesforce": 7, "HubSpot": 7, "Microsoft Dynamics": 7},
            "mode": "contains-none",
        },
    ),
    (
        "hiring_roles",
        "urgency",
        "list",
        {"choices": {"Sales": 6, "RevOps": 6}, "mode": "exact-match"},
    ),
]


def _vary(text: str, rnd: random.Random) -> str:
    """The same choice as different writers spell it (case only: the API trims)."""
    roll = rnd.random()
    if roll < 0.7:
        return text
    if roll < 0.85:
        return text.lower()
    return text.upper()


def _pick(vocabulary: Sequence[str], rnd: random.Random, most: int) -> list[str]:
    return [_vary(t, rnd) for t in rnd.sample(vocabulary, rnd.randint(0, most))]


def value_generators(rnd: random.Random) -> dict[str, Callable[[], Any]]:
    """One generator per template; every value is valid for its answer type (SPEC §5)."""
    return {
        "employees": lambda: int(rnd.lognormvariate(4.5, 1.6)),
        "revenue": lambda: round(rnd.lognormvariate(15.5, 2.0), 2),
        "growth": lambda: round(min(100.0, max(0.0, rnd.gauss(18, 25))), 1),
        "funding": lambda: float(round(rnd.lognormvariate(15.0, 1.8), -3)),
        "open_roles": lambda: rnd.randint(0, 60),
        "web_traffic": lambda: int(rnd.lognormvariate(9.5, 2.0)),
        "b2b": lambda: rnd.random() < 0.7,
        "has_sales_team": lambda: rnd.random() < 0.6,
        "uses_competitor": lambda: rnd.random() < 0.2,
        "hiring_sales": lambda: rnd.random() < 0.3,
        "recent_funding": lambda: rnd.random() < 0.25,
        "leadership_change": lambda: rnd.random() < 0.1,
        "crm": lambda: _pick(TECH[:10], rnd, 2),
        "data_stack": lambda: _pick(TECH[10:16], rnd, 4),
        "industry": lambda: _pick(INDUSTRIES, rnd, 2),
        "region": lambda: _pick(REGIONS, rnd, 3),
        "sales_tools": lambda: _pick(TECH[20:], rnd, 5),
        "hiring_roles": lambda: _pick(ROLES, rnd, 3),
        "founded_year": lambda: rnd.randint(1950, 2024),
        "countries": lambda: rnd.sample(COUNTRIES, rnd.randint(1, 4)),
    }


def company_ids(count: int) -> list[str]:
    return [f"company-{i:07d}.example.com" for i in range(count)]


def company_values(count: int, seed: int, presence: float = 0.8) -> Iterator[tuple[str, str, Any]]:
    """(objectId, templateId, value) for `count` companies; each of the 20 templates has a
    value with probability `presence` (about 16 values per company)."""
    rnd = random.Random(seed)
    generators = value_generators(rnd)
    for object_id in company_ids(count):
        for template_id, make in generators.items():
            if rnd.random() < presence:
                yield object_id, template_id, make()


# --- small helpers -------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def speed_probe() -> float:
    """Microseconds for `sum(range(1000))`, best of 5: a yardstick for this machine right now."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def announce(what: str) -> None:
    """Start a benchmark's run: clean up (servers stopped, scratch databases dropped) on
    Ctrl-C and on SIGTERM, and print what runs, on what machine, in what state, and where
    `signalscore` is imported from."""
    import signal
    import sys

    import signalscore

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    print(
        f"{what}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{load_average()}, speed probe sum(range(1000)) = {speed_probe():.1f} µs; "
        f"signalscore from {os.path.dirname(signalscore.__file__)}"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM (peak resident set size) of a process, in MB; 0.0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def count_mismatches(
    sample: Sequence[str],
    profile: Any,
    values: Mapping[str, Mapping[str, Any]],
    stored: Mapping[str, Mapping[str, Any]],
    observed: Mapping[str, Mapping[str, str]] | None = None,
) -> int:
    """How many sampled objects' stored rows differ from `profile.score` over their values
    and their observedAt texts, now (printing the first five)."""
    mismatches = 0
    now = datetime.now(UTC)
    for object_id in sample:
        times = (observed or {}).get(object_id, {})
        expected = profile.score(values.get(object_id, {}), times, now)
        got = stored.get(object_id, {})
        problem = None
        if sorted(expected) != sorted(got):
            problem = f"dimensions {sorted(got)} != {sorted(expected)}"
        else:
            for dimension, result in expected.items():
                row = got[dimension]
                if (
                    row.score != result.score
                    or row.contributions != result.contributions
                    or row.signal_coverage != result.signal_coverage
                    or row.total_rules != result.total_rules
                ):
                    problem = f"{dimension}: stored {row.score}, expected {result.score}"
                    break
        if problem:
            mismatches += 1
            if mismatches <= 5:
                print(f"    MISMATCH {object_id}: {problem}")
    return mismatches
