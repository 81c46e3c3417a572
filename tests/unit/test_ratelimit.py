"""The rate limiter and the key cache without HTTP: windows, the decision reported, the
address block, backend choice, a merge that fails, and what the key cache keeps."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from signalscore.auth import service as auth_service
from signalscore.auth.keys import generate_key, hash_key
from signalscore.config import Settings
from signalscore.db.engine import create_db_engine
from signalscore.ratelimit import (
    Limits,
    MemoryCounters,
    PostgresCounters,
    RateLimiter,
    RedisCounters,
    counter_row_id,
    create_counters,
    create_rate_limiter,
)

WINDOW_START = 1_000_000 * 60.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, **limits: int) -> RateLimiter:
    return RateLimiter(MemoryCounters(), Limits(**limits), clock=clock)


def test_key_and_organisation_are_counted_and_the_nearest_limit_is_reported() -> None:
    clock = Clock(WINDOW_START + 15)
    rl = limiter(clock, key_writes=3, org_writes=4)
    first, second = uuid.uuid4(), uuid.uuid4()
    decisions = [rl.check(first, "org", "write") for _ in range(3)]
    assert [(d.scope, d.limit, d.remaining) for d in decisions if d] == [
        ("key", 3, 2),
        ("key", 3, 1),
        ("key", 3, 0),
    ]
    decision = rl.check(second, "org", "write")
    assert decision is not None
    assert (decision.scope, decision.limit, decision.remaining, decision.allowed) == (
        "organization",
        4,
        0,
        True,
    )
    refused = rl.check(second, "org", "write")
    assert refused is not None
    assert (refused.scope, refused.allowed, refused.reset_seconds) == ("organization", False, 45)
    # Another organisation, and reads, are counted apart.
    other = rl.check(uuid.uuid4(), "other", "write")
    assert other is not None
    assert other.allowed
    assert rl.check(first, "org", "read") is not None
    # The next window starts afresh.
    clock.now = WINDOW_START + 60
    again = rl.check(second, "org", "write")
    assert again is not None
    assert (again.allowed, again.remaining, again.reset_seconds) == (True, 2, 60)


def test_zero_turns_a_count_off() -> None:
    rl = limiter(Clock(WINDOW_START), key_reads=0, org_reads=0, key_writes=0, org_writes=1)
    assert rl.check(uuid.uuid4(), "org", "read") is None
    decision = rl.check(uuid.uuid4(), "org", "write")
    assert decision is not None
    assert decision.scope == "organization"
    off = limiter(Clock(WINDOW_START), auth_failures=0)
    assert off.authentication_failed("192.0.2.1") is None
    assert off.address_blocked("192.0.2.1") is None


def test_an_address_is_blocked_after_its_failures_until_the_window_ends() -> None:
    clock = Clock(WINDOW_START + 50)
    rl = limiter(clock, auth_failures=2)
    assert rl.address_blocked("192.0.2.1") is None
    first = rl.authentication_failed("192.0.2.1")
    assert first is not None
    assert first.allowed
    assert rl.address_blocked("192.0.2.1") is None
    second = rl.authentication_failed("192.0.2.1")
    assert second is not None
    assert second.allowed  # the second failure itself is still a 401 ...
    assert rl.address_blocked("192.0.2.1") == 10  # ... the next attempt is not looked at
    assert rl.address_blocked("192.0.2.2") is None
    clock.now = WINDOW_START + 60
    assert rl.address_blocked("192.0.2.1") is None


def test_the_backend_follows_the_database(tmp_path: Path) -> None:
    sqlite = create_db_engine(f"sqlite:///{tmp_path / 'x.db'}")
    postgres = create_db_engine("postgresql://postgres@127.0.0.1:1/none")
    try:
        assert isinstance(create_counters(sqlite, Settings()), MemoryCounters)
        assert isinstance(create_counters(postgres, Settings()), PostgresCounters)
        # The Redis client connects lazily: choosing the backend needs no server.
        redis = Settings(rate_limit_backend="redis", redis_url="redis://127.0.0.1:1/0")
        assert isinstance(create_counters(sqlite, redis), RedisCounters)
        with pytest.raises(ValueError, match="PostgreSQL"):
            create_counters(sqlite, Settings(rate_limit_backend="postgresql"))
        # The organisation limits default to the per-key ones; everything 0: no limiter.
        limits = create_rate_limiter(sqlite, Settings(rate_limit_writes_per_minute=7))
        assert limits is not None
        assert (limits.limits.org_writes, limits.limits.org_reads) == (7, 100_000)
        off = Settings(
            rate_limit_reads_per_minute=0,
            rate_limit_writes_per_minute=0,
            rate_limit_auth_failures_per_minute=0,
        )
        assert create_rate_limiter(sqlite, off) is None
    finally:
        sqlite.dispose()
        postgres.dispose()


def test_counter_rows_of_organisations_and_addresses_never_collide_with_keys() -> None:
    key = uuid.uuid4()
    assert counter_row_id(("key", str(key), "read")) == (key, "read")
    org_row, kind = counter_row_id(("org", str(key), "read"))
    assert org_row.version == 5
    assert kind == "read"
    assert org_row != counter_row_id(("addr", str(key), "read"))[0]


def test_a_failed_merge_keeps_the_counts_and_fails_no_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = create_db_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    counters = PostgresCounters(engine, sync_seconds=60)
    subject = ("key", str(uuid.uuid4()), "read")
    window = int(WINDOW_START // 60)
    try:
        with caplog.at_level(logging.WARNING, logger="signalscore.ratelimit"):
            assert counters.add([subject], window) == [1]
            counters._clock = lambda: WINDOW_START
            counters.sync()
            assert counters.add([subject], window) == [2]
        assert any("could not merge" in r.getMessage() for r in caplog.records)
    finally:
        engine.dispose()


def test_the_key_cache_keeps_hashes_for_its_ttl_only() -> None:
    clock = Clock(100.0)
    cache = auth_service.KeyCache(5.0, clock=clock)
    key = generate_key()
    found = ("org", uuid.uuid4())
    cache.put(hash_key(key), found)
    assert key not in repr(cache._entries)  # only the SHA-256 is kept
    assert cache.get(hash_key(key)) == found
    clock.now += 5.0
    assert cache.get(hash_key(key)) is None
    # Revocation in this process reaches every cache at once.
    cache.put(hash_key(key), found)
    other = auth_service.KeyCache(5.0, clock=clock)
    other.put(hash_key(key), found)
    auth_service.forget_key(hash_key(key))
    assert cache.get(hash_key(key)) is None
    assert other.get(hash_key(key)) is None


def test_the_key_cache_is_bounded() -> None:
    clock = Clock(0.0)
    cache = auth_service.KeyCache(5.0, clock=clock)
    for i in range(cache.MAX_ENTRIES):
        cache.put(f"{i:064x}", ("org", uuid.uuid4()))
    cache.put("f" * 64, ("org", uuid.uuid4()))
    assert len(cache._entries) <= cache.MAX_ENTRIES
    assert cache.get("f" * 64) is not None
