"""The hostile-input corpus: every write endpoint, every string, number and timestamp field,
against the inputs a careful attacker tries. Each case asserts the status and the envelope,
that no row changed (or, for a number the contract accepts, that it reads back the same on
both backends), and that reads of the touched objects still answer 200. The preview writes
nothing, but is here too: refused as the writes are, or answering 200 with no row changed.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from typing import Any

import pytest

from signalscore.db.engine import Database
from tests.api.conftest import World, snapshot
from tests.helpers import assert_error

# --- the write endpoints, each with a valid body and its fields by kind ----------------------


@dataclass(frozen=True)
class Endpoint:
    name: str
    method: str
    path: str
    body: dict[str, Any]
    strings: tuple[str, ...]  # JSON paths of string fields (dotted, [i] for list items)
    numbers: tuple[str, ...] = ()
    timestamps: tuple[str, ...] = ()


PREVIEW = "/v1/scoring/profiles/{pid}/preview"
# A rule's decay (SPEC §13): 1-10 steps, afterDays 1-36,500 strictly increasing, factor 0-1
# non-increasing.
DECAY = {"steps": [{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0}]}


def _value(**fields: Any) -> dict[str, Any]:
    item = {"objectType": "company", "objectId": "acme.com", "signalTemplateId": "crm"}
    item.update(fields)
    return {"values": [item]}


ENDPOINTS = [
    Endpoint(
        "template create",
        "POST",
        "/v1/signals/templates",
        {
            "id": "t1",
            "name": "T",
            "objectType": "company",
            "answerType": "number",
            "description": "d",
        },
        ("id", "name", "objectType", "answerType", "description"),
    ),
    Endpoint(
        "template patch",
        "PATCH",
        "/v1/signals/templates/employees",
        {"name": "Headcount", "description": "d"},
        ("name", "description"),
    ),
    Endpoint(
        "values (list)",
        "PUT",
        "/v1/signals/values",
        _value(value=["Salesforce"], observedAt="2026-01-01T00:00:00Z"),
        (
            "values[0].objectType",
            "values[0].objectId",
            "values[0].signalTemplateId",
            "values[0].value[0]",
        ),
        timestamps=("values[0].observedAt",),
    ),
    Endpoint(
        "values (number)",
        "PUT",
        "/v1/signals/values",
        _value(signalTemplateId="employees", value=5),
        (),
        numbers=("values[0].value",),
    ),
    Endpoint(
        "values (percentage)",
        "PUT",
        "/v1/signals/values",
        _value(signalTemplateId="growth", value=5),
        (),
        numbers=("values[0].value",),
    ),
    Endpoint(
        "values (currency)",
        "PUT",
        "/v1/signals/values",
        _value(signalTemplateId="revenue", value=5),
        (),
        numbers=("values[0].value",),
    ),
    Endpoint(
        "profile create",
        "POST",
        "/v1/scoring/profiles",
        {"profileType": "company", "name": "P", "description": "d"},
        ("profileType", "name", "description"),
    ),
    Endpoint(
        "profile update",
        "PUT",
        "/v1/scoring/profiles/{pid}",
        {"name": "P", "description": "d"},
        ("name", "description"),
    ),
    Endpoint(
        "profile tiers",
        "PUT",
        "/v1/scoring/profiles/{pid}",
        {"name": "P", "tiers": {"fit": [{"name": "A", "minScore": 50}]}},
        ("tiers.fit[0].name",),
        numbers=("tiers.fit[0].minScore",),
    ),
    Endpoint(
        "webhook create",
        "POST",
        "/v1/webhooks",
        {"url": "https://93.184.216.34/hook", "eventTypes": ["score.changed"], "description": "d"},
        ("url", "eventTypes[0]", "description"),
    ),
    Endpoint(
        "rule (ranges)",
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        {
            "signalTemplateId": "revenue",
            "dimension": "fit",
            "answerType": "currency",
            "pointValues": {"ranges": [{"min": 0, "max": 10, "points": 5}]},
        },
        ("signalTemplateId", "dimension", "answerType"),
        numbers=(
            "pointValues.ranges[0].min",
            "pointValues.ranges[0].max",
            "pointValues.ranges[0].points",
        ),
    ),
    Endpoint(
        "rule (choices)",
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        {
            "signalTemplateId": "crm",
            "dimension": "fit",
            "answerType": "list",
            "pointValues": {"choices": {"Salesforce": 10}, "mode": "additive"},
        },
        ("pointValues.mode",),
        numbers=("pointValues.choices.Salesforce",),
    ),
    Endpoint(
        "rule (decay)",
        "PUT",
        "/v1/scoring/profiles/{pid}/rules",
        {
            "signalTemplateId": "is_b2b",
            "dimension": "urgency",
            "answerType": "boolean",
            "pointValues": {"true": 10},
            "decay": DECAY,
        },
        (),
        numbers=("decay.steps[0].afterDays", "decay.steps[1].factor"),
    ),
    Endpoint(
        "assignment",
        "POST",
        "/v1/scoring/assignments",
        {"profileId": "{pid}", "objectType": "company", "objectId": "newco.com"},
        ("profileId", "objectType", "objectId"),
    ),
    Endpoint(
        "bulk assignment",
        "POST",
        "/v1/scoring/assignments/bulk",
        {"profileId": "{pid}", "objectType": "company", "objectIds": ["newco.com"]},
        ("profileId", "objectType", "objectIds[0]"),
    ),
    Endpoint(
        "compute",
        "POST",
        "/v1/scoring/compute",
        {"objectType": "company", "objectIds": ["acme.com"]},
        ("objectType", "objectIds[0]"),
    ),
    # Writes nothing (SPEC §12), but its rules and tiers are checked as their writes check
    # them: hostile input is the same 422 at `rules[0]...`, and a preview with an accepted
    # extreme number answers 200 with no row changed.
    Endpoint(
        "preview",
        "POST",
        PREVIEW,
        {
            "rules": [
                {
                    "signalTemplateId": "employees",
                    "dimension": "fit",
                    "answerType": "number",
                    "pointValues": {"ranges": [{"min": 0, "max": 100, "points": 5}]},
                    "decay": DECAY,
                }
            ],
            "tiers": {"fit": [{"name": "A", "minScore": 50}]},
            "sampleSize": 10,
        },
        ("rules[0].signalTemplateId", "tiers.fit[0].name"),
        numbers=("rules[0].pointValues.ranges[0].points", "tiers.fit[0].minScore", "sampleSize"),
    ),
]

# --- hostile values by kind -------------------------------------------------------------------

DEEP = 40  # nesting levels; the limit is 32


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


# (name, value, expected errorCode or None for "some 422", whether the path is exact)
STRING_CASES = [
    ("lone high surrogate", "\ud800", "INVALID_CHARACTER", True),
    ("lone low surrogate inside text", "ab\udfffcd", "INVALID_CHARACTER", True),
    ("surrogate then text", "\ud800x", "INVALID_CHARACTER", True),
    ("NUL", "a\x00b", "INVALID_CHARACTER", True),
    ("deep nesting", _deep(DEEP), "NESTING_TOO_DEEP", False),
    ("very long text", "a" * 20_000, None, False),
]

# (name, JSON literal)
NUMBER_CASES = [
    ("1e308", "1e308"),
    ("-1e308", "-1e308"),
    ("1e400 (overflows a double)", "1e400"),
    ("NaN", "NaN"),
    ("-Infinity", "-Infinity"),
    ("smallest subnormal", "5e-324"),
    ("30-digit integer", "123456789012345678901234567890"),
    ("deep nesting", json.dumps(_deep(DEEP))),
]

TIMESTAMP_CASES = [
    ("year 10000 in UTC", "9999-12-31T23:59:59-01:00", "TIMESTAMP_OUT_OF_RANGE"),
    ("year 0 in UTC", "0001-01-01T00:00:00+01:00", "TIMESTAMP_OUT_OF_RANGE"),
    ("a bare integer", 253402300799, "INVALID_TIMESTAMP"),
    ("a float", 1.5e9, "INVALID_TIMESTAMP"),
    ("naive", "2026-01-01T00:00:00", "INVALID_TIMESTAMP"),
    ("six-digit year", "+12026-01-01T00:00:00Z", "INVALID_TIMESTAMP"),
    ("surrogate", "2026-01-01T00:00:00Z\ud800", "INVALID_CHARACTER"),
]

SENTINEL = "\u2063HOSTILE\u2063"  # a marker replaced by a raw JSON literal after dumping

# --- helpers ------------------------------------------------------------------------------------


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for dotted in path.split("."):
        name, _, rest = dotted.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    return parts


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    parts = _parse_path(path)
    target: Any = changed
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return changed


def _send(world: World, endpoint: Endpoint, body: dict[str, Any], raw: str | None = None) -> Any:
    # json.dumps escapes lone surrogates as `\ud800`, exactly what a hostile client sends.
    text = json.dumps(body).replace("{pid}", world.profile_id)
    if raw is not None:
        text = text.replace(json.dumps(SENTINEL), raw)
    return world.call(
        endpoint.method,
        endpoint.path,
        content=text.encode(),
        headers={"Content-Type": "application/json"},
    )


READS = [
    "/v1/signals/values?objectType=company&objectId=acme.com&objectId=newco.com",
    "/v1/scoring/scores?objectType=company&objectId=acme.com&objectId=newco.com",
    "/v1/scoring/assignments?objectType=company&objectId=acme.com",
    "/v1/scoring/profiles",
    "/v1/scoring/profiles/{pid}/rules",
    "/v1/signals/templates",
    "/v1/scoring/profiles/{pid}/scores?dimension=fit",
    "/v1/scoring/profiles/{pid}/distribution?dimension=fit",
]


def _reads_answer_200(world: World) -> None:
    for path in READS:
        response = world.call("GET", path)
        assert response.status_code == 200, (path, response.text)


def _rejected_without_change(
    world: World,
    database: Database,
    endpoint: Endpoint,
    body: dict[str, Any],
    *,
    raw: str | None = None,
    **expected: Any,
) -> dict[str, Any]:
    before = snapshot(database)
    response = _send(world, endpoint, body, raw)
    # A rule's pointValues answer INVALID_POINT_VALUES (SPEC §3); everything else
    # VALIDATION_ERROR.
    code = response.json().get("error", {}).get("code")
    assert code in ("VALIDATION_ERROR", "INVALID_POINT_VALUES"), response.text
    error = assert_error(response, 422, code, **expected)
    assert snapshot(database) == before
    _reads_answer_200(world)
    return error


def _cases(kind: str) -> list[Any]:
    table: dict[str, list[Any]] = {
        "strings": STRING_CASES,
        "numbers": NUMBER_CASES,
        "timestamps": TIMESTAMP_CASES,
    }
    return [
        pytest.param(endpoint, field, case, id=f"{endpoint.name}:{field}:{case[0]}")
        for endpoint in ENDPOINTS
        for field in getattr(endpoint, kind)
        for case in table[kind]
    ]


# --- the corpus ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "field", "case"), _cases("strings"))
def test_hostile_strings_are_refused_and_change_nothing(
    world: World, database: Database, endpoint: Endpoint, field: str, case: Any
) -> None:
    _name, value, error_code, exact_path = case
    body = _with(endpoint.body, field, value)
    if error_code is None:
        error = _rejected_without_change(world, database, endpoint, body)
    else:
        error = _rejected_without_change(world, database, endpoint, body, error_code=error_code)
    if exact_path:
        assert error["fields"][0]["field"] == field
    assert len(json.dumps(error)) < 20_000


def _accepts(endpoint: Endpoint, field: str, number: float) -> bool:
    """Whether the contract accepts `number` in this field (SPEC §4, §5, §9, §12)."""
    if not math.isfinite(number):
        return False
    if endpoint.name == "values (percentage)" or field.endswith("minScore"):
        return 0 <= number <= 100
    if field == "sampleSize":
        return number.is_integer() and 1 <= number <= 100_000
    if field.endswith(("points", "Salesforce")):
        return abs(number) <= 1_000_000
    if field.endswith(".min"):
        return number < 10  # below the range's max
    if field.endswith(".max"):
        return number > 0  # above the range's min
    if field.endswith("afterDays"):  # whole days, between the other step's (30, 90)
        low, high = (1, 89) if "steps[0]" in field else (31, 36_500)
        return number.is_integer() and low <= number <= high
    if field.endswith("factor"):  # non-increasing, between the other step's (0.5, 0)
        return 0 <= number <= (1 if "steps[0]" in field else 0.5)
    return True


def _number(literal: str) -> float:
    try:
        return float(json.loads(literal))
    except (TypeError, ValueError):
        return math.nan  # not a number at all (deep nesting)


def _previewed_without_change(
    world: World, database: Database, endpoint: Endpoint, body: dict[str, Any], raw: str
) -> None:
    """An accepted preview: 200, with an assigned object scored, and no row changed."""
    # An assigned object with a value, so the proposed rule runs through the engine.
    assignment = {"profileId": world.profile_id, "objectType": "company", "objectId": "acme.com"}
    assert world.call("POST", "/v1/scoring/assignments", json=assignment).status_code == 201
    before = snapshot(database)
    response = _send(world, endpoint, body, raw)
    assert response.status_code == 200, response.text
    assert response.json()["objects"] == 1
    assert snapshot(database) == before
    _reads_answer_200(world)


def _stored_rule_field(world: World, template: str, field: str) -> Any:
    """`field` (a path in a rule) of the profile's rule on `template`, as GET reads it."""
    rules = world.call("GET", "/v1/scoring/profiles/{pid}/rules").json()
    document: Any = next(r for r in rules if r["signalTemplateId"] == template)
    for part in _parse_path(field):
        document = document[part]
    return document


