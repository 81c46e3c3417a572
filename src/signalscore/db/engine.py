"""Database engines and the unit of work.

One code path for SQLite and PostgreSQL: SQLAlchemy Core on a synchronous driver (the stdlib
`sqlite3`, psycopg 3). Routes are plain `def` functions that FastAPI runs in its thread pool.
"""

from __future__ import annotations

import json
import select
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url

from signalscore.db.dialect import advisory_locks
from signalscore.db.statistics import StatisticsRefresher
from signalscore.vocabulary import MAX_EXACT_INT


def normalize_database_url(url: str) -> URL:
    """Accept the URLs people type (`postgresql://`, `postgres://`) and pick our drivers."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite")
    raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}")


def _json_int(text: str) -> int | float:
    number = int(text)
    return float(number) if abs(number) > MAX_EXACT_INT else number


# Every digit made a zero, so that sixteen digits in a row (possibly an integer past 2**53,
# which has 16) is a plain substring search: both in C, a few microseconds per document.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_SIXTEEN_DIGITS = b"0" * 16


def load_json(text: str | bytes | memoryview) -> Any:
    """JSON documents as read from either backend. PostgreSQL's `jsonb` keeps numbers as
    exact decimals and prints `1e308` as a 309-digit integer; the API only ever stores
    integers up to 2**53 (larger ones become floats on write), so a larger integer read
    back is that float, and both backends give the same number.

    orjson reads the common document (no run of 16 digits, so no integer past 2**53; a
    float it reads is the same nearest double), about four times as fast as the standard
    library, which reads the rest (and anything orjson refuses, such as an escaped lone
    surrogate stored before the API refused them)."""
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    elif isinstance(text, bytes | bytearray | memoryview):
        data = bytes(text)
    else:  # SQLite hands over a JSON number as a number: TypeError, as drivers expect
        return json.loads(text, parse_int=_json_int)
    if _SIXTEEN_DIGITS not in data.translate(_DIGITS_TO_ZERO):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text if isinstance(text, str) else data, parse_int=_json_int)


def create_db_engine(url: str, *, connect_timeout: float = 5.0, pool_size: int = 10) -> Engine:
    """An Engine configured for this service on either backend."""
    parsed = normalize_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _create_sqlite_engine(parsed, connect_timeout)
    engine = sa.create_engine(
        parsed,
        hide_parameters=True,  # tenant data never reaches an exception message or a log
        json_deserializer=load_json,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=connect_timeout,
        connect_args={
            "connect_timeout": max(1, round(connect_timeout)),
            "application_name": "signalscore",
        },
    )
    _check_on_checkout(engine)
    return engine


# A pooled connection idle for longer than this is pinged on checkout whatever its socket says.
PING_AFTER_IDLE_SECONDS = 10.0
_CHECKED_IN_AT = "signalscore.checked_in_at"


def _check_on_checkout(engine: Engine) -> None:
    """What `pool_pre_ping` does, without its round trip on a busy pool (PostgreSQL).

    `pool_pre_ping` sends `SELECT 1` at every checkout: one of a request's few round trips
    (about 2 ms each on a loaded VM; a ranked page is one statement). Instead a connection is
    checked in process: psycopg's own state, then its socket, polled without waiting. An idle
    connection's socket has nothing to read, unless the server wrote to it: a backend that was
    terminated or shut down sends its FATAL message and closes, which makes the socket
    readable. Then, or when the connection has been idle for `PING_AFTER_IDLE_SECONDS` (a
    network path that dropped it says nothing), the connection is pinged as before; a failed
    check makes the pool discard it and check out another (`DisconnectionError`)."""

    @sa.event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get(_CHECKED_IN_AT)
        if idle_since is None:  # just connected
            return
        if _looks_alive(dbapi_conn) and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:  # any failure: the pool connects afresh
            raise sa.exc.DisconnectionError("a pooled connection failed its ping") from error


def _looks_alive(dbapi_conn: Any) -> bool:
    """A psycopg connection that is open, idle, not broken, with nothing to read."""
    if dbapi_conn.closed or dbapi_conn.broken:
        return False
    if dbapi_conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return False
    try:
        poller = select.poll()
        poller.register(dbapi_conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return not poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no poll() on this platform: ping
        return False


def _create_sqlite_engine(parsed: URL, connect_timeout: float) -> Engine:
    engine = sa.create_engine(
        parsed,
        hide_parameters=True,
        json_deserializer=load_json,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=10,
        max_overflow=10,
        pool_timeout=connect_timeout,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        # Let SQLAlchemy own transaction boundaries (pysqlite's own BEGIN handling is off),
        # so writes can start with BEGIN IMMEDIATE and never hit a lock upgrade deadlock.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        if parsed.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


_LOCKS = "signalscore.organization_locks"
_BEFORE_COMMIT = "signalscore.before_commit"


BeforeCommit = Callable[[Connection], None]
HookT = TypeVar("HookT", bound=BeforeCommit)


def before_commit(conn: Connection, key: str, make: Callable[[], HookT]) -> HookT:
    """The hook registered under `key` in this write unit, made (`make()`) and registered
    the first time: it is called with the connection as the unit's last work, right before
    its commit (the event log numbers and writes its events there: signalscore/events/log.py).
    Dropped, not called, when the unit rolls back."""
    hooks: dict[str, Any] = conn.info.setdefault(_BEFORE_COMMIT, {})
    hook = hooks.get(key)
    if hook is None:
        hook = hooks[key] = make()
    return hook


def _run_before_commit(conn: Connection) -> None:
    hooks: dict[str, BeforeCommit] = conn.info.pop(_BEFORE_COMMIT, {})
    for hook in hooks.values():
        hook(conn)


@dataclass
class Locks:
    """What a write unit of work may change in one organisation, declared when it opens
    (`Database.write(org=...)`); it decides the advisory locks the unit takes (PostgreSQL;
    docs/architecture.md, "the lock protocol"). Two levels, always in this order:

    1. the organisation: exclusive for `structure` (the whole organisation: profile deletion,
       set-ups that write everything in one transaction), shared for everything else;
    2. within it: `assignments` (exclusive), `value_templates` (shared, in sorted order:
       values of these templates) and, taken later: for a value write, the assignments
       shared from its queueing decision to its commit (`hold_assignments`); for a rule
       write, `rule_template` exclusive from the moment its profile's fan-out is recorded
       (`hold_rule_template`, after that row's lock, which may wait for a worker's fan-out
       step: holding the template meanwhile would hold up value writes to it), and at the
       latest before the commit.

    Value writes to different templates never wait for each other or for a rule write on
    another template; a rule write waits only for value writes to its template."""

    org_id: str
    structure: bool = False
    assignments: bool = False
    rule_template: str | None = None
    value_templates: tuple[str, ...] = ()
    assignments_held: bool = False
    rule_template_held: bool = False

    def covers_values(self, template_ids: set[str]) -> bool:
        return self.structure or template_ids <= set(self.value_templates)

    def covers_assignments(self) -> bool:
        return self.structure or self.assignments


def _key(org_id: str, part: str) -> str:
    return f"org:{org_id}" if not part else f"org:{org_id}:{part}"


def _take(conn: Connection, locks: Locks) -> None:
    org = locks.org_id
    keys = [(_key(org, ""), locks.structure)]
    if not locks.structure:
        if locks.assignments:
            keys.append((_key(org, "assignments"), True))
        for template_id in locks.value_templates:
            keys.append((_key(org, "template:" + template_id), False))
    advisory_locks(conn, keys)
    locks.assignments_held = locks.covers_assignments()


def take_organization_lock(conn: Connection, org_id: str) -> None:
    """Lock the whole organisation now, in a transaction already under way: only for one that
    created the organisation itself (`signalscore demo`), which nothing else can contend
    for yet. Everything else opens its unit of work with `Database.write(org=...)`."""
    locks = conn.info[_LOCKS] = Locks(org_id, structure=True)
    _take(conn, locks)


def declare_locks(conn: Connection, locks: Locks) -> None:
    """Declare a unit of work's locks after it opened, and take them now: for a write opened
    with `Database.write()` (no `org`) that learns what it changes only from its input. A bulk
    import stages its whole body in temporary tables first, touching no shared table, then
    declares the templates or assignments it is about to change. The locks are the same as
    if declared at the start, taken later: the unit changes nothing shared before them."""
    if conn.info.get(_LOCKS) is not None:
        raise RuntimeError("this unit of work has declared its locks already")
    conn.info[_LOCKS] = locks
    _take(conn, locks)


def declared_locks(conn: Connection, org_id: str) -> Locks | None:
    """The locks this unit of work declared for `org_id`, or None."""
    declared: Locks | None = conn.info.get(_LOCKS)
    if declared is None or declared.org_id != org_id:
        return None
    return declared


def hold_rule_template(conn: Connection, locks: Locks) -> None:
    """Take the declared rule template's lock (exclusive) if not held yet."""
    if locks.rule_template is not None and not locks.rule_template_held and not locks.structure:
        key = _key(locks.org_id, "template:" + locks.rule_template)
        advisory_locks(conn, [(key, True)])
        locks.rule_template_held = True


