"""Alembic environment: the engine comes from `signalscore.db.migrate`, never from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Engine

from signalscore.db.tables import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - misuse guard
    raise RuntimeError("run migrations through signalscore.db.migrate, which supplies the engine")

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
