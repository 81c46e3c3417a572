"""Signal template and value bodies (SPEC §5)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    SkipValidation,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from signalscore.errors import FieldProblem
from signalscore.objects import normalize_object_id, object_id_variants
from signalscore.schemas import Description, Name, RequestModel, ResponseModel, Timestamp
from signalscore.signals.value_types import VALUE_SCHEMA
from signalscore.vocabulary import PATTERN_END, AnswerType, ObjectType

MAX_VALUES_PER_WRITE = 1000

TEMPLATE_ID_RE = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{0,99}}{PATTERN_END}")


def _template_id(value: str) -> str:
    if not TEMPLATE_ID_RE.fullmatch(value):
        raise PydanticCustomError(
            "INVALID_TEMPLATE_ID",
            "'id' must be 1-100 characters of letters, digits, '_', '.', ':' or '-', "
            "starting with a letter or digit",
        )
    return value


TEMPLATE_ID_SCHEMA = {"type": "string", "pattern": TEMPLATE_ID_RE.pattern}
TemplateId = Annotated[str, AfterValidator(_template_id), WithJsonSchema(TEMPLATE_ID_SCHEMA)]
# A reference to a template: any text is accepted and an id that names no template (whatever
# its shape) is 422 TEMPLATE_NOT_FOUND; the document states the shape ids have.
TemplateRef = Annotated[
    str, Field(min_length=1, max_length=100), WithJsonSchema(TEMPLATE_ID_SCHEMA)
]


def _refuse_change(field: str, what: str) -> PydanticCustomError:
    return PydanticCustomError(
        "IMMUTABLE_FIELD", "'{field}' cannot be changed: {what}", {"field": field, "what": what}
    )


class TemplateCreate(RequestModel):
    id: TemplateId | None = Field(
        default=None,
        description="Optional client-chosen id, e.g. `employees` or `crm.vendor`; "
        "a UUID string is generated when omitted.",
    )
    name: Name
    objectType: ObjectType
    answerType: AnswerType
    description: Description = None


class TemplatePatch(RequestModel):
    """Only `name` and `description` can change; `null` clears the description."""

    # `name` may be omitted but not null; the schema says so, the validator enforces it.
    name: Name | SkipJsonSchema[None] = None
    description: Description = None
    id: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    objectType: SkipJsonSchema[Any] = Field(default=None, exclude=True)
    answerType: SkipJsonSchema[Any] = Field(default=None, exclude=True)

    @field_validator("name", mode="before")
    @classmethod
    def _name_not_null(cls, value: Any) -> Any:
        if value is None:
            raise PydanticCustomError("INVALID_NAME", "'name' cannot be null")
        return value

    @field_validator("id", "objectType", "answerType", mode="before")
    @classmethod
    def _immutable(cls, value: Any, info: ValidationInfo) -> Any:
        raise _refuse_change(str(info.field_name), "a template's id and types are immutable")


class Template(ResponseModel):
    id: str
    organizationId: str
    name: str
    description: str | None
    objectType: ObjectType
    answerType: AnswerType
    createdAt: datetime
    updatedAt: datetime


def normalized_object_id(value: str, info: ValidationInfo) -> str:
    """Field validator body: normalise `objectId` by the `objectType` validated before it."""
    object_type = info.data.get("objectType")
    if object_type is None:  # objectType itself was invalid; that error is reported
        return value
    try:
        return normalize_object_id(object_type, value)
    except FieldProblem as problem:
        raise PydanticCustomError(problem.code, problem.message) from None


class SignalValueIn(RequestModel):
    model_config = ConfigDict(json_schema_extra=object_id_variants("objectId"))

    objectType: ObjectType
    objectId: str = Field(
        min_length=1,
        max_length=500,
        description="For company, the domain; for contact, the LinkedIn profile URL.",
    )
    signalTemplateId: TemplateRef
    value: Annotated[Any, WithJsonSchema(VALUE_SCHEMA)] = Field(
        description="boolean: true/false; number/currency: finite number; percentage: 0-100; "
        "list: array of 0-100 strings (1-200 characters after trimming). `null` deletes the "
        "value. Which of these fits depends on the template's answer type."
    )
    observedAt: Timestamp | None = Field(
        default=None, description="RFC 3339 with offset; defaults to the time of the write."
    )

    _normalize_object_id = field_validator("objectId")(normalized_object_id)


class SignalValuesWrite(RequestModel):
    """The items are validated one by one by the service (`signals.service.write_values`),
    which lists every bad item in one answer: shape errors and errors against templates
    together. The document still describes each item as `SignalValueIn`."""

    values: SkipValidation[list[SignalValueIn]] = Field(
        min_length=1, max_length=MAX_VALUES_PER_WRITE
    )

    @field_validator("values", mode="before")
    @classmethod
    def _one_to_a_thousand_items(cls, value: Any) -> Any:
        if not isinstance(value, list):
            raise PydanticCustomError("INVALID_FIELD", "'values' must be an array of values")
        if not 1 <= len(value) <= MAX_VALUES_PER_WRITE:
            raise PydanticCustomError(
                "TOO_FEW_ITEMS" if not value else "TOO_MANY_ITEMS",
                f"'values' must hold 1-{MAX_VALUES_PER_WRITE} items",
            )
        return value


class SignalValuesWriteResult(ResponseModel):
    written: int = Field(description="Values created or changed.")
    deleted: int = Field(description="Values removed by `null`.")
    unchanged: int = Field(
        description="Values equal to what was stored (and `null` for absent values)."
    )


class SignalValue(ResponseModel):
    objectType: ObjectType
    objectId: str
    signalTemplateId: str
    value: Any
    observedAt: datetime
    updatedAt: datetime


class SignalValuesImportResult(ResponseModel):
    records: int = Field(description="Value records read from the body.")
    written: int = Field(description="Values created or changed.")
    deleted: int = Field(description="Values removed by `null`.")
    unchanged: int = Field(
        description="Values equal to what was stored (and `null` for absent values). "
        "`written + deleted + unchanged` counts distinct keys: the last record wins for a "
        "repeated (objectType, objectId, signalTemplateId)."
    )