def _decay_number(field: str, literal: str) -> int | float:
    """An accepted decay number as documented (docs/api.md, Time decay): `afterDays` a whole
    number (`30.0` is 30), `factor` as sent, an int or a float (`-0.0` is 0.0)."""
    number = json.loads(literal)
    return int(number) if field.endswith("afterDays") else number + 0


@pytest.mark.parametrize(("endpoint", "field", "case"), _cases("numbers"))
def test_extreme_numbers_are_refused_or_read_back_the_same(
    world: World, database: Database, endpoint: Endpoint, field: str, case: Any
) -> None:
    _name, literal = case
    body = _with(endpoint.body, field, SENTINEL)
    number = _number(literal)
    if not _accepts(endpoint, field, number):
        _rejected_without_change(world, database, endpoint, body, raw=literal)
        return
    if endpoint.path == PREVIEW:
        _previewed_without_change(world, database, endpoint, body, literal)
        return
    response = _send(world, endpoint, body, literal)
    assert response.status_code == 200, response.text
    _reads_answer_200(world)
    if endpoint.name.startswith("values"):
        # Written again, the same number is unchanged on both backends (no recompute).
        again = _send(world, endpoint, body, literal)
        assert again.json() == {"written": 0, "deleted": 0, "unchanged": 1}, literal
        template = body["values"][0]["signalTemplateId"]
        read = world.call("GET", READS[0]).json()
        stored = [v["value"] for v in read if v["signalTemplateId"] == template]
    elif endpoint.name == "profile tiers":
        profile = world.call("GET", "/v1/scoring/profiles/{pid}").json()
        stored = [profile["tiers"]["fit"][0]["minScore"]]
    else:
        stored = [_stored_rule_field(world, body["signalTemplateId"], field)]
    # The number reads back as sent (a float beyond 2**53 stays that float on PostgreSQL).
    assert stored == [number], (literal, stored)
    if field.startswith("decay."):  # exactly, int or float (SPEC §13)
        assert json.dumps(stored) == json.dumps([_decay_number(field, literal)])


