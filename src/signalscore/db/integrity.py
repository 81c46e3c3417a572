"""Integrity errors as API errors: one table, keyed by constraint name.

The services check before they write and serialise the writes that could race (the
organisation lock, `ON CONFLICT`, atomic updates), so a constraint violation that reaches a
route is a race those checks did not close, or a bug. Either way the transaction was rolled
back whole, and the caller gets the answer a serial execution would have given where the
constraint says which one that is, else a 409 `CONCURRENT_CHANGE` it may retry. No body
ever carries SQL, a constraint or table name, or a parameter value.

How the constraint is identified:

- PostgreSQL (psycopg 3) names it (`diag.constraint_name`). A foreign key can be violated
  from either end: writing a row that points at a missing row (`insert or update on table`:
  the thing pointed at is gone) or deleting a row that is still pointed at (`update or delete
  on table`: it is still in use). The message tells them apart; if the server's messages are
  translated, the statement (INSERT or DELETE) does.
- SQLite names nothing. `UNIQUE constraint failed: t.a, t.b` lists the columns, which identify
  the constraint in `tables.metadata`. `FOREIGN KEY constraint failed` names no key: a DELETE
  from a table that exactly one non-cascading key refers to is that key (a template still used
  by rules); anything else is not guessed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Literal

import sqlalchemy as sa
import sqlalchemy.exc

from signalscore.db.tables import metadata
from signalscore.errors import AppError, Conflict, FieldError, Invalid, NotFound

log = logging.getLogger("signalscore")

# duplicate: a unique key is taken. missing: the written row refers to a row that does not
# exist (any more). in_use: the deleted (or re-keyed) row is still referred to.
Violation = Literal["duplicate", "missing", "in_use"]

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"


class ConcurrentChange(AppError):
    """A 409 like `Conflict`, but the write collided with another one and was rolled back
    whole, so the action is to retry it rather than to change it."""

    status = 409
    type = "CONFLICT"
    code = "CONFLICT"
    default_error_code = "CONCURRENT_CHANGE"
    error_action = "RETRY"


def _template_id_taken() -> AppError:
    return Conflict("a signal template with this id already exists", error_code="TEMPLATE_ID_TAKEN")


def _template_in_use() -> AppError:
    return Conflict(
        "the signal template is used by rules; delete them first", error_code="TEMPLATE_IN_USE"
    )


def _template_not_found(field: str, message: str) -> Callable[[], AppError]:
    def error() -> AppError:
        return Invalid(
            message,
            error_code="TEMPLATE_NOT_FOUND",
            fields=[FieldError(field=field, message=message, code="TEMPLATE_NOT_FOUND")],
        )

    return error


def _profile_not_found() -> AppError:
    return NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")


# The SPEC's answer for each (constraint, violation) that has one. Names are those of
# tables.py (NAMING_CONVENTION and explicit names), which the migrations create on both
# backends; tests/unit/test_integrity.py checks every name here exists.
ERRORS: dict[tuple[str, Violation], Callable[[], AppError]] = {
    ("pk_signal_templates", "duplicate"): _template_id_taken,
    ("fk_scoring_rules_template", "in_use"): _template_in_use,
    ("fk_scoring_rules_template", "missing"): _template_not_found(
        "signalTemplateId", "unknown signal template: it was deleted while the rule was written"
    ),
    ("fk_signal_values_template", "missing"): _template_not_found(
        "values",
        "a signal template of this batch was deleted while it was written; nothing was written",
    ),
    ("fk_scoring_rules_profile", "missing"): _profile_not_found,
    ("fk_profile_assignments_profile", "missing"): _profile_not_found,
    ("fk_score_results_profile", "missing"): _profile_not_found,
    ("fk_recompute_profiles_profile", "missing"): _profile_not_found,
}


def app_error_for_integrity_error(exc: sqlalchemy.exc.IntegrityError) -> AppError:
    """The API error for a constraint violation (the transaction has been rolled back)."""
    found = identify(exc)
    if found is not None and found in ERRORS:
        return ERRORS[found]()
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "sqlite_errorname", None)
    log.warning(
        "unmapped integrity error: %s (%s) on %s",
        found or "unidentified constraint",
        sqlstate,
        _statement_target(exc.statement),
    )
    return ConcurrentChange(
        "the request collided with a concurrent change and changed nothing; it may be retried"
    )


def identify(exc: sqlalchemy.exc.IntegrityError) -> tuple[str, Violation] | None:
    """(constraint name, kind of violation), or None when the error does not say."""
    orig = exc.orig
    diag = getattr(orig, "diag", None)
    if diag is not None:  # psycopg
        return _identify_postgresql(
            getattr(orig, "sqlstate", None),
            diag.constraint_name,
            diag.message_primary or "",
            exc.statement,
        )
    if orig is not None:  # sqlite3: the message is all there is
        return _identify_sqlite(str(orig), exc.statement)
    return None


def _identify_postgresql(
    sqlstate: str | None, name: str | None, message: str, statement: str | None
) -> tuple[str, Violation] | None:
    if name is None:
        return None
    if sqlstate == UNIQUE_VIOLATION:
        return name, "duplicate"
    if sqlstate != FOREIGN_KEY_VIOLATION:
        return None
    if message.startswith("insert or update on table"):
        return name, "missing"
    if message.startswith("update or delete on table"):
        return name, "in_use"
    verb, _table = _statement_target(statement) or ("", "")
    if verb == "INSERT":
        return name, "missing"
    if verb == "DELETE":
        return name, "in_use"
    return None


_SQLITE_UNIQUE = re.compile(r"^UNIQUE constraint failed: (.+)$")


def _identify_sqlite(message: str, statement: str | None) -> tuple[str, Violation] | None:
    unique = _SQLITE_UNIQUE.match(message)
    if unique:
        qualified = [c.strip().split(".", 1) for c in unique.group(1).split(",")]
        tables = {parts[0] for parts in qualified if len(parts) == 2}
        if len(tables) != 1 or any(len(parts) != 2 for parts in qualified):
            return None
        name = _unique_constraint_named(tables.pop(), frozenset(p[1] for p in qualified))
        return (name, "duplicate") if name else None
    if message == "FOREIGN KEY constraint failed":
        target = _statement_target(statement)
        if target is None or target[0] != "DELETE":
            return None  # an INSERT into a table with several keys: which one is unknown
        restricting = [
            fk
            for table in metadata.tables.values()
            for fk in table.foreign_key_constraints
            if fk.referred_table.name == target[1]
            and (fk.ondelete or "NO ACTION").upper() in ("RESTRICT", "NO ACTION")
        ]
        if len(restricting) == 1 and restricting[0].name:
            return str(restricting[0].name), "in_use"
    return None


def _unique_constraint_named(table_name: str, columns: frozenset[str]) -> str | None:
    table = metadata.tables.get(table_name)
    if table is None:
        return None
    for constraint in table.constraints:
        if (
            isinstance(constraint, sa.PrimaryKeyConstraint | sa.UniqueConstraint)
            and constraint.name
            and frozenset(c.name for c in constraint.columns) == columns
        ):
            return str(constraint.name)
    for index in table.indexes:
        if index.unique and index.name and frozenset(c.name for c in index.columns) == columns:
            return str(index.name)
    return None


_STATEMENT = re.compile(
    r'^\s*(?P<verb>INSERT(?:\s+OR\s+\w+)?\s+INTO|DELETE\s+FROM|UPDATE)\s+"?(?P<table>\w+)',
    re.IGNORECASE,
)


def _statement_target(statement: str | None) -> tuple[str, str] | None:
    """("INSERT" | "DELETE" | "UPDATE", table) of a statement, for the server log and for
    telling the two ends of a foreign key apart; never shown to the caller."""
    match = _STATEMENT.match(statement or "")
    if match is None:
        return None
    return match["verb"].split()[0].upper(), match["table"]
