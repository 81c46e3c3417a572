"""Settings, read once from `SIGNALSCORE_*` environment variables (CLI flags override them)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./signalscore.db"


class Settings(BaseSettings):
    """Every setting has a safe default for the embedded (SQLite) mode."""

    model_config = SettingsConfigDict(env_prefix="SIGNALSCORE_", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy-style URL: sqlite:///path.db or postgresql://user@host/db",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    debug: bool = Field(
        default=False, description="Adds `debug.cause` to error bodies. Never in production."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    db_connect_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds to wait for a database connection before answering 503.",
    )
    db_pool_size: int = Field(default=10, ge=1)
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 responses."
    )
    rate_limit_reads_per_minute: int = Field(
        default=100_000, ge=0, description="Per API key; 0 disables read limiting."
    )
    rate_limit_writes_per_minute: int = Field(
        default=2_000, ge=0, description="Per API key; 0 disables write limiting."
    )
    rate_limit_org_reads_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="Per organisation, all its keys together; unset: the same as the "
        "per-key read limit (so a second key never adds budget); 0 disables.",
    )
    rate_limit_org_writes_per_minute: int | None = Field(
        default=None,
        ge=0,
        description="Per organisation, all its keys together; unset: the same as the "
        "per-key write limit; 0 disables.",
    )
    rate_limit_auth_failures_per_minute: int = Field(
        default=60,
        ge=0,
        description="Failed authentications per client address, after which its requests "
        "answer 429 until the minute ends; 0 disables.",
    )
    rate_limit_backend: Literal["auto", "memory", "postgresql", "redis"] = Field(
        default="auto",
        description="auto: counters merged through PostgreSQL when the database is "
        "PostgreSQL, else in the process (the embedded mode runs one process); redis: "
        "counters in Redis (SIGNALSCORE_REDIS_URL).",
    )
    rate_limit_sync_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="postgresql backend: how often each process merges its counts with the "
        "other processes' through the database.",
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="Redis for the redis rate-limit backend.",
    )
    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs whose host is (or resolves to) a loopback, private, "
        "link-local or multicast address (a receiver on the same machine or network).",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="A delivery is acknowledged by a 2xx within this many seconds (SPEC: 10). "
        "A worker leases the batch for six times this (a batch whose worker died mid-send is "
        "retried after that).",
    )
    webhook_retry_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Multiplies the retry schedule (5 s ... 12 h) and the 3-day disable: 1 in "
        "production; below 1 only for drills and tests of delivery under faults.",
    )
    event_retention_days: float = Field(
        default=30,
        gt=0,
        description="How long score events are kept (SPEC §10); workers delete older ones, and "
        "a feed read from before what is kept answers 410 EVENTS_EXPIRED.",
    )
    auth_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="How long a process remembers a valid key (by its SHA-256) before looking "
        "it up again; a key revoked by another process keeps working this long. 0 disables.",
    )
    embedded_worker: bool = Field(
        default=True, description="Run a recompute worker inside `serve` (the embedded mode)."
    )
    embedded_worker_threads: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="Worker threads of the embedded worker; by default 2 on PostgreSQL, 1 on "
        "SQLite (one writer at a time).",
    )
    worker_batch_size: int = Field(default=500, ge=1, le=10_000)
    worker_lease_seconds: float = Field(
        default=60.0, gt=0, description="A claimed batch is reclaimed this long after a crash."
    )
    worker_poll_seconds: float = Field(
        default=0.1, gt=0, description="Idle workers look for new work this often."
    )
    decay_sweep_seconds: float = Field(
        default=10.0,
        gt=0,
        le=50,
        description="Workers look for score rows past their nextChangeAt (SPEC §13) this often "
        "and queue them; a row is recomputed within this plus the queue's delay.",
    )
    worker_audit_log: str | None = Field(
        default=None,
        description="Append one line per computed object (object, start, end, worker) to this "
        "file; used by the concurrency tests.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
