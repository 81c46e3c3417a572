"""The API's JSON shapes, as TypedDicts: what the client sends and what it returns.

Responses are the server's JSON as it arrives (no copying into objects), typed by these
dicts. Ids and timestamps are strings (RFC 3339, UTC, `Z`). `tests/test_openapi.py` checks
every model here against the server's OpenAPI document, field by field, so the two cannot
drift.

No `from __future__ import annotations` here: `NotRequired` must be seen at run time, so
that `__required_keys__` is right (the OpenAPI test compares it with `required`).
"""

from typing import Any, Literal, NotRequired, TypedDict

ObjectType = Literal["company", "contact"]
Dimension = Literal["fit", "urgency"]
AnswerType = Literal["boolean", "number", "percentage", "currency", "list"]
Order = Literal["desc", "asc"]
JsonValue = Any


# --- service -------------------------------------------------------------------------------


class Health(TypedDict):
    status: str


class Readiness(TypedDict):
    status: str
    database: str
    migration: str


class Organization(TypedDict):
    id: str
    name: str
    createdAt: str


# --- profiles and tiers (SPEC §4, §9) ----------------------------------------------------------


class Tier(TypedDict):
    name: str
    minScore: float


class TiersSpec(TypedDict, total=False):
    fit: list[Tier] | None
    urgency: list[Tier] | None


class ProfileCreate(TypedDict):
    profileType: ObjectType
    name: str
    description: NotRequired[str | None]
    tiers: NotRequired[TiersSpec | None]


class ProfileUpdate(TypedDict):
    name: str
    description: NotRequired[str | None]
    tiers: NotRequired[TiersSpec | None]


class Profile(TypedDict):
    id: str
    organizationId: str
    type: ObjectType
    name: str
    description: str | None
    tiers: dict[str, list[Tier]] | None
    createdAt: str
    updatedAt: str


# --- rules ---------------------------------------------------------------------------------


class DecayStep(TypedDict):
    afterDays: int
    factor: float


class Decay(TypedDict):
    steps: list[DecayStep]


class RuleUpsert(TypedDict):
    signalTemplateId: str
    dimension: Dimension
    answerType: AnswerType
    pointValues: dict[str, Any]
    decay: NotRequired[Decay | None]


class Rule(TypedDict):
    id: str
    profileId: str
    signalTemplateId: str
    dimension: Dimension
    selector: Any
    answerType: AnswerType
    pointValues: dict[str, Any]
    decay: dict[str, Any] | None
    createdAt: str
    updatedAt: str


# --- assignments and compute ---------------------------------------------------------------


class AssignmentCreate(TypedDict):
    profileId: str
    objectType: ObjectType
    objectId: str


class BulkAssignmentCreate(TypedDict):
    profileId: str
    objectType: ObjectType
    objectIds: list[str]


class Assignment(TypedDict):
    id: str
    profileId: str
    organizationId: str
    objectType: ObjectType
    objectId: str
    assignedAt: str


class AssignmentsImportResult(TypedDict):
    records: int
    assigned: int
    alreadyAssigned: int


class ObjectIdBatch(TypedDict):
    objectType: ObjectType
    objectIds: list[str]


class ComputeAccepted(TypedDict):
    queued: int
    failed: int


class ComputeStatus(TypedDict):
    pending: int
    running: int
    oldestPendingSeconds: float


# --- scores (SPEC §4, §6, §9) ----------------------------------------------------------------


class Contribution(TypedDict):
    ruleId: str
    signalTemplateId: str
    matchedValue: str | None
    pointsEarned: float
    maxPoints: float
    observedAt: str | None
    decayFactor: float


class ScoreRow(TypedDict):
    id: str
    profileId: str
    organizationId: str
    objectType: ObjectType
    objectId: str
    dimension: Dimension
    score: float
    previousScore: float | None
    tier: str | None
    previousTier: str | None
    contributions: list[Contribution]
    previousContributions: list[Contribution]
    signalCoverage: int
    totalRules: int
    computedAt: str
    nextChangeAt: str | None
    version: int


class ScorePage(TypedDict):
    data: list[ScoreRow]
    nextCursor: str | None


class Bucket(TypedDict):
    min: float
    max: float
    count: int


class TierCount(TypedDict):
    name: str
    minScore: float
    count: int