# --- a rule's decay (SPEC §13), through PUT .../rules and the preview --------------------------


def _refused(error_code: str, field: str) -> tuple[str, str]:
    return error_code, field


AFTER_DAYS = "steps[0].afterDays"  # between 1 and the next step's 90
FACTOR = "steps[0].factor"  # between the next step's 0 and 1
BAD_AFTER_DAYS = _refused("INVALID_AFTER_DAYS", "{decay}." + AFTER_DAYS)
AFTER_DAYS_OUT = _refused("AFTER_DAYS_OUT_OF_RANGE", "{decay}." + AFTER_DAYS)
BAD_FACTOR = _refused("INVALID_FACTOR", "{decay}." + FACTOR)
BAD_STEPS = _refused("INVALID_FIELD", "{decay}.steps")
TOO_MANY_STEPS = _refused("TOO_MANY_ITEMS", "{decay}.steps")


# JSON values that are not numbers (each refused in either field)
NOT_NUMBERS = [
    ("'NaN'", '"NaN"'),
    ("'Infinity'", '"Infinity"'),
    ("a numeric string", '"1"'),
    ("bare Infinity", "Infinity"),
    ("true", "true"),
    ("false", "false"),
    ("null", "null"),
    ("an object", '{"value": 1}'),
    ("an array", "[1]"),
]


