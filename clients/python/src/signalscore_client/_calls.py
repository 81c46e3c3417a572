"""Every endpoint as a description of one HTTP call, shared by `Client` and `AsyncClient`
(which only differ in how they send it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

from signalscore_client import models as m

T = TypeVar("T")
R_co = TypeVar("R_co", covariant=True)

# Limits of the JSON endpoints (SPEC §4, §5): the client splits longer inputs.
VALUES_PER_CALL = 1000
OBJECT_IDS_PER_CALL = 500
READ_IDS_PER_CALL = 100

BodyFormat = Literal["csv", "ndjson"]
CONTENT_TYPES: dict[str, str] = {"csv": "text/csv", "ndjson": "application/x-ndjson"}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()
"""Marks an argument left out (as opposed to `None`, which sends JSON null)."""


@dataclass(frozen=True)
class Call(Generic[R_co]):
    """One HTTP call whose successful answer decodes to `R_co`."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    content: bytes | None = None
    content_type: str | None = None
    # Whether repeating the call after it may have been applied leaves the same state.
    idempotent: bool = True
    timeout: float | None = None
    empty: bool = False  # 204: nothing to decode


# (method, path template) of every endpoint, by client method name. tests/test_openapi.py
# checks this against the server's OpenAPI document in both directions.
ENDPOINTS: dict[str, tuple[str, str]] = {
    "health": ("GET", "/healthz"),
    "ready": ("GET", "/readyz"),
    "organization": ("GET", "/v1/organization"),
    "list_profiles": ("GET", "/v1/scoring/profiles"),
    "create_profile": ("POST", "/v1/scoring/profiles"),
    "get_profile": ("GET", "/v1/scoring/profiles/{profile_id}"),
    "update_profile": ("PUT", "/v1/scoring/profiles/{profile_id}"),
    "delete_profile": ("DELETE", "/v1/scoring/profiles/{profile_id}"),
    "list_rules": ("GET", "/v1/scoring/profiles/{profile_id}/rules"),
    "put_rule": ("PUT", "/v1/scoring/profiles/{profile_id}/rules"),
    "delete_rule": ("DELETE", "/v1/scoring/profiles/{profile_id}/rules/{rule_id}"),
    "list_ranked_scores": ("GET", "/v1/scoring/profiles/{profile_id}/scores"),
    "get_distribution": ("GET", "/v1/scoring/profiles/{profile_id}/distribution"),
    "preview_profile": ("POST", "/v1/scoring/profiles/{profile_id}/preview"),
    "list_assignments": ("GET", "/v1/scoring/assignments"),
    "create_assignment": ("POST", "/v1/scoring/assignments"),
    "assign_bulk": ("POST", "/v1/scoring/assignments/bulk"),
    "import_assignments": ("POST", "/v1/scoring/assignments/import"),
    "delete_assignment": ("DELETE", "/v1/scoring/assignments/{assignment_id}"),
    "get_scores": ("GET", "/v1/scoring/scores"),
    "compute": ("POST", "/v1/scoring/compute"),
    "compute_status": ("GET", "/v1/scoring/compute/status"),
    "list_templates": ("GET", "/v1/signals/templates"),
    "create_template": ("POST", "/v1/signals/templates"),
    "get_template": ("GET", "/v1/signals/templates/{template_id}"),
    "update_template": ("PATCH", "/v1/signals/templates/{template_id}"),
    "delete_template": ("DELETE", "/v1/signals/templates/{template_id}"),
    "put_values": ("PUT", "/v1/signals/values"),
    "import_values": ("POST", "/v1/signals/values/import"),
    "get_values": ("GET", "/v1/signals/values"),
    "list_events": ("GET", "/v1/events"),
    "get_history": ("GET", "/v1/scoring/history"),
    "create_webhook": ("POST", "/v1/webhooks"),
    "list_webhooks": ("GET", "/v1/webhooks"),
    "get_webhook": ("GET", "/v1/webhooks/{webhook_id}"),
    "update_webhook": ("PATCH", "/v1/webhooks/{webhook_id}"),
    "delete_webhook": ("DELETE", "/v1/webhooks/{webhook_id}"),
    "rotate_webhook_secret": ("POST", "/v1/webhooks/{webhook_id}/rotate-secret"),
    "test_webhook": ("POST", "/v1/webhooks/{webhook_id}/test"),
    "list_webhook_deliveries": ("GET", "/v1/webhooks/{webhook_id}/deliveries"),
}

