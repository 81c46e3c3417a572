"""SIGTERM on `signalscore serve`: the request in flight is finished (not cut), and the
embedded worker stops between batches and releases its leases, leaving nothing half done."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import sqlalchemy as sa

from signalscore.db.engine import Database, create_db_engine
from signalscore.db.tables import recompute_queue
from tests.helpers import assert_scores_fresh, drain
from tests.outage.test_database_outage import SIGNALSCORE, _free_port, _wait_until


def test_sigterm_drains_the_request_in_flight_and_releases_leases(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'signalscore.db'}"
    port = _free_port()
    env = {**os.environ, "SIGNALSCORE_DATABASE_URL": url, "SIGNALSCORE_WORKER_BATCH_SIZE": "5"}
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [SIGNALSCORE, "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the server")
        key = next(w for w in log.read_text().split() if w.startswith("sk_live_"))
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        # A realistic sample whose 4,000 companies the embedded worker is busy scoring, in
        # batches of 5 so that it is certainly still at it when SIGTERM lands.
        subprocess.run(
            [SIGNALSCORE, "demo", "--companies", "4000"],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )

        # A request whose body is still arriving when SIGTERM lands.
        in_flight = threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield b'{"profileType": "company", '
            in_flight.set()  # connected, headers and the first bytes sent
            time.sleep(0.6)
            yield b'"name": "sent during shutdown"}'

        result: dict[str, httpx.Response] = {}

        def send() -> None:
            result["response"] = httpx.post(
                f"{base}/v1/scoring/profiles", content=slow_body(), headers=headers, timeout=30
            )

        sender = threading.Thread(target=send)
        sender.start()
        assert in_flight.wait(timeout=30), "the request never started"
        time.sleep(0.1)
        server.send_signal(signal.SIGTERM)
        sender.join(timeout=30)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    response = result["response"]
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "sent during shutdown"
    assert server.returncode in (0, -15)  # uvicorn re-raises SIGTERM after a clean shutdown
    assert "Application shutdown complete" in log.read_text()

    database = Database(create_db_engine(url))
    try:
        with database.read() as conn:
            left = conn.execute(sa.select(sa.func.count()).select_from(recompute_queue)).scalar()
            leased = conn.execute(
                sa.select(sa.func.count())
                .select_from(recompute_queue)
                .where(recompute_queue.c.claimed_by.is_not(None))
            ).scalar()
        assert left, "the worker finished everything before SIGTERM; nothing was tested"
        assert leased == 0, "a lease survived the shutdown"
        # What was left is intact: another worker finishes it and every score is right.
        drain(database)
        assert_scores_fresh(database)
    finally:
        database.dispose()
