"""Structured logs (one JSON object per line) and Prometheus metrics."""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from signalscore.db.engine import Database
from signalscore.db.types import utcnow
from signalscore.recompute import queue_figures
from signalscore.webhooks.delivery import delivery_figures


def describe_exception(exc: BaseException) -> str:
    """A traceback for the error log that carries no tenant data: a database error is shown
    by its type, SQLSTATE and statement, never its parameters or the driver's message (which
    quotes the offending key values)."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    if isinstance(exc, sa.exc.StatementError):
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        summary = (
            f"{type(exc).__name__} ({type(orig).__name__}, sqlstate={sqlstate}) "
            f"in statement: {exc.statement}"
        )
    else:
        summary = "".join(traceback.format_exception_only(exc)).strip()
    return f"Traceback (most recent call last):\n{frames}{summary}"


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", ...fields}`; a record's `fields` dict (the access
    log passes one) is merged at the top level so every field is queryable."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and record.exc_info[1] is not None:
            line["exception"] = describe_exception(record.exc_info[1])
        return json.dumps(line, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Metrics:
    """One registry per application (per process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "signalscore_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "signalscore_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            ["route", "method"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.computed_sources: list[Callable[[], int]] = []
        self.registry.register(_ComputationsCollector(self.computed_sources))

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def watch_queue(self, database: Database) -> None:
        self.registry.register(_QueueCollector(database))


class _ComputationsCollector(Collector):
    def __init__(self, sources: list[Callable[[], int]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "signalscore_computations",
            "Objects recomputed by the workers of this process.",
            value=sum(source() for source in self.sources),
        )


def _delivery_metrics(database: Database) -> Iterator[GaugeMetricFamily]:
    """Events and webhook deliveries (SPEC §10-11), read from the database: every
    worker process's work, whichever process is scraped."""
    try:
        with database.read() as conn:
            figures = delivery_figures(conn, utcnow())
    except sa.exc.SQLAlchemyError:
        return
    yield GaugeMetricFamily(
        "signalscore_events_written",
        "Score events written since the start (the organisations' last sequences).",
        value=figures.events_written,
    )
    attempts = GaugeMetricFamily(
        "signalscore_webhook_attempts",
        "Webhook delivery attempts in the delivery log, by outcome.",
        labels=["outcome"],
    )
    for outcome, count in sorted(figures.attempts.items()):
        attempts.add_metric([outcome], count)
    yield attempts
    oldest = GaugeMetricFamily(
        "signalscore_webhook_oldest_undelivered_seconds",
        "Age of the oldest event an enabled subscription has not had yet (0: none).",
        labels=["subscription"],
    )
    for subscription, age in sorted(figures.oldest_undelivered_seconds.items()):
        oldest.add_metric([subscription], age)
    yield oldest


class _QueueCollector(Collector):
    """Queue depth and worker lag, read from the database at scrape time (all organisations
    together: counts only, never tenant data)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        started = time.perf_counter()
        try:
            with self.database.read() as conn:
                figures = queue_figures(conn)
        except sa.exc.SQLAlchemyError:
            return  # the database is down: /readyz says so; no queue figures
        depth = GaugeMetricFamily(
            "signalscore_queue_depth", "Recompute queue entries by state.", labels=["state"]
        )
        depth.add_metric(["pending"], figures.pending)
        depth.add_metric(["running"], figures.running)
        yield depth
        yield GaugeMetricFamily(
            "signalscore_profile_fan_outs",
            "Profiles whose rule change workers are still queueing to their objects in chunks.",
            value=figures.fan_outs,
        )
        yield GaugeMetricFamily(
            "signalscore_worker_lag_seconds",
            "Age of the oldest pending recompute trigger (0 when none waits).",
            value=figures.oldest_pending_seconds,
        )
        yield from _delivery_metrics(self.database)
        yield GaugeMetricFamily(
            "signalscore_queue_scrape_seconds",
            "Time taken to read the queue figures for this scrape.",
            value=time.perf_counter() - started,
        )
