"""Scoring profiles: every function is scoped to one organisation in its SQL."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import scoring_profiles
from signalscore.db.types import utcnow
from signalscore.errors import NotFound, Problems
from signalscore.events import log as events
from signalscore.profiles.schemas import Profile, ProfileCreate, ProfileUpdate, TiersSpec
from signalscore.recompute import enqueue_profile
from signalscore.vocabulary import DIMENSIONS

p = scoring_profiles

# A profile's stored tiers: dimension → [{"name", "minScore"}] by minScore descending.
TiersDocument = dict[str, list[dict[str, Any]]]


def checked_tiers(tiers: TiersSpec | None) -> TiersDocument | None:
    """The tiers as stored, after the checks a field type cannot make (SPEC §9): names
    unique in their dimension ignoring case, `minScore` unique in it. Every problem is listed
    with its path (`tiers.fit[2].minScore`, the index as sent). No dimension with tiers (or
    `{}`) is stored as NULL, as `null` is."""
    if tiers is None:
        return None
    problems = Problems()
    document: TiersDocument = {}
    for dimension in DIMENSIONS:
        entries = getattr(tiers, dimension)
        if not entries:
            continue
        names: set[str] = set()
        floors: set[float] = set()
        for i, tier in enumerate(entries):
            path = f"tiers.{dimension}[{i}]"
            if tier.name.casefold() in names:
                problems.add(
                    f"{path}.name",
                    "DUPLICATE_TIER_NAME",
                    f"tier name {tier.name!r} is used twice in {dimension} (ignoring case)",
                )
            if tier.minScore in floors:
                problems.add(
                    f"{path}.minScore",
                    "DUPLICATE_MIN_SCORE",
                    f"minScore {tier.minScore} is used twice in {dimension}",
                )
            names.add(tier.name.casefold())
            floors.add(tier.minScore)
        ordered = sorted(entries, key=lambda t: t.minScore, reverse=True)
        document[dimension] = [{"name": t.name, "minScore": t.minScore} for t in ordered]
    problems.raise_if_any(what="tiers fields")
    return document or None


def _one(conn: Connection, query: Any) -> Profile:
    row = conn.execute(query).one_or_none()
    if row is None:
        raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
    return Profile.from_row(row)


def list_profiles(conn: Connection, org_id: str) -> list[Profile]:
    rows = conn.execute(
        sa.select(p).where(p.c.organization_id == org_id).order_by(p.c.created_at, p.c.id)
    )
    return [Profile.from_row(row) for row in rows]


def get_profile(conn: Connection, org_id: str, profile_id: uuid.UUID) -> Profile:
    """The profile, or 404 `PROFILE_NOT_FOUND` (also for another organisation's profile)."""
    return _one(conn, sa.select(p).where(p.c.organization_id == org_id, p.c.id == profile_id))


def create_profile(conn: Connection, org_id: str, body: ProfileCreate) -> Profile:
    tiers = checked_tiers(body.tiers)
    now = utcnow()
    return _one(
        conn,
        p.insert()
        .values(
            organization_id=org_id,
            id=uuid.uuid4(),
            type=body.profileType,
            name=body.name,
            description=body.description,
            tiers=tiers,
            created_at=now,
            updated_at=now,
        )
        .returning(*p.c),
    )


def update_profile(
    conn: Connection, org_id: str, profile_id: uuid.UUID, body: ProfileUpdate
) -> Profile:
    """Rename, re-describe and re-tier in one `UPDATE ... RETURNING`: an omitted
    `description` or `tiers` is not written at all, so it keeps whatever is stored when the
    update runs, and `null` clears it. Two concurrent updates therefore act in some serial
    order; on PostgreSQL the second waits for the first's row lock and applies to the row as
    the first left it, where reading first and writing every field back lost the other one's
    description.

    New tiers re-tier every row of the profile through the pipeline, as a rule change does
    (`enqueue_profile`, in this transaction; the unit of work holds the organisation lock
    shared). Tiers sent equal to the stored ones queue nothing."""
    values: dict[str, Any] = {"name": body.name, "updated_at": utcnow()}
    if "description" in body.model_fields_set:
        values["description"] = body.description
    if "tiers" in body.model_fields_set:
        values["tiers"] = tiers = checked_tiers(body.tiers)
        # FOR NO KEY UPDATE, as the UPDATE below takes anyway: concurrent re-tierings of one
        # profile compare against each other's result, and a worker's FOR KEY SHARE on the
        # profile (`recompute.compute`) does not wait for it.
        stored = conn.execute(
            sa.select(p.c.tiers)
            .where(p.c.organization_id == org_id, p.c.id == profile_id)
            .with_for_update(key_share=True)
        ).one_or_none()
        if stored is None:
            raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
        if stored.tiers != tiers:
            enqueue_profile(conn, org_id, profile_id)
    return _one(
        conn,
        sa.update(p)
        .where(p.c.organization_id == org_id, p.c.id == profile_id)
        .values(**values)
        .returning(*p.c),
    )


def delete_profile(conn: Connection, org_id: str, profile_id: uuid.UUID) -> None:
    """Delete the profile; its rules, assignments and score rows go with it (FK cascades).
    The score rows go first, each with its `score.deleted` event (SPEC §10).

    The profile row is locked first, before its score rows: a worker storing scores holds
    its profiles (`FOR KEY SHARE`) before it touches their rows, in the same order, so either
    the worker stores first and this deletion then deletes what it stored, or this deletion
    commits first and the worker finds the profile gone and stores nothing for it (no event
    for a row that no longer exists, no deadlock)."""
    found = conn.execute(
        sa.select(p.c.id)
        .where(p.c.organization_id == org_id, p.c.id == profile_id)
        .with_for_update()
    ).one_or_none()
    if found is None:
        raise NotFound("scoring profile not found", error_code="PROFILE_NOT_FOUND")
    events.record_profile_deletion(conn, org_id, profile_id)
    conn.execute(sa.delete(p).where(p.c.organization_id == org_id, p.c.id == profile_id))
