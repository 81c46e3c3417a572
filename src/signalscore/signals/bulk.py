"""`POST /v1/signals/values/import`: signal values in bulk (docs/api.md, "Bulk imports").

The body is read as it arrives. Each record is checked exactly as an item of `PUT /values`
(`SignalValueIn`, then its template: `signals.service.checked_item`) and staged; once the
whole body is read and valid, one set-based merge writes the values (`db.dialect`), the
objects whose changed values a rule reads are queued, and the transaction commits.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError

from signalscore import imports
from signalscore.db import dialect
from signalscore.db.engine import Database, Locks, declare_locks
from signalscore.db.tables import signal_templates
from signalscore.db.types import utcnow
from signalscore.errors import FieldProblem
from signalscore.objects import normalize_object_id
from signalscore.recompute import enqueue_changed_values
from signalscore.signals.schemas import SignalValueIn, SignalValuesImportResult
from signalscore.signals.service import checked_value
from signalscore.vocabulary import OBJECT_TYPES

CSV_REQUIRED = ("objectType", "objectId", "signalTemplateId", "value")
CSV_OPTIONAL = ("observedAt",)
# The tables the merge and the queueing join.
_READS = ("signal_values", "profile_assignments", "scoring_rules", "recompute_queue")


def _csv_cell(column: str, text: str) -> Any:
    """A CSV cell as the JSON item would hold it: `value` is JSON (`true`, `874`,
    `["a","b"]`, `null` to delete); an empty `observedAt` means the time of the write."""
    if column == "value":
        if not text.strip():
            raise ValueError("value is required: write null to delete the value")
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            raise ValueError(
                "value must be JSON: true or false, a number, an array of strings "
                'such as ["a","b"], or null'
            ) from None
    if column == "observedAt" and not text:
        return None
    return text


_FIELDS = frozenset(SignalValueIn.model_fields)
_REQUIRED = frozenset(("objectType", "objectId", "signalTemplateId", "value"))
Shaped = tuple[str, str, str, Any, datetime | None]


def _shaped(record: dict[str, Any]) -> Shaped | None:
    """The common record, checked without pydantic: exactly `SignalValueIn`'s rules for a
    record whose fields are all plain (no `observedAt`, strings where strings belong);
    None for anything else, which `_validated` then checks (and explains)."""
    keys = record.keys()
    if not _REQUIRED <= keys <= _FIELDS or record.get("observedAt") is not None:
        return None
    object_type, raw_id, template_id = (
        record["objectType"],
        record["objectId"],
        record["signalTemplateId"],
    )
    if (
        object_type not in OBJECT_TYPES
        or type(raw_id) is not str
        or type(template_id) is not str
        or not 1 <= len(template_id) <= 100
    ):
        return None
    try:
        object_id = _canonical_id(object_type, raw_id)
    except FieldProblem:
        return None
    return object_type, object_id, template_id, record["value"], None


# An object's values usually come on consecutive lines: its id is normalised once (a pure
# function of its arguments; bounded, so memory stays flat).
_canonical_id = functools.lru_cache(maxsize=4096)(normalize_object_id)


def _validated(record: dict[str, Any]) -> Shaped:
    item = SignalValueIn.model_validate(record)
    return item.objectType, item.objectId, item.signalTemplateId, item.value, item.observedAt


def import_values(
    db: Database, org_id: str, fmt: imports.Format, chunks: Iterable[bytes]
) -> SignalValuesImportResult:
    """Validate every record, then write them all in one transaction, or nothing (422 with
    the bad lines)."""
    now = utcnow()
    problems = imports.LineProblems()
    records = imports.read_records(
        chunks,
        fmt,
        problems,
        csv_required=CSV_REQUIRED,
        csv_optional=CSV_OPTIONAL,
        csv_cell=_csv_cell,
    )
    # The merge joins the staged rows with these tables: plan it from fresh statistics,
    # refreshed while the body is read (`db.statistics`).
    fresh = db.statistics.refresh(_READS)
    with db.write() as conn:
        t = signal_templates
        templates = {
            row.id: row
            for row in conn.execute(
                sa.select(t.c.id, t.c.object_type, t.c.answer_type).where(
                    t.c.organization_id == org_id
                )
            )
        }
        dialect.create_value_staging(conn)
        used: set[str] = set()
        lines = 0
        staging = imports.Staging[dialect.StagedValue](
            lambda rows: dialect.stage_values(conn, rows), problems
        )
        for line, record in records:
            lines += 1
            try:
                shaped = _shaped(record) or _validated(record)
                object_type, object_id, template_id, value, observed_at = shaped
                template = templates.get(template_id)
                value = checked_value(object_type, template_id, value, template)
            except ValidationError as exc:
                problems.add_validation_error(line, exc)
                continue
            except FieldProblem as problem:
                problems.add(line, problem.suffix.lstrip("."), problem.code, problem.message)
                continue
            used.add(template_id)
            staging.add((line, object_type, object_id, template_id, value, observed_at or now))
        staging.finish(lines)
        db.statistics.wait(fresh)
        # Only now does the import touch shared tables: it takes the locks a value write
        # takes, for the templates it writes (a template deleted since the check above fails
        # the merge on its foreign key: 409, nothing written).
        declare_locks(conn, Locks(org_id, value_templates=tuple(sorted(used))))
        keys, written, deleted = dialect.merge_staged_values(conn, org_id, now)
        enqueue_changed_values(conn, org_id, used)
        dialect.drop_staging(conn)
    db.statistics.refresh(["signal_values", "recompute_queue"])  # not waited for
    return SignalValuesImportResult(
        records=lines, written=written, deleted=deleted, unchanged=keys - written - deleted
    )