def _steps(count: int, step: str) -> str:
    return "[" + ",".join([step] * count) + "]"


# (name, where in DECAY the JSON literal goes, the literal, and either the errorCode and first
# field of the 422 (`{decay}` is `decay` or `rules[0].decay`), or the value read back there)
DECAY_CASES: list[tuple[str, str, str, Any]] = [
    ("afterDays 30.0 is 30", AFTER_DAYS, "30.0", 30),
    ("afterDays 3e1 is 30", AFTER_DAYS, "3e1", 30),
    ("afterDays 1", AFTER_DAYS, "1", 1),
    ("afterDays 36500", "steps[1].afterDays", "36500", 36_500),
    (
        "afterDays 36501",
        "steps[1].afterDays",
        "36501",
        _refused("AFTER_DAYS_OUT_OF_RANGE", "{decay}.steps[1].afterDays"),
    ),
    ("afterDays 30.5", AFTER_DAYS, "30.5", BAD_AFTER_DAYS),
    ("afterDays 0", AFTER_DAYS, "0", AFTER_DAYS_OUT),
    ("afterDays -30", AFTER_DAYS, "-30", AFTER_DAYS_OUT),
    ("afterDays -0.0", AFTER_DAYS, "-0.0", AFTER_DAYS_OUT),
    ("afterDays 1e-400 (0.0)", AFTER_DAYS, "1e-400", AFTER_DAYS_OUT),
    ("afterDays 2**64", AFTER_DAYS, str(2**64), AFTER_DAYS_OUT),
    ("afterDays 400 digits", AFTER_DAYS, "9" * 400, AFTER_DAYS_OUT),
    ("factor 1 stays 1", FACTOR, "1", 1),
    ("factor 1.0 stays 1.0", FACTOR, "1.0", 1.0),
    ("factor 0", FACTOR, "0", 0),
    ("factor 0.1", FACTOR, "0.1", 0.1),
    ("factor 1e-400 is 0.0", FACTOR, "1e-400", 0.0),
    # PostgreSQL's jsonb has no negative zero: kept, it read back -0.0 on SQLite only.
    ("factor -0.0 is 0.0", FACTOR, "-0.0", 0.0),
    ("factor 1.5", FACTOR, "1.5", BAD_FACTOR),
    ("factor 2", FACTOR, "2", BAD_FACTOR),
    ("factor -0.5", FACTOR, "-0.5", BAD_FACTOR),
    ("factor 400 digits", FACTOR, "9" * 400, BAD_FACTOR),
    (
        "steps unsorted",
        "steps",
        '[{"afterDays": 90, "factor": 0}, {"afterDays": 30, "factor": 0.5}]',
        _refused("DECAY_STEPS_NOT_INCREASING", "{decay}.steps[1].afterDays"),
    ),
    (
        "factors increasing",
        "steps",
        '[{"afterDays": 30, "factor": 0.2}, {"afterDays": 90, "factor": 0.5}]',
        _refused("DECAY_FACTOR_INCREASES", "{decay}.steps[1].factor"),
    ),
    (
        "equal factors",
        "steps",
        '[{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0.5}]',
        [{"afterDays": 30, "factor": 0.5}, {"afterDays": 90, "factor": 0.5}],
    ),
    ("no steps", "steps", "[]", _refused("TOO_FEW_ITEMS", "{decay}.steps")),
    (
        "100,000 steps",
        "steps",
        _steps(100_000, '{"afterDays":1,"factor":0}'),
        _refused("TOO_MANY_KEYS", "body"),
    ),
    ("100,000 empty steps", "steps", _steps(100_000, "{}"), TOO_MANY_STEPS),
    ("100,000 numbers as steps", "steps", _steps(100_000, "30"), TOO_MANY_STEPS),
    ("steps an object", "steps", '{"0": {"afterDays": 30, "factor": 0.5}}', BAD_STEPS),
    ("steps null", "steps", "null", BAD_STEPS),
    ("a step an array", "steps[0]", "[30, 0.5]", _refused("INVALID_FIELD", "{decay}.steps[0]")),
    ("a step null", "steps[0]", "null", _refused("INVALID_FIELD", "{decay}.steps[0]")),
    (
        "a step without afterDays",
        "steps[0]",
        '{"factor": 0.5}',
        _refused("MISSING_FIELD", "{decay}." + AFTER_DAYS),
    ),
    (
        "an extra key in a step",
        "steps[0]",
        '{"afterDays": 30, "factor": 0.5, "unit": "days"}',
        _refused("UNKNOWN_FIELD", "{decay}.steps[0].unit"),
    ),
    (
        "a repeated key (the last counts)",
        "steps[0]",
        '{"afterDays": 30, "factor": 0.5, "factor": 2}',
        BAD_FACTOR,
    ),
    (
        "decay an array",
        "",
        '[{"afterDays": 30, "factor": 0.5}]',
        _refused("INVALID_FIELD", "{decay}"),
    ),
    ("decay a string", "", '"30d"', _refused("INVALID_FIELD", "{decay}")),
    ("decay true", "", "true", _refused("INVALID_FIELD", "{decay}")),
    ("decay without steps", "", "{}", _refused("MISSING_FIELD", "{decay}.steps")),
    (
        "decay with an extra key",
        "",
        '{"steps": [{"afterDays": 30, "factor": 0.5}], "mode": "linear"}',
        _refused("UNKNOWN_FIELD", "{decay}.mode"),
    ),
    *[
        (f"{field} {name}", where, literal, refused)
        for field, where, refused in (
            ("afterDays", AFTER_DAYS, BAD_AFTER_DAYS),
            ("factor", FACTOR, BAD_FACTOR),
        )
        for name, literal in NOT_NUMBERS
    ],
]


