"""The client against the live server, on both backends: every endpoint, chunking over the
JSON endpoints' limits, and the paginated iterators."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx2 as httpx
import pytest

from conftest import LiveServer
from signalscore_client import ApiError, AsyncClient, Client, models

RANGES = {
    "ranges": [
        {"min": None, "max": 100, "points": 0},
        {"min": 100, "max": 1000, "points": 10},
        {"min": 1000, "max": None, "points": 20},
    ]
}
CHOICES = {"choices": {"Salesforce": 10, "HubSpot": 5}, "mode": "additive"}


def tag() -> str:
    return secrets.token_hex(4)


def domains(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}.example.com" for i in range(count)]


def test_every_endpoint_with_chunking_and_ranked_pages(server: LiveServer) -> None:
    t = tag()
    objects = domains(f"live-{t}", 1200)
    with Client(server.url, server.key) as client:
        assert client.health() == {"status": "ok"}
        assert client.ready()["status"] == "ready"
        assert len(client.organization()["id"]) == 24

        employees = client.create_template(f"Employees {t}", "company", "number", id=f"emp-{t}")
        crm = client.create_template(f"CRM {t}", "company", "list", id=f"crm-{t}")
        assert client.get_template(employees["id"]) == employees
        renamed = client.update_template(crm["id"], description="the CRM in use")
        assert renamed["description"] == "the CRM in use"
        assert renamed["name"] == crm["name"]
        listed = [x["id"] for x in client.list_templates("company")]
        assert {employees["id"], crm["id"]} <= set(listed)

        profile = client.create_profile(
            "company",
            f"Live {t}",
            tiers={"fit": [{"name": "A", "minScore": 60}, {"name": "B", "minScore": 0}]},
        )
        assert client.get_profile(profile["id"]) == profile
        assert profile["id"] in [p["id"] for p in client.list_profiles()]
        updated = client.update_profile(profile["id"], f"Live {t} renamed")
        assert updated["tiers"] == profile["tiers"]  # omitted: kept
        rule = client.put_rule(profile["id"], employees["id"], "fit", "number", RANGES)
        crm_rule = client.put_rule(profile["id"], crm["id"], "fit", "list", CHOICES)
        assert [r["id"] for r in client.list_rules(profile["id"])] == [rule["id"], crm_rule["id"]]

        # 2,400 values: three PUT calls of at most 1,000.
        values: list[models.SignalValueIn] = []
        for i, domain in enumerate(objects):
            values.append(
                {
                    "objectType": "company",
                    "objectId": domain,
                    "signalTemplateId": employees["id"],
                    "value": i * 2,
                }
            )
            crm_value = ["Salesforce"] if i % 3 == 0 else ["HubSpot", "Pipedrive"]
            values.append(
                {
                    "objectType": "company",
                    "objectId": domain.upper(),
                    "signalTemplateId": crm["id"],
                    "value": crm_value,
                }
            )
        assert client.put_values(values) == {"written": 2400, "deleted": 0, "unchanged": 0}
        assert client.put_values(values[:10]) == {"written": 0, "deleted": 0, "unchanged": 10}
        read = client.get_values("company", objects)  # twelve reads of 100
        assert len(read) == 2400
        assert [v["objectId"] for v in read[::2]] == objects  # in the ids' order

        # 1,200 ids: three bulk calls of at most 500; again: nothing new.
        created = client.assign_bulk(profile["id"], "company", objects)
        assert [a["objectId"] for a in created] == objects
        assert client.assign_bulk(profile["id"], "company", objects) == []
        assert client.compute("company", objects) == {"queued": 1200, "failed": 0}
        client.wait_idle(timeout=120)

        scores = client.get_scores("company", objects, profile_id=profile["id"])
        assert [s["objectId"] for s in scores] == objects
        expected = sorted(scores, key=lambda s: (-s["score"], s["objectId"]))
        ranked = list(client.iter_ranked_scores(profile["id"], "fit", page_size=97))
        assert [r["id"] for r in ranked] == [s["id"] for s in expected]
        assert ranked[0]["tier"] == "A"
        first = client.list_ranked_scores(profile["id"], "fit", limit=5, order="asc")
        assert len(first["data"]) == 5
        assert first["nextCursor"]
        tier_b = list(client.iter_ranked_scores(profile["id"], "fit", tier="B"))
        assert {r["id"] for r in tier_b} == {s["id"] for s in scores if s["tier"] == "B"}
        distribution = client.get_distribution(profile["id"], "fit", buckets=4)
        assert distribution["scored"] == 1200
        assert sum(b["count"] for b in distribution["histogram"]) == 1200

        # Preview (SPEC §12): the current rules change nothing; the crm rule alone, with a
        # decay that has not passed (values observed now), moves scores; a sample of 50.
        current: list[models.RuleUpsert] = [
            {"signalTemplateId": employees["id"], "dimension": "fit", "answerType": "number",
             "pointValues": RANGES},
            {"signalTemplateId": crm["id"], "dimension": "fit", "answerType": "list",
             "pointValues": CHOICES},
        ]  # fmt: skip
        same = client.preview_profile(profile["id"], current)
        assert (same["objects"], same["sampled"]) == (1200, False)
        assert same["dimensions"]["fit"]["before"] == client.get_distribution(profile["id"], "fit")
        assert same["dimensions"]["fit"]["after"] == same["dimensions"]["fit"]["before"]
        decay: models.Decay = {"steps": [{"afterDays": 30, "factor": 0.5}]}
        only_crm: list[models.RuleUpsert] = [{**current[1], "decay": decay}]
        moved = client.preview_profile(profile["id"], only_crm, tiers=None, sample_size=50)
        assert (moved["objects"], moved["sampled"]) == (50, True)
        assert moved["dimensions"]["fit"]["topMovers"]
        assert moved["dimensions"]["fit"]["after"]["tiers"] == []  # previewed without tiers
        decaying = client.put_rule(profile["id"], crm["id"], "fit", "list", CHOICES, decay=decay)
        assert decaying["decay"] == decay
        assert client.put_rule(profile["id"], crm["id"], "fit", "list", CHOICES)["decay"] is None
        client.wait_idle(timeout=120)

        extra = f"single-{t}.example.com"
        single = client.create_assignment(profile["id"], "company", extra)
        assert client.create_assignment(profile["id"], "company", extra)["id"] == single["id"]
        assert [a["id"] for a in client.list_assignments("company", extra)] == [single["id"]]
        client.delete_assignment(single["id"])
        assert client.list_assignments("company", extra) == []

        with pytest.raises(ApiError) as in_use:
            client.delete_template(employees["id"])
        assert in_use.value.status == 409
        assert in_use.value.error_code == "TEMPLATE_IN_USE"
        client.delete_rule(profile["id"], rule["id"])
        client.delete_template(employees["id"])
        with pytest.raises(ApiError) as gone:
            client.get_template(employees["id"])
        assert gone.value.status == 404
        assert gone.value.request_id
        client.delete_profile(profile["id"])
        with pytest.raises(ApiError) as missing:
            client.get_profile(profile["id"])
        assert missing.value.error_code == "PROFILE_NOT_FOUND"
        status = client.compute_status()
        assert set(status) == {"pending", "running", "oldestPendingSeconds"}


def test_one_bad_item_in_a_chunk_rejects_that_chunk_with_its_path(server: LiveServer) -> None:
    t = tag()
    with Client(server.url, server.key) as client:
        template = client.create_template(f"Pct {t}", "company", "percentage", id=f"pct-{t}")
        items: list[models.SignalValueIn] = [
            {
                "objectType": "company",
                "objectId": f"bad-{t}-{i}.com",
                "signalTemplateId": template["id"],
                "value": 140 if i == 7 else 50,
            }
            for i in range(10)
        ]
        with pytest.raises(ApiError) as caught:
            client.put_values(items)
        assert caught.value.status == 422
        assert [f["field"] for f in caught.value.fields] == ["values[7].value"]
        assert client.get_values("company", [f"bad-{t}-0.com"]) == []


def test_imports_through_the_client(server: LiveServer) -> None:
    t = tag()
    with Client(server.url, server.key) as client:
        template = client.create_template(f"Bool {t}", "company", "boolean", id=f"bool-{t}")
        profile = client.create_profile("company", f"Import {t}")
        body = "objectType,objectId,signalTemplateId,value\n" + "".join(
            f"company,imp-{t}-{i}.com,{template['id']},{'true' if i % 2 else 'false'}\n"
            for i in range(50)
        )
        assert client.import_values(body, format="csv") == {
            "records": 50,
            "written": 50,
            "deleted": 0,
            "unchanged": 0,
        }
        ids = "".join(f'{{"objectId": "imp-{t}-{i}.com"}}\n' for i in range(50))
        result = client.import_assignments(profile["id"], ids, format="ndjson")
        assert result == {"records": 50, "assigned": 50, "alreadyAssigned": 0}


def test_the_async_client(server: LiveServer) -> None:
    t = tag()
    objects = domains(f"async-{t}", 1500)

    async def run() -> None:
        async with AsyncClient(server.url, server.key) as client:
            assert (await client.organization())["id"]
            template = await client.create_template(f"N {t}", "company", "number", id=f"n-{t}")
            profile = await client.create_profile("company", f"Async {t}")
            await client.put_rule(profile["id"], template["id"], "fit", "number", RANGES)
            values: list[models.SignalValueIn] = [
                {
                    "objectType": "company",
                    "objectId": o,
                    "signalTemplateId": template["id"],
                    "value": i,
                }
                for i, o in enumerate(objects)
            ]
            assert (await client.put_values(values))["written"] == 1500
            assert len(await client.get_values("company", objects)) == 1500
            assert len(await client.assign_bulk(profile["id"], "company", objects)) == 1500
            await client.wait_idle(timeout=120)
            rows = [row async for row in client.iter_ranked_scores(profile["id"], "fit")]
            assert len(rows) == 1500
            assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
            with pytest.raises(ApiError) as caught:
                await client.get_profile("not-a-uuid")
            assert caught.value.status == 404

    asyncio.run(run())


def test_configuration_from_the_environment(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNALSCORE_URL", server.url + "/")
    monkeypatch.setenv("SIGNALSCORE_API_KEY", server.key)
    with Client() as client:
        assert client.base_url == server.url
        assert client.organization()["id"]
    monkeypatch.delenv("SIGNALSCORE_API_KEY")
    with Client() as client, pytest.raises(ApiError) as caught:
        client.organization()
    assert caught.value.status == 401


def events_endpoint_exists(server: LiveServer) -> bool:
    paths: dict[str, Any] = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    return "/v1/events" in paths


def test_the_event_iterator(server: LiveServer) -> None:
    if not events_endpoint_exists(server):
        pytest.skip("GET /v1/events (SPEC §10) is not in this server yet")
    t = tag()
    with Client(server.url, server.key) as client:
        start = 0
        for event in client.iter_events(after=0):
            start = event["sequence"]
        template = client.create_template(f"E {t}", "company", "number", id=f"e-{t}")
        profile = client.create_profile("company", f"Events {t}")
        client.put_rule(profile["id"], template["id"], "fit", "number", RANGES)
        objects = domains(f"ev-{t}", 30)
        client.assign_bulk(profile["id"], "company", objects)
        client.wait_idle(timeout=60)
        events = list(client.iter_events(after=start, profile_id=profile["id"], page_size=7))
        sequences = [e["sequence"] for e in events]
        assert sequences == sorted(set(sequences))
        assert {e["objectId"] for e in events if e["type"] == "score.created"} == set(objects)
        history = list(
            client.iter_history("company", objects[0], profile_id=profile["id"], page_size=1)
        )
        assert history
        assert {e["objectId"] for e in history} == {objects[0]}
        assert [e["sequence"] for e in history] == sorted(
            (e["sequence"] for e in history), reverse=True
        )

    async def follow() -> list[int]:
        async with AsyncClient(server.url, server.key) as client:
            return [
                e["sequence"]
                async for e in client.iter_events(after=start, profile_id=profile["id"])
            ]

    assert asyncio.run(follow()) == sequences
