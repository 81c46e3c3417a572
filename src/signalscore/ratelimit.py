"""Rate limits in fixed one-minute windows, counted without a database write per request.

What is counted (a "subject" is `(scope, identity, kind)`):

- every authenticated request, once against its API key (`("key", key id, kind)`) and once
  against its organisation (`("org", organisation id, kind)`), reads (GET, HEAD) and writes
  (everything else) apart; the request is refused when either count is over its limit, and
  the `X-RateLimit-*` headers describe the limit with the fewest requests left;
- every failed authentication (missing or invalid key) against the client address
  (`("addr", host, "authfail")`). An address that has used its failures is refused with 429
  before its key is even looked up, until the window ends.

Refused requests count too (as before): a client that keeps hammering past its limit does not
get a fresh budget any sooner. A limit of 0 turns that count off.

Where the counts live (`SIGNALSCORE_RATE_LIMIT_BACKEND`):

- `memory`: in the process. Exact for the embedded (SQLite) mode, which runs one process.
- `postgresql` (the default on PostgreSQL): in the process, merged with every other process's
  through `rate_limit_counters` at most every `rate_limit_sync_seconds`: the first request
  after that interval starts a merge in a thread of its own (and does not wait for it): one
  upsert of the deltas counted since the last merge (`count = count + delta`) that returns
  the shared totals, and one read of the other subjects this process counted in the window,
  in one transaction with `synchronous_commit = off`. A decision is the shared total as of
  the last merge plus what this process counted since, so no request waits for the database
  and none commits; the price is that what other processes admitted since the last merge is
  not seen yet (see docs/configuration.md). Keys of organisations and addresses are stored
  in the `api_key_id` column as name-based UUIDs (version 5, never equal to a key's version 4
  id); addresses with the kind `authfail`.
- `redis`: one pipelined `INCR` + `EXPIRE` per request on a Redis shared by every process:
  exact across processes. When Redis fails, the process counts in memory (a warning is
  logged) and tries Redis again after `REDIS_RETRY_SECONDS`; requests never fail because of
  it. The client library is imported only when this backend is chosen.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from signalscore.db.tables import rate_limit_counters

if TYPE_CHECKING:
    from signalscore.config import Settings

log = logging.getLogger("signalscore.ratelimit")

WINDOW_SECONDS = 60
# Finished windows are dropped from memory once a process holds this many counters.
MAX_MEMORY_COUNTERS = 100_000
# After a Redis error, count in the process for this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_KEY_PREFIX = "signalscore:rl:"
# Rows per upsert statement when merging counts into PostgreSQL.
_SYNC_CHUNK = 1_000
# Name-based ids of organisations and addresses in `rate_limit_counters.api_key_id`.
_SUBJECT_NAMESPACE = uuid.UUID("8d7f6a52-3b1e-5c44-9a0e-2f6c1d9b7e31")

Subject = tuple[str, str, str]  # (scope, identity, kind)
_Counter = tuple[Subject, int]  # a subject in one window


@dataclass(frozen=True, slots=True)
class RateDecision:
    limit: int
    remaining: int
    reset_seconds: int
    allowed: bool
    scope: str = "key"  # "key", "organization" or "address"

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


@dataclass(frozen=True, slots=True)
class Limits:
    """Requests per one-minute window; 0 turns a count off."""

    key_reads: int = 100_000
    key_writes: int = 2_000
    org_reads: int = 100_000
    org_writes: int = 2_000
    auth_failures: int = 60

    def any(self) -> bool:
        return any(
            n > 0
            for n in (
                self.key_reads,
                self.key_writes,
                self.org_reads,
                self.org_writes,
                self.auth_failures,
            )
        )


# --- where the counts live -----------------------------------------------------------------------


class Counters:
    """Adds one to each subject's count in a window and answers the counts as known now."""

    def add(self, subjects: Sequence[Subject], window: int) -> list[int]:
        raise NotImplementedError

    def sync(self) -> None:
        """Merge with the other processes now (a no-op where there is nothing to merge)."""

    def close(self) -> None:
        """Stop any background work (a last merge included)."""


class MemoryCounters(Counters):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[_Counter, int] = {}

    def add(self, subjects: Sequence[Subject], window: int) -> list[int]:
        with self._lock:
            if len(self._counts) > MAX_MEMORY_COUNTERS:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window}
            totals = []
            for subject in subjects:
                key = (subject, window)
                self._counts[key] = count = self._counts.get(key, 0) + 1
                totals.append(count)
            return totals


def counter_row_id(subject: Subject) -> tuple[uuid.UUID, str]:
    """(api_key_id, kind) of a subject's rows in `rate_limit_counters`."""
    scope, identity, kind = subject
    if scope == "key":
        return uuid.UUID(identity), kind
    return uuid.uuid5(_SUBJECT_NAMESPACE, f"{scope}:{identity}"), kind