@pytest.mark.parametrize("case", DECAY_CASES, ids=[c[0] for c in DECAY_CASES])
def test_hostile_decay_is_refused_or_read_back_as_documented(
    world: World, database: Database, case: Any
) -> None:
    """Each case through `PUT .../rules` and then the preview (`rules[0].decay`), which
    check decay alike: refused by both at the same path with no row changed, or accepted by
    both, the rule reading back as documented (exactly: an int or a float)."""
    _name, where, literal, expected = case
    for name, prefix in (("rule (decay)", ""), ("preview", "rules[0].")):
        endpoint = next(e for e in ENDPOINTS if e.name == name)
        decay = f"{prefix}decay"
        body = _with(endpoint.body, f"{decay}.{where}" if where else decay, SENTINEL)
        if isinstance(expected, tuple):
            error_code, field = expected
            error = _rejected_without_change(
                world, database, endpoint, body, raw=literal, error_code=error_code
            )
            assert error["fields"][0]["field"] == field.format(decay=decay)
        elif endpoint.path == PREVIEW:
            _previewed_without_change(world, database, endpoint, body, literal)
        else:
            response = _send(world, endpoint, body, literal)
            assert response.status_code == 200, response.text
            field = f"decay.{where}"
            put = response.json()
            for part in _parse_path(field):
                put = put[part]
            stored = _stored_rule_field(world, "is_b2b", field)
            # As JSON, so 30 is not 30.0 (keys in any order: PostgreSQL's jsonb sorts them).
            exactly = json.dumps([put, stored], sort_keys=True)
            assert exactly == json.dumps([expected, expected], sort_keys=True), literal


