"""Hand-written cases: each mode's edges, clamping, empty profiles and exact matchedValue text
(including its 200-character bound)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import pytest

from signalscore.engine import (
    MAX_MATCHED_VALUE_CHARS,
    Backend,
    InvalidRuleError,
    Rule,
    bound_matched_value,
    compile_profile,
    format_number,
    score_object,
)

Reference = Callable[[Sequence[Rule], Mapping[str, Any]], dict[str, dict[str, Any]]]


def boolean(points: dict[str, Any], rid: str = "r", tid: str = "t", dim: str = "fit") -> Rule:
    return Rule(rid, tid, dim, "boolean", points)


def ranges(*spec: tuple[Any, Any, Any], rid: str = "r", tid: str = "t", dim: str = "fit") -> Rule:
    items = []
    for low, high, points in spec:
        item: dict[str, Any] = {"points": points}
        if low is not None:
            item["min"] = low
        if high is not None:
            item["max"] = high
        items.append(item)
    return Rule(rid, tid, dim, "number", {"ranges": items})


def choices(
    points: dict[str, Any],
    mode: str | None = None,
    rid: str = "r",
    tid: str = "t",
    dim: str = "fit",
) -> Rule:
    pv: dict[str, Any] = {"choices": points}
    if mode is not None:
        pv["mode"] = mode
    return Rule(rid, tid, dim, "list", pv)


class Case(NamedTuple):
    """One rule, one value: the expected (matchedValue, pointsEarned, maxPoints, score)."""

    rule: Rule
    value: Any
    matched: str | None
    earned: int | float
    max_points: int | float
    score: float


HEADCOUNT = ranges((None, 100, 5), (100, 1000, 15), (1000, None, 25))
CRM = {"Salesforce": 10, "HubSpot": 8, "Pipedrive": -4}
ABSENT = object()  # the template has no key in the object's values

# The matchedValue bound: at most 200 characters (code points); a longer text is its first 199
# followed by "…" (U+2026). The expected texts below are spelled out, not computed by the rule.
ELL = "\N{HORIZONTAL ELLIPSIS}"
A99, B99, B100 = "a" * 99, "b" * 99, "b" * 100  # "A99, B99" is 200 characters, "A99, B100" 201
# 100 items of 200 characters (the API's largest list answer): 20,198 characters joined.
MANY = [f"{i:03d}" + "z" * 197 for i in range(100)]
MANY_CUT = "000" + "z" * 196 + ELL
SMILE = "\N{GRINNING FACE}"  # 😀: one code point, 4 bytes of UTF-8, 2 UTF-16 units

CASES: dict[str, Case] = {
    # boolean
    "boolean true": Case(boolean({"true": 20, "false": -5}), True, "true", 20, 20, 100.0),
    "boolean false negative": Case(boolean({"true": 20, "false": -5}), False, "false", -5, 20, 0.0),
    "boolean missing key earns 0": Case(boolean({"true": 20}), False, "false", 0, 20, 0.0),
    "boolean only false key": Case(boolean({"false": 10}), False, "false", 10, 10, 100.0),
    "boolean only false, true earns 0": Case(boolean({"false": 10}), True, "true", 0, 10, 0.0),
    "boolean all negative max 0": Case(
        boolean({"true": -3, "false": -7}), True, "true", -3, 0, 0.0
    ),
    "boolean absent": Case(boolean({"true": 20}), ABSENT, None, 0, 20, 0.0),
    "boolean null is absent": Case(boolean({"true": 20}), None, None, 0, 20, 0.0),
    "boolean 1 is not true": Case(boolean({"true": 20}), 1, None, 0, 20, 0.0),
    # ranges
    "range middle": Case(HEADCOUNT, 874, "874 (100–1000)", 15, 25, 60.0),
    "range min is inclusive": Case(HEADCOUNT, 100, "100 (100–1000)", 15, 25, 60.0),
    "range max is exclusive": Case(HEADCOUNT, 1000, "1000 (≥1000)", 25, 25, 100.0),
    "range open min": Case(HEADCOUNT, 5, "5 (<100)", 5, 25, 20.0),
    "range open min negative": Case(HEADCOUNT, -3, "-3 (<100)", 5, 25, 20.0),
    "range open max": Case(HEADCOUNT, 1500, "1500 (≥1000)", 25, 25, 100.0),
    "range integral float prints as int": Case(HEADCOUNT, 874.0, "874 (100–1000)", 15, 25, 60.0),
    "range fraction": Case(HEADCOUNT, 99.5, "99.5 (<100)", 5, 25, 20.0),
    "range just below max": Case(HEADCOUNT, 999.9999, "999.9999 (100–1000)", 15, 25, 60.0),
    "range no range in gap": Case(
        ranges((0, 100, 5), (200, 300, 9)), 150, "150 (no range)", 0, 9, 0.0
    ),
    "range below every range": Case(ranges((0, 100, 5)), -1, "-1 (no range)", 0, 5, 0.0),
    "range max exclusive, no next": Case(ranges((0, 100, 5)), 100, "100 (no range)", 0, 5, 0.0),
    "range float bounds label": Case(ranges((0.5, 2.5, 3)), 1, "1 (0.5–2.5)", 3, 3, 100.0),
    "range float-integral bounds label": Case(
        ranges((10.0, 20.0, 3)), 12.25, "12.25 (10–20)", 3, 3, 100.0
    ),
    "range both ends open": Case(ranges((None, None, 4)), 7, "7 (any)", 4, 4, 100.0),
    "range huge float uses repr": Case(ranges((0, None, 1)), 1e16, "1e+16 (≥0)", 1, 1, 100.0),
    "range big int stays digits": Case(
        ranges((0, None, 1)), 10**17, "100000000000000000 (≥0)", 1, 1, 100.0
    ),
    "range negative points": Case(ranges((0, 10, -8), (10, None, 4)), 3, "3 (0–10)", -8, 4, 0.0),
    "range all negative max 0": Case(ranges((0, 10, -8)), 3, "3 (0–10)", -8, 0, 0.0),
    "range bool is not a number": Case(HEADCOUNT, True, None, 0, 25, 0.0),
    "range string is not a number": Case(HEADCOUNT, "874", None, 0, 25, 0.0),
    "range absent": Case(HEADCOUNT, ABSENT, None, 0, 25, 0.0),
    # additive (the default mode)
    "additive default mode": Case(
        choices(CRM), ["Salesforce", "HubSpot"], "Salesforce, HubSpot", 18, 18, 100.0
    ),
    "additive ignores case and whitespace": Case(
        choices(CRM, "additive"),
        ["  salesforce ", "HUBSPOT"],
        "  salesforce , HUBSPOT",
        18,
        18,
        100.0,
    ),
    "additive negative choice": Case(
        choices(CRM, "additive"), ["Salesforce", "pipedrive"], "Salesforce, pipedrive", 6, 18, 33.33
    ),
    "additive no match": Case(choices(CRM, "additive"), ["Zoho"], "Zoho", 0, 18, 0.0),
    "additive empty list is a value": Case(choices(CRM, "additive"), [], "", 0, 18, 0.0),
    "additive duplicate spellings count once": Case(
        choices(CRM), ["Salesforce", "salesforce "], "Salesforce, salesforce ", 10, 18, 55.56
    ),
    "additive choice key with spaces": Case(
        choices({" HubSpot ": 8}), ["hubspot"], "hubspot", 8, 8, 100.0
    ),
    "additive unicode casefold": Case(choices({"Straße": 5}), ["STRASSE"], "STRASSE", 5, 5, 100.0),
    "list absent": Case(choices(CRM), ABSENT, None, 0, 18, 0.0),
    "list string is not a list": Case(choices(CRM), "Salesforce", None, 0, 18, 0.0),
    "list tuple accepted": Case(choices(CRM), ("HubSpot",), "HubSpot", 8, 18, 44.44),
    # best-match
    "best-match largest": Case(
        choices(CRM, "best-match"), ["hubspot", "SALESFORCE"], "hubspot, SALESFORCE", 10, 10, 100.0
    ),
    "best-match single": Case(choices(CRM, "best-match"), ["HubSpot"], "HubSpot", 8, 10, 80.0),
    "best-match only negative": Case(
        choices(CRM, "best-match"), ["Pipedrive"], "Pipedrive", -4, 10, 0.0
    ),
    "best-match empty M earns 0": Case(choices(CRM, "best-match"), ["Zoho"], "Zoho", 0, 10, 0.0),
    "best-match all negative max 0": Case(
        choices({"A": -1, "B": -2}, "best-match"), ["b"], "b", -2, 0, 0.0
    ),
    # contains-all
    "contains-all every choice": Case(
        choices({"A": 5, "B": 7}, "contains-all"),
        ["b", "Other", " a"],
        "b, Other,  a",
        12,
        12,
        100.0,
    ),
    "contains-all one missing": Case(
        choices({"A": 5, "B": 7}, "contains-all"), ["A"], "A", 0, 12, 0.0
    ),
    "contains-all empty list": Case(choices({"A": 5}, "contains-all"), [], "", 0, 5, 0.0),
    "contains-all negative sum max 0": Case(
        choices({"A": 5, "B": -9}, "contains-all"), ["A", "B"], "A, B", -4, 0, 0.0
    ),
    "contains-all mixed sum": Case(
        choices({"A": 10, "B": -4}, "contains-all"), ["A", "B"], "A, B", 6, 6, 100.0
    ),
    # contains-none
    "contains-none none present": Case(
        choices({"A": 5, "B": 7}, "contains-none"), ["C"], "C", 12, 12, 100.0
    ),
    "contains-none empty list": Case(
        choices({"A": 5, "B": 7}, "contains-none"), [], "", 12, 12, 100.0
    ),
    "contains-none one present": Case(
        choices({"A": 5, "B": 7}, "contains-none"), ["C", " b "], "C,  b ", 0, 12, 0.0
    ),
    "contains-none absent earns 0": Case(
        choices({"A": 5}, "contains-none"), ABSENT, None, 0, 5, 0.0
    ),
    # exact-match
    "exact-match same set": Case(
        choices({"A": 5, "B": 7}, "exact-match"), ["B", "a"], "B, a", 12, 12, 100.0
    ),
    "exact-match same set with repeats": Case(
        choices({"A": 5, "B": 7}, "exact-match"), ["B", "a", " A"], "B, a,  A", 12, 12, 100.0
    ),
    "exact-match extra value": Case(
        choices({"A": 5, "B": 7}, "exact-match"), ["A", "B", "C"], "A, B, C", 0, 12, 0.0
    ),
    "exact-match subset": Case(choices({"A": 5, "B": 7}, "exact-match"), ["A"], "A", 0, 12, 0.0),
    "exact-match empty list": Case(choices({"A": 5}, "exact-match"), [], "", 0, 5, 0.0),
    # matchedValue bound (200 characters, then "…"): the points still come from the whole list
    "bound: joined text of exactly 200 is unchanged": Case(
        choices({A99: 3, "Zed": 5}), [A99, B99], A99 + ", " + B99, 3, 8, 37.5
    ),
    "bound: joined text of 201 is cut to 199 and an ellipsis": Case(
        choices({B100: 4}), [A99, B100], A99 + ", " + "b" * 98 + ELL, 4, 4, 100.0
    ),
    "bound: cut just after the separator's comma": Case(
        choices({"B": 2}), ["a" * 198, "b"], "a" * 198 + "," + ELL, 2, 2, 100.0
    ),
    "bound: single item of 200 is unchanged": Case(
        choices({"x" * 200: 6, "Other": 9}, "best-match"), ["X" * 200], "X" * 200, 6, 9, 66.67
    ),
    "bound: single item of 201 is cut": Case(
        choices({"y" * 201: 6}, "best-match"), ["y" * 201], "y" * 199 + ELL, 6, 6, 100.0
    ),
    "bound: 100 items of 200, additive, match far past the cut": Case(
        choices({MANY[99]: 10, MANY[50]: 5, "Nope": 1}), MANY, MANY_CUT, 15, 16, 93.75
    ),
    "bound: 100 items of 200, best-match": Case(
        choices({MANY[98]: 7, MANY[99]: 9}, "best-match"), MANY, MANY_CUT, 9, 9, 100.0
    ),
    "bound: 100 items of 200, contains-all": Case(
        choices({MANY[0]: 2, MANY[99]: 3}, "contains-all"), MANY, MANY_CUT, 5, 5, 100.0
    ),
    "bound: 100 items of 200, contains-none hit past the cut": Case(
        choices({MANY[99]: 4}, "contains-none"), MANY, MANY_CUT, 0, 4, 0.0
    ),
    "bound: 100 items of 200, contains-none": Case(
        choices({"Nope": 4}, "contains-none"), MANY, MANY_CUT, 4, 4, 100.0
    ),
    "bound: 100 items of 200, exact-match": Case(
        choices(dict.fromkeys(MANY, 1), "exact-match"),
        MANY[::-1],
        "099" + "z" * 196 + ELL,
        100,
        100,
        100.0,
    ),
    "bound: multi-byte letters around the cut": Case(
        choices({"Q": 1}),
        ["a" * 197 + "€é" + SMILE + "ü"],
        "a" * 197 + "€é" + ELL,
        0,
        1,
        0.0,
    ),
    "bound: astral character kept just before the cut": Case(
        choices({"Q": 1}), ["a" * 198 + SMILE + SMILE + "c"], "a" * 198 + SMILE + ELL, 0, 1, 0.0
    ),
    "bound: 200 astral characters are unchanged (800 bytes)": Case(
        choices({SMILE * 200: 3}, "exact-match"), [SMILE * 200], SMILE * 200, 3, 3, 100.0
    ),
    "bound: 201 astral characters are cut": Case(
        choices({SMILE: 3}),
        [SMILE * 101, SMILE * 98],
        SMILE * 101 + ", " + SMILE * 96 + ELL,
        0,
        3,
        0.0,
    ),
    "bound: CJK text": Case(
        choices({"日本": 2}, "contains-all"),
        ["日本", "語" * 300],
        "日本, " + "語" * 195 + ELL,
        2,
        2,
        100.0,
    ),
    "bound: by code point, so a letter may lose its combining mark": Case(
        choices({"Q": 1}), ["a" * 198 + "e\u0301x"], "a" * 198 + "e" + ELL, 0, 1, 0.0
    ),
    "bound: tuple answer": Case(
        choices({A99: 3}), (A99, B100), A99 + ", " + "b" * 98 + ELL, 3, 3, 100.0
    ),
    "bound: range text of exactly 200 is unchanged": Case(
        HEADCOUNT, 10**191, "1" + "0" * 191 + " (≥1000)", 25, 25, 100.0
    ),
    "bound: range text of 201 is cut inside the label": Case(
        HEADCOUNT, 10**192, "1" + "0" * 192 + " (≥100" + ELL, 25, 25, 100.0
    ),
    "bound: range 200 with the longest label": Case(
        ranges((0, 100, 5)), 10**188, "1" + "0" * 188 + " (no range)", 0, 5, 0.0
    ),
    "bound: range 201 with the longest label": Case(
        ranges((0, 100, 5)), 10**189, "1" + "0" * 189 + " (no rang" + ELL, 0, 5, 0.0
    ),
    "bound: range with a long label": Case(
        ranges((None, 10**250, 2)), 5, "5 (<1" + "0" * 194 + ELL, 2, 2, 100.0
    ),
    "bound: float text with a long label": Case(
        ranges((None, 10**185, 2)),
        -2.2250738585072014e-308,
        "-2.2250738585072014e-308 (<1" + "0" * 171 + ELL,
        2,
        2,
        100.0,
    ),
    "bound: boolean text is short": Case(boolean({"true": 1}), True, "true", 1, 1, 100.0),
    # float points
    "float points exact sum": Case(
        choices({"A": 0.1, "B": 0.2}, "contains-all"),
        ["A", "B"],
        "A, B",
        0.30000000000000004,
        0.30000000000000004,
        100.0,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_case(name: str, reference: Reference, backend: Backend) -> None:
    case = CASES[name]
    values = {} if case.value is ABSENT else {case.rule.signal_template_id: case.value}
    result = score_object([case.rule], values, backend)
    assert list(result) == [case.rule.dimension]
    dimension = result[case.rule.dimension]
    assert dimension.contributions == [
        {
            "ruleId": case.rule.id,
            "signalTemplateId": case.rule.signal_template_id,
            "matchedValue": case.matched,
            "pointsEarned": case.earned,
            "maxPoints": case.max_points,
            "observedAt": None,
            "decayFactor": 1,
        }
    ]
    assert dimension.next_change_at is None
    assert dimension.score == case.score
    assert dimension.earned == case.earned
    assert dimension.max_possible == case.max_points
    assert dimension.signal_coverage == (0 if case.matched is None else 1)
    assert dimension.total_rules == 1
    # The slow reference agrees too, so the property tests check against a verified oracle.
    ref = reference([case.rule], values)[case.rule.dimension]
    assert ref["contributions"] == dimension.contributions
    assert ref["score"] == case.score


def test_integer_points_stay_integers(backend: Backend) -> None:
    result = score_object([HEADCOUNT], {"t": 874}, backend)["fit"]
    assert type(result.contributions[0]["pointsEarned"]) is int
    assert type(result.contributions[0]["maxPoints"]) is int
    assert type(result.earned) is float
    assert type(result.max_possible) is float


def test_clamped_above_100(backend: Backend) -> None:
    # earned can never exceed maxPossible, but 100 * earned / maxPossible can still round to
    # just above 100 in floating point: here it is 100.00000000000001 before the clamp.
    points = 763.7769812304242
    assert 100.0 * points / points > 100.0
    result = score_object([boolean({"true": points})], {"t": True}, backend)["fit"]
    assert (result.earned, result.max_possible, result.score) == (points, points, 100.0)
    rules = [choices(CRM, rid="a", tid="x"), boolean({"true": 2}, rid="b", tid="y")]
    result = score_object(rules, {"x": ["salesforce", "HubSpot"], "y": True}, backend)["fit"]
    assert (result.earned, result.max_possible, result.score) == (20.0, 20.0, 100.0)


def test_clamped_below_0(backend: Backend) -> None:
    rules = [
        boolean({"true": 10, "false": -50}, rid="a", tid="x"),
        boolean({"true": 5}, rid="b", tid="y"),
    ]
    result = score_object(rules, {"x": False, "y": True}, backend)["fit"]
    assert (result.earned, result.max_possible, result.score) == (-45.0, 15.0, 0.0)


def test_max_possible_zero_scores_zero(backend: Backend) -> None:
    rules = [boolean({"true": -5, "false": -1}), ranges((0, None, -3), rid="b", tid="u")]
    result = score_object(rules, {"t": True, "u": 4}, backend)["fit"]
    assert (result.earned, result.max_possible, result.score) == (-8.0, 0.0, 0.0)
    assert (result.signal_coverage, result.total_rules) == (2, 2)


def test_max_possible_zero_with_positive_earned_scores_zero(backend: Backend) -> None:
    rule = choices({"A": 5, "B": -7}, "contains-none")  # max(-2, 0) = 0, earns -2 or 0
    result = score_object([rule], {"t": ["C"]}, backend)["fit"]
    assert (result.earned, result.max_possible, result.score) == (-2.0, 0.0, 0.0)


def test_all_values_missing(backend: Backend) -> None:
    rules = [
        boolean({"true": 20}, rid="a", tid="x"),
        HEADCOUNT._replace(id="b", signal_template_id="y"),
        choices(CRM, rid="c", tid="z", dim="urgency"),
    ]
    result = score_object(rules, {}, backend)
    assert list(result) == ["fit", "urgency"]
    assert (result["fit"].score, result["fit"].earned) == (0.0, 0.0)
    assert result["fit"].max_possible == 45.0
    assert (result["fit"].signal_coverage, result["fit"].total_rules) == (0, 2)
    assert [c["matchedValue"] for c in result["fit"].contributions] == [None, None]
    assert (result["urgency"].max_possible, result["urgency"].signal_coverage) == (18.0, 0)


def test_coverage_counts_only_values_of_the_right_type(backend: Backend) -> None:
    rules = [
        boolean({"true": 20}, rid="a", tid="x"),
        HEADCOUNT._replace(id="b", signal_template_id="y"),
        choices(CRM, rid="c", tid="z"),
    ]
    result = score_object(rules, {"x": True, "y": False, "z": []}, backend)["fit"]
    assert result.signal_coverage == 2
    assert [c["matchedValue"] for c in result.contributions] == ["true", None, ""]


def test_score_rounds_to_two_decimals(backend: Backend) -> None:
    rules = [boolean({"true": 1}, rid="a", tid="x"), boolean({"true": 2}, rid="b", tid="y")]
    assert score_object(rules, {"x": True}, backend)["fit"].score == 33.33
    assert score_object(rules, {"y": True}, backend)["fit"].score == 66.67


def test_dimensions_and_rule_order(backend: Backend) -> None:
    rules = [
        boolean({"true": 1}, rid="u1", tid="a", dim="urgency"),
        boolean({"true": 1}, rid="f1", tid="b", dim="fit"),
        boolean({"true": 1}, rid="u0", tid="c", dim="urgency"),
    ]
    result = score_object(rules, {"a": True}, backend)
    assert list(result) == ["fit", "urgency"]
    assert [c["ruleId"] for c in result["urgency"].contributions] == ["u1", "u0"]
    assert score_object([], {"a": True}, backend) == {}
    assert compile_profile([], backend).score_many([{}, {}]) == [{}, {}]
    assert compile_profile(rules, backend).score_many([]) == []


def test_same_template_in_both_dimensions(backend: Backend) -> None:
    rules = [
        choices(CRM, rid="a", dim="fit"),
        choices(CRM, "contains-none", rid="b", dim="urgency"),
    ]
    result = score_object(rules, {"t": ["Zoho"]}, backend)
    assert (result["fit"].earned, result["urgency"].earned) == (0.0, 14.0)


def test_overlapping_ranges_first_in_stored_order_wins(backend: Backend) -> None:
    rule = ranges((0, 100, 5), (50, 150, 9))
    assert (
        score_object([rule], {"t": 75}, backend)["fit"].contributions[0]["matchedValue"]
        == "75 (0–100)"
    )
    rule = ranges((50, 150, 9), (0, 100, 5))
    assert score_object([rule], {"t": 75}, backend)["fit"].contributions[0]["pointsEarned"] == 9


def test_nan_holds_no_range(backend: Backend) -> None:
    result = score_object([HEADCOUNT], {"t": float("nan")}, backend)["fit"]
    assert result.contributions[0]["matchedValue"] == "nan (no range)"
    assert result.earned == 0.0


def test_contributions_are_independent_dicts(backend: Backend) -> None:
    profile = compile_profile([boolean({"true": 1})], backend)
    first, second = profile.score_many([{"t": True}, {"t": True}])
    first["fit"].contributions[0]["pointsEarned"] = 99
    assert second["fit"].contributions[0]["pointsEarned"] == 1
    assert profile.score({"t": True})["fit"].contributions[0]["pointsEarned"] == 1


def test_user_text_never_becomes_code(backend: Backend) -> None:
    nasty = "x'); import os; os._exit(1); ('"
    rule = Rule(nasty, nasty, nasty, "list", {"choices": {nasty: 3}, "mode": "additive"})
    result = score_object([rule], {nasty: [nasty]}, backend)
    assert result[nasty].contributions[0]["pointsEarned"] == 3


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (874, "874"),
        (874.0, "874"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e15, "1000000000000000"),
        (1e16, "1e+16"),
        (1.5e-7, "1.5e-07"),
        (-12.5, "-12.5"),
        (10**20, "100000000000000000000"),
    ],
)
def test_format_number(number: int | float, text: str) -> None:
    assert format_number(number) == text


@pytest.mark.parametrize(
    "rule",
    [
        Rule("r", "t", "fit", "boolean", {"yes": 1}),
        Rule("r", "t", "fit", "boolean", {"true": "1"}),
        Rule("r", "t", "fit", "number", {"ranges": [{"min": 0}]}),
        Rule("r", "t", "fit", "number", {"choices": {}}),
        Rule("r", "t", "fit", "list", {"choices": {"A": 1}, "mode": "most"}),
        Rule("r", "t", "fit", "list", {"choices": {"A": float("inf")}}),
        Rule("r", "t", "fit", "text", {}),
    ],
)
def test_invalid_rules_are_rejected(rule: Rule, backend: Backend) -> None:
    with pytest.raises(InvalidRuleError):
        compile_profile([rule], backend)


def test_matched_value_bound_is_200_characters() -> None:
    assert MAX_MATCHED_VALUE_CHARS == 200
    assert bound_matched_value("") == ""
    assert bound_matched_value("x" * 200) == "x" * 200
    assert bound_matched_value("x" * 201) == "x" * 199 + ELL
    assert bound_matched_value(SMILE * 1000) == SMILE * 199 + ELL
    for length in (0, 1, 199, 200, 201, 202, 1000, 20_198):
        text = "é" * length
        cut = bound_matched_value(text)
        assert len(cut) == min(length, 200)
        assert (cut == text) if length <= 200 else (cut == text[:199] + ELL)


def test_every_matched_value_is_bounded_in_a_batch(backend: Backend) -> None:
    """One profile, all rule kinds sharing templates, many objects: every matchedValue of every
    row is at most 200 characters, and the list text is cut once for all the rules of its
    template."""
    rules = [
        choices({MANY[99]: 1}, rid="a", tid="l"),
        choices({MANY[0]: 2}, "best-match", rid="b", tid="l", dim="urgency"),
        choices({MANY[1]: 3}, "contains-none", rid="c", tid="l"),
        HEADCOUNT._replace(id="d", signal_template_id="n"),
        ranges((0, 10**300, 1), rid="e", tid="n", dim="urgency"),
        boolean({"true": 1}, rid="f", tid="b"),
    ]
    objects: list[dict[str, Any]] = [
        {"l": MANY[: i % 7] * (i % 3), "n": 10 ** (i % 250), "b": i % 2 == 0} for i in range(300)
    ]
    results = compile_profile(rules, backend).score_many(objects)
    texts = [
        c["matchedValue"]
        for result in results
        for dimension in result.values()
        for c in dimension.contributions
    ]
    assert len(texts) == 300 * 6
    assert max(len(t) for t in texts if t is not None) == 200
    assert sum(t is not None and t.endswith(ELL) for t in texts) > 300
    for result, values in zip(results, objects, strict=True):
        joined = ", ".join(values["l"])
        contributions = [c for d in result.values() for c in d.contributions]
        list_texts = {c["matchedValue"] for c in contributions if c["ruleId"] in ("a", "b", "c")}
        assert list_texts == {joined if len(joined) <= 200 else joined[:199] + ELL}
