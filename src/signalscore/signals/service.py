"""Signal templates and values, scoped to one organisation in every statement."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection

from signalscore.db.dialect import (
    delete_value_rows,
    locked_value_rows,
    upsert,
)
from signalscore.db.tables import scoring_rules, signal_templates, signal_values
from signalscore.db.types import utcnow
from signalscore.errors import Conflict, FieldProblem, NotFound, Problems
from signalscore.recompute import enqueue_value_changes
from signalscore.signals.schemas import (
    TEMPLATE_ID_RE,
    SignalValue,
    SignalValueIn,
    SignalValuesWriteResult,
    Template,
    TemplateCreate,
    TemplatePatch,
)
from signalscore.signals.value_types import normalize_value
from signalscore.validation import validation_error

t = signal_templates
v = signal_values

_TEMPLATE_COLUMNS = (
    t.c.id,
    t.c.organization_id.label("organizationId"),
    t.c.name,
    t.c.description,
    t.c.object_type.label("objectType"),
    t.c.answer_type.label("answerType"),
    t.c.created_at.label("createdAt"),
    t.c.updated_at.label("updatedAt"),
)


def _template_not_found(template_id: str) -> NotFound:
    return NotFound(f"signal template {template_id!r} not found", error_code="TEMPLATE_NOT_FOUND")


def list_templates(conn: Connection, org_id: str, object_type: str | None) -> list[Template]:
    query = sa.select(*_TEMPLATE_COLUMNS).where(t.c.organization_id == org_id)
    if object_type is not None:
        query = query.where(t.c.object_type == object_type)
    rows = conn.execute(query.order_by(t.c.created_at, t.c.id)).mappings()
    return [Template.model_validate(dict(r)) for r in rows]


def get_template(conn: Connection, org_id: str, template_id: str) -> Template:
    if not TEMPLATE_ID_RE.fullmatch(template_id):  # cannot exist; never reaches the database
        raise _template_not_found(template_id)
    row = (
        conn.execute(
            sa.select(*_TEMPLATE_COLUMNS).where(
                t.c.organization_id == org_id, t.c.id == template_id
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise _template_not_found(template_id)
    return Template.model_validate(dict(row))


def create_template(conn: Connection, org_id: str, body: TemplateCreate) -> Template:
    """Insert with `ON CONFLICT DO NOTHING`, so of concurrent creates with one id exactly one
    inserts and the others answer 409 (on PostgreSQL they wait for it to commit first);
    checking first and inserting after let them all pass the check and fail the insert."""
    template_id = body.id or str(uuid.uuid4())
    now = utcnow()
    insert = upsert(conn, t)
    inserted = conn.execute(
        insert.values(
            organization_id=org_id,
            id=template_id,
            name=body.name,
            description=body.description,
            object_type=body.objectType,
            answer_type=body.answerType,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["organization_id", "id"])
        .returning(t.c.id)
    ).first()
    if inserted is None:
        raise Conflict(
            f"a signal template with id {template_id!r} already exists",
            error_code="TEMPLATE_ID_TAKEN",
            details={"id": template_id},
        )
    return Template(
        id=template_id,
        organizationId=org_id,
        name=body.name,
        description=body.description,
        objectType=body.objectType,
        answerType=body.answerType,
        createdAt=now,
        updatedAt=now,
    )


def patch_template(
    conn: Connection, org_id: str, template_id: str, body: TemplatePatch
) -> Template:
    """Change what was sent and differs. The row is read `FOR NO KEY UPDATE` (PostgreSQL;
    SQLite's write transaction already excludes other writers), so concurrent PATCHes apply
    one after the other and each compares with, and answers, the template as the previous one
    left it. The lock does not block value or rule writes, which only key-share the row."""
    if not TEMPLATE_ID_RE.fullmatch(template_id):  # cannot exist; never reaches the database
        raise _template_not_found(template_id)
    row = (
        conn.execute(
            sa.select(*_TEMPLATE_COLUMNS)
            .where(t.c.organization_id == org_id, t.c.id == template_id)
            .with_for_update(key_share=True)
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise _template_not_found(template_id)
    current = Template.model_validate(dict(row))
    changes: dict[str, Any] = {}
    if body.name is not None and body.name != current.name:
        changes["name"] = body.name
    if "description" in body.model_fields_set and body.description != current.description:
        changes["description"] = body.description
    if not changes:
        return current
    now = utcnow()
    conn.execute(
        sa.update(t)
        .where(t.c.organization_id == org_id, t.c.id == template_id)
        .values(**changes, updated_at=now)
    )
    return current.model_copy(update={**changes, "updatedAt": now})


def delete_template(conn: Connection, org_id: str, template_id: str) -> None:
    """Delete a template and its values; 409 listing the rules that still use it.

    A structural change: its unit of work holds the organisation lock exclusively, as rule
    writes do, so a rule write on this template either commits first (and this answers 409)
    or runs after (and finds no template: 422). Without it both passed their checks and one
    of them failed on the foreign key."""
    get_template(conn, org_id, template_id)
    rule_ids = conn.execute(
        sa.select(scoring_rules.c.id)
        .where(
            scoring_rules.c.organization_id == org_id,
            scoring_rules.c.signal_template_id == template_id,
        )
        .order_by(scoring_rules.c.created_at, scoring_rules.c.id)
    ).scalars()
    in_use = [str(rule_id) for rule_id in rule_ids]
    if in_use:
        raise Conflict(
            f"signal template {template_id!r} is used by {len(in_use)} rule(s); delete them first",
            error_code="TEMPLATE_IN_USE",
            details={"ruleIds": in_use},
        )
    # No rule reads these values, so removing them changes no score: nothing to enqueue.
    conn.execute(
        sa.delete(v).where(v.c.organization_id == org_id, v.c.signal_template_id == template_id)
    )
    conn.execute(sa.delete(t).where(t.c.organization_id == org_id, t.c.id == template_id))


@dataclass(frozen=True, slots=True)
class _ValidItem:
    object_type: str
    object_id: str
    template_id: str
    value: Any  # None deletes
    observed_at: datetime


def shape_items(items: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """Items converted to `SignalValueIn` where they have its shape (the others stay as they
    are, for `write_values` to report), and the template ids of the well-shaped ones: what a
    value write's unit of work declares (`db.write(value_templates=...)`) before it opens."""
    shaped = _shaped_items(items, Problems())
    converted = [shaped.get(index, item) for index, item in enumerate(items)]
    return converted, sorted({item.signalTemplateId for item in shaped.values()})


def _shaped_items(items: Sequence[Any], problems: Problems) -> dict[int, SignalValueIn]:
    """Every item that has the shape of `SignalValueIn`, by position; the others' errors go
    to `problems` as `values[i]...`."""
    shaped: dict[int, SignalValueIn] = {}
    for index, item in enumerate(items):
        if isinstance(item, SignalValueIn):
            shaped[index] = item
            continue
        try:
            shaped[index] = SignalValueIn.model_validate(item)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            for error in errors:
                error["loc"] = ("values", index, *error["loc"])
            problems.extend(validation_error(errors).fields)
    return shaped


def _validate_items(
    conn: Connection, org_id: str, items: Sequence[Any], now: datetime
) -> list[_ValidItem]:
    """Check the shape of every item, then every well-shaped item against its template;
    raise one 422 listing every bad item, in request order."""
    problems = Problems()
    shaped = _shaped_items(items, problems)
    template_ids = sorted({item.signalTemplateId for item in shaped.values()})
    templates = {
        row.id: row
        for row in conn.execute(
            sa.select(t.c.id, t.c.object_type, t.c.answer_type).where(
                t.c.organization_id == org_id, t.c.id.in_(template_ids)
            )
        )
    }
    valid: list[_ValidItem] = []
    for index, item in shaped.items():
        try:
            valid.append(checked_item(item, templates.get(item.signalTemplateId), now))
        except FieldProblem as problem:
            problems.fields.append(problem.at(f"values[{index}]"))
    # Request order: item 1's shape error before item 2's template error.
    problems.fields.sort(key=lambda f: _item_index(f.field))
    problems.raise_if_any(what="values")
    return valid


def checked_item(item: SignalValueIn, template: Any, now: datetime) -> _ValidItem:
    """A well-shaped item checked against its template and normalised (`checked_value`)."""
    value = checked_value(item.objectType, item.signalTemplateId, item.value, template)
    return _ValidItem(
        item.objectType, item.objectId, item.signalTemplateId, value, item.observedAt or now
    )


def checked_value(object_type: str, template_id: str, value: Any, template: Any) -> Any:
    """The value of a well-shaped item, checked against its template (a row with
    `object_type` and `answer_type`, or None when there is none) and normalised; or
    `FieldProblem`, whose suffix is the item's field (`.signalTemplateId`, `.value[3]`)."""
    if template is None:
        raise FieldProblem(
            "TEMPLATE_NOT_FOUND", f"unknown signal template {template_id!r}", ".signalTemplateId"
        )
    if template.object_type != object_type:
        raise FieldProblem(
            "OBJECT_TYPE_MISMATCH",
            f"signal template {template_id!r} is for {template.object_type} "
            f"objects, not {object_type}",
            ".signalTemplateId",
        )
    if value is None:
        return None
    try:
        return normalize_value(template.answer_type, value)
    except FieldProblem as problem:
        raise FieldProblem(problem.code, problem.message, ".value" + problem.suffix) from None


def _item_index(path: str) -> int:
    return int(path[len("values[") : path.index("]")])


def write_values(conn: Connection, org_id: str, items: Sequence[Any]) -> SignalValuesWriteResult:
    """Write a batch atomically: validate all, then upsert/delete, then enqueue recomputes."""
    now = utcnow()
    # A template deleted between this check and the upsert fails the upsert on its foreign
    # key, and the whole batch is refused (db/integrity.py): nothing half-written. The
    # organisation lock (shared) is taken later, only around the queueing decision.
    valid = _validate_items(conn, org_id, items, now)
    # The last item wins for repeated keys (after normalisation). Rows are written in
    # code-point order of their key, whatever the request's order: two writes of the same
    # keys lock them in one order and cannot deadlock (docs/architecture.md, the lock order).
    by_key = {(i.object_type, i.object_id, i.template_id): i for i in valid}
    latest = {key: by_key[key] for key in sorted(by_key)}

    existing = _stored_values(conn, org_id, latest)
    upserts: list[dict[str, Any]] = []
    deletes: list[tuple[str, str, str]] = []
    changed: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    written = deleted = unchanged = 0
    for key, item in latest.items():
        stored = existing.get(key)
        if item.value is None:
            # Deleted whether or not the read found a row: a row another write committed
            # since (its insert waited for by this write's upserts) is deleted too.
            deletes.append(key)
            continue
        is_same = stored is not None and _same_value(stored[0], item.value)
        if is_same:
            unchanged += 1
        else:
            written += 1
        upserts.append(
            {
                "organization_id": org_id,
                "object_type": key[0],
                "object_id": key[1],
                "signal_template_id": key[2],
                "value": stored[0] if is_same and stored else item.value,
                "observed_at": item.observed_at,
                # An identical value is a fresh observation, not a change.
                "updated_at": stored[1] if is_same and stored else now,
            }
        )
        # The same value observed anew is not written, but the scores that read it
        # explain its observedAt and decay from it (SPEC §13): they are recomputed.
        if is_same and stored is not None and stored[2] == item.observed_at:
            continue
        changed[key[0]][key[1]].add(key[2])

    if upserts:
        insert = upsert(conn, v)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=[
                    "organization_id",
                    "object_type",
                    "object_id",
                    "signal_template_id",
                ],
                set_={
                    "value": insert.excluded.value,
                    "observed_at": insert.excluded.observed_at,
                    "updated_at": insert.excluded.updated_at,
                },
            ),
            upserts,
        )
    gone = delete_value_rows(conn, org_id, deletes)
    deleted = len(gone)
    unchanged += len(deletes) - deleted
    for object_type, object_id, template_id in gone:
        changed[object_type][object_id].add(template_id)
    enqueue_value_changes(conn, org_id, changed)
    return SignalValuesWriteResult(written=written, deleted=deleted, unchanged=unchanged)