@pytest.mark.parametrize(("endpoint", "field", "case"), _cases("timestamps"))
def test_extreme_timestamps_are_refused_and_change_nothing(
    world: World, database: Database, endpoint: Endpoint, field: str, case: Any
) -> None:
    _name, value, error_code = case
    error = _rejected_without_change(
        world, database, endpoint, _with(endpoint.body, field, value), error_code=error_code
    )
    assert error["fields"][0]["field"] == field


LONG_CONTACT = "linkedin.com/in/" + "a" * 484  # 500 characters; 512 once canonical

OBJECT_ID_FIELDS = [
    pytest.param(e, f, id=f"{e.name}:{f}")
    for e in ENDPOINTS
    for f in e.strings
    if f.endswith(("objectId", "objectIds[0]"))
]


@pytest.mark.parametrize(("endpoint", "field"), OBJECT_ID_FIELDS)
def test_ids_too_long_once_canonical_are_refused_on_both_backends(
    world: World, database: Database, endpoint: Endpoint, field: str
) -> None:
    body = _with(endpoint.body, field, LONG_CONTACT)
    if "objectType" in body:
        body["objectType"] = "contact"
    if "values" in body:
        body["values"][0].update(objectType="contact", signalTemplateId="seniority", value=["VP"])
    if "profileId" in body:
        body["profileId"] = world.contact_profile_id
    error = _rejected_without_change(
        world, database, endpoint, body, error_code="OBJECT_ID_TOO_LONG"
    )
    assert error["fields"][0]["field"] == field


