"""Per-API-key rate limits (fixed one-minute windows), separately for reads and writes.

Backends:
- `postgresql`: one counter row per (key, kind, window) incremented with
  `INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, so every server process sharing the
  database enforces one limit together.
- `memory`: counters inside the process. The embedded (SQLite) mode runs one server process,
  so this is exact there; with several processes each would allow the full limit.

A limit of 0 disables that kind. Reads are GET/HEAD; everything else is a write.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from signalscore.db.tables import rate_limit_counters

WINDOW_SECONDS = 60


@dataclass(frozen=True, slots=True)
class RateDecision:
    limit: int
    remaining: int
    reset_seconds: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


class RateLimiter:
    def __init__(self, reads_per_minute: int, writes_per_minute: int) -> None:
        self.limits = {"read": reads_per_minute, "write": writes_per_minute}

    def check(self, key_id: uuid.UUID, kind: str) -> RateDecision | None:
        """Count one request; None when this kind is not limited."""
        limit = self.limits[kind]
        if limit <= 0:
            return None
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = self._increment(key_id, kind, window)
        reset = max(1, int((window + 1) * WINDOW_SECONDS - now + 0.999))
        return RateDecision(limit, max(0, limit - count), reset, count <= limit)

    def _increment(self, key_id: uuid.UUID, kind: str, window: int) -> int:
        raise NotImplementedError


class MemoryRateLimiter(RateLimiter):
    def __init__(self, reads_per_minute: int, writes_per_minute: int) -> None:
        super().__init__(reads_per_minute, writes_per_minute)
        self._lock = threading.Lock()
        self._counts: dict[tuple[uuid.UUID, str, int], int] = {}

    def _increment(self, key_id: uuid.UUID, kind: str, window: int) -> int:
        with self._lock:
            if len(self._counts) > 100_000:  # drop finished windows
                self._counts = {k: v for k, v in self._counts.items() if k[2] >= window}
            key = (key_id, kind, window)
            self._counts[key] = count = self._counts.get(key, 0) + 1
            return count


class PostgresRateLimiter(RateLimiter):
    def __init__(self, engine: Engine, reads_per_minute: int, writes_per_minute: int) -> None:
        super().__init__(reads_per_minute, writes_per_minute)
        self.engine = engine
        self._pruned_window = 0
        table = rate_limit_counters
        insert = postgresql.insert(table)
        self._statement = insert.on_conflict_do_update(
            index_elements=[table.c.api_key_id, table.c.kind, table.c.window_start],
            set_={"count": table.c.count + 1},
        ).returning(table.c.count)

    def _increment(self, key_id: uuid.UUID, kind: str, window: int) -> int:
        with self.engine.connect() as conn, conn.begin():
            count = conn.execute(
                self._statement,
                {"api_key_id": key_id, "kind": kind, "window_start": window, "count": 1},
            ).scalar_one()
            if window != self._pruned_window:  # once per window per process
                self._pruned_window = window
                conn.execute(
                    sa.delete(rate_limit_counters).where(
                        rate_limit_counters.c.window_start < window - 1
                    )
                )
        return int(count)


def create_rate_limiter(
    engine: Engine, backend: str, reads_per_minute: int, writes_per_minute: int
) -> RateLimiter | None:
    if reads_per_minute <= 0 and writes_per_minute <= 0:
        return None
    if backend == "auto":
        backend = "postgresql" if engine.dialect.name == "postgresql" else "memory"
    if backend == "postgresql":
        if engine.dialect.name != "postgresql":
            raise ValueError("the postgresql rate-limit backend needs a PostgreSQL database")
        return PostgresRateLimiter(engine, reads_per_minute, writes_per_minute)
    return MemoryRateLimiter(reads_per_minute, writes_per_minute)
