"""Integrity errors mapped to API errors by constraint name, against real violations that a
real database raises (SQLite and PostgreSQL), provoked with plain statements."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from signalscore.db.engine import Database
from signalscore.db.integrity import (
    ERRORS,
    ConcurrentChange,
    _identify_postgresql,
    app_error_for_integrity_error,
    identify,
)
from signalscore.db.tables import (
    metadata,
    profile_assignments,
    scoring_profiles,
    scoring_rules,
    signal_templates,
    signal_values,
)
from signalscore.db.types import utcnow
from signalscore.errors import AppError, error_response
from tests.helpers import Tenant

TEMPLATE = "leaky.template-id"  # distinctive, so a leak into a body is easy to spot
PROFILE = uuid.UUID("0badc0de-0000-4000-8000-00000000beef")
RULE = uuid.UUID("0badc0de-0000-4000-8000-0000000000aa")
MISSING_PROFILE = uuid.UUID("0badc0de-0000-4000-8000-00000000dead")


@dataclass
class Seeded:
    database: Database
    org_id: str

    def violate(self, statement: Callable[[str], Any]) -> sa.exc.IntegrityError:
        """Run one statement in a write transaction; return the IntegrityError it raises."""
        with pytest.raises(sa.exc.IntegrityError) as info, self.database.write() as conn:
            conn.execute(statement(self.org_id))
        return info.value


@pytest.fixture
def seeded(database: Database, tenant: Tenant) -> Seeded:
    """A template, a profile and a rule on them, written directly."""
    with database.write() as conn:
        conn.execute(template_insert(tenant.org_id))
        now = utcnow()
        conn.execute(
            scoring_profiles.insert().values(
                organization_id=tenant.org_id,
                id=PROFILE,
                type="company",
                name="P",
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(rule_insert(tenant.org_id))
    return Seeded(database, tenant.org_id)


def template_insert(org_id: str, template_id: str = TEMPLATE) -> sa.Insert:
    now = utcnow()
    return signal_templates.insert().values(
        organization_id=org_id,
        id=template_id,
        name="T",
        object_type="company",
        answer_type="number",
        created_at=now,
        updated_at=now,
    )


def rule_insert(
    org_id: str,
    *,
    rule_id: uuid.UUID = RULE,
    profile_id: uuid.UUID = PROFILE,
    template_id: str = TEMPLATE,
    dimension: str = "fit",
) -> sa.Insert:
    now = utcnow()
    return scoring_rules.insert().values(
        organization_id=org_id,
        id=rule_id,
        profile_id=profile_id,
        signal_template_id=template_id,
        dimension=dimension,
        answer_type="number",
        point_values={"ranges": [{"min": 0, "max": None, "points": 1}]},
        created_at=now,
        updated_at=now,
    )


def rendered(error: AppError) -> dict[str, Any]:
    """The envelope as a client receives it."""
    body: dict[str, Any] = orjson.loads(error_response(error, str(uuid.uuid4())).body)["error"]
    return body


def assert_nothing_leaks(error: AppError, *secrets: str) -> None:
    text = orjson.dumps(rendered(error)).decode().lower()
    constraint_names = {str(c.name) for t in metadata.tables.values() for c in t.constraints}
    for secret in (*secrets, *constraint_names, *metadata.tables, "insert", "delete from"):
        assert secret.lower() not in text, (secret, text)


def test_a_duplicate_template_id_is_template_id_taken(seeded: Seeded) -> None:
    exc = seeded.violate(template_insert)
    assert identify(exc) == ("pk_signal_templates", "duplicate")
    error = app_error_for_integrity_error(exc)
    body = rendered(error)
    assert (error.status, body["type"], body["code"]) == (409, "CONFLICT", "CONFLICT")
    assert body["errorCode"] == "TEMPLATE_ID_TAKEN"
    assert_nothing_leaks(error, seeded.org_id)


def test_deleting_a_template_rules_use_is_template_in_use(seeded: Seeded) -> None:
    exc = seeded.violate(
        lambda org: sa.delete(signal_templates).where(
            signal_templates.c.organization_id == org, signal_templates.c.id == TEMPLATE
        )
    )
    # SQLite names no key, but only one key can stop a template's deletion.
    assert identify(exc) == ("fk_scoring_rules_template", "in_use")
    error = app_error_for_integrity_error(exc)
    assert (error.status, error.error_code) == (409, "TEMPLATE_IN_USE")
    assert_nothing_leaks(error, TEMPLATE, seeded.org_id)


def test_a_rule_on_a_vanished_template_is_template_not_found(seeded: Seeded, backend: str) -> None:
    exc = seeded.violate(
        lambda org: rule_insert(org, rule_id=uuid.uuid4(), template_id="gone.template")
    )
    error = app_error_for_integrity_error(exc)
    assert_nothing_leaks(error, "gone.template", seeded.org_id)
    if backend == "sqlite":  # "FOREIGN KEY constraint failed": template or profile? Unknown.
        assert identify(exc) is None
        assert isinstance(error, ConcurrentChange)
        return
    assert identify(exc) == ("fk_scoring_rules_template", "missing")
    body = rendered(error)
    assert (error.status, body["code"], body["errorCode"]) == (
        422,
        "VALIDATION_ERROR",
        "TEMPLATE_NOT_FOUND",
    )
    assert [f["field"] for f in body["fields"]] == ["signalTemplateId"]


def test_a_value_of_a_vanished_template_is_template_not_found(seeded: Seeded, backend: str) -> None:
    now = utcnow()
    exc = seeded.violate(
        lambda org: signal_values.insert().values(
            organization_id=org,
            object_type="company",
            object_id="acme.com",
            signal_template_id="gone.template",
            value=5,
            observed_at=now,
            updated_at=now,
        )
    )
    error = app_error_for_integrity_error(exc)
    assert_nothing_leaks(error, "gone.template", "acme.com")
    if backend == "sqlite":
        assert isinstance(error, ConcurrentChange)
        return
    assert identify(exc) == ("fk_signal_values_template", "missing")
    assert (error.status, error.error_code) == (422, "TEMPLATE_NOT_FOUND")
    assert [f.field for f in error.fields] == ["values"]


@pytest.mark.parametrize(
    ("constraint", "statement"),
    [
        (
            "fk_scoring_rules_profile",
            lambda org: rule_insert(org, rule_id=uuid.uuid4(), profile_id=MISSING_PROFILE),
        ),
        (
            "fk_profile_assignments_profile",
            lambda org: profile_assignments.insert().values(
                organization_id=org,
                id=uuid.uuid4(),
                profile_id=MISSING_PROFILE,
                object_type="company",
                object_id="acme.com",
                assigned_at=utcnow(),
            ),
        ),
    ],
)
def test_a_write_for_a_vanished_profile_is_profile_not_found(
    seeded: Seeded, backend: str, constraint: str, statement: Callable[[str], Any]
) -> None:
    exc = seeded.violate(statement)
    error = app_error_for_integrity_error(exc)
    assert_nothing_leaks(error, str(MISSING_PROFILE), seeded.org_id)
    if backend == "sqlite":
        assert isinstance(error, ConcurrentChange)
        return
    assert identify(exc) == (constraint, "missing")
    body = rendered(error)
    assert (error.status, body["type"], body["errorCode"]) == (
        404,
        "NOT_FOUND",
        "PROFILE_NOT_FOUND",
    )


def test_a_duplicate_rule_is_identified_and_is_a_concurrent_change(seeded: Seeded) -> None:
    exc = seeded.violate(lambda org: rule_insert(org, rule_id=uuid.uuid4()))
    assert identify(exc) == ("uq_scoring_rules_profile_template_dimension", "duplicate")
    error = app_error_for_integrity_error(exc)
    assert isinstance(error, ConcurrentChange)


def test_anything_unknown_is_a_retryable_conflict_that_says_nothing_internal(
    seeded: Seeded,
) -> None:
    """A check constraint (only a bug gets past validation to it): the generic answer."""
    exc = seeded.violate(lambda org: rule_insert(org, rule_id=uuid.uuid4(), dimension="sideways"))
    assert identify(exc) is None
    error = app_error_for_integrity_error(exc)
    body = rendered(error)
    assert error.status == 409
    assert (body["type"], body["code"], body["errorCode"]) == (
        "CONFLICT",
        "CONFLICT",
        "CONCURRENT_CHANGE",
    )
    assert body["errorAction"] == "RETRY"
    assert "changed nothing" in body["message"]
    assert "retried" in body["message"]
    assert body["details"] == {}
    assert body["fields"] == []
    assert_nothing_leaks(error, "sideways", seeded.org_id, "check", "constraint")


def test_every_mapped_constraint_exists_in_the_migrated_schema(
    database: Database, backend: str
) -> None:
    mapped = {name for name, _ in ERRORS}
    declared = {str(c.name) for t in metadata.tables.values() for c in t.constraints}
    assert mapped <= declared
    if backend == "postgresql":
        with database.read() as conn:
            existing = set(
                conn.execute(
                    sa.text("SELECT conname FROM pg_constraint WHERE conname = ANY(:names)"),
                    {"names": sorted(mapped)},
                ).scalars()
            )
        assert existing == mapped


def test_translated_postgresql_messages_fall_back_to_the_statement() -> None:
    """With lc_messages in another language the message prefix means nothing; the statement
    still tells which end of the key was violated."""
    translated = "UPDATE oder DELETE in Tabelle verletzt Fremdschlüssel-Constraint"
    assert _identify_postgresql(
        "23503", "fk_scoring_rules_template", translated, "DELETE FROM signal_templates WHERE x"
    ) == ("fk_scoring_rules_template", "in_use")
    assert _identify_postgresql(
        "23503", "fk_scoring_rules_template", translated, "INSERT INTO scoring_rules (a) VALUES"
    ) == ("fk_scoring_rules_template", "missing")
    assert _identify_postgresql("23503", "fk_scoring_rules_template", translated, None) is None
