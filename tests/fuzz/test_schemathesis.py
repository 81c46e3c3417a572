"""Schemathesis against the live OpenAPI document: every operation, positive and negative
data, with a valid key. No 5xx, and every response (error bodies included) conforms to the
documented schema. Bounded for CI by SIGNALSCORE_FUZZ_EXAMPLES (default 12 per operation);
a longer local run is documented in docs/testing.md."""

from __future__ import annotations

import os
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from schemathesis.generation import GenerationMode

from tests.api.conftest import World, build_world
from tests.helpers import Tenant

MAX_EXAMPLES = int(os.environ.get("SIGNALSCORE_FUZZ_EXAMPLES", "12"))


@pytest.fixture
def fuzz_world(client: TestClient, tenant: Tenant) -> World:
    return build_world(client, tenant)


@pytest.fixture
def api_schema(client: TestClient, fuzz_world: World) -> Any:
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    schema.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=MAX_EXAMPLES,
    )
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


# Constraints JSON Schema cannot state, so a schema-valid request may still be a 422 for them
# (and only for them). Every other constraint the server enforces is in the document, which
# `positive_data_acceptance` holds the server to: a 422 for any other reason fails the run.
NOT_EXPRESSIBLE = {
    # The stored state: a template must exist, with the right object and answer type; a
    # profile scores one object type; a profile holds at most 100 rules.
    "TEMPLATE_NOT_FOUND",
    "OBJECT_TYPE_MISMATCH",
    "ANSWER_TYPE_MISMATCH",
    "TOO_MANY_RULES",
    # A value or a rule's points must fit the template's answer type (stored state).
    "INVALID_BOOLEAN",
    "INVALID_NUMBER",
    "INVALID_LIST",
    "PERCENTAGE_OUT_OF_RANGE",
    "WRONG_SHAPE",
    "MISSING_POINTS",
    "MISSING_RANGES",
    "MISSING_CHOICES",
    "INVALID_MODE",
    # Relations between values: min < max, ranges that do not overlap, choices unique
    # ignoring case; a timestamp relative to the server's clock; an id's length once
    # lowercased (a few characters lowercase to two).
    "INVALID_RANGE",
    "OVERLAPPING_RANGES",
    "DUPLICATE_CHOICE",
    "TIMESTAMP_OUT_OF_RANGE",
    "OBJECT_ID_TOO_LONG",
    # An answer larger than the response bound.
    "RESPONSE_TOO_LARGE",
    # Tiers: names and minScores unique in a dimension (names ignoring case); a tier filter
    # names a tier the profile has (stored state); a cursor is one this API returned for
    # the same read (any string fits its schema).
    "DUPLICATE_TIER_NAME",
    "DUPLICATE_MIN_SCORE",
    "UNKNOWN_TIER",
    "INVALID_CURSOR",
    # Webhook URLs: where a host resolves (DNS, private ranges) and what urlsplit accepts as a
    # host; a profile filter names profiles that exist (stored state).
    "INVALID_WEBHOOK_URL",
    "UNSAFE_WEBHOOK_URL",
    "UNRESOLVABLE_WEBHOOK_HOST",
    "PROFILE_NOT_FOUND",
    # Decay steps: afterDays strictly increasing and factors non-increasing from step to
    # step; a preview's rules one per (template, dimension).
    "DECAY_STEPS_NOT_INCREASING",
    "DECAY_FACTOR_INCREASES",
    "DUPLICATE_RULE",
}
# Query parameters cannot depend on each other: whether `objectId` is a domain or a LinkedIn
# URL depends on `objectType` (in bodies the document states it, one variant per type).
# `types` of GET /v1/events takes event types repeated or comma-separated: a per-item enum
# would describe only the first form.
NOT_EXPRESSIBLE_IN_QUERIES = {"INVALID_DOMAIN", "INVALID_LINKEDIN_URL", "UNKNOWN_EVENT_TYPE"}


@schemathesis.check
def positive_data_acceptance_beyond_json_schema(ctx: Any, response: Any, case: Any) -> bool | None:
    """`positive_data_acceptance`, except for a 422 whose every field names a constraint that
    JSON Schema cannot express (above)."""
    if response.status_code == 422 and case.meta.generation.mode.is_positive:
        fields = response.json()["error"]["fields"]
        allowed = NOT_EXPRESSIBLE | (NOT_EXPRESSIBLE_IN_QUERIES if case.method == "GET" else set())
        if fields and all(f["code"] in allowed for f in fields):
            return None
        if case.path.endswith("/import") and fields and all(_line_level(f) for f in fields):
            return None
    result: bool | None = schemathesis.checks.positive_data_acceptance(ctx, response, case)
    return result


def _line_level(field: dict[str, str]) -> bool:
    """A bulk import's body is text (NDJSON or CSV): what each line must hold is described in
    words, not in JSON Schema, so a schema-valid body may still be refused line by line (or
    as empty), and only so."""
    return field["field"].startswith("lines[") or (
        field["field"] == "body" and field["code"] == "EMPTY_IMPORT"
    )


@schema.parametrize()
def test_api_conforms_to_its_openapi_document(case: Any, fuzz_world: World) -> None:
    case.call_and_validate(
        headers=fuzz_world.tenant.headers,
        checks=[positive_data_acceptance_beyond_json_schema],
        excluded_checks=[schemathesis.checks.positive_data_acceptance],
    )