# The request and response models of each endpoint, checked against the OpenAPI document.
# A response given as a one-element list is a JSON array of that model; None is no body.
MODELS: dict[str, tuple[type | None, type | list[type] | None]] = {
    "health": (None, m.Health),
    "ready": (None, m.Readiness),
    "organization": (None, m.Organization),
    "list_profiles": (None, [m.Profile]),
    "create_profile": (m.ProfileCreate, m.Profile),
    "get_profile": (None, m.Profile),
    "update_profile": (m.ProfileUpdate, m.Profile),
    "delete_profile": (None, None),
    "list_rules": (None, [m.Rule]),
    "put_rule": (m.RuleUpsert, m.Rule),
    "delete_rule": (None, None),
    "list_ranked_scores": (None, m.ScorePage),
    "get_distribution": (None, m.Distribution),
    "preview_profile": (m.PreviewRequest, m.Preview),
    "list_assignments": (None, [m.Assignment]),
    "create_assignment": (m.AssignmentCreate, m.Assignment),
    "assign_bulk": (m.BulkAssignmentCreate, [m.Assignment]),
    "import_assignments": (None, m.AssignmentsImportResult),
    "delete_assignment": (None, None),
    "get_scores": (None, [m.ScoreRow]),
    "compute": (m.ObjectIdBatch, m.ComputeAccepted),
    "compute_status": (None, m.ComputeStatus),
    "list_templates": (None, [m.Template]),
    "create_template": (m.TemplateCreate, m.Template),
    "get_template": (None, m.Template),
    "update_template": (m.TemplatePatch, m.Template),
    "delete_template": (None, None),
    "put_values": (m.SignalValuesWrite, m.SignalValuesWriteResult),
    "import_values": (None, m.SignalValuesImportResult),
    "get_values": (None, [m.SignalValue]),
    "list_events": (None, m.EventPage),
    "get_history": (None, m.HistoryPage),
    "create_webhook": (m.WebhookCreate, m.WebhookWithSecret),
    "list_webhooks": (None, [m.Webhook]),
    "get_webhook": (None, m.Webhook),
    "update_webhook": (m.WebhookPatch, m.Webhook),
    "delete_webhook": (None, None),
    "rotate_webhook_secret": (None, m.WebhookWithSecret),
    "test_webhook": (None, m.Delivery),
    "list_webhook_deliveries": (None, [m.Delivery]),
}


def _seg(value: str) -> str:
    return quote(str(value), safe="")


