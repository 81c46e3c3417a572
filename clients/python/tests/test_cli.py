"""The `signalscore-client` command line, run as a subprocess against the live server on
both backends: a push SIGKILLed halfway and resumed, bad lines by file line number, exports
that round-trip through push, and the event feed."""

from __future__ import annotations

import csv
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import CLIENT_CLI, LiveServer, dump_values, run_cli
from signalscore_client import Client
from signalscore_client.models import AnswerType

RANGES = {
    "ranges": [
        {"min": None, "max": 100, "points": 0},
        {"min": 100, "max": 1000, "points": 10},
        {"min": 1000, "max": None, "points": 20},
    ]
}
TEMPLATES = 20  # per object in the 100,000-line file: t00 number ... t19


def make_templates(server: LiveServer, key: str, prefix: str) -> None:
    with Client(server.url, key) as client:
        for i in range(TEMPLATES):
            answer: AnswerType = "list" if i % 5 == 4 else "boolean" if i % 5 == 3 else "number"
            client.create_template(f"{prefix} {i}", "company", answer, id=f"{prefix}-t{i:02d}")


def write_values_csv(path: Path, prefix: str, companies: int) -> int:
    """companies x TEMPLATES lines, every value kind: numbers, booleans, list values as JSON
    arrays (quoted, with a comma inside), some with observedAt. Returns the line count."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["objectType", "objectId", "signalTemplateId", "value", "observedAt"])
        for c in range(companies):
            for i in range(TEMPLATES):
                if i % 5 == 4:
                    value = json.dumps(["Salesforce", f"tool {c % 7}"])
                elif i % 5 == 3:
                    value = "true" if (c + i) % 2 else "false"
                else:
                    value = str(c * 37 % 5000 + i)
                observed = f"2026-0{1 + c % 9}-1{i % 10}T08:00:00Z" if c % 4 == 0 else ""
                writer.writerow(
                    ["company", f"co{c:06d}.{prefix}.test", f"{prefix}-t{i:02d}", value, observed]
                )
    return 1 + companies * TEMPLATES


def all_values(server: LiveServer, key: str, prefix: str, companies: int) -> list[Any]:
    """Every value of the organisation from the database itself, with its observedAt where
    the file gives one (elsewhere it is the time of the write, which differs between two
    loads)."""
    with Client(server.url, key) as client:
        org = client.organization()["id"]
    return [
        (
            object_type,
            object_id,
            template,
            value,
            observed if int(object_id[2:8]) % 4 == 0 else None,
        )
        for object_type, object_id, template, value, observed in dump_values(server, org)
        if object_id.endswith(f".{prefix}.test")
    ]


def api_values(server: LiveServer, key: str, object_ids: list[str]) -> list[Any]:
    with Client(server.url, key) as client:
        return [
            (
                v["objectId"],
                v["signalTemplateId"],
                v["value"],
                v["observedAt"] if int(v["objectId"][2:8]) % 4 == 0 else None,
            )
            for v in client.get_values("company", object_ids)
        ]


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return data


def test_push_killed_halfway_then_resumed_equals_a_one_shot_load(
    server: LiveServer, tmp_path: Path
) -> None:
    prefix = "k" + secrets.token_hex(3)
    companies = 5000
    key_a, key_b = server.keys[1], server.keys[2]
    make_templates(server, key_a, prefix)
    make_templates(server, key_b, prefix)
    data = tmp_path / "values.csv"
    lines = write_values_csv(data, prefix, companies)
    assert lines == 100_001  # the header and 100,000 values

    # One shot, into organisation B.
    one_shot = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(data),
        "--checkpoint",
        str(tmp_path / "b.json"),
        key=key_b,
    )
    assert one_shot.returncode == 0, one_shot.stderr
    assert json.loads(one_shot.stdout)["written"] == 100_000

    # Into organisation A in chunks of 10,000 lines, SIGKILLed once a few are confirmed.
    checkpoint = tmp_path / "a.json"
    env = {**os.environ, "SIGNALSCORE_URL": server.url, "SIGNALSCORE_API_KEY": key_a}
    command = [
        str(CLIENT_CLI),
        "--no-progress",
        "push",
        "values",
        str(data),
        "--chunk-lines",
        "10000",
        "--checkpoint",
        str(checkpoint),
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while True:
        state = read_checkpoint(checkpoint)
        if state and state["chunks"] >= 3:
            process.send_signal(signal.SIGKILL)
            break
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.002)
    process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed = read_checkpoint(checkpoint)
    assert killed is not None
    assert 3 <= killed["chunks"] < 10, "not killed halfway"
    assert killed["line"] == 2 + killed["chunks"] * 10_000

    resumed = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(data),
        "--chunk-lines",
        "10000",
        "--checkpoint",
        str(checkpoint),
        "--resume",
        key=key_a,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {data} at line {killed['line']}" in resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumedAtLine"] == killed["line"]
    assert summary["chunks"] == 10
    # Every line was confirmed exactly once. A chunk the server committed in the moment of
    # the kill, before the checkpoint saw it, is sent again and then counts as unchanged:
    # the values were already there, nothing is written twice.
    assert summary["records"] == 100_000
    assert summary["deleted"] == 0
    assert summary["written"] + summary["unchanged"] == 100_000
    assert summary["unchanged"] in (0, 10_000)

    loaded_a = all_values(server, key_a, prefix, companies)
    assert len(loaded_a) == 100_000
    assert loaded_a == all_values(server, key_b, prefix, companies)
    sample = [f"co{c:06d}.{prefix}.test" for c in range(0, companies, 25)]
    assert api_values(server, key_a, sample) == api_values(server, key_b, sample)

    # Resuming a finished push sends nothing.
    again = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(data),
        "--chunk-lines",
        "10000",
        "--checkpoint",
        str(checkpoint),
        "--resume",
        key=key_a,
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["chunks"] == 10
    # Another organisation's key cannot continue this load.
    other = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(data),
        "--checkpoint",
        str(checkpoint),
        "--resume",
        key=key_b,
    )
    assert other.returncode == 2
    assert "is of a load into organisation" in other.stderr


def test_bad_lines_are_reported_by_file_line_and_their_chunk_is_not_applied(
    server: LiveServer, tmp_path: Path
) -> None:
    prefix = "b" + secrets.token_hex(3)
    with Client(server.url, server.key) as client:
        client.create_template("n", "company", "number", id=f"{prefix}-n")
        client.create_template("l", "company", "list", id=f"{prefix}-l")
    rows = ["objectType,objectId,signalTemplateId,value"]
    for i in range(2, 32):  # records; record i is on file line i + 1 from i = 5 on
        if i == 4:
            # One record on two lines (a JSON array broken after its comma): lines 4 and 5.
            rows.append(f'company,m{i}.{prefix}.test,{prefix}-l,"[""a"",\n""b""]"')
            continue
        rows.append(f"company,c{i}.{prefix}.test,{prefix}-n,{i}")
    good = "\n".join(rows) + "\n"
    lines = good.split("\n")
    # Physical file line k is lines[k - 1]; lines 4-5 are one record.
    bad = list(lines)
    bad[17 - 1] = f"company,c17.{prefix}.test,{prefix}-n,abc"  # not JSON
    bad[19 - 1] = f"company,https://c19.{prefix}.test/x,{prefix}-n,19"  # not a domain
    bad[20 - 1] = f"company,c20.{prefix}.test,{prefix}-missing,20"  # no such template
    path = tmp_path / "values.csv"
    path.write_text("\n".join(bad))
    checkpoint = tmp_path / "c.json"

    result = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(path),
        "--chunk-lines",
        "10",
        "--checkpoint",
        str(checkpoint),
    )
    assert result.returncode == 1
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert [r.split(":")[1] for r in reported] == ["17", "19", "20"], result.stderr
    assert "value:" in reported[0]
    assert "objectId:" in reported[1]
    assert "3 bad line(s) in lines 12-21" in result.stderr
    # Lines 2-11 (the first chunk: 10 lines, 9 records) are loaded; none of 12-21 (the
    # second chunk); the lines after were never sent.
    state = read_checkpoint(checkpoint)
    assert state is not None
    assert state["line"] == 12
    with Client(server.url, server.key) as client:
        loaded = {
            v["objectId"]
            for v in client.get_values(
                "company", [f"c{i}.{prefix}.test" for i in range(2, 32)] + [f"m4.{prefix}.test"]
            )
        }
    assert loaded == {f"c{i}.{prefix}.test" for i in (2, 3, *range(5, 11))} | {f"m4.{prefix}.test"}

    # Fixed, resumed: the rest goes in.
    path.write_text(good)
    fixed = run_cli(
        server,
        "--no-progress",
        "push",
        "values",
        str(path),
        "--chunk-lines",
        "10",
        "--checkpoint",
        str(checkpoint),
        "--resume",
    )
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads(fixed.stdout)["records"] == 30


def test_bad_ndjson_lines_are_reported_by_line(server: LiveServer, tmp_path: Path) -> None:
    prefix = "j" + secrets.token_hex(3)
    with Client(server.url, server.key) as client:
        client.create_template("n", "company", "number", id=f"{prefix}-n")
    lines = [
        json.dumps(
            {
                "objectType": "company",
                "objectId": f"c{i}.{prefix}.test",
                "signalTemplateId": f"{prefix}-n",
                "value": i,
            }
        )
        for i in range(1, 8)
    ]
    lines[2] = "{not json"
    lines.insert(4, "")  # a blank line is skipped, and still counted
    lines[6] = lines[6].replace('"value": 6', '"value": "six"')
    path = tmp_path / "values.ndjson"
    path.write_text("\n".join(lines) + "\n")
    result = run_cli(server, "--no-progress", "push", "values", str(path))
    assert result.returncode == 1
    reported = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert [r.split(":")[1] for r in reported] == ["3", "7"], result.stderr


def test_export_round_trips_through_push(server: LiveServer, tmp_path: Path) -> None:
    prefix = "x" + secrets.token_hex(3)
    with Client(server.url, server.key) as client:
        client.create_template("n", "company", "number", id=f"{prefix}-n")
        first = client.create_profile(
            "company", f"Export {prefix}", tiers={"fit": [{"name": "Top", "minScore": 50}]}
        )
        second = client.create_profile(
            "company", f"Copy {prefix}", tiers={"fit": [{"name": "Top", "minScore": 50}]}
        )
        for profile in (first, second):
            client.put_rule(profile["id"], f"{prefix}-n", "fit", "number", RANGES)
            client.put_rule(profile["id"], f"{prefix}-n", "urgency", "number", RANGES)
    companies = [f"e{i:04d}.{prefix}.test" for i in range(2500)]
    values = tmp_path / "values.ndjson"
    values.write_text(
        "".join(
            json.dumps(
                {
                    "objectType": "company",
                    "objectId": c,
                    "signalTemplateId": f"{prefix}-n",
                    "value": i * 3,
                }
            )
            + "\n"
            for i, c in enumerate(companies)
        )
    )
    assert run_cli(server, "--no-progress", "push", "values", str(values)).returncode == 0
    ids = tmp_path / "companies.csv"
    ids.write_text("objectId\n" + "\n".join(companies) + "\n")
    pushed = run_cli(
        server,
        "--no-progress",
        "push",
        "assignments",
        str(ids),
        "--profile",
        first["id"],
        "--chunk-lines",
        "1000",
    )
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["assigned"] == 2500
    with Client(server.url, server.key) as client:
        client.wait_idle(timeout=120)

    exported = tmp_path / "first.csv"
    result = run_cli(
        server,
        "--no-progress",
        "export",
        "scores",
        "--profile",
        first["id"],
        "--output",
        str(exported),
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(exported.open()))
    assert len(rows) == 5000  # both dimensions
    assert [r["dimension"] for r in rows] == ["fit"] * 2500 + ["urgency"] * 2500
    fit = [r for r in rows if r["dimension"] == "fit"]
    assert [float(r["score"]) for r in fit] == sorted(
        (float(r["score"]) for r in fit), reverse=True
    )

    # The export is a valid assignments file (its other columns are ignored).
    again = run_cli(
        server, "--no-progress", "push", "assignments", str(exported), "--profile", second["id"]
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["assigned"] == 2500
    with Client(server.url, server.key) as client:
        client.wait_idle(timeout=120)
    copy = tmp_path / "second.csv"
    assert (
        run_cli(
            server,
            "--no-progress",
            "export",
            "scores",
            "--profile",
            second["id"],
            "--output",
            str(copy),
        ).returncode
        == 0
    )
    columns = ("objectType", "objectId", "dimension", "score", "tier", "version")

    def project(path: Path) -> list[tuple[str, ...]]:
        return [tuple(r[c] for c in columns) for r in csv.DictReader(path.open())]

    assert project(copy) == project(exported)

    # NDJSON: full score rows, one per line, pushed back the same way.
    as_ndjson = run_cli(
        server,
        "--no-progress",
        "export",
        "scores",
        "--profile",
        first["id"],
        "--dimension",
        "fit",
        "--format",
        "ndjson",
    )
    assert as_ndjson.returncode == 0, as_ndjson.stderr
    lines = as_ndjson.stdout.splitlines()
    assert len(lines) == 2500
    assert json.loads(lines[0])["contributions"][0]["signalTemplateId"] == f"{prefix}-n"
    ndjson_file = tmp_path / "first.ndjson"
    ndjson_file.write_text(as_ndjson.stdout)
    back = run_cli(
        server, "--no-progress", "push", "assignments", str(ndjson_file), "--profile", second["id"]
    )
    assert back.returncode == 0, back.stderr
    assert json.loads(back.stdout)["alreadyAssigned"] == 2500


def test_a_missing_key_or_profile_is_reported(server: LiveServer, tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("objectId\nacme.com\n")
    env = {k: v for k, v in os.environ.items() if k != "SIGNALSCORE_API_KEY"}
    no_key = subprocess.run(
        [str(CLIENT_CLI), "--url", server.url, "push", "assignments", str(ids), "--profile", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert no_key.returncode == 2
    assert "SIGNALSCORE_API_KEY" in no_key.stderr
    unknown = run_cli(
        server,
        "--no-progress",
        "push",
        "assignments",
        str(ids),
        "--profile",
        "00000000-0000-4000-8000-000000000000",
    )
    assert unknown.returncode == 1
    assert "PROFILE_NOT_FOUND" in unknown.stderr


def test_events_follow(server: LiveServer, tmp_path: Path) -> None:
    from test_client_live import events_endpoint_exists

    if not events_endpoint_exists(server):
        pytest.skip("GET /v1/events (SPEC §10) is not in this server yet")
    prefix = "v" + secrets.token_hex(3)
    with Client(server.url, server.key) as client:
        client.create_template("n", "company", "number", id=f"{prefix}-n")
        profile = client.create_profile("company", f"Follow {prefix}")
        client.put_rule(profile["id"], f"{prefix}-n", "fit", "number", RANGES)
        client.assign_bulk(profile["id"], "company", [f"f{i}.{prefix}.test" for i in range(5)])
        client.wait_idle(timeout=60)
    result = run_cli(
        server,
        "events",
        "follow",
        "--once",
        "--profile",
        profile["id"],
        "--checkpoint",
        str(tmp_path / "events.json"),
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert {e["objectId"] for e in events} == {f"f{i}.{prefix}.test" for i in range(5)}
    last = json.loads((tmp_path / "events.json").read_text())["after"]
    assert last == events[-1]["sequence"]
