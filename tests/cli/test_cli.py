"""The `signalscore` console command, run as a real process against both databases."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers import assert_error

SIGNALSCORE = str(Path(sys.executable).with_name("signalscore"))


def run_cli(*args: str, database_url: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SIGNALSCORE_DATABASE_URL": database_url}
    return subprocess.run(
        [SIGNALSCORE, *args], env=env, capture_output=True, text=True, check=check, timeout=60
    )


def test_org_create_json_key_authenticates_and_revocation_stops_it(
    database_url: str, client: TestClient
) -> None:
    created = run_cli("org", "create", "Acme Corp", "--json", database_url=database_url)
    payload = json.loads(created.stdout)  # exactly one JSON object, nothing else
    assert set(payload) == {"organizationId", "apiKey"}
    assert re.fullmatch(r"[0-9a-f]{24}", payload["organizationId"])
    assert re.fullmatch(r"sk_live_[A-Za-z0-9]{32,}", payload["apiKey"])
    headers = {"Authorization": f"Bearer {payload['apiKey']}"}

    response = client.get("/v1/organization", headers=headers)
    assert response.status_code == 200
    assert response.json()["id"] == payload["organizationId"]

    listed = json.loads(
        run_cli(
            "key", "list", "--org", payload["organizationId"], "--json", database_url=database_url
        ).stdout
    )
    assert len(listed) == 1
    assert payload["apiKey"].startswith(listed[0]["prefix"])
    assert listed[0]["revokedAt"] is None

    revoked = run_cli("key", "revoke", listed[0]["prefix"], database_url=database_url)
    assert "revoked" in revoked.stdout
    # A running server that has the key cached hears of a revocation by another process
    # within SIGNALSCORE_AUTH_CACHE_SECONDS (docs/configuration.md, "Rate limits").
    ttl = client.app.state.settings.auth_cache_seconds  # type: ignore[attr-defined]
    deadline = time.monotonic() + ttl + 2
    while client.get("/v1/organization", headers=headers).status_code == 200:
        assert time.monotonic() < deadline, "the revoked key still works after the cache TTL"
        time.sleep(0.2)
    assert_error(client.get("/v1/organization", headers=headers), 401, "UNAUTHORIZED")


def test_key_create_adds_a_working_key_and_list_never_shows_secrets(
    database_url: str, client: TestClient
) -> None:
    org_id = json.loads(
        run_cli("org", "create", "Acme", "--json", database_url=database_url).stdout
    )["organizationId"]
    second = json.loads(
        run_cli("key", "create", "--org", org_id, "--json", database_url=database_url).stdout
    )
    response = client.get(
        "/v1/organization", headers={"Authorization": f"Bearer {second['apiKey']}"}
    )
    assert response.json()["id"] == org_id
    listing = run_cli("key", "list", "--org", org_id, database_url=database_url).stdout
    assert len(listing.strip().splitlines()) == 2
    assert second["apiKey"] not in listing
    assert second["apiKey"][:16] in listing

    run_cli("key", "revoke", second["keyId"], database_url=database_url)
    listing = run_cli("key", "list", "--org", org_id, database_url=database_url).stdout
    assert listing.count("revoked") == 1


@pytest.mark.parametrize(
    "args",
    [
        ("key", "create", "--org", "000000000000000000000000"),
        ("key", "list", "--org", "000000000000000000000000"),
        ("key", "revoke", "sk_live_nothere1"),
        ("org", "create", "   "),
    ],
)
def test_cli_errors_are_clear_and_nonzero(database_url: str, args: tuple[str, ...]) -> None:
    result = run_cli(*args, database_url=database_url, check=False)
    assert result.returncode != 0
    assert "Error" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_creates_a_default_organization_once_and_prints_a_working_key(
    database_url: str,
) -> None:
    port = _free_port()
    env = {**os.environ, "SIGNALSCORE_DATABASE_URL": database_url}
    proc = subprocess.Popen(
        [SIGNALSCORE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        key = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            match = re.search(r"sk_live_[A-Za-z0-9]{32,}", line)
            if match:
                key = match.group(0)
            if "Uvicorn running" in line:
                break
        assert key, "serve did not print an API key"
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/organization",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.json()["name"] == "Default organization"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # A second start against the same database creates nothing and prints no key.
    second = subprocess.Popen(
        [SIGNALSCORE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert second.stdout is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = second.stdout.readline()
            seen.append(line)
            if "Uvicorn running" in line:
                break
        assert not any("sk_live_" in line for line in seen)
    finally:
        second.terminate()
        second.wait(timeout=20)
