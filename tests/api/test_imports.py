"""Bulk imports through HTTP (`POST /v1/signals/values/import`,
`POST /v1/scoring/assignments/import`): the same result as the JSON endpoints, all or nothing,
errors by line, and the queueing SPEC §7 asks for."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from signalscore.db.engine import Database
from signalscore.db.tables import recompute_queue, signal_values
from tests.api.conftest import World, build_world, snapshot
from tests.helpers import Tenant, assert_error, assert_scores_fresh, drain

NDJSON = {"content-type": "application/x-ndjson"}
CSV = {"content-type": "text/csv"}
VALUES_IMPORT = "/v1/signals/values/import"
GOOD_LINE = (
    b'{"objectType": "company", "objectId": "ok.com", "signalTemplateId": "growth", "value": 5}'
)
ASSIGNMENTS_IMPORT = "/v1/scoring/assignments/import"


def ndjson(items: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in items).encode()


def as_csv(items: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["objectType", "objectId", "signalTemplateId", "value", "observedAt"])
    for item in items:
        writer.writerow(
            [
                item["objectType"],
                item["objectId"],
                item["signalTemplateId"],
                json.dumps(item["value"]),
                item.get("observedAt", ""),
            ]
        )
    return out.getvalue().encode()


def import_values(world: World, body: bytes, headers: dict[str, str] = NDJSON) -> Any:
    return world.call("POST", VALUES_IMPORT, content=body, headers=headers)


# Values by template, including spellings that are equal to others (5 and 5.0), lists that
# normalise (case duplicates, spaces) and null (delete).
CHOICES: dict[str, list[Any]] = {
    "employees": [5, 5.0, 874, -3.25, 1e15, None],
    "revenue": [0, 12.5, 1_000_000, None],
    "growth": [0, 100, 99.5, None],
    "is_b2b": [True, False, None],
    "crm": [[], ["HubSpot"], [" hubspot ", "HubSpot", "Salesforce"], ["Salesforce"], None],
}
OBJECTS = [f"c{i}.com" for i in range(12)]


def random_items(rng: random.Random, n: int) -> list[dict[str, Any]]:
    items = []
    for _ in range(n):
        template = rng.choice(sorted(CHOICES))
        item: dict[str, Any] = {
            "objectType": "company",
            # Some ids in a spelling that normalises to another (case).
            "objectId": rng.choice([*OBJECTS, "C1.COM", "C2.Com"]),
            "signalTemplateId": template,
            "value": rng.choice(CHOICES[template]),
        }
        if rng.random() < 0.3:
            item["observedAt"] = f"2026-0{rng.randint(1, 9)}-0{rng.randint(1, 9)}T00:00:00Z"
        items.append(item)
    return items


def two_worlds(
    client: TestClient, tenant: Tenant, other: Tenant, database: Database
) -> tuple[World, World]:
    """Two organisations set up alike: the same templates, profiles, rule, values, and half
    of `OBJECTS` assigned to the company profile, scores computed."""
    worlds = (build_world(client, tenant), build_world(client, other))
    for world in worlds:
        body = {"profileId": world.profile_id, "objectType": "company", "objectIds": OBJECTS[::2]}
        assert world.call("POST", "/v1/scoring/assignments/bulk", json=body).status_code == 201
    drain(database)
    return worlds


def stored_values(
    database: Database, org_id: str, since: datetime | None = None
) -> dict[tuple[str, str, str], Any]:
    """Every value of the organisation, with its `observedAt`, or "now" for one observed at
    or after `since` (defaulted to the time of a write since then)."""
    v = signal_values
    with database.read() as conn:
        rows = conn.execute(
            sa.select(
                v.c.object_type, v.c.object_id, v.c.signal_template_id, v.c.value, v.c.observed_at
            ).where(v.c.organization_id == org_id)
        ).all()
    return {
        (r[0], r[1], r[2]): (json.dumps(r[3]), "now" if since and r[4] >= since else r[4])
        for r in rows
    }


def updated_at(database: Database, org_id: str) -> dict[tuple[str, str, str], Any]:
    v = signal_values
    with database.read() as conn:
        rows = conn.execute(
            sa.select(v.c.object_type, v.c.object_id, v.c.signal_template_id, v.c.updated_at)
            .where(v.c.organization_id == org_id)
        ).all()  # fmt: skip
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def queued(database: Database, org_id: str) -> set[tuple[str, str]]:
    q = recompute_queue
    with database.read() as conn:
        rows = conn.execute(
            sa.select(q.c.object_type, q.c.object_id).where(q.c.organization_id == org_id)
        ).all()
    return {(r[0], r[1]) for r in rows}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_a_value_import_does_what_the_same_put_does(
    seed: int,
    fmt: str,
    client: TestClient,
    tenant: Tenant,
    other_tenant: Tenant,
    database: Database,
) -> None:
    """Organisation A writes random items with PUT /values, B imports the same items: the
    counts, the stored values, which values count as changed (`updatedAt` moved) and the
    queued objects are the same. Repeated keys, equal spellings, nulls and normalised ids
    included; half the objects are assigned, so queueing depends on what changed."""
    rng = random.Random(seed)
    since = datetime.now(UTC)  # the writes below default `observedAt` to times after this
    put_world, import_world = two_worlds(client, tenant, other_tenant, database)
    # Some values stored first, so that the items update, repeat and delete them.
    first = random_items(rng, 40)
    for world in (put_world, import_world):
        written = world.call("PUT", "/v1/signals/values", json={"values": first})
        assert written.status_code == 200, written.text
    drain(database)
    orgs = (put_world.tenant.org_id, import_world.tenant.org_id)
    before = {org: updated_at(database, org) for org in orgs}
    before_values = stored_values(database, import_world.tenant.org_id)

    items = random_items(rng, rng.randint(1, 300))
    by_put = put_world.call("PUT", "/v1/signals/values", json={"values": items})
    assert by_put.status_code == 200, by_put.text
    body = ndjson(items) if fmt == "ndjson" else as_csv(items)
    by_import = import_values(import_world, body, NDJSON if fmt == "ndjson" else CSV)
    assert by_import.status_code == 200, by_import.text
    assert by_import.json() == {**by_put.json(), "records": len(items)}

    a, b = put_world.tenant.org_id, import_world.tenant.org_id
    assert stored_values(database, b, since) == stored_values(database, a, since)
    after = {org: updated_at(database, org) for org in orgs}
    moved = {org: {k for k, at in after[org].items() if before[org].get(k) != at} for org in orgs}
    assert moved[b] == moved[a]
    # Queued, by both: exactly the assigned objects whose value of a template with a rule
    # (the world's one rule reads `employees`) changed, or was observed anew (scores show
    # each value's observedAt, SPEC §13); not an assigned object whose other values changed
    # in the same write.
    after_values = stored_values(database, b)
    observed_anew = {
        key for key, (_, at) in after_values.items() if key in before_values and
        before_values[key][1] != at
    }  # fmt: skip
    changed = moved[b] | observed_anew | (set(before_values) - set(after_values))
    expected = {
        (object_type, object_id)
        for object_type, object_id, template_id in changed
        if object_id in OBJECTS[::2] and template_id == "employees"
    }
    assert queued(database, b) == expected
    assert queued(database, a) == expected
    drain(database)
    assert_scores_fresh(database)


def test_a_bad_line_deep_in_a_large_import_writes_nothing(world: World, database: Database) -> None:
    """30,000 good lines and one bad one near the end: 422 naming that line only, nothing
    written or queued; the same body without the bad line then loads whole (so no staging
    state was left behind)."""
    items = [
        {
            "objectType": "company",
            "objectId": f"bulk{i}.com",
            "signalTemplateId": "employees",
            "value": i,
        }
        for i in range(30_000)
    ]
    bad = [*items[:27_000], {**items[0], "value": "many"}, *items[27_000:]]
    before = snapshot(database)
    response = import_values(world, ndjson(bad))
    error = assert_error(
        response,
        422,
        "VALIDATION_ERROR",
        error_code="INVALID_NUMBER",
        fields=["lines[27001].value"],
    )
    assert error["details"] == {"badLines": 1, "listed": 1}
    assert snapshot(database) == before

    response = import_values(world, ndjson(items))
    assert response.status_code == 200, response.text
    assert response.json() == {"records": 30_000, "written": 30_000, "deleted": 0, "unchanged": 0}
    assert len(stored_values(database, world.tenant.org_id)) == 30_000 + 2


def test_every_bad_line_is_reported_by_number(world: World, database: Database) -> None:
    good = (
        '{"objectType": "company", "objectId": "ok.com", "signalTemplateId": "growth", "value": 5}'
    )
    lines = [
        good,  # 1
        "{not json",  # 2
        "[1, 2]",  # 3
        "",  # 4: blank lines are skipped
        '{"objectType": "company", "objectId": "a.com", "signalTemplateId": "nope", "value": 1}',
        '{"objectType": "contact", "objectId": "https://linkedin.com/in/x", '
        '"signalTemplateId": "growth", "value": 1}',  # 6: the template is for companies
        '{"objectType": "company", "objectId": "a.com", "signalTemplateId": "growth", '
        '"value": 101}',  # 7
        '{"objectType": "company", "objectId": "not a domain", "signalTemplateId": "growth", '
        '"value": 1}',  # 8
        '{"objectType": "company", "objectId": "a.com", "signalTemplateId": "crm", '
        '"value": ["ok", 5]}',  # 9
        '{"objectType": "company", "objectId": "a\\u0000.com", "signalTemplateId": "growth", '
        '"value": 1}',  # 10
        '{"objectType": "company", "objectId": "a.com", "signalTemplateId": "growth", '
        '"value": 1, "extra": 1}',  # 11
        good,  # 12
    ]
    before = snapshot(database)
    response = import_values(world, "\n".join(lines).encode())
    error = assert_error(response, 422, "VALIDATION_ERROR")
    fields = [(f["field"], f["code"]) for f in error["fields"]]
    assert [field for field, _ in fields] == [
        "lines[2]",
        "lines[3]",
        "lines[5].signalTemplateId",
        "lines[6].signalTemplateId",
        "lines[7].value",
        "lines[8].objectId",
        "lines[9].value[1]",
        "lines[10].objectId",
        "lines[11].extra",
    ]
    codes = dict(fields)
    assert codes["lines[2]"] == "MALFORMED_JSON"
    assert codes["lines[5].signalTemplateId"] == "TEMPLATE_NOT_FOUND"
    assert codes["lines[6].signalTemplateId"] == "OBJECT_TYPE_MISMATCH"
    assert codes["lines[7].value"] == "PERCENTAGE_OUT_OF_RANGE"
    assert codes["lines[10].objectId"] == "INVALID_CHARACTER"
    assert error["details"] == {"badLines": 9, "listed": 9}
    assert snapshot(database) == before


def test_a_hundred_errors_are_listed_and_every_bad_line_counted(world: World) -> None:
    items = [
        {"objectType": "company", "objectId": f"x{i}.com", "signalTemplateId": "growth",
         "value": 500 if i % 2 else 5}
        for i in range(1000)
    ]  # fmt: skip
    error = assert_error(import_values(world, ndjson(items)), 422, "VALIDATION_ERROR")
    assert error["details"] == {"badLines": 500, "listed": 100}
    assert [f["field"] for f in error["fields"]] == [
        f"lines[{2 * i + 2}].value" for i in range(100)
    ]
    assert "500 line(s)" in error["message"]


def test_csv_specifics(world: World, database: Database) -> None:
    org = world.tenant.org_id
    body = (
        "\ufeffobjectId,objectType,value,signalTemplateId\n"  # any column order, a BOM
        'stripe.com,company,"[""Salesforce"", "" hubspot "", ""HubSpot""]",crm\n'
        "\n"
        "stripe.com,company,874,employees\n"
        "acme.com,company,null,employees\n"  # null deletes
        'stripe.com,company,"true",is_b2b\n'
    )
    response = import_values(world, body.encode(), CSV)
    assert response.status_code == 200, response.text
    assert response.json() == {"records": 4, "written": 3, "deleted": 1, "unchanged": 0}
    values = stored_values(database, org)
    assert values[("company", "stripe.com", "crm")][0] == '["Salesforce", "hubspot"]'
    assert ("company", "acme.com", "employees") not in values

    bad = (
        "objectType,objectId,signalTemplateId,value,observedAt\n"
        "company,a.com,employees,,\n"  # 2: an empty value is refused, not a delete
        "company,a.com,employees,5\n"  # 3: a field short
        'company,"b.com\nc.com",employees,x,\n'  # 4-5: one record over two lines
        "company,d.com,employees,5,yesterday\n"  # 6
    )
    before = snapshot(database)
    error = assert_error(import_values(world, bad.encode(), CSV), 422, "VALIDATION_ERROR")
    assert [(f["field"], f["code"]) for f in error["fields"]] == [
        ("lines[2].value", "INVALID_CELL"),
        ("lines[3]", "INVALID_CSV"),
        ("lines[4].value", "INVALID_CELL"),
        ("lines[6].observedAt", error["fields"][3]["code"]),
    ]
    for header in ("objectType,objectId,value\n", "objectType,objectId,signalTemplateId,value,x\n"):
        error = assert_error(
            import_values(world, (header + "company,a.com,employees,5\n").encode(), CSV),
            422,
            "VALIDATION_ERROR",
            error_code="INVALID_HEADER",
        )
        assert [f["field"] for f in error["fields"]] == ["lines[1]"]
    assert snapshot(database) == before


def _nested(levels: int) -> Any:
    value: Any = ["x"]
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *((f"{n} levels of lists", _nested(n)) for n in (30, 31, 32, 33)),
        ("an escape", ["\u0041", "b"]),
        ("an escaped NUL", ["a\x00b"]),
        ("9,996 keys", {f"k{i}": 1 for i in range(9_996)}),  # with the record's 4: the limit
        ("9,997 keys", {f"k{i}": 1 for i in range(9_997)}),
        ("colons in strings", ["a:b"] * 50),
    ],
)
def test_csv_and_ndjson_records_agree_at_the_structural_limits(
    world: World, name: str, value: Any
) -> None:
    """A CSV record is checked as the same NDJSON line is (`imports`: both skip the
    structural walk when their text shows it would find nothing), at the limits of nesting
    and keys: the same answer, naming the same field."""
    item = {"objectType": "company", "objectId": "a.com", "signalTemplateId": "crm", "value": value}
    cells = io.StringIO()
    csv.writer(cells, lineterminator="\n").writerow(["company", "b.com", "crm", json.dumps(value)])
    answers = []
    for body, headers, line in (
        (ndjson([item]), NDJSON, 1),
        (f"objectType,objectId,signalTemplateId,value\n{cells.getvalue()}".encode(), CSV, 2),
    ):
        response = import_values(world, body, headers)
        answer = response.json()
        if response.status_code == 422:
            answer = [
                (f["field"].replace(f"lines[{line}]", "lines[n]"), f["code"])
                for f in answer["error"]["fields"]
            ]
        answers.append((response.status_code, answer))
    assert answers[0] == answers[1], name
    assert answers[0][0] == (200 if name in ("an escape", "colons in strings") else 422), answers


def test_media_types_empty_bodies_and_size(world: World, database: Database) -> None:
    before = snapshot(database)
    line = GOOD_LINE + b"\n"
    assert_error(
        world.call(
            "POST", VALUES_IMPORT, content=line, headers={"content-type": "application/json"}
        ),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    assert_error(import_values(world, b""), 422, "VALIDATION_ERROR", error_code="EMPTY_IMPORT")
    assert_error(import_values(world, b"\n\n"), 422, "VALIDATION_ERROR", error_code="EMPTY_IMPORT")
    assert_error(
        import_values(world, b"objectType,objectId,signalTemplateId,value\n", CSV),
        422,
        "VALIDATION_ERROR",
        error_code="EMPTY_IMPORT",
    )
    assert snapshot(database) == before
    # Over the 5 MiB of a JSON body: an import streams it.
    big = b"".join(
        b'{"objectType": "company", "objectId": "big%d.com", "signalTemplateId": "growth", '
        b'"value": 1}\n' % i
        for i in range(70_000)
    )
    assert len(big) > 5 * 1024 * 1024
    response = import_values(world, big)
    assert response.status_code == 200, response.text
    assert response.json()["written"] == 70_000


def test_an_overlong_line_is_an_error_not_a_memory_spike(world: World, database: Database) -> None:
    before = snapshot(database)
    huge = b'{"objectType": "company", "objectId": "' + b"a" * (2 * 1024 * 1024) + b'"}\n'
    line = GOOD_LINE + b"\n"
    error = assert_error(
        import_values(world, line + huge + b"{broken\n" + line), 422, "VALIDATION_ERROR"
    )
    assert [(f["field"], f["code"]) for f in error["fields"]] == [
        ("lines[2]", "LINE_TOO_LONG"),
        ("lines[3]", "MALFORMED_JSON"),
    ]
    assert snapshot(database) == before


def import_assignments(world: World, body: str, headers: dict[str, str] = CSV, **params: str):
    return world.call(
        "POST",
        ASSIGNMENTS_IMPORT,
        content=body.encode(),
        headers=headers,
        params={"profileId": world.profile_id, **params},
    )


def test_an_assignment_import_assigns_new_objects_and_queues_them(
    world: World, database: Database
) -> None:
    org = world.tenant.org_id
    assert world.call(
        "POST", "/v1/scoring/assignments",
        json={"profileId": world.profile_id, "objectType": "company", "objectId": "acme.com"},
    ).status_code == 201  # fmt: skip
    drain(database)
    body = "objectId\nacme.com\nnew1.com\nNEW1.com\nNew2.com\n" + "".join(
        f"n{i}.com\n" for i in range(6000)
    )
    response = import_assignments(world, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"records": 6004, "assigned": 6002, "alreadyAssigned": 1}
    assert queued(database, org) == {("company", "new1.com"), ("company", "new2.com")} | {
        ("company", f"n{i}.com") for i in range(6000)
    }
    listed = world.call(
        "GET", "/v1/scoring/assignments", params={"objectType": "company", "objectId": "new2.com"}
    ).json()
    assert [a["profileId"] for a in listed] == [world.profile_id]
    drain(database)
    assert_scores_fresh(database)
    # NDJSON, with objectType; importing the same objects again assigns none.
    again = import_assignments(
        world,
        '{"objectId": "new1.com", "objectType": "company"}\n{"objectId": "n5.com"}\n',
        NDJSON,
    )
    assert again.json() == {"records": 2, "assigned": 0, "alreadyAssigned": 2}
    assert queued(database, org) == set()


def test_assignment_import_errors(world: World, database: Database) -> None:
    before = snapshot(database)
    body = (
        '{"objectId": "a.com"}\n'
        '{"objectId": "https://linkedin.com/in/x", "objectType": "contact"}\n'
        '{"objectId": "not a domain"}\n'
        '{"objectId": 5}\n'
        '{"object": "a.com"}\n'
    )
    error = assert_error(import_assignments(world, body, NDJSON), 422, "VALIDATION_ERROR")
    assert [(f["field"], f["code"]) for f in error["fields"]] == [
        ("lines[2].objectType", "OBJECT_TYPE_MISMATCH"),
        ("lines[3].objectId", "INVALID_DOMAIN"),
        ("lines[4].objectId", "INVALID_OBJECT_ID"),
        ("lines[5].object", "UNKNOWN_FIELD"),
    ]
    assert_error(
        world.call(
            "POST",
            ASSIGNMENTS_IMPORT,
            content=b"objectId\na.com\n",
            headers=CSV,
            params={"profileId": "00000000-0000-0000-0000-000000000000"},
        ),
        404,
        "NOT_FOUND",
    )
    assert_error(
        import_assignments(world, "objectId\na.com\n", profileId="not-a-uuid"), 404, "NOT_FOUND"
    )
    assert snapshot(database) == before