class PostgresCounters(Counters):
    """Local counts merged through PostgreSQL in the background (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        sync_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.sync_seconds = sync_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one merge at a time
        # Shared totals as of this process's last merge; counted here, not merged yet; being
        # merged right now. A decision adds all three.
        self._known: dict[_Counter, int] = {}
        self._pending: dict[_Counter, int] = {}
        self._inflight: dict[_Counter, int] = {}
        self._syncing = False
        self._closed = False
        self._last_sync = time.monotonic()
        self._pruned_window = 0
        self._warned_at = 0.0

    def add(self, subjects: Sequence[Subject], window: int) -> list[int]:
        totals = []
        with self._lock:
            for subject in subjects:
                key = (subject, window)
                self._pending[key] = pending = self._pending.get(key, 0) + 1
                totals.append(self._known.get(key, 0) + self._inflight.get(key, 0) + pending)
            now = time.monotonic()
            if (
                not self._syncing
                and not self._closed
                and now - self._last_sync >= self.sync_seconds
            ):
                # Due: merge in a thread of its own, so this request does not wait for it.
                # Merges ride on requests: an idle process keeps no thread and no connection
                # (nor touches an engine its application has disposed of).
                self._syncing = True
                self._last_sync = now
                threading.Thread(
                    target=self._sync_in_background, name="signalscore-ratelimit-sync", daemon=True
                ).start()
        return totals

    def _sync_in_background(self) -> None:
        try:
            self.sync()
        finally:
            with self._lock:
                self._syncing = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.sync()

    def sync(self) -> None:
        with self._sync_lock:
            self._sync()

    def _sync(self) -> None:
        window = int(self._clock() // WINDOW_SECONDS)
        with self._lock:
            # Counts of finished windows decide nothing any more: dropped, not merged.
            deltas = {k: n for k, n in self._pending.items() if k[1] >= window}
            self._pending = {}
            self._inflight = deltas
            self._known = {k: n for k, n in self._known.items() if k[1] >= window}
            others = [k for k in self._known if k not in deltas]
        if not deltas and not others:
            return
        try:
            merged = self._merge(deltas, others, window)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            self._warn(exc)
            with self._lock:  # try again at the next merge
                for key, n in self._inflight.items():
                    self._pending[key] = self._pending.get(key, 0) + n
                self._inflight = {}
            return
        with self._lock:
            self._known.update(merged)
            self._inflight = {}

    def _merge(
        self, deltas: dict[_Counter, int], others: list[_Counter], window: int
    ) -> dict[_Counter, int]:
        table = rate_limit_counters
        by_row: dict[tuple[uuid.UUID, str, int], _Counter] = {}
        for key in (*deltas, *others):
            by_row[(*counter_row_id(key[0]), key[1])] = key
        rows = sorted(  # one order in every process: concurrent merges cannot deadlock
            (*counter_row_id(key[0]), key[1], n) for key, n in deltas.items()
        )
        merged: dict[_Counter, int] = {}
        with self.engine.connect() as conn, conn.begin():
            # The counts are advisory: losing the last second of them in a crash is fine,
            # waiting for the WAL flush is not worth it.
            conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            for start in range(0, len(rows), _SYNC_CHUNK):
                insert = postgresql.insert(table).values(
                    [
                        {"api_key_id": i, "kind": kind, "window_start": w, "count": n}
                        for i, kind, w, n in rows[start : start + _SYNC_CHUNK]
                    ]
                )
                upsert = insert.on_conflict_do_update(
                    index_elements=[table.c.api_key_id, table.c.kind, table.c.window_start],
                    set_={"count": table.c.count + insert.excluded.count},
                ).returning(table.c.api_key_id, table.c.kind, table.c.window_start, table.c.count)
                for row_id, kind, row_window, count in conn.execute(upsert).tuples():
                    counter = by_row.get((row_id, kind, row_window))
                    if counter is not None:
                        merged[counter] = int(count)
            ids = sorted({counter_row_id(key[0])[0] for key in others})
            for start in range(0, len(ids), _SYNC_CHUNK):
                found = conn.execute(
                    sa.select(
                        table.c.api_key_id, table.c.kind, table.c.window_start, table.c.count
                    ).where(
                        table.c.window_start >= window,
                        table.c.api_key_id.in_(ids[start : start + _SYNC_CHUNK]),
                    )
                )
                for row_id, kind, row_window, count in found.tuples():
                    counter = by_row.get((row_id, kind, row_window))
                    if counter is not None and counter not in deltas:
                        merged[counter] = int(count)
            if window != self._pruned_window:  # once per window per process
                self._pruned_window = window
                conn.execute(
                    sa.delete(rate_limit_counters).where(
                        rate_limit_counters.c.window_start < window - 1
                    )
                )
        return merged

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning(
                "rate limits: could not merge counts through the database (%s); "
                "counting in this process until it works again",
                type(exc).__name__,
            )


class RedisCounters(Counters):
    """Counts in Redis, shared by every process; in memory while Redis fails."""

    def __init__(self, url: str) -> None:
        import redis  # only this backend needs the client library

        self._errors: tuple[type[Exception], ...] = (redis.RedisError, OSError)
        self._client: Any = redis.Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        )
        self._fallback = MemoryCounters()
        self._down_until = 0.0

    def add(self, subjects: Sequence[Subject], window: int) -> list[int]:
        if time.monotonic() < self._down_until:
            return self._fallback.add(subjects, window)
        try:
            pipe = self._client.pipeline(transaction=False)
            for scope, identity, kind in subjects:
                name = f"{REDIS_KEY_PREFIX}{scope}:{identity}:{kind}:{window}"
                pipe.incr(name)
                pipe.expire(name, 2 * WINDOW_SECONDS)
            replies = pipe.execute()
        except self._errors as exc:
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
            log.warning(
                "rate limits: Redis failed (%s); counting in this process for %.0f s",
                type(exc).__name__,
                REDIS_RETRY_SECONDS,
            )
            return self._fallback.add(subjects, window)
        return [int(reply) for reply in replies[0::2]]

    def close(self) -> None:
        self._client.close()


# --- the limiter ---------------------------------------------------------------------------------


class RateLimiter:
    def __init__(
        self, counters: Counters, limits: Limits, clock: Callable[[], float] = time.time
    ) -> None:
        self.counters = counters
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        # Addresses that used their failed authentications, with the window they did it in:
        # refused without a look-up (and without a count) until that window ends.
        self._blocked: dict[str, int] = {}

    def _window(self) -> tuple[int, int]:
        """The current window and the seconds until it ends."""
        now = self._clock()
        window = int(now // WINDOW_SECONDS)
        return window, max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))

    def check(self, key_id: uuid.UUID, org_id: str, kind: str) -> RateDecision | None:
        """Count one authenticated request against its key and its organisation. The decision
        with the fewest requests left (a refusal first); None when neither is limited."""
        limits = self.limits
        key_limit, org_limit = (
            (limits.key_reads, limits.org_reads)
            if kind == "read"
            else (limits.key_writes, limits.org_writes)
        )
        scopes = [
            (scope, subject, limit)
            for scope, subject, limit in (
                ("key", ("key", str(key_id), kind), key_limit),
                ("organization", ("org", org_id, kind), org_limit),
            )
            if limit > 0
        ]
        if not scopes:
            return None
        window, reset = self._window()
        counts = self.counters.add([subject for _, subject, _ in scopes], window)
        decisions = [
            RateDecision(limit, max(0, limit - count), reset, count <= limit, scope)
            for (scope, _, limit), count in zip(scopes, counts, strict=True)
        ]
        return min(decisions, key=lambda d: (d.allowed, d.remaining))

    def address_blocked(self, address: str) -> int | None:
        """Seconds until `address` may try a key again, if it has used its failed
        authentications in this window (as far as this process knows); else None."""
        if self.limits.auth_failures <= 0:
            return None
        window, reset = self._window()
        return reset if self._blocked.get(address) == window else None

    def authentication_failed(self, address: str) -> RateDecision | None:
        """Count one failed authentication from `address`; None when those are not limited."""
        limit = self.limits.auth_failures
        if limit <= 0:
            return None
        window, reset = self._window()
        [count] = self.counters.add([("addr", address, "authfail")], window)
        if count >= limit:
            with self._lock:
                if len(self._blocked) >= MAX_MEMORY_COUNTERS:
                    self._blocked = {a: w for a, w in self._blocked.items() if w >= window}
                if len(self._blocked) < MAX_MEMORY_COUNTERS:
                    self._blocked[address] = window
        return RateDecision(limit, max(0, limit - count), reset, count <= limit, "address")

    def sync(self) -> None:
        self.counters.sync()

    def close(self) -> None:
        self.counters.close()


def create_counters(engine: Engine, settings: Settings) -> Counters:
    backend = settings.rate_limit_backend
    if backend == "auto":
        backend = "postgresql" if engine.dialect.name == "postgresql" else "memory"
    if backend == "postgresql":
        if engine.dialect.name != "postgresql":
            raise ValueError("the postgresql rate-limit backend needs a PostgreSQL database")
        return PostgresCounters(engine, settings.rate_limit_sync_seconds)
    if backend == "redis":
        return RedisCounters(settings.redis_url)
    return MemoryCounters()


def create_rate_limiter(engine: Engine, settings: Settings) -> RateLimiter | None:
    org_reads = settings.rate_limit_org_reads_per_minute
    org_writes = settings.rate_limit_org_writes_per_minute
    limits = Limits(
        key_reads=settings.rate_limit_reads_per_minute,
        key_writes=settings.rate_limit_writes_per_minute,
        # Unset: one key's budget for the whole organisation.
        org_reads=settings.rate_limit_reads_per_minute if org_reads is None else org_reads,
        org_writes=settings.rate_limit_writes_per_minute if org_writes is None else org_writes,
        auth_failures=settings.rate_limit_auth_failures_per_minute,
    )
    if not limits.any():
        return None
    return RateLimiter(create_counters(engine, settings), limits)
