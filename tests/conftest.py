"""Shared fixtures. Every database-touching test runs on SQLite and on PostgreSQL.

- SQLite: the migrations build a template file once per session; each test gets a copy.
- PostgreSQL: the migrations build a private database once per session; each test starts
  from empty tables (emptied after the test: DELETE while they are small, else TRUNCATE).
Without a reachable PostgreSQL the PostgreSQL half skips with the reason, unless CI=true,
where it fails: CI must never pass with that half silently skipped.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine, make_url

from signalscore.app import create_app
from signalscore.config import Settings
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import metadata
from tests.helpers import Tenant, make_tenant

BACKENDS = ("sqlite", "postgresql")
POSTGRES_ADMIN_URL = os.environ.get(
    "SIGNALSCORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_postgres_passed = 0


def postgres_unavailable_reason() -> str | None:
    try:
        engine = create_db_engine(POSTGRES_ADMIN_URL, connect_timeout=3)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({type(exc).__name__})"
    return None


@contextlib.contextmanager
def scratch_postgres_engine(prefix: str, create_options: str = "") -> Iterator[Engine]:
    """A brand-new, empty PostgreSQL database for one test, dropped afterwards.

    Fails under CI, and skips elsewhere, when PostgreSQL is unavailable."""
    reason = postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" {create_options}'))
    engine = create_db_engine(make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string())
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _admin_engine() -> Engine:
    return create_db_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def postgres_template_url() -> Iterator[str]:
    reason = postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: the PostgreSQL tests must run", pytrace=False)
        pytest.skip(reason)
    name = f"signalscore_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    upgrade_to_head(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database of the test's backend."""
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template_path")
        path = tmp_path / "signalscore.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_template_url")
    yield url
    _truncate_all(url)


# Above this size (heap, indexes and TOAST) in any table, the tables are truncated rather
# than emptied row by row: a test that wrote (or queued and drained) many rows leaves no
# bloat or dead tuples for the next one.
_DELETE_AT_MOST_BYTES = 1024 * 1024


def _truncate_all(url: str) -> None:
    """Empty every table. Most tests write a few rows: DELETE (children first) is ~10x
    faster than TRUNCATE (~8 ms against ~80-100 ms on a loaded 2-core machine, for ~900
    PostgreSQL tests); anything larger is truncated, as every table used to be."""
    engine = create_db_engine(url)
    tables = metadata.sorted_tables
    with engine.begin() as conn:
        largest = conn.execute(
            sa.text(
                "SELECT max(pg_total_relation_size(c.oid)) FROM pg_class c"
                " WHERE c.relnamespace = current_schema()::regnamespace"
                " AND c.relkind = 'r' AND c.relname = ANY(:names)"
            ),
            {"names": [t.name for t in tables]},
        ).scalar_one()
        if largest <= _DELETE_AT_MOST_BYTES:
            for table in reversed(tables):
                conn.execute(table.delete())
        else:
            names = ", ".join(f'"{t.name}"' for t in tables)
            conn.execute(sa.text(f"TRUNCATE {names} CASCADE"))
    engine.dispose()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    db = Database(create_db_engine(database_url, connect_timeout=3))
    yield db
    db.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    # No embedded worker: tests drain the queue themselves, deterministically.
    return Settings(database_url=database_url, embedded_worker=False)


@pytest.fixture
def client(settings: Settings, database: Database) -> Iterator[TestClient]:
    app = create_app(settings, database)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def tenant(database: Database) -> Tenant:
    return make_tenant(database, "Tenant A")


@pytest.fixture
def other_tenant(database: Database) -> Tenant:
    return make_tenant(database, "Tenant B")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgresql" in report.nodeid:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller decides
        return
    collected_postgres = any("postgresql" in item.nodeid for item in session.items)
    if IN_CI and collected_postgres and _postgres_passed == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if hasattr(terminalreporter.config, "workerinput"):
        return
    terminalreporter.write_line(f"PostgreSQL tests passed: {_postgres_passed}")
