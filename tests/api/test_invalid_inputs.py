"""Invalid input for every configuration endpoint: the right status, code, errorCode and
field paths, and nothing written (every table compared before and after)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from signalscore.db.engine import Database
from tests.api.conftest import World, snapshot
from tests.helpers import assert_error

V = "VALIDATION_ERROR"
PV = "INVALID_POINT_VALUES"


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: Any = None
    status: int = 422
    code: str = V
    error_code: str = ""
    fields: list[str] = field(default_factory=list)
    raw: bytes | None = None
    params: Any = None


def value(object_id: str = "acme.com", template: str = "employees", v: Any = 1, **extra: Any):
    item = {
        "objectType": "company",
        "objectId": object_id,
        "signalTemplateId": template,
        "value": v,
    }
    item.update(extra)
    return {"values": [item]}


def contact_value(object_id: str, v: Any = ("VP",)):
    return {
        "values": [
            {
                "objectType": "contact",
                "objectId": object_id,
                "signalTemplateId": "seniority",
                "value": v,
            }
        ]
    }


def rule(
    template: str = "employees", answer_type: str = "number", pv: Any = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "signalTemplateId": template,
        "dimension": "fit",
        "answerType": answer_type,
        "pointValues": pv if pv is not None else {"ranges": [{"min": 0, "points": 1}]},
    }
    body.update(extra)
    return body


def bool_rule(pv: Any) -> dict[str, Any]:
    return rule("is_b2b", "boolean", pv)


def list_rule(pv: Any) -> dict[str, Any]:
    return rule("crm", "list", pv)


def ranges(*items: dict[str, Any]) -> dict[str, Any]:
    return {"ranges": list(items)}


UNKNOWN_UUID = "00000000-0000-4000-8000-000000000000"
RULES = "/v1/scoring/profiles/{pid}/rules"
TEMPLATES = "/v1/signals/templates"
VALUES = "/v1/signals/values"
PROFILES = "/v1/scoring/profiles"
NEW_TEMPLATE = {"id": "x1", "name": "X", "objectType": "company", "answerType": "number"}

CASES = [
    # --- profiles
    Case(
        "profile: missing name",
        "POST",
        PROFILES,
        {"profileType": "company"},
        error_code="MISSING_FIELD",
        fields=["name"],
    ),
    Case(
        "profile: unknown type",
        "POST",
        PROFILES,
        {"profileType": "account", "name": "A"},
        error_code="INVALID_ENUM_VALUE",
        fields=["profileType"],
    ),
    Case(
        "profile: blank name",
        "POST",
        PROFILES,
        {"profileType": "company", "name": "   "},
        error_code="INVALID_NAME",
        fields=["name"],
    ),
    Case(
        "profile: name too long",
        "POST",
        PROFILES,
        {"profileType": "company", "name": "n" * 201},
        error_code="INVALID_NAME",
        fields=["name"],
    ),
    Case(
        "profile: description too long",
        "POST",
        PROFILES,
        {"profileType": "company", "name": "A", "description": "d" * 1001},
        error_code="STRING_TOO_LONG",
        fields=["description"],
    ),
    Case(
        "profile: unknown field",
        "POST",
        PROFILES,
        {"profileType": "company", "name": "A", "owner": "me"},
        error_code="UNKNOWN_FIELD",
        fields=["owner"],
    ),
    Case(
        "profile: name of wrong type",
        "POST",
        PROFILES,
        {"profileType": "company", "name": 5},
        error_code="INVALID_FIELD",
        fields=["name"],
    ),
    Case(
        "profile: body is an array",
        "POST",
        PROFILES,
        [],
        error_code="INVALID_FIELD",
        fields=["body"],
    ),
    Case(
        "profile: unparseable JSON",
        "POST",
        PROFILES,
        raw=b'{"name": ',
        status=400,
        error_code="MALFORMED_JSON",
    ),
    Case(
        "profile: update sends profileType",
        "PUT",
        PROFILES + "/{pid}",
        {"name": "B", "profileType": "contact"},
        error_code="IMMUTABLE_FIELD",
        fields=["profileType"],
    ),
    Case(
        "profile: update sends type",
        "PUT",
        PROFILES + "/{pid}",
        {"name": "B", "type": "company"},
        error_code="IMMUTABLE_FIELD",
        fields=["type"],
    ),
    Case(
        "profile: update without name",
        "PUT",
        PROFILES + "/{pid}",
        {"description": "x"},
        error_code="MISSING_FIELD",
        fields=["name"],
    ),
    Case(
        "profile: malformed id",
        "GET",
        PROFILES + "/not-a-uuid",
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    Case(
        "profile: unknown id",
        "GET",
        PROFILES + "/" + UNKNOWN_UUID,
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    Case(
        "profile: update unknown",
        "PUT",
        PROFILES + "/" + UNKNOWN_UUID,
        {"name": "B"},
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    Case(
        "profile: delete unknown",
        "DELETE",
        PROFILES + "/" + UNKNOWN_UUID,
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    # --- templates
    Case(
        "template: id with a space",
        "POST",
        TEMPLATES,
        {**NEW_TEMPLATE, "id": "bad id"},
        error_code="INVALID_TEMPLATE_ID",
        fields=["id"],
    ),
    Case(
        "template: id starting with _",
        "POST",
        TEMPLATES,
        {**NEW_TEMPLATE, "id": "_x"},
        error_code="INVALID_TEMPLATE_ID",
        fields=["id"],
    ),
    Case(
        "template: id of 101 chars",
        "POST",
        TEMPLATES,
        {**NEW_TEMPLATE, "id": "a" * 101},
        error_code="INVALID_TEMPLATE_ID",
        fields=["id"],
    ),
    Case(
        "template: unknown answer type",
        "POST",
        TEMPLATES,
        {**NEW_TEMPLATE, "answerType": "text"},
        error_code="INVALID_ENUM_VALUE",
        fields=["answerType"],
    ),
    Case(
        "template: missing objectType",
        "POST",
        TEMPLATES,
        {"id": "x1", "name": "X", "answerType": "number"},
        error_code="MISSING_FIELD",
        fields=["objectType"],
    ),
    Case(
        "template: duplicate id",
        "POST",
        TEMPLATES,
        {**NEW_TEMPLATE, "id": "employees"},
        status=409,
        code="CONFLICT",
        error_code="TEMPLATE_ID_TAKEN",
    ),
    Case(
        "template: patch answerType",
        "PATCH",
        TEMPLATES + "/crm",
        {"answerType": "number"},
        error_code="IMMUTABLE_FIELD",
        fields=["answerType"],
    ),
    Case(
        "template: patch objectType",
        "PATCH",
        TEMPLATES + "/crm",
        {"objectType": "contact"},
        error_code="IMMUTABLE_FIELD",
        fields=["objectType"],
    ),
    Case(
        "template: patch name to null",
        "PATCH",
        TEMPLATES + "/crm",
        {"name": None},
        error_code="INVALID_NAME",
        fields=["name"],
    ),
    Case(
        "template: patch unknown",
        "PATCH",
        TEMPLATES + "/nope",
        {"name": "X"},
        status=404,
        code="NOT_FOUND",
        error_code="TEMPLATE_NOT_FOUND",
    ),
    Case(
        "template: delete while rules use it",
        "DELETE",
        TEMPLATES + "/employees",
        status=409,
        code="CONFLICT",
        error_code="TEMPLATE_IN_USE",
    ),
    Case(
        "template: list with bad objectType",
        "GET",
        TEMPLATES,
        params={"objectType": "account"},
        error_code="INVALID_ENUM_VALUE",
        fields=["objectType"],
    ),
    # --- values: batch shape
    Case(
        "values: empty batch",
        "PUT",
        VALUES,
        {"values": []},
        error_code="TOO_FEW_ITEMS",
        fields=["values"],
    ),
    Case(
        "values: 1001 items",
        "PUT",
        VALUES,
        {"values": [value(f"c{i}.com")["values"][0] for i in range(1001)]},
        error_code="TOO_MANY_ITEMS",
        fields=["values"],
    ),
    Case("values: missing list", "PUT", VALUES, {}, error_code="MISSING_FIELD", fields=["values"]),
    Case(
        "values: unknown item field",
        "PUT",
        VALUES,
        value(source="crm"),
        error_code="UNKNOWN_FIELD",
        fields=["values[0].source"],
    ),
    Case(
        "values: missing value key",
        "PUT",
        VALUES,
        {
            "values": [
                {"objectType": "company", "objectId": "a.com", "signalTemplateId": "employees"}
            ]
        },
        error_code="MISSING_FIELD",
        fields=["values[0].value"],
    ),
    Case(
        "values: observedAt naive",
        "PUT",
        VALUES,
        value(observedAt="2026-01-01T00:00:00"),
        error_code="INVALID_TIMESTAMP",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt garbage",
        "PUT",
        VALUES,
        value(observedAt="yesterday"),
        error_code="INVALID_TIMESTAMP",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt a bare integer",
        "PUT",
        VALUES,
        value(observedAt=100000000000),
        error_code="INVALID_TIMESTAMP",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt a date without a time",
        "PUT",
        VALUES,
        value(observedAt="2026-01-01"),
        error_code="INVALID_TIMESTAMP",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt February 30",
        "PUT",
        VALUES,
        value(observedAt="2026-02-30T00:00:00Z"),
        error_code="INVALID_TIMESTAMP",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt past year 9999 in UTC",
        "PUT",
        VALUES,
        value(observedAt="9999-12-31T23:59:59-01:00"),
        error_code="TIMESTAMP_OUT_OF_RANGE",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt before year 1 in UTC",
        "PUT",
        VALUES,
        value(observedAt="0001-01-01T00:00:00+01:00"),
        error_code="TIMESTAMP_OUT_OF_RANGE",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt before 1970",
        "PUT",
        VALUES,
        value(observedAt="1969-12-31T23:59:59Z"),
        error_code="TIMESTAMP_OUT_OF_RANGE",
        fields=["values[0].observedAt"],
    ),
    Case(
        "values: observedAt years ahead",
        "PUT",
        VALUES,
        value(observedAt="2999-01-01T00:00:00Z"),
        error_code="TIMESTAMP_OUT_OF_RANGE",
        fields=["values[0].observedAt"],
    ),
    # --- values: object ids
    Case(
        "values: domain with protocol",
        "PUT",
        VALUES,
        value("https://acme.com"),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: domain with path",
        "PUT",
        VALUES,
        value("acme.com/about"),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: domain with port",
        "PUT",
        VALUES,
        value("acme.com:8080"),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: domain with a space",
        "PUT",
        VALUES,
        value("ac me.com"),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: domain label starting with -",
        "PUT",
        VALUES,
        value("-acme.com"),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: domain over 253 chars",
        "PUT",
        VALUES,
        value(".".join(["a" * 60] * 5)),
        error_code="INVALID_DOMAIN",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: empty objectId",
        "PUT",
        VALUES,
        value(""),
        error_code="STRING_TOO_SHORT",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: objectId over 500 chars",
        "PUT",
        VALUES,
        value("a" * 501),
        error_code="STRING_TOO_LONG",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: contact on twitter",
        "PUT",
        VALUES,
        contact_value("https://twitter.com/jane"),
        error_code="INVALID_LINKEDIN_URL",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: contact is a company page",
        "PUT",
        VALUES,
        contact_value("linkedin.com/company/acme"),
        error_code="INVALID_LINKEDIN_URL",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: contact look-alike host",
        "PUT",
        VALUES,
        contact_value("https://linkedin.com.evil.io/in/jane"),
        error_code="INVALID_LINKEDIN_URL",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: contact without slug",
        "PUT",
        VALUES,
        contact_value("https://www.linkedin.com/in/"),
        error_code="INVALID_LINKEDIN_URL",
        fields=["values[0].objectId"],
    ),
    Case(
        "values: unknown objectType",
        "PUT",
        VALUES,
        {
            "values": [
                {"objectType": "deal", "objectId": "a", "signalTemplateId": "employees", "value": 1}
            ]
        },
        error_code="INVALID_ENUM_VALUE",
        fields=["values[0].objectType"],
    ),
    # --- values: templates and typed values
    Case(
        "values: unknown template",
        "PUT",
        VALUES,
        value(template="nope"),
        error_code="TEMPLATE_NOT_FOUND",
        fields=["values[0].signalTemplateId"],
    ),
    Case(
        "values: template of the other object type",
        "PUT",
        VALUES,
        value(template="seniority", v=["VP"]),
        error_code="OBJECT_TYPE_MISMATCH",
        fields=["values[0].signalTemplateId"],
    ),
    Case(
        "values: number as a string",
        "PUT",
        VALUES,
        value(v="12"),
        error_code="INVALID_NUMBER",
        fields=["values[0].value"],
    ),
    Case(
        "values: number as a boolean",
        "PUT",
        VALUES,
        value(v=True),
        error_code="INVALID_NUMBER",
        fields=["values[0].value"],
    ),
    Case(
        "values: NaN",
        "PUT",
        VALUES,
        raw=b'{"values":[{"objectType":"company","objectId":"a.com",'
        b'"signalTemplateId":"employees","value":NaN}]}',
        error_code="INVALID_NUMBER",
        fields=["values[0].value"],
    ),
    Case(
        "values: Infinity currency",
        "PUT",
        VALUES,
        raw=b'{"values":[{"objectType":"company","objectId":"a.com",'
        b'"signalTemplateId":"revenue","value":-Infinity}]}',
        error_code="INVALID_NUMBER",
        fields=["values[0].value"],
    ),
    Case(
        "values: overflowing number",
        "PUT",
        VALUES,
        raw=b'{"values":[{"objectType":"company","objectId":"a.com",'
        b'"signalTemplateId":"employees","value":1e400}]}',
        error_code="INVALID_NUMBER",
        fields=["values[0].value"],
    ),
    Case(
        "values: percentage over 100",
        "PUT",
        VALUES,
        value(template="growth", v=100.5),
        error_code="PERCENTAGE_OUT_OF_RANGE",
        fields=["values[0].value"],
    ),
    Case(
        "values: negative percentage",
        "PUT",
        VALUES,
        value(template="growth", v=-0.5),
        error_code="PERCENTAGE_OUT_OF_RANGE",
        fields=["values[0].value"],
    ),
    Case(
        "values: boolean as a string",
        "PUT",
        VALUES,
        value(template="is_b2b", v="yes"),
        error_code="INVALID_BOOLEAN",
        fields=["values[0].value"],
    ),
    Case(
        "values: boolean as 1",
        "PUT",
        VALUES,
        value(template="is_b2b", v=1),
        error_code="INVALID_BOOLEAN",
        fields=["values[0].value"],
    ),
    Case(
        "values: list as a string",
        "PUT",
        VALUES,
        value(template="crm", v="Salesforce"),
        error_code="INVALID_LIST",
        fields=["values[0].value"],
    ),
    Case(
        "values: list with a number",
        "PUT",
        VALUES,
        value(template="crm", v=["a", 3]),
        error_code="INVALID_LIST_ITEM",
        fields=["values[0].value[1]"],
    ),
    Case(
        "values: list with a blank",
        "PUT",
        VALUES,
        value(template="crm", v=["a", "  "]),
        error_code="INVALID_LIST_ITEM",
        fields=["values[0].value[1]"],
    ),
    Case(
        "values: list item too long",
        "PUT",
        VALUES,
        value(template="crm", v=["x" * 201]),
        error_code="INVALID_LIST_ITEM",
        fields=["values[0].value[0]"],
    ),
    Case(
        "values: list of 101",
        "PUT",
        VALUES,
        value(template="crm", v=[f"v{i}" for i in range(101)]),
        error_code="TOO_MANY_ITEMS",
        fields=["values[0].value"],
    ),
    Case(
        "values: every bad item listed",
        "PUT",
        VALUES,
        {
            "values": [
                value("a.com")["values"][0],
                value("b.com", v="x")["values"][0],
                value("c.com")["values"][0],
                value("d.com", template="nope")["values"][0],
                value("e.com", template="growth", v=500)["values"][0],
            ]
        },
        error_code="INVALID_NUMBER",
        fields=["values[1].value", "values[3].signalTemplateId", "values[4].value"],
    ),
    Case(
        "values read: no objectId",
        "GET",
        VALUES,
        params={"objectType": "company"},
        error_code="MISSING_FIELD",
        fields=["objectId"],
    ),
    Case(
        "values read: missing objectType",
        "GET",
        VALUES,
        params={"objectId": "a.com"},
        error_code="MISSING_FIELD",
        fields=["objectType"],
    ),
    Case(
        "values read: 101 objectIds",
        "GET",
        VALUES,
        params=[("objectType", "company")] + [("objectId", f"c{i}.com") for i in range(101)],
        error_code="TOO_MANY_ITEMS",
        fields=["objectId"],
    ),
    Case(
        "values read: bad domain",
        "GET",
        VALUES,
        params=[("objectType", "company"), ("objectId", "a.com"), ("objectId", "http://b.com")],
        error_code="INVALID_DOMAIN",
        fields=["objectId[1]"],
    ),
    # --- found by fuzzing
    Case(
        "profile: NUL in a name",
        "POST",
        PROFILES,
        {"profileType": "company", "name": "a\x00b"},
        error_code="INVALID_CHARACTER",
        fields=["name"],
    ),
    Case(
        "values: NUL in a list item",
        "PUT",
        VALUES,
        value(template="crm", v=["ok", "b\x00"]),
        error_code="INVALID_CHARACTER",
        fields=["values[0].value[1]"],
    ),
    Case(
        "rule: NUL in a choice",
        "PUT",
        RULES,
        list_rule({"choices": {"a\x00": 1}}),
        error_code="INVALID_CHARACTER",
        fields=["pointValues.choices.a\x00"],
    ),
    Case(
        "values: NUL in a LinkedIn slug",
        "PUT",
        VALUES,
        contact_value("linkedin.com/in/a\x00b"),
        error_code="INVALID_CHARACTER",
        fields=["values[0].objectId"],
    ),
    Case(
        "template: id with NUL in the path",
        "GET",
        TEMPLATES + "/a%00b",
        status=404,
        code="NOT_FOUND",
        error_code="TEMPLATE_NOT_FOUND",
    ),
    Case(
        "templates: unknown query parameter",
        "GET",
        TEMPLATES,
        params={"objectTyp": "company"},
        error_code="UNKNOWN_FIELD",
        fields=["objectTyp"],
    ),
    Case(
        "scores: unknown query parameter",
        "GET",
        "/v1/scoring/scores",
        params={"objectType": "company", "objectId": "a.com", "dimensions": "fit"},
        error_code="UNKNOWN_FIELD",
        fields=["dimensions"],
    ),
    # --- rules: references
    Case(
        "rule: unknown profile",
        "PUT",
        PROFILES + "/" + UNKNOWN_UUID + "/rules",
        rule(),
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    Case(
        "rule: list for unknown profile",
        "GET",
        PROFILES + "/" + UNKNOWN_UUID + "/rules",
        status=404,
        code="NOT_FOUND",
        error_code="PROFILE_NOT_FOUND",
    ),
    Case(
        "rule: unknown template",
        "PUT",
        RULES,
        rule("nope"),
        error_code="TEMPLATE_NOT_FOUND",
        fields=["signalTemplateId"],
    ),
    Case(
        "rule: contact template on a company profile",
        "PUT",
        RULES,
        rule("seniority", "list", {"choices": {"VP": 1}}),
        error_code="OBJECT_TYPE_MISMATCH",
        fields=["signalTemplateId"],
    ),
    Case(
        "rule: company template on a contact profile",
        "PUT",
        "/v1/scoring/profiles/{cpid}/rules",
        rule(),
        error_code="OBJECT_TYPE_MISMATCH",
        fields=["signalTemplateId"],
    ),
    Case(
        "rule: unknown dimension",
        "PUT",
        RULES,
        rule(dimension="reach"),
        error_code="INVALID_ENUM_VALUE",
        fields=["dimension"],
    ),
    Case(
        "rule: unknown answer type",
        "PUT",
        RULES,
        rule(answer_type="text"),
        error_code="INVALID_ENUM_VALUE",
        fields=["answerType"],
    ),
    Case(
        "rule: missing pointValues",
        "PUT",
        RULES,
        {"signalTemplateId": "employees", "dimension": "fit", "answerType": "number"},
        error_code="MISSING_FIELD",
        fields=["pointValues"],
    ),
    Case(
        "rule: pointValues is an array",
        "PUT",
        RULES,
        rule(pv=[1, 2]),
        error_code="INVALID_FIELD",
        fields=["pointValues"],
    ),
    Case(
        "rule: unknown field",
        "PUT",
        RULES,
        rule(weight=2),
        error_code="UNKNOWN_FIELD",
        fields=["weight"],
    ),
    Case(
        "rule: delete unknown rule",
        "DELETE",
        RULES + "/" + UNKNOWN_UUID,
        status=404,
        code="NOT_FOUND",
        error_code="RULE_NOT_FOUND",
    ),
    Case(
        "rule: delete malformed rule id",
        "DELETE",
        RULES + "/xyz",
        status=404,
        code="NOT_FOUND",
        error_code="RULE_NOT_FOUND",
    ),
    # --- rules: point values
    Case(
        "rule: answer type mismatch",
        "PUT",
        RULES,
        rule(answer_type="list"),
        code=PV,
        error_code="ANSWER_TYPE_MISMATCH",
        fields=["answerType"],
    ),
    Case(
        "rule: boolean without points",
        "PUT",
        RULES,
        bool_rule({}),
        code=PV,
        error_code="MISSING_POINTS",
        fields=["pointValues"],
    ),
    Case(
        "rule: boolean points as a string",
        "PUT",
        RULES,
        bool_rule({"true": "10"}),
        code=PV,
        error_code="INVALID_POINTS",
        fields=["pointValues.true"],
    ),
    Case(
        "rule: boolean unknown key",
        "PUT",
        RULES,
        bool_rule({"true": 1, "maybe": 2}),
        code=PV,
        error_code="UNKNOWN_FIELD",
        fields=["pointValues.maybe"],
    ),
    Case(
        "rule: boolean given ranges",
        "PUT",
        RULES,
        bool_rule(ranges({"min": 0, "points": 1})),
        code=PV,
        error_code="WRONG_SHAPE",
        fields=["pointValues.ranges", "pointValues"],
    ),
    Case(
        "rule: points over a million",
        "PUT",
        RULES,
        bool_rule({"true": 1_000_001}),
        code=PV,
        error_code="POINTS_OUT_OF_RANGE",
        fields=["pointValues.true"],
    ),
    Case(
        "rule: no ranges",
        "PUT",
        RULES,
        rule(pv={"ranges": []}),
        code=PV,
        error_code="TOO_FEW_RANGES",
        fields=["pointValues.ranges"],
    ),
    Case(
        "rule: 51 ranges",
        "PUT",
        RULES,
        rule(pv=ranges(*({"min": i, "max": i + 1, "points": 1} for i in range(51)))),
        code=PV,
        error_code="TOO_MANY_RANGES",
        fields=["pointValues.ranges"],
    ),
    Case(
        "rule: ranges not an array",
        "PUT",
        RULES,
        rule(pv={"ranges": {"min": 0}}),
        code=PV,
        error_code="INVALID_RANGES",
        fields=["pointValues.ranges"],
    ),
    Case(
        "rule: min equals max",
        "PUT",
        RULES,
        rule(pv=ranges({"min": 10, "max": 10, "points": 1})),
        code=PV,
        error_code="INVALID_RANGE",
        fields=["pointValues.ranges[0].max"],
    ),
    Case(
        "rule: overlapping ranges",
        "PUT",
        RULES,
        rule(pv=ranges({"min": 0, "max": 100, "points": 1}, {"min": 99, "max": 200, "points": 2})),
        code=PV,
        error_code="OVERLAPPING_RANGES",
        fields=["pointValues.ranges[1]"],
    ),
    Case(
        "rule: two open-below ranges",
        "PUT",
        RULES,
        rule(
            pv=ranges({"max": 10, "points": 1}, {"min": 50, "points": 2}, {"max": 5, "points": 3})
        ),
        code=PV,
        error_code="OVERLAPPING_RANGES",
        fields=["pointValues.ranges[2]"],
    ),
    Case(
        "rule: range without points",
        "PUT",
        RULES,
        rule(pv=ranges({"min": 0, "max": 1})),
        code=PV,
        error_code="MISSING_POINTS",
        fields=["pointValues.ranges[0].points"],
    ),
    Case(
        "rule: range bound as a string",
        "PUT",
        RULES,
        rule(pv=ranges({"min": "0", "points": 1})),
        code=PV,
        error_code="INVALID_BOUND",
        fields=["pointValues.ranges[0].min"],
    ),
    Case(
        "rule: range with an unknown key",
        "PUT",
        RULES,
        rule(pv=ranges({"min": 0, "points": 1, "label": "small"})),
        code=PV,
        error_code="UNKNOWN_FIELD",
        fields=["pointValues.ranges[0].label"],
    ),
    Case(
        "rule: numeric template given choices",
        "PUT",
        RULES,
        rule(pv={"choices": {"a": 1}}),
        code=PV,
        error_code="WRONG_SHAPE",
        fields=["pointValues.choices", "pointValues.ranges"],
    ),
    Case(
        "rule: no choices",
        "PUT",
        RULES,
        list_rule({"choices": {}}),
        code=PV,
        error_code="TOO_FEW_CHOICES",
        fields=["pointValues.choices"],
    ),
    Case(
        "rule: 201 choices",
        "PUT",
        RULES,
        list_rule({"choices": {f"c{i}": 1 for i in range(201)}}),
        code=PV,
        error_code="TOO_MANY_CHOICES",
        fields=["pointValues.choices"],
    ),
    Case(
        "rule: choices differing only in case",
        "PUT",
        RULES,
        list_rule({"choices": {"HubSpot": 1, "hubspot ": 2}}),
        code=PV,
        error_code="DUPLICATE_CHOICE",
        fields=['pointValues.choices["hubspot "]'],
    ),
    Case(
        "rule: unknown mode",
        "PUT",
        RULES,
        list_rule({"choices": {"a": 1}, "mode": "fuzzy"}),
        code=PV,
        error_code="INVALID_MODE",
        fields=["pointValues.mode"],
    ),
    Case(
        "rule: blank choice",
        "PUT",
        RULES,
        list_rule({"choices": {"  ": 1}}),
        code=PV,
        error_code="INVALID_CHOICE",
        fields=['pointValues.choices["  "]'],
    ),
    Case(
        "rule: choice points null",
        "PUT",
        RULES,
        list_rule({"choices": {"a": None}}),
        code=PV,
        error_code="INVALID_POINTS",
        fields=["pointValues.choices.a"],
    ),
    Case(
        "rule: list without choices",
        "PUT",
        RULES,
        list_rule({"mode": "additive"}),
        code=PV,
        error_code="MISSING_CHOICES",
        fields=["pointValues.choices"],
    ),
]


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_invalid_input_is_rejected_and_writes_nothing(
    world: World, database: Database, case: Case
) -> None:
    before = snapshot(database)
    kwargs: dict[str, Any] = {}
    if case.raw is not None:
        kwargs["content"] = case.raw
        kwargs["headers"] = {"Content-Type": "application/json"}
    elif case.body is not None:
        kwargs["json"] = case.body
    if case.params is not None:
        kwargs["params"] = case.params
    response = world.call(case.method, case.path, **kwargs)
    error = assert_error(
        response, case.status, case.code, error_code=case.error_code, fields=case.fields
    )
    if case.status == 422:
        assert error["fields"] or case.error_code == "TOO_MANY_RULES"
    assert snapshot(database) == before


def test_the_101st_rule_is_rejected(world: World, database: Database) -> None:
    templates = [f"t{i}" for i in range(100)]
    for template_id in templates:
        created = world.call(
            "POST",
            TEMPLATES,
            json={
                "id": template_id,
                "name": template_id,
                "objectType": "company",
                "answerType": "boolean",
            },
        )
        assert created.status_code == 201
    # The world already has one rule; add 99 more to reach the limit of 100.
    for template_id in templates[:99]:
        assert (
            world.call(
                "PUT", RULES, json=bool_rule({"true": 1}) | {"signalTemplateId": template_id}
            ).status_code
            == 200
        )
    before = snapshot(database)
    response = world.call(
        "PUT", RULES, json=bool_rule({"true": 1}) | {"signalTemplateId": templates[99]}
    )
    assert_error(response, 422, V, error_code="TOO_MANY_RULES")
    assert snapshot(database) == before
    # Replacing an existing rule is still allowed at the limit.
    replaced = world.call(
        "PUT", RULES, json=bool_rule({"true": 2}) | {"signalTemplateId": templates[0]}
    )
    assert replaced.status_code == 200
