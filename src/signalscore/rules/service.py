"""Scoring rules: upsert per (profile, template, dimension), delete, list.

Every change queues the profile's assigned objects for recomputation in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import scoring_rules, signal_templates
from signalscore.db.types import utcnow
from signalscore.errors import Invalid, InvalidPointValues, NotFound, Problems
from signalscore.profiles.service import get_profile
from signalscore.recompute import enqueue_profile
from signalscore.rules.point_values import validate_point_values
from signalscore.rules.schemas import Decay, Rule, RuleUpsert

MAX_RULES_PER_PROFILE = 100

r = scoring_rules

_COLUMNS = (
    r.c.id,
    r.c.profile_id.label("profileId"),
    r.c.signal_template_id.label("signalTemplateId"),
    r.c.dimension,
    r.c.answer_type.label("answerType"),
    r.c.point_values.label("pointValues"),
    r.c.decay,
    r.c.created_at.label("createdAt"),
    r.c.updated_at.label("updatedAt"),
)


def list_rules(conn: Connection, org_id: str, profile_id: uuid.UUID) -> list[Rule]:
    get_profile(conn, org_id, profile_id)
    rows = conn.execute(
        sa.select(*_COLUMNS)
        .where(r.c.organization_id == org_id, r.c.profile_id == profile_id)
        .order_by(r.c.created_at, r.c.id)
    ).mappings()
    return [Rule.model_validate(dict(row)) for row in rows]


@dataclass(frozen=True)
class CheckedRule:
    """A rule body after every check, in the form it is stored."""

    body: RuleUpsert
    point_values: dict[str, Any]
    decay: dict[str, Any] | None


def checked_decay(decay: Decay | None, path: str) -> tuple[dict[str, Any] | None, Problems]:
    """The decay as stored, and what the field types cannot check (SPEC §13): `afterDays`
    strictly increasing and `factor` non-increasing from step to step, each problem at its
    step's path (`decay.steps[1].afterDays`)."""
    problems = Problems()
    if decay is None:
        return None, problems
    steps = decay.steps
    for i in range(1, len(steps)):
        here = f"{path}.steps[{i}]"
        if steps[i].afterDays <= steps[i - 1].afterDays:
            problems.add(
                f"{here}.afterDays",
                "DECAY_STEPS_NOT_INCREASING",
                f"afterDays must be greater than the previous step's ({steps[i - 1].afterDays})",
            )
        if steps[i].factor > steps[i - 1].factor:
            problems.add(
                f"{here}.factor",
                "DECAY_FACTOR_INCREASES",
                f"factor must not exceed the previous step's ({steps[i - 1].factor})",
            )
    return {"steps": [step.model_dump() for step in steps]}, problems


def check_rules(
    conn: Connection, org_id: str, profile_type: str, bodies: Sequence[RuleUpsert], paths: str
) -> list[CheckedRule]:
    """Check rule bodies against this organisation's templates and SPEC §4/§13, every
    problem at its path (`paths` formats a rule's index: "" for one rule, "rules[{}]." for
    a list). Raises a 422 listing them all: `INVALID_POINT_VALUES` when every problem is in
    `answerType`/`pointValues`, else `VALIDATION_ERROR` (a rule whose template is unknown or
    of another object type is not checked further)."""
    ids = sorted({body.signalTemplateId for body in bodies})
    t = signal_templates
    templates = {
        row.id: row
        for row in conn.execute(
            sa.select(t.c.id, t.c.object_type, t.c.answer_type).where(
                t.c.organization_id == org_id, t.c.id.in_(ids)
            )
        )
    }
    other, shape = Problems(), Problems()
    checked: list[CheckedRule] = []
    for i, body in enumerate(bodies):
        prefix = paths.format(i)
        decay, decay_problems = checked_decay(body.decay, f"{prefix}decay")
        other.extend(decay_problems.fields)
        template = templates.get(body.signalTemplateId)
        if template is None:
            other.add(
                f"{prefix}signalTemplateId",
                "TEMPLATE_NOT_FOUND",
                f"unknown signal template {body.signalTemplateId!r}",
            )
            continue
        if template.object_type != profile_type:
            other.add(
                f"{prefix}signalTemplateId",
                "OBJECT_TYPE_MISMATCH",
                f"signal template {body.signalTemplateId!r} is for {template.object_type} "
                f"objects, but this profile scores {profile_type} objects",
            )
            continue
        if body.answerType != template.answer_type:
            shape.add(
                f"{prefix}answerType",
                "ANSWER_TYPE_MISMATCH",
                f"the template's answer type is {template.answer_type!r}, not {body.answerType!r}",
            )
        point_values, point_problems = validate_point_values(template.answer_type, body.pointValues)
        shape.extend([p.model_copy(update={"field": prefix + p.field}) for p in point_problems])
        checked.append(CheckedRule(body, point_values, decay))
    if other:
        other.extend(shape.fields)
        other.raise_if_any(what="rule fields")
    shape.raise_if_any(what="answerType/pointValues fields", error=InvalidPointValues)
    return checked


