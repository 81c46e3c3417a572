"""Property tests: the engine (single and batch) agrees with the reference on every field."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalscore.engine import (
    MAX_MATCHED_VALUE_CHARS,
    Backend,
    DimensionResult,
    Rule,
    compile_profile,
    format_number,
    score_object,
)
from signalscore.engine._codegen import FLOAT_TEXT_MAX
from signalscore.vocabulary import NUMERIC_ANSWER_TYPES

Reference = Callable[[Sequence[Rule], Mapping[str, Any]], dict[str, dict[str, Any]]]

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TEMPLATES = ["t0", "t1", "t2", "t3", "t4", "t5"]
VOCABULARY = ["Salesforce", "HubSpot", "Pipedrive", "Zoho", "Close", "Straße", "STRASSE", "é"]
# Items long enough that a few of them pass matchedValue's 200-character bound, with multi-byte
# and astral characters near where the cut falls.
LONG_WORDS = [
    "Salesforce" * 20,  # 200
    "é" * 150 + "\N{GRINNING FACE}" * 49,  # 199
    "日本語" * 66 + "\N{GRINNING FACE}",  # 199
    "x" * 98,  # two of them and the separator: exactly 198
]
MODES = ["additive", "best-match", "contains-all", "contains-none", "exact-match"]

small_ints = st.integers(-20, 20)
points = st.one_of(
    small_ints,
    st.integers(-1_000_000, 1_000_000),
    st.floats(-1_000_000, 1_000_000, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 0.2, 0.3, -0.1, 1e-9, 2.5, 0.0, -0.0]),
)
bounds = st.one_of(
    st.integers(-1000, 1000),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.5, 100, 100.0, 1e15, 1e16, 2.5e16, 10**190]),  # long labels too
)


def _spelling(draw: st.DrawFn, word: str) -> str:
    """The same word as a user might type it: any case, stray outer whitespace."""
    form = draw(st.sampled_from([word, word.lower(), word.upper(), word.swapcase()]))
    left = draw(st.sampled_from(["", " ", "\t", "  "]))
    right = draw(st.sampled_from(["", " ", "\n"]))
    return left + form + right


@st.composite
def range_point_values(draw: st.DrawFn) -> dict[str, Any]:
    edges = sorted(set(draw(st.lists(bounds, min_size=1, max_size=7))))
    pieces: list[dict[str, Any]] = []
    for low, high in itertools.pairwise(edges):
        if draw(st.booleans()):  # leave a gap sometimes
            pieces.append({"min": low, "max": high, "points": draw(points)})
    if draw(st.booleans()):
        pieces.insert(0, {"max": edges[0], "points": draw(points)})
    if draw(st.booleans()):
        pieces.append({"min": edges[-1], "max": None, "points": draw(points)})
    if not pieces or draw(st.integers(0, 15)) == 0:
        # Both ends open, or an overlapping extra range (the API rejects it; first one wins).
        pieces.append({"min": draw(st.one_of(st.none(), bounds)), "points": draw(points)})
    order = draw(st.permutations(pieces))
    return {"ranges": list(order)}


@st.composite
def list_point_values(draw: st.DrawFn) -> dict[str, Any]:
    vocabulary = VOCABULARY if draw(st.integers(0, 3)) else [*VOCABULARY, *LONG_WORDS]
    words = draw(st.lists(st.sampled_from(vocabulary), min_size=1, max_size=5, unique=True))
    choices = {
        _spelling(draw, w) if draw(st.integers(0, 5)) == 0 else w: draw(points) for w in words
    }
    pv: dict[str, Any] = {"choices": choices}
    mode = draw(st.sampled_from([None, *MODES]))
    if mode is not None:
        pv["mode"] = mode
    return pv


@st.composite
def boolean_point_values(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.sampled_from([["true"], ["false"], ["true", "false"], []]))
    return {key: draw(points) for key in keys}


@st.composite
def rules_strategy(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(0, 8))
    rules = []
    for i in range(count):
        kind = draw(st.sampled_from(["boolean", "numeric", "list"]))
        template = draw(st.sampled_from(TEMPLATES))
        dimension = draw(st.sampled_from(["fit", "urgency"]))
        if kind == "boolean":
            answer_type, pv = "boolean", draw(boolean_point_values())
        elif kind == "numeric":
            answer_type, pv = (
                draw(st.sampled_from(NUMERIC_ANSWER_TYPES)),
                draw(range_point_values()),
            )
        else:
            answer_type, pv = "list", draw(list_point_values())
        rules.append(Rule(f"rule-{i}", template, dimension, answer_type, pv))
    return rules


def _value_for(draw: st.DrawFn, rules: Sequence[Rule], template: str) -> Any:
    """A value for ``template``: usually of the type its rules expect, sometimes anything."""
    kinds = [r.answer_type for r in rules if r.signal_template_id == template]
    kind = "any"
    if kinds and draw(st.integers(0, 9)) > 0:
        kind = draw(st.sampled_from(kinds))
    if kind == "any":
        kind = draw(st.sampled_from(["boolean", "number", "list", "none", "text"]))
    if kind == "none":
        return None
    if kind == "text":
        return "Salesforce"
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "list":
        if draw(st.integers(0, 3)):
            words = draw(st.lists(st.sampled_from([*VOCABULARY, "Other", "x"]), max_size=6))
        else:  # long answers, so that matchedValue's 200-character cut is exercised
            vocabulary = st.sampled_from([*VOCABULARY, *LONG_WORDS])
            words = draw(st.lists(vocabulary, max_size=draw(st.sampled_from([4, 12, 100]))))
        items = [_spelling(draw, w) for w in words]
        if draw(st.integers(0, 7)) == 0:  # any text, cut anywhere
            items.insert(draw(st.integers(0, len(items))), draw(st.text(max_size=260)))
        return items
    # Numbers, often exactly on a range boundary (as int or float) or just beside it.
    edges = [
        b
        for r in rules
        if r.signal_template_id == template and "ranges" in r.point_values
        for rng in r.point_values["ranges"]
        for b in (rng.get("min"), rng.get("max"))
        if b is not None
    ]
    choices = [
        st.integers(-2000, 2000),
        bounds,
        st.floats(allow_nan=False),
        st.integers(10**185, 10**195),  # numbers whose text passes the 200-character bound
    ]
    if edges:
        edge = st.sampled_from(edges)
        choices += [
            edge,
            edge.map(float),
            edge.map(lambda b: math.nextafter(float(b), math.inf)),
            edge.map(lambda b: math.nextafter(float(b), -math.inf)),
        ]
        return draw(st.one_of(*choices[4:], *choices[:4]))
    return draw(st.one_of(*choices))


@st.composite
def objects_strategy(draw: st.DrawFn, rules: Sequence[Rule]) -> dict[str, Any]:
    values = {}
    for template in TEMPLATES:
        if draw(st.integers(0, 4)):  # absent about a fifth of the time
            values[template] = _value_for(draw, rules, template)
    return values


@st.composite
def profile_and_objects(draw: st.DrawFn) -> tuple[list[Rule], list[dict[str, Any]]]:
    rules = draw(rules_strategy())
    objects = draw(st.lists(objects_strategy(rules), min_size=1, max_size=6))
    return rules, objects


def _as_reference(result: dict[str, DimensionResult]) -> dict[str, dict[str, Any]]:
    return {
        dimension: {
            "score": r.score,
            "earned": r.earned,
            "maxPossible": r.max_possible,
            "signalCoverage": r.signal_coverage,
            "totalRules": r.total_rules,
            "contributions": r.contributions,
            "nextChangeAt": r.next_change_at,
        }
        for dimension, r in result.items()
    }


def _assert_agrees(
    rules: Sequence[Rule], result: dict[str, DimensionResult], expected: dict[str, dict[str, Any]]
) -> None:
    actual = _as_reference(result)
    assert list(actual) == list(expected)
    for dimension, want in expected.items():
        got = actual[dimension]
        for key in (
            "contributions",
            "score",
            "earned",
            "maxPossible",
            "signalCoverage",
            "nextChangeAt",
        ):
            assert got[key] == want[key], (dimension, key)
        assert got["totalRules"] == want["totalRules"]
        for contribution in got["contributions"]:
            text = contribution["matchedValue"]
            assert text is None or len(text) <= MAX_MATCHED_VALUE_CHARS
            assert list(contribution) == [
                "ruleId",
                "signalTemplateId",
                "matchedValue",
                "pointsEarned",
                "maxPoints",
                "observedAt",
                "decayFactor",
            ]
        assert type(got["score"]) is float
        assert 0.0 <= got["score"] <= 100.0
        assert type(got["earned"]) is float
        assert type(got["maxPossible"]) is float
        assert type(got["signalCoverage"]) is int
    # Integer rule points stay integers in the JSON.
    by_id = {rule.id: rule for rule in rules}
    for summary in actual.values():
        for contribution in summary["contributions"]:
            if _all_int_points(by_id[contribution["ruleId"]]):
                assert type(contribution["pointsEarned"]) is int
                assert type(contribution["maxPoints"]) is int


def _all_int_points(rule: Rule) -> bool:
    pv = rule.point_values
    if "ranges" in pv:
        numbers = [r["points"] for r in pv["ranges"]]
    elif "choices" in pv:
        numbers = list(pv["choices"].values())
    else:
        numbers = list(pv.values())
    return all(type(n) is int for n in numbers)


@SETTINGS
@given(profile_and_objects())
def test_score_agrees_with_reference(
    backend: Backend, reference: Reference, case: tuple[list[Rule], list[dict[str, Any]]]
) -> None:
    rules, objects = case
    profile = compile_profile(rules, backend)
    for values in objects:
        _assert_agrees(rules, profile.score(values), reference(rules, values))


@SETTINGS
@given(profile_and_objects())
def test_score_many_agrees_with_reference(
    backend: Backend, reference: Reference, case: tuple[list[Rule], list[dict[str, Any]]]
) -> None:
    rules, objects = case
    results = compile_profile(rules, backend).score_many(objects)
    assert len(results) == len(objects)
    for values, result in zip(objects, results, strict=True):
        _assert_agrees(rules, result, reference(rules, values))


@settings(max_examples=200, deadline=None)
@given(profile_and_objects())
def test_score_object_and_repeated_batches_agree(
    backend: Backend, reference: Reference, case: tuple[list[Rule], list[dict[str, Any]]]
) -> None:
    rules, objects = case
    profile = compile_profile(rules, backend)
    first = profile.score_many(objects)
    again = profile.score_many(objects[::-1])[::-1]  # memos warmed in another order
    assert first == again
    assert [score_object(rules, v, backend) for v in objects] == first


@settings(max_examples=200, deadline=None)
@given(profile_and_objects(), st.randoms(use_true_random=False))
def test_sums_do_not_depend_on_rule_order(
    backend: Backend, case: tuple[list[Rule], list[dict[str, Any]]], rnd: random.Random
) -> None:
    rules, objects = case
    shuffled = list(rules)
    rnd.shuffle(shuffled)
    for a, b in zip(
        compile_profile(rules, backend).score_many(objects),
        compile_profile(shuffled, backend).score_many(objects),
        strict=True,
    ):
        assert a.keys() == b.keys()
        for dimension in a:
            assert a[dimension].earned == b[dimension].earned
            assert a[dimension].max_possible == b[dimension].max_possible
            assert a[dimension].score == b[dimension].score


@given(st.floats())
def test_no_float_text_is_longer_than_float_text_max(number: float) -> None:
    """The Python loop relies on this bound to skip measuring a float's matchedValue."""
    assert len(format_number(number)) <= FLOAT_TEXT_MAX
    assert len(format_number(-2.2250738585072014e-308)) == FLOAT_TEXT_MAX
