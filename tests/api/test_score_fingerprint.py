"""Comparing a new result with the stored row by the fingerprint of its contributions
(`score_results.contributions_hash`): the same answer as comparing the documents."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from signalscore.db.dialect import contributions_fingerprint
from signalscore.db.engine import Database
from signalscore.db.tables import score_results
from tests.api.conftest import World
from tests.api.test_assignments_scores import assign, scores
from tests.helpers import drain, fan_out

ENTRY = {
    "ruleId": "7c1e",
    "signalTemplateId": "employees",
    "matchedValue": "874 (100–1000)",
    "pointsEarned": 5,
    "maxPoints": 10,
}

numbers = st.one_of(
    st.integers(min_value=-1_000_000, max_value=1_000_000),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
entries = st.lists(
    st.fixed_dictionaries(
        {
            "ruleId": st.text(max_size=8),
            "signalTemplateId": st.text(max_size=8),
            "matchedValue": st.one_of(st.none(), st.text(max_size=12)),
            "pointsEarned": numbers,
            "maxPoints": numbers,
        }
    ),
    max_size=6,
)


@given(entries, entries)
def test_equal_fingerprints_exactly_when_python_finds_the_documents_equal(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> None:
    assert (contributions_fingerprint(a) == contributions_fingerprint(b)) == (a == b)


@given(entries)
def test_a_number_counts_as_the_float_it_equals(a: list[dict[str, Any]]) -> None:
    as_floats = [
        {k: float(v) if k in ("pointsEarned", "maxPoints") else v for k, v in e.items()} for e in a
    ]
    assert contributions_fingerprint(as_floats) == contributions_fingerprint(a)


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    """Stored by one worker process, compared by another: no per-process hash seed."""
    code = (
        "import json, sys; from signalscore.db.dialect import contributions_fingerprint as f; "
        "print(f(json.loads(sys.argv[1])))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, json.dumps([ENTRY])],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(contributions_fingerprint([ENTRY]))}
    assert contributions_fingerprint([{**ENTRY, "pointsEarned": 5.0}]) == int(outputs.pop())
    assert contributions_fingerprint([{**ENTRY, "pointsEarned": -0.0, "maxPoints": 0}]) == (
        contributions_fingerprint([{**ENTRY, "pointsEarned": 0, "maxPoints": 0.0}])
    )


def _rule(world: World, points: float) -> None:
    body = {
        "signalTemplateId": "employees",
        "dimension": "fit",
        "answerType": "number",
        "pointValues": {"ranges": [{"min": 0, "max": 100, "points": points}]},
    }
    assert world.call("PUT", "/v1/scoring/profiles/{pid}/rules", json=body).status_code == 200


def test_points_rewritten_as_an_equal_float_leave_the_version(
    world: World, database: Database
) -> None:
    """The rule's 5 becomes 5.0: the result is equal, so only `computedAt` moves (SPEC §6),
    exactly as when the documents themselves were compared."""
    _rule(world, 5)
    assert assign(world, "acme.com").status_code == 201
    fan_out(database)
    drain(database)
    [before] = scores(world, "acme.com")
    _rule(world, 5.0)
    fan_out(database)
    drain(database)
    [after] = scores(world, "acme.com")
    assert after["version"] == before["version"]
    assert after["contributions"] == before["contributions"]
    assert after["computedAt"] > before["computedAt"]
    _rule(world, 7)
    fan_out(database)
    drain(database)
    [moved] = scores(world, "acme.com")
    assert moved["version"] == before["version"] + 1
    assert moved["previousContributions"] == before["contributions"]


def test_rows_stored_without_a_fingerprint_are_compared_by_their_document(
    world: World, database: Database
) -> None:
    """Rows written before migration 0008 have no fingerprint: an equal result leaves their
    version, a different one moves it, and either way the row gets its fingerprint."""
    assert assign(world, "acme.com").status_code == 201
    drain(database)
    [before] = scores(world, "acme.com")

    def forget_fingerprints() -> None:
        with database.write() as conn:
            conn.execute(sa.update(score_results).values(contributions_hash=None))

    forget_fingerprints()
    assert world.call(
        "POST", "/v1/scoring/compute", json={"objectType": "company", "objectIds": ["acme.com"]}
    ).status_code == 202  # fmt: skip
    drain(database)
    [same] = scores(world, "acme.com")
    assert same["version"] == before["version"]
    forget_fingerprints()
    _rule(world, 9)
    fan_out(database)
    drain(database)
    [moved] = scores(world, "acme.com")
    assert moved["version"] == before["version"] + 1
    with database.read() as conn:
        hashes = conn.execute(sa.select(score_results.c.contributions_hash)).scalars().all()
    assert hashes
    assert None not in hashes