@pytest.mark.parametrize(
    "path",
    [
        "/v1/signals/values?objectType=contact&objectId=",
        "/v1/scoring/scores?objectType=contact&objectId=",
        "/v1/scoring/assignments?objectType=contact&objectId=",
    ],
)
def test_reads_refuse_ids_too_long_once_canonical(world: World, path: str) -> None:
    response = world.call("GET", path + LONG_CONTACT)
    assert_error(response, 422, "VALIDATION_ERROR", error_code="OBJECT_ID_TOO_LONG")


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_a_body_with_too_many_keys_is_refused(
    world: World, database: Database, endpoint: Endpoint
) -> None:
    body = dict(endpoint.body)
    body.update({f"k{i}": 0 for i in range(20_000)})
    error = _rejected_without_change(
        world, database, endpoint, body, error_code="TOO_MANY_KEYS", fields=["body"]
    )
    assert error["details"] == {"maxKeys": 10_000}


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_unknown_keys_are_listed_within_bounds(
    world: World, database: Database, endpoint: Endpoint
) -> None:
    body = dict(endpoint.body)
    body.update({f"unknown_{i}_{'x' * 2000}": 0 for i in range(500)})
    error = _rejected_without_change(world, database, endpoint, body, error_code="UNKNOWN_FIELD")
    assert len(error["fields"]) == 100
    assert error["details"]["fieldCount"] == 500
    assert all(len(f["field"]) <= 300 and len(f["message"]) <= 300 for f in error["fields"])
    assert len(json.dumps(error)) < 100_000


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[e.name for e in ENDPOINTS])
def test_an_unknown_key_with_a_lone_surrogate_is_refused(
    world: World, database: Database, endpoint: Endpoint
) -> None:
    body = {**endpoint.body, "bad\ud800key": 1}
    error = _rejected_without_change(
        world, database, endpoint, body, error_code="INVALID_CHARACTER"
    )
    assert error["fields"][0]["field"] == "bad\\ud800key"


@pytest.mark.parametrize("levels", [33, 950, 1100, 5000, 100_000])
@pytest.mark.parametrize("endpoint", ENDPOINTS[:3], ids=[e.name for e in ENDPOINTS[:3]])
def test_nesting_at_any_depth_is_a_clear_error(
    world: World, database: Database, endpoint: Endpoint, levels: int
) -> None:
    body = {**endpoint.body, "description": SENTINEL}
    raw = "[" * levels + "]" * levels
    _rejected_without_change(
        world, database, endpoint, body, raw=raw, error_code="NESTING_TOO_DEEP"
    )


GET_ROUTES = [
    "/v1/scoring/profiles",
    "/v1/signals/templates",
    "/v1/scoring/scores?objectType=company&objectId=acme.com",
]


@pytest.mark.parametrize("path", GET_ROUTES)
def test_thousands_of_unknown_query_parameters_get_a_bounded_answer(
    world: World, path: str
) -> None:
    separator = "&" if "?" in path else "?"
    params = "&".join(f"p{i}=1" for i in range(2000))
    response = world.call("GET", f"{path}{separator}{params}")
    error = assert_error(response, 422, "VALIDATION_ERROR", error_code="UNKNOWN_FIELD")
    assert len(error["fields"]) == 100
    assert error["details"]["fieldCount"] == 2000
    assert len(response.content) < 30_000


def test_a_huge_parameter_name_is_echoed_truncated(world: World) -> None:
    name = "q" * 7000
    response = world.call("GET", f"/v1/scoring/profiles?{name}=1")
    error = assert_error(response, 422, "VALIDATION_ERROR", error_code="UNKNOWN_FIELD")
    assert len(error["fields"][0]["field"]) == 100
    assert error["fields"][0]["field"].endswith("…")
    assert len(response.content) < 2_000


def test_a_choice_key_with_a_lone_surrogate_is_refused_with_its_path(
    world: World, database: Database
) -> None:
    endpoint = next(e for e in ENDPOINTS if e.name == "rule (choices)")
    # Beside a bad point value: one answer, and the renderer copes with the key.
    body = _with(endpoint.body, "pointValues.choices", {"Sales\udfffforce": "x", "a\x00": 1})
    error = _rejected_without_change(
        world, database, endpoint, body, error_code="INVALID_CHARACTER"
    )
    assert [f["field"] for f in error["fields"]] == [
        "pointValues.choices.Sales\\udfffforce",
        "pointValues.choices.a\x00",
    ]


# --- bulk imports: the same corpus, one NDJSON line at a time --------------------------------

IMPORT_ITEM = {
    "objectType": "company",
    "objectId": "acme.com",
    "signalTemplateId": "employees",
    "value": 5,
    "observedAt": "2026-01-01T00:00:00Z",
}
IMPORT_STRING_FIELDS = ("objectType", "objectId", "signalTemplateId", "value[0]")


def _import(world: World, line: str, path: str = "/v1/signals/values/import") -> Any:
    return world.call(
        "POST",
        path,
        content=(line + "\n").encode(),
        headers={"Content-Type": "application/x-ndjson"},
        params={"profileId": world.profile_id} if "assignments" in path else None,
    )