def _params(**values: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out.extend((name, str(item)) for item in value)
        elif isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        else:
            out.append((name, str(value)))
    return out


def chunks(items: Iterable[T], size: int) -> Iterable[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- the calls -------------------------------------------------------------------------------


def health() -> Call[m.Health]:
    return Call("GET", "/healthz")


def ready() -> Call[m.Readiness]:
    return Call("GET", "/readyz")


def organization() -> Call[m.Organization]:
    return Call("GET", "/v1/organization")


def list_profiles() -> Call[list[m.Profile]]:
    return Call("GET", "/v1/scoring/profiles")


def create_profile(
    profile_type: m.ObjectType, name: str, description: str | None, tiers: m.TiersSpec | None
) -> Call[m.Profile]:
    body: dict[str, Any] = {"profileType": profile_type, "name": name}
    if description is not UNSET:
        body["description"] = description
    if tiers is not UNSET:
        body["tiers"] = tiers
    return Call("POST", "/v1/scoring/profiles", json=body, idempotent=False)


def get_profile(profile_id: str) -> Call[m.Profile]:
    return Call("GET", f"/v1/scoring/profiles/{_seg(profile_id)}")


def update_profile(
    profile_id: str, name: str, description: str | None, tiers: m.TiersSpec | None
) -> Call[m.Profile]:
    body: dict[str, Any] = {"name": name}
    if description is not UNSET:
        body["description"] = description
    if tiers is not UNSET:
        body["tiers"] = tiers
    return Call("PUT", f"/v1/scoring/profiles/{_seg(profile_id)}", json=body)


def delete_profile(profile_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/scoring/profiles/{_seg(profile_id)}", empty=True)


def list_rules(profile_id: str) -> Call[list[m.Rule]]:
    return Call("GET", f"/v1/scoring/profiles/{_seg(profile_id)}/rules")


def put_rule(
    profile_id: str,
    signal_template_id: str,
    dimension: m.Dimension,
    answer_type: m.AnswerType,
    point_values: dict[str, Any],
    decay: m.Decay | None = None,
) -> Call[m.Rule]:
    body: dict[str, Any] = {
        "signalTemplateId": signal_template_id,
        "dimension": dimension,
        "answerType": answer_type,
        "pointValues": point_values,
    }
    if decay is not None:
        body["decay"] = decay
    return Call("PUT", f"/v1/scoring/profiles/{_seg(profile_id)}/rules", json=body)


def delete_rule(profile_id: str, rule_id: str) -> Call[None]:
    path = f"/v1/scoring/profiles/{_seg(profile_id)}/rules/{_seg(rule_id)}"
    return Call("DELETE", path, empty=True)


def list_ranked_scores(
    profile_id: str,
    dimension: m.Dimension,
    *,
    tier: str | None,
    min_score: float | None,
    max_score: float | None,
    order: m.Order | None,
    limit: int | None,
    cursor: str | None,
) -> Call[m.ScorePage]:
    params = _params(
        dimension=dimension,
        tier=tier,
        minScore=min_score,
        maxScore=max_score,
        order=order,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", f"/v1/scoring/profiles/{_seg(profile_id)}/scores", params=params)


def get_distribution(
    profile_id: str, dimension: m.Dimension, buckets: int | None
) -> Call[m.Distribution]:
    params = _params(dimension=dimension, buckets=buckets)
    return Call("GET", f"/v1/scoring/profiles/{_seg(profile_id)}/distribution", params=params)


def preview_profile(
    profile_id: str,
    rules: list[m.RuleUpsert],
    tiers: m.TiersSpec | None,
    sample_size: int | None,
) -> Call[m.Preview]:
    body: dict[str, Any] = {"rules": rules}
    if tiers is not UNSET:
        body["tiers"] = tiers
    if sample_size is not None:
        body["sampleSize"] = sample_size
    return Call("POST", f"/v1/scoring/profiles/{_seg(profile_id)}/preview", json=body)


def list_assignments(object_type: m.ObjectType, object_id: str) -> Call[list[m.Assignment]]:
    params = _params(objectType=object_type, objectId=object_id)
    return Call("GET", "/v1/scoring/assignments", params=params)


def create_assignment(
    profile_id: str, object_type: m.ObjectType, object_id: str
) -> Call[m.Assignment]:
    body = {"profileId": profile_id, "objectType": object_type, "objectId": object_id}
    # Idempotent: assigning an assigned object answers the existing assignment.
    return Call("POST", "/v1/scoring/assignments", json=body)


def assign_bulk(
    profile_id: str, object_type: m.ObjectType, object_ids: Sequence[str]
) -> Call[list[m.Assignment]]:
    body = {"profileId": profile_id, "objectType": object_type, "objectIds": list(object_ids)}
    # Idempotent in effect: ids already assigned are skipped.
    return Call("POST", "/v1/scoring/assignments/bulk", json=body)


def import_assignments(
    profile_id: str, body: bytes, fmt: BodyFormat, timeout: float | None
) -> Call[m.AssignmentsImportResult]:
    return Call(
        "POST",
        "/v1/scoring/assignments/import",
        params=_params(profileId=profile_id),
        content=body,
        content_type=CONTENT_TYPES[fmt],
        timeout=timeout,
    )


def delete_assignment(assignment_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/scoring/assignments/{_seg(assignment_id)}", empty=True)


def get_scores(
    object_type: m.ObjectType,
    object_ids: Sequence[str],
    profile_id: str | None,
    dimension: m.Dimension | None,
) -> Call[list[m.ScoreRow]]:
    params = _params(
        objectType=object_type, objectId=list(object_ids), profileId=profile_id, dimension=dimension
    )
    return Call("GET", "/v1/scoring/scores", params=params)


def compute(object_type: m.ObjectType, object_ids: Sequence[str]) -> Call[m.ComputeAccepted]:
    body = {"objectType": object_type, "objectIds": list(object_ids)}
    return Call("POST", "/v1/scoring/compute", json=body)  # queueing again merges


def compute_status() -> Call[m.ComputeStatus]:
    return Call("GET", "/v1/scoring/compute/status")


def list_templates(object_type: m.ObjectType | None) -> Call[list[m.Template]]:
    return Call("GET", "/v1/signals/templates", params=_params(objectType=object_type))


def create_template(
    name: str,
    object_type: m.ObjectType,
    answer_type: m.AnswerType,
    template_id: str | None,
    description: str | None,
) -> Call[m.Template]:
    body: dict[str, Any] = {"name": name, "objectType": object_type, "answerType": answer_type}
    if template_id is not None:
        body["id"] = template_id
    if description is not UNSET:
        body["description"] = description
    return Call("POST", "/v1/signals/templates", json=body, idempotent=False)


def get_template(template_id: str) -> Call[m.Template]:
    return Call("GET", f"/v1/signals/templates/{_seg(template_id)}")


def update_template(template_id: str, name: str, description: str | None) -> Call[m.Template]:
    body: dict[str, Any] = {}
    if name is not UNSET:
        body["name"] = name
    if description is not UNSET:
        body["description"] = description
    return Call("PATCH", f"/v1/signals/templates/{_seg(template_id)}", json=body)


def delete_template(template_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/signals/templates/{_seg(template_id)}", empty=True)


def put_values(values: Sequence[m.SignalValueIn]) -> Call[m.SignalValuesWriteResult]:
    return Call("PUT", "/v1/signals/values", json={"values": list(values)})


def import_values(
    body: bytes, fmt: BodyFormat, timeout: float | None
) -> Call[m.SignalValuesImportResult]:
    return Call(
        "POST",
        "/v1/signals/values/import",
        content=body,
        content_type=CONTENT_TYPES[fmt],
        timeout=timeout,
    )


def get_values(object_type: m.ObjectType, object_ids: Sequence[str]) -> Call[list[m.SignalValue]]:
    params = _params(objectType=object_type, objectId=list(object_ids))
    return Call("GET", "/v1/signals/values", params=params)


def list_events(
    after: int | None, types: Sequence[str] | None, profile_id: str | None, limit: int | None
) -> Call[m.EventPage]:
    params = _params(
        after=after,
        types=",".join(types) if types else None,
        profileId=profile_id,
        limit=limit,
    )
    return Call("GET", "/v1/events", params=params)


def get_history(
    object_type: m.ObjectType,
    object_id: str,
    profile_id: str | None,
    dimension: m.Dimension | None,
    limit: int | None,
    cursor: str | None,
) -> Call[m.HistoryPage]:
    params = _params(
        objectType=object_type,
        objectId=object_id,
        profileId=profile_id,
        dimension=dimension,
        limit=limit,
        cursor=cursor,
    )
    return Call("GET", "/v1/scoring/history", params=params)


def create_webhook(
    url: str, event_types: Sequence[str], profile_ids: Sequence[str] | None, description: str | None
) -> Call[m.WebhookWithSecret]:
    body: dict[str, Any] = {"url": url, "eventTypes": list(event_types)}
    if profile_ids is not UNSET:
        body["profileIds"] = None if profile_ids is None else list(profile_ids)
    if description is not UNSET:
        body["description"] = description
    return Call("POST", "/v1/webhooks", json=body, idempotent=False)


def list_webhooks() -> Call[list[m.Webhook]]:
    return Call("GET", "/v1/webhooks")


def get_webhook(webhook_id: str) -> Call[m.Webhook]:
    return Call("GET", f"/v1/webhooks/{_seg(webhook_id)}")


def update_webhook(webhook_id: str, changes: dict[str, Any]) -> Call[m.Webhook]:
    body = {key: value for key, value in changes.items() if value is not UNSET}
    return Call("PATCH", f"/v1/webhooks/{_seg(webhook_id)}", json=body)


def delete_webhook(webhook_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/webhooks/{_seg(webhook_id)}", empty=True)


def rotate_webhook_secret(webhook_id: str) -> Call[m.WebhookWithSecret]:
    # Not repeated blindly: a second rotation would replace the secret the first made.
    path = f"/v1/webhooks/{_seg(webhook_id)}/rotate-secret"
    return Call("POST", path, idempotent=False)


def test_webhook(webhook_id: str) -> Call[m.Delivery]:
    # Each call delivers one more test event.
    return Call("POST", f"/v1/webhooks/{_seg(webhook_id)}/test", idempotent=False)


def list_webhook_deliveries(webhook_id: str, limit: int | None) -> Call[list[m.Delivery]]:
    path = f"/v1/webhooks/{_seg(webhook_id)}/deliveries"
    return Call("GET", path, params=_params(limit=limit))


def add_counts(total: dict[str, int], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