class Distribution(TypedDict):
    dimension: Dimension
    assigned: int
    scored: int
    mean: float | None
    p50: float | None
    p90: float | None
    histogram: list[Bucket]
    tiers: list[TierCount]


# --- preview (SPEC §12) ----------------------------------------------------------------------


class PreviewRequest(TypedDict):
    rules: list[RuleUpsert]
    tiers: NotRequired[TiersSpec | None]
    sampleSize: NotRequired[int | None]


# "from" is a Python keyword: the functional form.
TierTransition = TypedDict("TierTransition", {"from": str | None, "to": str | None, "count": int})


class Mover(TypedDict):
    objectId: str
    before: float
    after: float
    delta: float


class DimensionPreview(TypedDict):
    before: Distribution
    after: Distribution
    tierTransitions: list[TierTransition]
    topMovers: list[Mover]


class Preview(TypedDict):
    objects: int
    sampled: bool
    dimensions: dict[str, DimensionPreview]


# --- signals (SPEC §5) -----------------------------------------------------------------------


class TemplateCreate(TypedDict):
    name: str
    objectType: ObjectType
    answerType: AnswerType
    id: NotRequired[str]
    description: NotRequired[str | None]


class TemplatePatch(TypedDict, total=False):
    name: str
    description: str | None


class Template(TypedDict):
    id: str
    organizationId: str
    name: str
    description: str | None
    objectType: ObjectType
    answerType: AnswerType
    createdAt: str
    updatedAt: str


class SignalValueIn(TypedDict):
    objectType: ObjectType
    objectId: str
    signalTemplateId: str
    value: JsonValue
    observedAt: NotRequired[str | None]


class SignalValuesWrite(TypedDict):
    values: list[SignalValueIn]


class SignalValuesWriteResult(TypedDict):
    written: int
    deleted: int
    unchanged: int


class SignalValuesImportResult(TypedDict):
    records: int
    written: int
    deleted: int
    unchanged: int


class SignalValue(TypedDict):
    objectType: ObjectType
    objectId: str
    signalTemplateId: str
    value: JsonValue
    observedAt: str
    updatedAt: str


# --- events and history (SPEC §10) -----------------------------------------------------------


class ContributionState(TypedDict):
    matchedValue: str | None
    pointsEarned: float
    maxPoints: float
    observedAt: str | None
    decayFactor: float


class EventChange(TypedDict):
    ruleId: str
    signalTemplateId: str
    before: ContributionState | None
    after: ContributionState | None


class Event(TypedDict):
    id: str
    sequence: int
    type: str
    createdAt: str
    profileId: str
    objectType: ObjectType
    objectId: str
    dimension: Dimension
    score: float | None
    previousScore: float | None
    tier: str | None
    previousTier: str | None
    version: int
    changes: list[EventChange]


class EventPage(TypedDict):
    data: list[Event]
    nextAfter: int


class HistoryPage(TypedDict):
    data: list[Event]
    nextCursor: str | None


# --- webhooks (SPEC §11) ----------------------------------------------------------------------


class WebhookCreate(TypedDict):
    url: str
    eventTypes: list[str]
    profileIds: NotRequired[list[str] | None]
    description: NotRequired[str | None]


class WebhookPatch(TypedDict, total=False):
    url: str | None
    eventTypes: list[str] | None
    profileIds: list[str] | None
    description: str | None
    enabled: bool | None


class Webhook(TypedDict):
    id: str
    url: str
    eventTypes: list[str]
    profileIds: list[str] | None
    description: str | None
    enabled: bool
    disabledReason: str | None
    createdAt: str
    updatedAt: str


class WebhookWithSecret(Webhook):
    secret: str


class Delivery(TypedDict):
    id: str
    eventIds: list[str]
    attempt: int
    statusCode: int | None
    durationMs: float
    error: str | None
    createdAt: str


# --- errors (SPEC §3) --------------------------------------------------------------------------


class FieldError(TypedDict):
    field: str
    message: str
    code: NotRequired[str]


class ErrorDebug(TypedDict):
    cause: str


class ErrorBody(TypedDict):
    type: str
    code: str
    message: str
    errorCode: str
    errorAction: str
    details: dict[str, Any]
    requestId: str
    fields: list[FieldError]
    debug: NotRequired[ErrorDebug | None]


class ErrorEnvelope(TypedDict):
    error: ErrorBody
