"""A live server for the client's tests: the real `signalscore serve`, started here as a
subprocess, on a fresh SQLite file and on a scratch PostgreSQL database.

The client's tests run in a virtual environment that has the client and not the server
(`clients/python/scripts/test`), so the server is run from its own installation:
`SIGNALSCORE_SERVER_BIN` (default: the repository's `.venv/bin/signalscore`). Its Python
(beside it) creates and drops the scratch PostgreSQL databases. API keys come from the
server's command line (`signalscore org create --json`).

Without a reachable PostgreSQL the PostgreSQL half skips with the reason, unless CI=true,
where it fails, as in the server's own tests.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
SERVER_BIN = Path(
    os.environ.get("SIGNALSCORE_SERVER_BIN") or REPO / ".venv" / "bin" / "signalscore"
)
SERVER_PYTHON = SERVER_BIN.parent / "python"
CLIENT_CLI = Path(sys.executable).parent / "signalscore-client"
POSTGRES_ADMIN_URL = os.environ.get(
    "SIGNALSCORE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")
ORGANIZATIONS = 3  # per server: one shared, two for tests that compare whole organisations

_postgres_passed = 0

_PG_ADMIN = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True, connect_timeout=3) as conn:
    if sys.argv[2] == "check":
        conn.execute("SELECT 1")
    elif sys.argv[2] == "create":
        conn.execute('CREATE DATABASE "%s"' % sys.argv[3])
    else:
        conn.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % sys.argv[3])
"""


_DUMP_VALUES = """
import json, sys
import sqlalchemy as sa
from signalscore.db.engine import create_db_engine
from signalscore.db.tables import signal_values as t
engine = create_db_engine(sys.argv[1])
with engine.connect() as conn:
    rows = conn.execute(
        sa.select(t.c.object_type, t.c.object_id, t.c.signal_template_id, t.c.value,
                  t.c.observed_at)
        .where(t.c.organization_id == sys.argv[2])
        .order_by(t.c.object_type, t.c.object_id, t.c.signal_template_id)
    ).all()
print(json.dumps([[*row[:4], row[4].isoformat()] for row in rows]))
"""


def _pg_admin(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SERVER_PYTHON), "-c", _PG_ADMIN, POSTGRES_ADMIN_URL, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def postgres_unavailable_reason() -> str | None:
    done = _pg_admin("check")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is unreachable ({last[:200]})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def create_organization(database_url: str, name: str) -> str:
    out = subprocess.run(
        [str(SERVER_BIN), "org", "create", name, "--json", "--database-url", database_url],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return str(json.loads(out.strip().splitlines()[-1])["apiKey"])


@dataclass
class LiveServer:
    backend: str
    url: str
    database_url: str
    keys: list[str]
    process: subprocess.Popen[str]
    errors: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The shared organisation's key."""
        return self.keys[0]


def _start(backend: str, database_url: str) -> LiveServer:
    # The first call migrates the empty database; the others can then run at once.
    keys = [create_organization(database_url, "client tests 0")]
    with_names = [f"client tests {i}" for i in range(1, ORGANIZATIONS)]
    threads: list[threading.Thread] = []
    more: dict[str, str] = {}
    for name in with_names:
        thread = threading.Thread(
            target=lambda n=name: more.__setitem__(n, create_organization(database_url, n))
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    keys += [more[name] for name in with_names]
    port = _free_port()
    process = subprocess.Popen(
        [
            str(SERVER_BIN),
            "serve",
            "--port",
            str(port),
            "--database-url",
            database_url,
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # The webhook test's receiver listens on 127.0.0.1.
        env={**os.environ, "SIGNALSCORE_WEBHOOK_ALLOW_PRIVATE": "true"},
    )
    server = LiveServer(backend, f"http://127.0.0.1:{port}", database_url, keys, process)

    def drain() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "Traceback" in line or '"level": "error"' in line.lower():
                server.errors.append(line.rstrip())

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {server.errors}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the server did not become ready in 60 s")
        time.sleep(0.1)


def _stop(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if not SERVER_BIN.exists():
        pytest.fail(f"no server at {SERVER_BIN} (set SIGNALSCORE_SERVER_BIN)", pytrace=False)
    path = tmp_path_factory.mktemp("sqlite") / "signalscore.db"
    server = _start("sqlite", f"sqlite:///{path}")
    yield server
    _stop(server)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LiveServer]:
    if not SERVER_BIN.exists():
        pytest.fail(f"no server at {SERVER_BIN} (set SIGNALSCORE_SERVER_BIN)", pytrace=False)
    reason = postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}: the PostgreSQL tests must run", pytrace=False)
        pytest.skip(reason)
    name = f"signalscore_client_test_{os.getpid()}_{secrets.token_hex(3)}"
    created = _pg_admin("create", name)
    assert created.returncode == 0, created.stderr
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    server = _start("postgresql", f"{base}/{name}")
    yield server
    _stop(server)
    _pg_admin("drop", name)


@pytest.fixture(params=BACKENDS)
def server(request: pytest.FixtureRequest) -> LiveServer:
    """The live server of each backend (one per session and backend)."""
    fixture = "sqlite_server" if request.param == "sqlite" else "postgres_server"
    live: LiveServer = request.getfixturevalue(fixture)
    return live


def dump_values(server: LiveServer, organization_id: str) -> list[tuple[Any, ...]]:
    """The organisation's rows of `signal_values`, read from the database by the server's
    own Python: (objectType, objectId, template, value, observedAt), in key order."""
    done = subprocess.run(
        [str(SERVER_PYTHON), "-c", _DUMP_VALUES, server.database_url, organization_id],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [tuple(row) for row in json.loads(done.stdout)]


def run_cli(
    server: LiveServer, *args: str, key: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`signalscore-client ARGS` against the server, configured by the environment."""
    env = {
        **os.environ,
        "SIGNALSCORE_URL": server.url,
        "SIGNALSCORE_API_KEY": key or server.key,
    }
    return subprocess.run(
        [str(CLIENT_CLI), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _postgres_passed
    if report.when == "call" and report.passed and "postgresql" in report.nodeid:
        _postgres_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    collected_postgres = any("postgresql" in item.nodeid for item in session.items)
    if IN_CI and collected_postgres and _postgres_passed == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    terminalreporter.write_line(f"PostgreSQL tests passed: {_postgres_passed}")
