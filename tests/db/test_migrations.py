"""The migrations build the schema from nothing, and it matches the table definitions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from signalscore.db.engine import create_db_engine
from signalscore.db.migrate import alembic_config, current_revision, head_revision, upgrade_to_head
from signalscore.db.tables import metadata
from tests.conftest import scratch_postgres_engine


@pytest.fixture
def empty_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """A brand-new database with no tables at all."""
    if backend == "sqlite":
        engine = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    with scratch_postgres_engine("signalscore_migrate") as engine:
        yield engine


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_upgrade_from_empty_to_head_matches_the_tables(empty_engine: Engine) -> None:
    with empty_engine.connect() as conn:
        assert current_revision(conn) is None
    upgrade_to_head(empty_engine)
    with empty_engine.connect() as conn:
        assert current_revision(conn) == head_revision()
        tables = set(sa.inspect(conn).get_table_names()) - {"alembic_version"}
    assert tables == set(metadata.tables)
    assert _diff(empty_engine) == []


def test_upgrade_is_idempotent_and_downgrade_round_trips(empty_engine: Engine) -> None:
    upgrade_to_head(empty_engine)
    upgrade_to_head(empty_engine)
    command.downgrade(alembic_config(empty_engine), "base")
    with empty_engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
    upgrade_to_head(empty_engine)
    assert _diff(empty_engine) == []


def test_drift_detection_can_fail(empty_engine: Engine) -> None:
    """The no-drift check above is only worth something if it notices a difference."""
    upgrade_to_head(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE organizations ADD COLUMN stray INTEGER"))
    assert _diff(empty_engine) != []


def test_score_results_pages_leave_room_for_hot_updates(backend: str, empty_engine: Engine) -> None:
    """0005: score rows are rewritten on every recompute; free page space lets PostgreSQL
    update them in place (HOT). See docs/benchmarks.md, recompute pipeline."""
    if backend != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage setting; SQLite has none")

    upgrade_to_head(empty_engine)
    assert _reloptions(empty_engine, "score_results") == ["fillfactor=50"]
    command.downgrade(alembic_config(empty_engine), "0004")
    assert _reloptions(empty_engine, "score_results") == []


def test_queue_pages_leave_room_for_hot_leases(backend: str, empty_engine: Engine) -> None:
    """0009: a claim rewrites each entry it leases; free page space lets PostgreSQL do it in
    place (HOT), without new entries in the queue's indexes."""
    if backend != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage setting; SQLite has none")

    upgrade_to_head(empty_engine)
    assert _reloptions(empty_engine, "recompute_queue") == ["fillfactor=50"]
    command.downgrade(alembic_config(empty_engine), "0008")
    assert _reloptions(empty_engine, "recompute_queue") == []


def _reloptions(engine: Engine, table: str) -> list[str]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT reloptions FROM pg_class WHERE relname = :table"), {"table": table}
        ).scalar_one()
    return list(found or [])


def test_score_documents_compress_with_lz4(backend: str, empty_engine: Engine) -> None:
    """0010: a changed score row's new document is compressed on every write; lz4 does it
    several times faster than PostgreSQL's default pglz."""
    if backend != "postgresql":
        pytest.skip("column compression is a PostgreSQL storage setting; SQLite has none")

    def methods() -> dict[str, str]:
        with empty_engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT attname, attcompression FROM pg_attribute"
                    " WHERE attrelid = 'score_results'::regclass"
                    " AND attname IN ('contributions', 'previous_contributions')"
                )
            ).all()
        return {name: str(method or "") for name, method in rows}

    upgrade_to_head(empty_engine)
    assert methods() == {"contributions": "l", "previous_contributions": "l"}
    command.downgrade(alembic_config(empty_engine), "0009")
    assert methods() == {"contributions": "", "previous_contributions": ""}


def test_the_score_counts_migration_counts_the_rows_already_stored(empty_engine: Engine) -> None:
    """Migration 0016 fills `score_counts` from the score rows a database already has."""
    from signalscore.db.engine import Database
    from tests.helpers import assert_counts_exact, drain, make_tenant
    from tests.recompute.test_processes import seed_world

    upgrade_to_head(empty_engine)
    database = Database(empty_engine)
    tenant = make_tenant(database)
    seed_world(database, tenant.org_id, [f"m{i}.com" for i in range(80)])
    drain(database)
    command.downgrade(alembic_config(empty_engine), "0015")
    command.upgrade(alembic_config(empty_engine), "head")
    with empty_engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT count(*), sum(count) FROM score_counts")).one()
    assert kept[0] > 10
    assert kept[1] == 160  # 80 companies, fit and urgency
    assert_counts_exact(database)
