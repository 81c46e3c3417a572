"""When and how long to retry.

- 429 and 503 are retried for every request: the server answers them before the request
  changed anything (a 429 comes from the rate limiter before the handler runs; a 503 is a
  transaction that was rolled back whole, SPEC §3). The wait is the `Retry-After` the
  server sent, or exponential backoff with jitter when it sent none.
- A transport error before the request left (connection refused, connect timeout, no free
  connection) is retried for every request: the server never saw it.
- A transport error after the request may have been sent (read timeout, connection dropped
  mid-answer) is retried only for idempotent calls: GET, PUT, DELETE, and the POSTs whose
  repetition leaves the same final state (imports, bulk assignment, compute). A write that
  is not idempotent (creating a profile or a template) is never repeated then: it may have
  been applied.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass

import httpx2 as httpx

RETRY_STATUSES = frozenset({429, 503})

# Raised before a byte of the request reached the server.
NOT_SENT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` counts the first try. A `Retry-After` longer than `max_retry_after` is
    not waited for: the error is raised instead."""

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 120.0

    def backoff_delay(self, retry: int) -> float:
        """Full jitter: uniform in [0, min(max_backoff, backoff * 2**retry)]."""
        return random.uniform(0, min(self.max_backoff, self.backoff * 2**retry))  # noqa: S311

    def delay_for(self, response: httpx.Response, retry: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to give up."""
        if response.status_code not in RETRY_STATUSES or retry + 1 >= self.attempts:
            return None
        after = parse_retry_after(response.headers.get("retry-after"))
        if after is None:
            return self.backoff_delay(retry)
        if after > self.max_retry_after:
            return None
        return after

    def delay_for_error(
        self, error: httpx.TransportError, retry: int, *, idempotent: bool
    ) -> float | None:
        if retry + 1 >= self.attempts:
            return None
        if isinstance(error, NOT_SENT_ERRORS) or idempotent:
            return self.backoff_delay(retry)
        return None


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as seconds: delta-seconds or an HTTP date; None when absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def was_sent(error: httpx.TransportError) -> bool:
    return not isinstance(error, NOT_SENT_ERRORS)