_Stored = dict[tuple[str, str, str], tuple[Any, datetime, datetime]]


def _stored_values(
    conn: Connection, org_id: str, latest: dict[tuple[str, str, str], Any]
) -> _Stored:
    """(value, updatedAt, observedAt) of the stored rows of `latest`'s keys, which are in
    code-point order: on PostgreSQL each row locked as it is read, in that order
    (`dialect.locked_value_rows`), so what is compared is what the write will replace, and
    every write of these rows takes their locks in one order."""
    return {
        (row.object_type, row.object_id, row.signal_template_id): (
            row.value,
            row.updated_at,
            row.observed_at,
        )
        for row in locked_value_rows(conn, org_id, list(latest))
    }


def _same_value(stored: Any, new: Any) -> bool:
    # 5 and 5.0 are the same number; True and 1 are not the same answer.
    return bool(stored == new) and isinstance(stored, bool) == isinstance(new, bool)


def read_values(
    conn: Connection, org_id: str, object_type: str, object_ids: Sequence[str]
) -> list[SignalValue]:
    """Values of the given objects, in request order of `objectId`, then template id."""
    order = {object_id: position for position, object_id in enumerate(dict.fromkeys(object_ids))}
    rows = conn.execute(
        sa.select(
            v.c.object_type.label("objectType"),
            v.c.object_id.label("objectId"),
            v.c.signal_template_id.label("signalTemplateId"),
            v.c.value,
            v.c.observed_at.label("observedAt"),
            v.c.updated_at.label("updatedAt"),
        ).where(
            v.c.organization_id == org_id,
            v.c.object_type == object_type,
            v.c.object_id.in_(list(order)),
        )
    ).mappings()
    values = [SignalValue.model_validate(dict(r)) for r in rows]
    values.sort(key=lambda sv: (order[sv.objectId], sv.signalTemplateId))
    return values
