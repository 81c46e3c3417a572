"""A PostgreSQL outage, with a PostgreSQL server this test owns (initdb in a temp dir, its own
port), stopped and started under a running API server and worker:

- while it is down, requests get 503 envelopes with Retry-After quickly, /readyz is 503,
  /healthz stays 200, and the worker waits with back-off instead of dying or spinning;
- when it returns, everything recovers without a restart and the work queued before the
  outage is all computed (the SPEC §7 invariant holds).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from signalscore.db.engine import Database, create_db_engine
from tests.conftest import IN_CI
from tests.helpers import assert_error, assert_scores_fresh

SIGNALSCORE = str(Path(sys.executable).with_name("signalscore"))
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnPostgres:
    """A throwaway cluster run as the `postgres` user (initdb refuses root)."""

    def __init__(self, root: Path) -> None:
        assert PG_BIN is not None
        self.data = root / "pgdata"
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        root.chmod(0o777)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )

    def _as_postgres(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        assert PG_BIN is not None
        self._as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.data / "log"),
            "-o",
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        assert PG_BIN is not None
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    reason = None
    if PG_BIN is None or (shutil.which("runuser") is None and os.geteuid() == 0):
        reason = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
    if reason:
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="signalscore-own-pg-"))
    try:
        server = OwnPostgres(root)
        server.start()
        yield server
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _spawn(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SIGNALSCORE, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_outage_gives_fast_503s_and_everything_recovers_without_restart(
    own_postgres: OwnPostgres, tmp_path: Path
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "SIGNALSCORE_DATABASE_URL": own_postgres.url,
        "SIGNALSCORE_DB_CONNECT_TIMEOUT": "2",
        "SIGNALSCORE_WORKER_POLL_SECONDS": "0.05",
    }
    server_log, worker_log = tmp_path / "server.log", tmp_path / "worker.log"
    server = _spawn("serve", "--port", str(port), "--no-embedded-worker", env=env, log=server_log)
    worker: subprocess.Popen[bytes] | None = None
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the server")
        key = next(w for w in server_log.read_text().split() if w.startswith("sk_live_"))
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)

        # Configure, and queue work that nobody computes yet (no worker is running).
        api.post(
            "/v1/signals/templates",
            json={
                "id": "employees",
                "name": "Headcount",
                "objectType": "company",
                "answerType": "number",
            },
        ).raise_for_status()
        profile = api.post(
            "/v1/scoring/profiles", json={"profileType": "company", "name": "ICP"}
        ).json()
        api.put(
            f"/v1/scoring/profiles/{profile['id']}/rules",
            json={
                "signalTemplateId": "employees",
                "dimension": "fit",
                "answerType": "number",
                "pointValues": {"ranges": [{"max": 100, "points": 1}, {"min": 100, "points": 5}]},
            },
        ).raise_for_status()
        companies = [f"c{i}.com" for i in range(50)]
        api.post(
            "/v1/scoring/assignments/bulk",
            json={
                "profileId": profile["id"],
                "objectType": "company",
                "objectIds": companies,
            },
        ).raise_for_status()
        api.put(
            "/v1/signals/values",
            json={
                "values": [
                    {
                        "objectType": "company",
                        "objectId": c,
                        "signalTemplateId": "employees",
                        "value": i * 7,
                    }
                    for i, c in enumerate(companies)
                ]
            },
        ).raise_for_status()
        assert api.get("/v1/scoring/compute/status").json()["pending"] == 50

        own_postgres.stop()
        # A worker started during the outage waits for the database instead of exiting.
        worker = _spawn("worker", env=env, log=worker_log)

        started = time.monotonic()
        down = api.get("/v1/scoring/profiles")
        elapsed = time.monotonic() - started
        error = assert_error(down, 503, "SERVICE_UNAVAILABLE", type_="UNAVAILABLE")
        assert error["errorAction"] == "RETRY"
        assert int(down.headers["retry-after"]) > 0
        assert elapsed < 5, f"503 took {elapsed:.1f} s"
        assert "psycopg" not in down.text
        assert_error(
            api.put(
                "/v1/signals/values",
                json={
                    "values": [
                        {
                            "objectType": "company",
                            "objectId": "c1.com",
                            "signalTemplateId": "employees",
                            "value": 1,
                        }
                    ]
                },
            ),
            503,
            "SERVICE_UNAVAILABLE",
        )
        assert_error(httpx.get(f"{base}/readyz"), 503, "SERVICE_UNAVAILABLE")
        assert httpx.get(f"{base}/healthz").status_code == 200
        # Its first attempt: as soon as it has started (a busy machine may take seconds to
        # import and spawn it); then a few seconds of backing off, not a tight loop.
        _wait_until(lambda: "database unavailable" in worker_log.read_text(), 30, "a first attempt")
        first = worker_log.read_text().count("database unavailable")
        time.sleep(3)
        assert worker.poll() is None, "the worker died during the outage"
        retries = worker_log.read_text().count("database unavailable") - first
        assert 1 <= retries <= 10, f"{retries} more connection attempts in 3 s: no back-off"

        own_postgres.start()
        _wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "recovery")
        assert api.get("/v1/scoring/profiles").status_code == 200
        _wait_until(
            lambda: (
                api.get("/v1/scoring/compute/status").json()
                == {"pending": 0, "running": 0, "oldestPendingSeconds": 0.0}
            ),
            60,
            "the queued work to be computed",
        )
        scores = api.get(
            "/v1/scoring/scores",
            params=[("objectType", "company"), *[("objectId", c) for c in companies]],
        ).json()
        assert len(scores) == 50
    finally:
        for process in (server, worker):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    database = Database(create_db_engine(own_postgres.url))
    try:
        assert_scores_fresh(database)
    finally:
        database.dispose()
    # uvicorn re-raises SIGTERM after its graceful shutdown, so -15 is a clean exit too.
    assert server.returncode in (0, -15)
    assert "Application shutdown complete" in server_log.read_text()
    assert worker is not None
    assert worker.returncode == 0
