"""Liveness and readiness probes (no API key needed)."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter
from pydantic import BaseModel

from signalscore.db.migrate import current_revision, head_revision
from signalscore.deps import DatabaseDep
from signalscore.errors import Unavailable, error_responses

router = APIRouter(tags=["health"], responses=error_responses(404, 405, 500))


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: Literal["ok"]
    migration: str


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive. Touches nothing else."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses=error_responses(503))
def readyz(db: DatabaseDep) -> Readiness:
    """Ready to serve: the database answers and its schema is at the latest migration."""
    with db.read() as conn:
        conn.execute(sa.text("SELECT 1"))
        current = current_revision(conn)
    head = head_revision()
    if current != head or head is None:
        raise Unavailable(
            "database schema is not at the latest migration; run `signalscore migrate`",
            error_code="SCHEMA_OUTDATED",
            details={"current": current, "expected": head},
        )
    return Readiness(status="ready", database="ok", migration=head)
