"""Assignment and compute bodies (SPEC §4 Assignments, Compute)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field, field_validator

from signalscore.objects import object_id_variants
from signalscore.schemas import RequestModel, ResponseModel
from signalscore.signals.schemas import normalized_object_id
from signalscore.vocabulary import ObjectType

MAX_OBJECT_IDS_PER_CALL = 500


class AssignmentCreate(RequestModel):
    model_config = ConfigDict(json_schema_extra=object_id_variants("objectId"))

    profileId: uuid.UUID
    objectType: ObjectType
    objectId: str = Field(
        min_length=1,
        max_length=500,
        description="For company, the domain; for contact, the LinkedIn profile URL.",
    )

    _normalize_object_id = field_validator("objectId")(normalized_object_id)


class ObjectIdBatch(RequestModel):
    """`objectIds` are normalised by the service, which lists every bad one as `objectIds[i]`."""

    model_config = ConfigDict(json_schema_extra=object_id_variants("objectIds", many=True))

    objectType: ObjectType
    objectIds: list[str] = Field(
        min_length=1,
        max_length=MAX_OBJECT_IDS_PER_CALL,
        description="For company, domains; for contact, LinkedIn profile URLs. "
        "Capped at 500 per request; paginate larger lists.",
    )


class BulkAssignmentCreate(ObjectIdBatch):
    profileId: uuid.UUID


class Assignment(ResponseModel):
    id: uuid.UUID
    profileId: uuid.UUID
    organizationId: str
    objectType: ObjectType
    objectId: str
    assignedAt: datetime


class AssignmentsImportResult(ResponseModel):
    records: int = Field(description="Object records read from the body.")
    assigned: int = Field(description="Objects newly assigned to the profile (and queued).")
    alreadyAssigned: int = Field(
        description="Distinct objects that were assigned already (and repeats are counted "
        "once): `assigned + alreadyAssigned` counts distinct objects."
    )
