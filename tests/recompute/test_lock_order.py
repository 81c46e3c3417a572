"""Queue-row lock order on a database whose collation is not code-point order (PostgreSQL).

Writers that queue overlapping objects must lock their queue rows in one order, or two of
them deadlock. Python sorts ids by code point; a database with an ICU or glibc collation
sorts "u_1" before "u1". Here a worker's fan-out step (ids sorted in Python, no organisation
lock) races value writes for the same contacts (ids ordered in SQL) on an ICU-collated
database. Before both used code-point order this produced DeadlockDetected in about one
value write in eight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from signalscore.assignments.service import assign_many
from signalscore.db.engine import Database
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import recompute_profiles
from signalscore.db.types import utcnow
from signalscore.profiles.schemas import ProfileCreate
from signalscore.profiles.service import create_profile
from signalscore.recompute.queue import queue_next_profile_chunk
from signalscore.rules.schemas import RuleUpsert
from signalscore.rules.service import upsert_rule
from signalscore.signals.schemas import SignalValueIn, TemplateCreate
from signalscore.signals.service import create_template, write_values
from tests.conftest import scratch_postgres_engine
from tests.helpers import make_tenant

CONTACTS = [f"https://www.linkedin.com/in/u{i:04d}" for i in range(400)] + [
    f"https://www.linkedin.com/in/u_{i:04d}" for i in range(400)
]


@pytest.fixture
def icu_database(backend: str) -> Iterator[Database]:
    if backend != "postgresql":
        pytest.skip("SQLite serialises writers; collations do not order its locks")
    icu = "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en' LOCALE 'C.UTF-8'"
    with scratch_postgres_engine("signalscore_icu", icu) as engine:
        upgrade_to_head(engine)
        yield Database(engine)


def test_fan_out_steps_and_value_writes_never_deadlock(icu_database: Database) -> None:
    db = icu_database
    with db.read() as conn:  # the premise: this database does not sort by code point
        assert conn.execute(sa.text("SELECT 'u_1' < 'u1'")).scalar() is True
    assert not "u_1" < "u1"
    org = make_tenant(db, "Collated").org_id
    with db.write(org=org, structure=True) as conn:
        create_template(
            conn,
            org,
            TemplateCreate(id="b2b", name="B2B", objectType="contact", answerType="boolean"),
        )
        profile = create_profile(conn, org, ProfileCreate(profileType="contact", name="P")).id
        upsert_rule(
            conn,
            org,
            profile,
            RuleUpsert(
                signalTemplateId="b2b",
                dimension="fit",
                answerType="boolean",
                pointValues={"true": 5, "false": 1},
            ),
        )
        assign_many(conn, org, profile, "contact", CONTACTS)

    deadline = time.monotonic() + 4.0
    errors: list[str] = []
    rounds = {"fan_out": 0, "values": 0}

    def fan_out() -> None:
        while time.monotonic() < deadline:
            try:
                with db.write() as conn:
                    conn.execute(sa.delete(recompute_profiles))
                    conn.execute(
                        sa.insert(recompute_profiles).values(
                            organization_id=org,
                            profile_id=profile,
                            cursor_type="",
                            cursor_id="",
                            enqueued_at=utcnow(),
                        )
                    )
                with db.write() as conn:
                    queue_next_profile_chunk(conn)
                rounds["fan_out"] += 1
            except sa.exc.DBAPIError as exc:
                errors.append(type(exc.orig).__name__)

    def values() -> None:
        flag = True
        while time.monotonic() < deadline:
            flag = not flag
            items = [
                SignalValueIn(objectType="contact", objectId=c, signalTemplateId="b2b", value=flag)
                for c in CONTACTS[::2]
            ]
            try:
                with db.write(org=org, value_templates=["b2b"]) as conn:
                    write_values(conn, org, items)
                rounds["values"] += 1
            except sa.exc.DBAPIError as exc:
                errors.append(type(exc.orig).__name__)

    threads = [threading.Thread(target=fan_out), threading.Thread(target=values)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert rounds["fan_out"] > 5
    assert rounds["values"] > 5