def upsert_rule(conn: Connection, org_id: str, profile_id: uuid.UUID, body: RuleUpsert) -> Rule:
    """Create or replace the rule for (profile, template, dimension); a replace keeps the
    rule's id and createdAt. Queues every object assigned to the profile."""
    profile = get_profile(conn, org_id, profile_id)
    # First: the profile's fan-out, then the template's lock, then the checks against the
    # template and the change (recompute.enqueue_profile). Rolled back if a check fails.
    enqueue_profile(conn, org_id, profile_id)
    (checked,) = check_rules(conn, org_id, profile.type, [body], "")
    point_values, decay = checked.point_values, checked.decay
    now = utcnow()
    existing = conn.execute(
        sa.select(r.c.id, r.c.created_at).where(
            r.c.organization_id == org_id,
            r.c.profile_id == profile_id,
            r.c.signal_template_id == body.signalTemplateId,
            r.c.dimension == body.dimension,
        )
    ).one_or_none()
    if existing is not None:
        rule_id, created_at = existing.id, existing.created_at
        conn.execute(
            sa.update(r)
            .where(r.c.organization_id == org_id, r.c.id == rule_id)
            .values(
                answer_type=body.answerType,
                point_values=point_values,
                decay=decay,
                updated_at=now,
            )
        )
    else:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(r)
            .where(r.c.organization_id == org_id, r.c.profile_id == profile_id)
        ).scalar_one()
        if count >= MAX_RULES_PER_PROFILE:
            raise Invalid(
                f"a profile holds at most {MAX_RULES_PER_PROFILE} rules",
                error_code="TOO_MANY_RULES",
                details={"limit": MAX_RULES_PER_PROFILE},
            )
        rule_id, created_at = uuid.uuid4(), now
        conn.execute(
            r.insert().values(
                organization_id=org_id,
                id=rule_id,
                profile_id=profile_id,
                signal_template_id=body.signalTemplateId,
                dimension=body.dimension,
                answer_type=body.answerType,
                point_values=point_values,
                decay=decay,
                created_at=now,
                updated_at=now,
            )
        )
    return Rule(
        id=rule_id,
        profileId=profile_id,
        signalTemplateId=body.signalTemplateId,
        dimension=body.dimension,
        answerType=body.answerType,
        pointValues=point_values,
        decay=decay,
        createdAt=created_at,
        updatedAt=now,
    )


def delete_rule(conn: Connection, org_id: str, profile_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    """Delete a rule of this profile and queue the profile's objects.

    The fan-out is recorded first, as a rule upsert does (`enqueue_profile`): both lock the
    profile's `recompute_profiles` row before the rule's row. Deleting first deadlocked with a
    concurrent upsert of the same rule, which held the first and waited for the second (seen
    in tests/recompute/test_protocol.py). A missing rule rolls the whole unit back."""
    get_profile(conn, org_id, profile_id)
    enqueue_profile(conn, org_id, profile_id)
    deleted = conn.execute(
        sa.delete(r).where(
            r.c.organization_id == org_id, r.c.profile_id == profile_id, r.c.id == rule_id
        )
    ).rowcount
    if not deleted:
        raise NotFound("scoring rule not found in this profile", error_code="RULE_NOT_FOUND")