def hold_assignments(conn: Connection, locks: Locks) -> None:
    """A value write's queueing decision reads assignments: hold them shared from here to
    the commit (an assignment write holds them exclusively)."""
    if not locks.assignments_held:
        advisory_locks(conn, [(_key(locks.org_id, "assignments"), False)])
        locks.assignments_held = True


class Database:
    """The unit of work: one transaction per request, per worker batch, per CLI command.

    `write()` commits on success and rolls back on any error; services only execute
    statements on the connection they are given and never commit themselves.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # Bulk imports' table statistics, analysed on a thread of their own (PostgreSQL).
        self.statistics = StatisticsRefresher(engine)
        # Called after every committed write unit; the embedded worker uses it to wake up.
        self.after_write: Callable[[], None] | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(
        self,
        *,
        org: str | None = None,
        structure: bool = False,
        assignments: bool = False,
        rule_template: str | None = None,
        value_templates: Iterable[str] = (),
        notify: bool = True,
    ) -> Iterator[Connection]:
        """A write transaction. `notify=False` keeps `after_write` quiet: the worker's own
        claims must not wake the worker, or it would spin on an empty queue.

        `org`: a write that can change that organisation's scores. The other arguments
        declare what it may change (`Locks`), and its first statement takes the locks that
        follow, so a value write's decision of what to queue never misses a rule or an
        assignment committed meanwhile. Workers take none."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_write=True)
            with conn.begin():
                if org is not None:
                    locks = conn.info[_LOCKS] = Locks(
                        org,
                        structure=structure,
                        assignments=assignments,
                        rule_template=rule_template,
                        value_templates=tuple(sorted(set(value_templates))),
                    )
                    _take(conn, locks)
                try:
                    yield conn
                    if org is not None:  # a declared lock not taken yet: before the commit
                        hold_rule_template(conn, locks)
                    _run_before_commit(conn)
                finally:
                    conn.info.pop(_LOCKS, None)
                    conn.info.pop(_BEFORE_COMMIT, None)
        if notify and self.after_write is not None:
            self.after_write()

    @contextmanager
    def read_then_write(
        self,
    ) -> Iterator[
        tuple[Callable[[], ContextManager[Connection]], Callable[[], ContextManager[Connection]]]
    ]:
        """A read transaction, then a write one (no `after_write` call), on one connection:
        a worker's read-and-score then store steps, without a second pool checkout (and its
        ping) per group."""
        with self.engine.connect() as conn:

            @contextmanager
            def read() -> Iterator[Connection]:
                conn.execution_options(sqlite_write=False)
                with conn.begin():
                    yield conn

            @contextmanager
            def write() -> Iterator[Connection]:
                conn.execution_options(sqlite_write=True)
                with conn.begin():
                    try:
                        yield conn
                        _run_before_commit(conn)
                    finally:
                        conn.info.pop(_BEFORE_COMMIT, None)

            yield read, write

    @contextmanager
    def read(self, *, transaction: bool = True) -> Iterator[Connection]:
        """A read unit. `transaction=False` is for a read whose statements need no snapshot in
        common (one statement, or several that each stand alone, as every statement of a
        transaction does under PostgreSQL's READ COMMITTED anyway): on PostgreSQL it runs in
        autocommit, which saves the BEGIN and COMMIT round trips; SQLite keeps its deferred
        transaction (in process, free)."""
        with self.engine.connect() as conn:
            if not transaction and self.dialect == "postgresql":
                yield conn.execution_options(isolation_level="AUTOCOMMIT")
                return
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.statistics.close()
        self.engine.dispose()
