"""Scoring profiles: every function is scoped to one organisation in its SQL."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import scoring_profiles
from signalscore.db.types import utcnow
from signalscore.errors import NotFound
from signalscore.profiles.schemas import Profile, ProfileCreate, ProfileUpdate

_COLUMNS = (
    scoring_profiles.c.id,
    scoring_profiles.c.organization_id.label("organizationId"),
    scoring_profiles.c.type,
    scoring_profiles.c.name,
    scoring_profiles.c.description,
    scoring_profiles.c.created_at.label("createdAt"),
    scoring_profiles.c.updated_at.label("updatedAt"),
)


def list_profiles(conn: Connection, org_id: str) -> list[Profile]:
    rows = conn.execute(
        sa.select(*_COLUMNS)
        .where(scoring_profiles.c.organization_id == org_id)
        .order_by(scoring_profiles.c.created_at, scoring_profiles.c.id)
    ).mappings()
    return [Profile.model_validate(dict(r)) for r in rows]


def get_profile(conn: Connection, org_id: str, profile_id: uuid.UUID) -> Profile:
    """The profile, or 404 `PROFILE_NOT_FOUND` (also for another organisation's profile)."""
    query = sa.select(*_COLUMNS).where(
        scoring_profiles.c.organization_id == org_id, scoring_profiles.c.id == profile_id
    )
    row = conn.execute(query).mappings().one_or_none()
    if row is None:
        raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
    return Profile.model_validate(dict(row))


def create_profile(conn: Connection, org_id: str, body: ProfileCreate) -> Profile:
    now = utcnow()
    profile = Profile(
        id=uuid.uuid4(),
        organizationId=org_id,
        type=body.profileType,
        name=body.name,
        description=body.description,
        createdAt=now,
        updatedAt=now,
    )
    conn.execute(
        scoring_profiles.insert().values(
            organization_id=org_id,
            id=profile.id,
            type=profile.type,
            name=profile.name,
            description=profile.description,
            created_at=now,
            updated_at=now,
        )
    )
    return profile


def update_profile(
    conn: Connection, org_id: str, profile_id: uuid.UUID, body: ProfileUpdate
) -> Profile:
    """Rename (and re-describe) in one `UPDATE ... RETURNING`: an omitted `description` is
    not written at all, so it keeps whatever is stored when the update runs, and `null` clears
    it. Two concurrent updates therefore act in some serial order; on PostgreSQL the second
    waits for the first's row lock and applies to the row as the first left it, where reading
    first and writing every field back lost the other one's description."""
    values: dict[str, Any] = {"name": body.name, "updated_at": utcnow()}
    if "description" in body.model_fields_set:
        values["description"] = body.description
    row = (
        conn.execute(
            sa.update(scoring_profiles)
            .where(
                scoring_profiles.c.organization_id == org_id, scoring_profiles.c.id == profile_id
            )
            .values(**values)
            .returning(*_COLUMNS)
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
    return Profile.model_validate(dict(row))


def delete_profile(conn: Connection, org_id: str, profile_id: uuid.UUID) -> None:
    """Delete the profile; its rules, assignments and score rows go with it (FK cascades)."""
    deleted = conn.execute(
        sa.delete(scoring_profiles).where(
            scoring_profiles.c.organization_id == org_id, scoring_profiles.c.id == profile_id
        )
    ).rowcount
    if not deleted:
        raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