def _import_refused(world: World, database: Database, line: str, **expected: Any) -> Any:
    before = snapshot(database)
    error = assert_error(_import(world, line), 422, "VALIDATION_ERROR", **expected)
    assert snapshot(database) == before
    _reads_answer_200(world)
    return error


@pytest.mark.parametrize(
    ("field", "case"),
    [
        pytest.param(field, case, id=f"{field}:{case[0]}")
        for field in IMPORT_STRING_FIELDS
        for case in STRING_CASES
    ],
)
def test_hostile_strings_in_an_import_line_are_refused_by_line(
    world: World, database: Database, field: str, case: Any
) -> None:
    _name, value, error_code, exact_path = case
    item = (
        dict(IMPORT_ITEM, signalTemplateId="crm", value=["x"]) if "value" in field else IMPORT_ITEM
    )
    line = json.dumps(_with(item, field, value))
    if error_code is None:
        error = _import_refused(world, database, line)
    else:
        error = _import_refused(world, database, line, error_code=error_code)
    assert error["fields"][0]["field"].startswith("lines[1]")
    if exact_path:
        assert error["fields"][0]["field"] == f"lines[1].{field}"
    assert len(json.dumps(error)) < 20_000


@pytest.mark.parametrize("case", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
@pytest.mark.parametrize("template", ["employees", "growth"])
def test_extreme_numbers_in_an_import_are_refused_or_read_back_the_same(
    world: World, database: Database, template: str, case: Any
) -> None:
    """As through `PUT /values`: `employees` is a number, `growth` a percentage."""
    _name, literal = case
    item = dict(IMPORT_ITEM, signalTemplateId=template, value=SENTINEL)
    line = json.dumps(item).replace(json.dumps(SENTINEL), literal)
    number = _number(literal)
    accepted = math.isfinite(number) and (template == "employees" or 0 <= number <= 100)
    if not accepted:
        error = _import_refused(world, database, line)
        assert error["fields"][0]["field"].startswith("lines[1]")
        return
    response = _import(world, line)
    assert response.status_code == 200, response.text
    again = _import(world, line)
    assert again.json() == {"records": 1, "written": 0, "deleted": 0, "unchanged": 1}, literal
    read = world.call("GET", READS[0]).json()
    assert [v["value"] for v in read if v["signalTemplateId"] == template] == [number]
    _reads_answer_200(world)


@pytest.mark.parametrize("case", TIMESTAMP_CASES, ids=[c[0] for c in TIMESTAMP_CASES])
def test_extreme_timestamps_in_an_import_are_refused_by_line(
    world: World, database: Database, case: Any
) -> None:
    _name, value, error_code = case
    line = json.dumps(_with(IMPORT_ITEM, "observedAt", value))
    error = _import_refused(world, database, line, error_code=error_code)
    assert error["fields"][0]["field"] == "lines[1].observedAt"


@pytest.mark.parametrize("case", STRING_CASES, ids=[c[0] for c in STRING_CASES])
def test_hostile_object_ids_in_an_assignment_import_are_refused_by_line(
    world: World, database: Database, case: Any
) -> None:
    _name, value, _error_code, _exact = case
    before = snapshot(database)
    response = _import(
        world, json.dumps({"objectId": value}), path="/v1/scoring/assignments/import"
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert error["fields"][0]["field"].startswith("lines[1]")
    assert snapshot(database) == before
    _reads_answer_200(world)


@pytest.mark.parametrize(
    ("name", "body"),
    [
        (
            "NUL in a cell",
            b"objectType,objectId,signalTemplateId,value\ncompany,a\x00.com,crm,[]\n",
        ),
        (
            "bytes that are not UTF-8",
            b"objectType,objectId,signalTemplateId,value\ncompany,\xed\xa0\x80.com,crm,[]\n",
        ),
        (
            "an escaped lone surrogate in a JSON cell",
            b'objectType,objectId,signalTemplateId,value\ncompany,a.com,crm,"[""\\ud800""]"\n',
        ),
        (
            "a deeply nested JSON cell",
            b"objectType,objectId,signalTemplateId,value\ncompany,a.com,crm,"
            + b"[" * 40
            + b"]" * 40
            + b"\n",
        ),
    ],
)
def test_hostile_csv_is_refused_by_line(
    world: World, database: Database, name: str, body: bytes
) -> None:
    before = snapshot(database)
    response = world.call(
        "POST", "/v1/signals/values/import", content=body, headers={"Content-Type": "text/csv"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert [f["field"][: len("lines[2]")] for f in error["fields"]] == ["lines[2]"], name
    assert snapshot(database) == before
    _reads_answer_200(world)
