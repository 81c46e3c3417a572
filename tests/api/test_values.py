"""Signal values through HTTP: typed writes, counts, normalisation, ordering, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.api.conftest import World
from tests.helpers import assert_error


def item(object_id: str, template: str, value: Any, object_type: str = "company", **extra: Any):
    return {
        "objectType": object_type,
        "objectId": object_id,
        "signalTemplateId": template,
        "value": value,
        **extra,
    }


def write(world: World, *items: dict[str, Any]) -> Any:
    return world.call("PUT", "/v1/signals/values", json={"values": list(items)})


def read(world: World, *object_ids: str, object_type: str = "company") -> list[dict[str, Any]]:
    params = [("objectType", object_type)] + [("objectId", o) for o in object_ids]
    response = world.call("GET", "/v1/signals/values", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()
    return result


def test_every_answer_type_round_trips(world: World) -> None:
    observed = "2026-01-02T03:04:05Z"
    response = write(
        world,
        item("stripe.com", "employees", 874),
        item("stripe.com", "revenue", 12.5),
        item("stripe.com", "growth", 100),
        item("stripe.com", "is_b2b", False),
        item(
            "stripe.com",
            "crm",
            [" Salesforce ", "HubSpot", "salesforce", "hubspot "],
            observedAt=observed,
        ),
    )
    assert response.status_code == 200
    assert response.json() == {"written": 5, "deleted": 0, "unchanged": 0}
    rows = read(world, "stripe.com")
    assert [r["signalTemplateId"] for r in rows] == [
        "crm",
        "employees",
        "growth",
        "is_b2b",
        "revenue",
    ]
    by_template = {r["signalTemplateId"]: r for r in rows}
    assert by_template["crm"]["value"] == ["Salesforce", "HubSpot"]  # trimmed, deduplicated
    assert by_template["employees"]["value"] == 874
    assert by_template["revenue"]["value"] == 12.5
    assert by_template["growth"]["value"] == 100
    assert by_template["is_b2b"]["value"] is False
    assert by_template["crm"]["observedAt"] == observed
    for row in rows:
        assert set(row) == {
            "objectType",
            "objectId",
            "signalTemplateId",
            "value",
            "observedAt",
            "updatedAt",
        }
        assert row["objectType"] == "company"
        assert row["objectId"] == "stripe.com"
    # observedAt defaults to the time of the write.
    written_at = datetime.fromisoformat(
        by_template["employees"]["observedAt"].replace("Z", "+00:00")
    )
    assert abs((datetime.now(UTC) - written_at).total_seconds()) < 60


def test_counts_written_deleted_unchanged(world: World) -> None:
    # acme.com already has employees=50 and crm=["HubSpot"] from the world.
    response = write(
        world,
        item("acme.com", "employees", 50.0),  # same number: unchanged
        item("acme.com", "crm", None),  # delete
        item("acme.com", "growth", None),  # delete of nothing: unchanged
        item("acme.com", "revenue", 10),  # new: written
    )
    assert response.json() == {"written": 1, "deleted": 1, "unchanged": 2}
    assert {r["signalTemplateId"]: r["value"] for r in read(world, "acme.com")} == {
        "employees": 50,
        "revenue": 10,
    }


def test_unchanged_value_keeps_updated_at(world: World) -> None:
    before = {r["signalTemplateId"]: r for r in read(world, "acme.com")}
    write(world, item("acme.com", "employees", 50))
    after = {r["signalTemplateId"]: r for r in read(world, "acme.com")}
    assert after["employees"]["updatedAt"] == before["employees"]["updatedAt"]
    write(world, item("acme.com", "employees", 51))
    changed = {r["signalTemplateId"]: r for r in read(world, "acme.com")}
    assert changed["employees"]["updatedAt"] != before["employees"]["updatedAt"]


def test_last_item_wins_for_repeated_keys_after_normalisation(world: World) -> None:
    response = write(
        world,
        item("Beta.IO", "employees", 1),
        item("beta.io.", "employees", 2),
        item("BETA.io", "employees", 3),
    )
    assert response.json() == {"written": 1, "deleted": 0, "unchanged": 0}
    assert [r["value"] for r in read(world, "beta.io")] == [3]


def test_domains_normalise_to_one_object(world: World) -> None:
    write(world, item("Acme.COM.", "revenue", 99))
    rows = read(world, "acme.com")
    assert {r["objectId"] for r in rows} == {"acme.com"}
    assert read(world, "ACME.com.") == rows


def test_linkedin_urls_normalise_to_one_contact(world: World) -> None:
    write(world, item("linkedin.com/in/JaneDoe/?trk=x", "seniority", ["VP"], "contact"))
    canonical = "https://www.linkedin.com/in/janedoe"
    rows = read(world, canonical, object_type="contact")
    assert [r["objectId"] for r in rows] == [canonical]
    for spelling in (
        "http://uk.linkedin.com/in/janedoe#about",
        "www.linkedin.com/in/JANEDOE/",
        "https://linkedin.com/in/janedoe?x=1",
    ):
        assert read(world, spelling, object_type="contact") == rows
    response = write(
        world, item("https://www.linkedin.com/in/janedoe", "seniority", ["VP"], "contact")
    )
    assert response.json()["unchanged"] == 1


def test_read_orders_by_request_then_template_and_skips_unknown(world: World) -> None:
    write(
        world,
        item("zeta.com", "revenue", 1),
        item("zeta.com", "employees", 2),
        item("alpha.com", "employees", 3),
    )
    rows = read(world, "zeta.com", "nothing.com", "alpha.com", "acme.com", "zeta.com")
    assert [(r["objectId"], r["signalTemplateId"]) for r in rows] == [
        ("zeta.com", "employees"),
        ("zeta.com", "revenue"),
        ("alpha.com", "employees"),
        ("acme.com", "crm"),
        ("acme.com", "employees"),
    ]
    assert read(world, "acme.com", object_type="company") != []
    assert read(world, "https://www.linkedin.com/in/nobody", object_type="contact") == []


def test_a_batch_of_1000_is_accepted_atomically(world: World) -> None:
    items = [item(f"c{i}.com", "employees", i) for i in range(1000)]
    assert write(world, *items).json() == {"written": 1000, "deleted": 0, "unchanged": 0}
    bad = [item(f"d{i}.com", "employees", i) for i in range(999)] + [
        item("d999.com", "employees", "many")
    ]
    assert_error(write(world, *bad), 422, "VALIDATION_ERROR", fields=["values[999].value"])
    assert read(world, "d0.com", "d500.com") == []
