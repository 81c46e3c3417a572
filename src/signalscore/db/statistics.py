"""Table statistics for bulk imports (PostgreSQL), refreshed on a thread of their own.

A bulk import plans its set-based statements from statistics that describe the tables
(docs/api.md, "Bulk imports"): the tables its merge joins are analysed when autovacuum would
(`dialect.analyze_if_stale`) before the merge, and the tables it filled after its commit.
Both used to run in the request, before its body was read and before its response: a
chunked load (`signalscore-client push values`, one call per 100,000 lines) paid an ANALYZE
of `signal_values` on every call, 0.2-0.3 s of about 4 s.

A `StatisticsRefresher` runs those checks and analyses, one after another, on its own
thread and its own connection (never one of the pool's: an import waiting for it holds a
pooled connection, and a full pool of waiting imports must not starve it). An import asks
for a refresh as it starts and waits for it just before its merge, once its whole body has
been read, checked and staged: by then it is done, unless the body was small. The refresh
after a commit is asked for and not waited on: the response goes out at the commit, and
the next call's upload and checking overlap the analysis (the next merge waits for it, if
it is still running). A refresh that fails or takes longer than `WAIT_SECONDS` leaves the
import to plan from the statistics there are, as when autovacuum lags; the statements are
written to plan well either way (tests/db/test_stale_statistics.py). Elsewhere a no-op.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence

import sqlalchemy as sa

from signalscore.db.dialect import analyze_if_stale

log = logging.getLogger("signalscore")

# How long an import waits for a refresh before it plans from the statistics there are.
WAIT_SECONDS = 30.0
# How long closing waits for an analysis in progress.
CLOSE_SECONDS = 30.0


class StatisticsRefresher:
    """`refresh(tables)` asks for `analyze_if_stale(tables)` on the refresher's thread and
    returns a ticket; `wait(ticket)` returns once a check that began after the request has
    finished (requests that arrive meanwhile are checked together, in the next run)."""

    def __init__(
        self,
        engine: sa.Engine,
        analyze: Callable[[sa.Engine, Sequence[str]], object] = analyze_if_stale,
    ) -> None:
        self._url = engine.url
        self._enabled = engine.dialect.name == "postgresql"
        self._analyze = analyze
        self._changed = threading.Condition()
        self._pending: set[str] = set()
        self._asked = 0  # requests, numbered from 1
        self._done = 0  # every request up to this one has been checked
        self._closed = False
        self._thread: threading.Thread | None = None
        self._engine: sa.Engine | None = None

    def refresh(self, tables: Iterable[str]) -> int:
        """Ask for the tables to be analysed if they are stale; a ticket for `wait`."""
        if not self._enabled:
            return 0
        with self._changed:
            if self._closed:
                return 0
            self._pending.update(tables)
            self._asked += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="signalscore-statistics", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()
            return self._asked

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until the request `ticket` has been checked (and its stale tables analysed),
        for at most `timeout` seconds (`WAIT_SECONDS`); whether it has."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: self._done >= ticket or self._closed,
                WAIT_SECONDS if timeout is None else timeout,
            )
        if not done:
            log.warning("table statistics still refreshing: planning from those there are")
        return done

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every request made so far has been checked."""
        with self._changed:
            ticket = self._asked
        return self.wait(ticket, timeout)

    def close(self) -> None:
        """Stop the thread (after the analysis in progress) and close its connection."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(CLOSE_SECONDS)
        if self._engine is not None:
            self._engine.dispose()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: bool(self._pending) or self._closed)
                if self._closed:
                    return
                tables, self._pending = sorted(self._pending), set()
                ticket = self._asked
            try:
                self._analyze(self._connectable(), tables)
            except Exception as error:  # the database is down, say: the import goes on
                log.warning(
                    "table statistics: refreshing %s failed: %s: %s",
                    ", ".join(tables),
                    type(error).__name__,
                    error,
                )
            with self._changed:
                self._done = ticket
                self._changed.notify_all()

    def _connectable(self) -> sa.Engine:
        if self._engine is None:
            self._engine = sa.create_engine(
                self._url,
                pool_size=1,
                max_overflow=0,
                pool_pre_ping=True,
                hide_parameters=True,
                connect_args={"connect_timeout": 5, "application_name": "signalscore"},
            )
        return self._engine
