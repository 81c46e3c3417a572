"""Concurrent requests through the real app: every outcome must be that of some serial order,
and no race may answer 5xx.

Each trial starts its requests together (a `threading.Barrier`) from threads sharing one
TestClient; the routes are sync and run in the app's thread pool on the shared database pool,
so on PostgreSQL they genuinely overlap. SQLite serialises writers (BEGIN IMMEDIATE), so its
half checks the same outcomes without a real race, with fewer trials.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.profiles import service as profiles
from signalscore.profiles.schemas import ProfileCreate
from tests.helpers import Tenant

Call = tuple[str, str, dict[str, Any]]


def trials(backend: str, postgresql: int) -> int:
    return postgresql if backend == "postgresql" else 8


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


def race(
    client: TestClient, tenant: Tenant, pool: ThreadPoolExecutor, calls: list[Call]
) -> list[httpx.Response]:
    """Send `calls` at the same moment, one thread each; their responses in order."""
    barrier = threading.Barrier(len(calls))

    def send(call: Call) -> httpx.Response:
        method, path, kwargs = call
        barrier.wait(timeout=10)
        return client.request(method, path, headers=tenant.headers, **kwargs)

    futures = [pool.submit(send, call) for call in calls]
    return [future.result(timeout=60) for future in futures]


def run_trials(count: int, trial: Callable[[int], str]) -> Counter[str]:
    """Run every trial, then fail listing every unexpected outcome (not just the first)."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for index in range(count):
        try:
            outcomes[trial(index)] += 1
        except AssertionError as exc:
            failures.append(f"trial {index}: {exc}")
    assert not failures, f"{len(failures)} of {count} trials failed:\n" + "\n".join(failures[:5])
    return outcomes


def no_5xx(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code < 500, f"{response.status_code} {response.text}"


def test_concurrent_profile_updates_lose_nothing(
    client: TestClient, tenant: Tenant, database: Database, backend: str, pool: ThreadPoolExecutor
) -> None:
    """`{"name": "N1"}` keeps the description it finds; racing `{"name": "N0", "description":
    "D2"}`, it must find D2 or run first. The lost update is N1 with the original description."""
    count = trials(backend, 60)
    with database.write() as conn:
        ids = [
            profiles.create_profile(
                conn,
                tenant.org_id,
                ProfileCreate(profileType="company", name="N", description="D0"),
            ).id
            for _ in range(count)
        ]

    def trial(index: int) -> str:
        path = f"/v1/scoring/profiles/{ids[index]}"
        keep, both = race(
            client,
            tenant,
            pool,
            [
                ("PUT", path, {"json": {"name": "N1"}}),
                ("PUT", path, {"json": {"name": "N0", "description": "D2"}}),
            ],
        )
        no_5xx([keep, both])
        assert keep.status_code == both.status_code == 200, (keep.text, both.text)
        final = client.get(path, headers=tenant.headers).json()
        state = (final["name"], final["description"])
        assert both.json()["name"] == "N0"
        assert both.json()["description"] == "D2"
        if state == ("N1", "D2"):  # N0/D2, then N1 (which kept D2)
            assert keep.json() == final
            return "N0/D2 then N1"
        if state == ("N0", "D2"):  # N1, then N0/D2
            assert (keep.json()["name"], keep.json()["description"]) == ("N1", "D0")
            assert both.json() == final
            return "N1 then N0/D2"
        raise AssertionError(f"no serial order ends in {state} (lost update)")

    outcomes = run_trials(count, trial)
    assert sum(outcomes.values()) == count
