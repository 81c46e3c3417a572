"""The two scoring loops (C and generated Python) on the paths the property tests rarely reach.

Both must give equal results, raise the same errors on values the API never stores, keep the
cyclic GC as they found it, and not leak memory over many batches.
"""

from __future__ import annotations

import enum
import gc
import math
import tracemalloc
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from signalscore.engine import (
    BACKENDS,
    MAX_MATCHED_VALUE_CHARS,
    Backend,
    Rule,
    _native,
    _native_plan,
    compile_profile,
)
from signalscore.engine._rules import NormalizedStrings, compile_rule

PROFILE = [
    Rule("employees", "employees", "fit", "number",
         {"ranges": [{"max": 10, "points": -5}, {"min": 10, "max": 1000, "points": 10},
                     {"min": 1000, "points": 20}]}),
    Rule("revenue", "revenue", "fit", "currency", {"ranges": [{"min": 1e6, "points": 5}]}),
    Rule("growth", "growth", "urgency", "percentage",
         {"ranges": [{"min": 0, "max": 50, "points": 4}, {"min": 50, "points": 9}]}),
    Rule("b2b", "b2b", "fit", "boolean", {"true": 20, "false": -10}),
    Rule("crm", "crm", "fit", "list",
         {"choices": {"HubSpot": 8, "Salesforce": 10, "Zoho": -3}, "mode": "additive"}),
    Rule("crm-best", "crm", "urgency", "list",
         {"choices": {"HubSpot": 2, "Salesforce": 6}, "mode": "best-match"}),
    Rule("industry", "industry", "fit", "list",
         {"choices": {"Software": 5, "Fintech": 5}, "mode": "contains-all"}),
    Rule("tools", "sales_tools", "urgency", "list",
         {"choices": {"Outreach": 3}, "mode": "contains-none"}),
    Rule("tools-exact", "sales_tools", "urgency", "list",
         {"choices": {"Gong": 1.5}, "mode": "exact-match"}),
]  # fmt: skip


class Size(enum.IntEnum):
    LARGE = 5000


class Money(float):
    pass


def _both(rules: list[Rule], values: list[Mapping[str, Any]]) -> list[Any]:
    native = compile_profile(rules, "native").score_many(values)
    python = compile_profile(rules, "python").score_many(values)
    assert native == python
    return native


def test_the_native_loop_is_built_and_the_default() -> None:
    assert BACKENDS == ("native", "python")
    assert compile_profile(PROFILE).backend == "native"
    assert compile_profile(PROFILE, "python").backend == "python"
    with pytest.raises(ValueError, match="unknown engine backend"):
        compile_profile(PROFILE, "fortran")  # type: ignore[arg-type]


def test_the_c_loop_takes_the_matched_value_bound_from_its_plan() -> None:
    """The limit and the ellipsis are defined once (``_rules``); the plan hands them to C."""
    rule = Rule("l", "l", "fit", "list", {"choices": {"A": 1}})
    helpers, slots, dims = _native_plan.build_plan([("fit", [compile_rule(rule)])])
    assert helpers[-2:] == (MAX_MATCHED_VALUE_CHARS, "\N{HORIZONTAL ELLIPSIS}")
    other = _native.Scorer(((*helpers[:-2], 5, "~~"), slots, dims))
    results = other.score_batch([{"l": ["abcdef"]}, {"l": ["abcde"]}], NormalizedStrings())
    assert [r["fit"].contributions[0]["matchedValue"] for r in results] == ["abc~~", "abcde"]
    for bad in [(200, 1), (200, b"..."), (0, "..."), (-1, "")]:
        with pytest.raises(ValueError, match="ellipsis"):
            _native.Scorer(((*helpers[:-2], *bad), slots, dims))


def test_unusual_value_types_score_like_their_plain_forms() -> None:
    rules = [
        Rule("n", "n", "fit", "number", {"ranges": [{"min": 10, "max": 10_000, "points": 3}]}),
        Rule("l", "l", "fit", "list", {"choices": {"Zoho": 2, "Close": 5}, "mode": "additive"}),
        Rule("b", "b", "urgency", "boolean", {"true": 4, "false": -1}),
    ]
    odd: list[Mapping[str, Any]] = [
        {"n": Size.LARGE, "l": ("zoho ", "CLOSE"), "b": True},  # int subclass, tuple
        MappingProxyType({"n": Money(12.5), "l": ["Close"], "b": False}),  # not a dict
        {"n": True, "l": "Zoho", "b": 1},  # wrong types count as no value
        {"n": None, "l": None, "b": None},
    ]
    plain: list[Mapping[str, Any]] = [
        {"n": 5000, "l": ["zoho ", "CLOSE"], "b": True},
        {"n": 12.5, "l": ["Close"], "b": False},
        {},
        {},
    ]
    assert _both(rules, odd) == _both(rules, plain)
    first = _both(rules, odd)[0]["fit"]
    assert [c["matchedValue"] for c in first.contributions] == ["5000 (10–10000)", "zoho , CLOSE"]
    assert first.earned == 10.0


def test_integers_beyond_double_precision_compare_exactly() -> None:
    big = 2**53
    rule = Rule("n", "n", "fit", "number", {"ranges": [{"min": big + 1, "points": 7}]})
    results = _both([rule], [{"n": big}, {"n": big + 1}, {"n": float(big + 1)}, {"n": 10**30}])
    assert [r["fit"].contributions[0]["pointsEarned"] for r in results] == [0, 7, 0, 7]
    assert (
        results[1]["fit"].contributions[0]["matchedValue"] == "9007199254740993 (≥9007199254740993)"
    )


def test_large_additive_points_sum_exactly() -> None:
    huge = {"A": 2**62, "B": 2**62, "C": -1}
    rule = Rule("l", "l", "fit", "list", {"choices": huge, "mode": "additive"})
    (result,) = _both([rule], [{"l": ["a", "b", "c"]}])
    assert result["fit"].contributions[0]["pointsEarned"] == 2**63 - 1
    assert type(result["fit"].contributions[0]["pointsEarned"]) is int


@pytest.mark.parametrize(
    "points",
    [
        [1e-16, 1.0, 1e16],  # the half-even fix-up across partials
        [0.1] * 10,
        [-0.0, -0.0],  # fsum of zeros is +0.0
        [2.0 ** (60 * k - 1000) for k in range(34)],  # more partials than the C sum keeps
        [1e308, 1e308, -1e308],  # intermediate overflow: math.fsum raises
        [2**60 + 1, 0.5, -(2**60)],  # an int past 2**53
    ],
)
def test_float_sums_are_math_fsum(points: list[int | float]) -> None:
    """The C loop sums float points itself (the algorithm of math.fsum) and hands what it
    cannot (too many partials, overflow, huge ints) to math.fsum: equal on every input."""
    rules = [
        Rule(f"r{i}", f"t{i}", "fit", "boolean", {"true": p, "false": 0.5})
        for i, p in enumerate(points)
    ]
    values = {f"t{i}": True for i in range(len(points))}
    try:
        want = math.fsum(points)
    except OverflowError:
        for backend in ("native", "python"):
            with pytest.raises(OverflowError):
                compile_profile(rules, backend).score(values)
        return
    (result,) = _both(rules, [values])
    assert result["fit"].earned == want
    assert math.copysign(1, result["fit"].earned) == math.copysign(1, want)


@pytest.mark.parametrize(
    ("value", "error"),
    [(["ok", 3], AttributeError), (["ok", ["nested"]], TypeError)],
)
def test_list_items_that_are_not_text_raise_the_same_error(
    backend: Backend, value: list[Any], error: type[Exception]
) -> None:
    rule = Rule("l", "l", "fit", "list", {"choices": {"ok": 1}})
    profile = compile_profile([rule], backend)
    assert gc.isenabled()
    with pytest.raises(error):
        profile.score_many([{"l": ["ok"]}, {"l": value}])
    assert gc.isenabled()  # the native loop re-enables the GC after an error too


def test_the_gc_state_is_restored(backend: Backend) -> None:
    profile = compile_profile(PROFILE, backend)
    gc.disable()
    try:
        profile.score_many([{"b2b": True}])
        assert not gc.isenabled()
    finally:
        gc.enable()
    profile.score_many([{"b2b": True}])
    assert gc.isenabled()


def test_many_batches_do_not_leak(backend: Backend) -> None:
    profile = compile_profile(PROFILE, backend)
    values: list[dict[str, Any]] = [
        {
            # Every third object's texts pass matchedValue's 200 characters and are cut.
            "employees": 10**250 + i if i % 3 == 0 else 120 + i,
            "revenue": 1.5e6 + i / 7,
            "growth": float("nan") if i % 9 == 0 else i - 20.5,
            "b2b": i % 2 == 0,
            "crm": ["HubSpot", f" salesforce{i % 3} ", *(["Zoho" * 50] * 40 if i % 3 == 0 else [])],
            "industry": ("Software", "FINTECH"),
            "sales_tools": [],
        }
        for i in range(200)
    ]
    profile.score_many(values)  # warm caches and memos
    tracemalloc.start()
    try:
        profile.score_many(values)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            profile.score_many(values)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 50 batches of 200 objects build about 300k objects; a leak of one per object is ~10 MB.
    assert growth < 64 * 1024, growth


def test_the_batch_may_be_changed_while_it_is_scored() -> None:
    """Code of the caller's (here a Mapping's ``get``) empties the batch mid-loop: both loops
    stop where iteration stops, and the C loop never reads a freed object."""

    def run(backend: Backend) -> list[Any]:
        batch: list[Any] = []

        class Emptying(Mapping[str, Any]):
            def __getitem__(self, key: str) -> Any:
                raise KeyError(key)

            def __iter__(self) -> Any:
                return iter(())

            def __len__(self) -> int:
                return 0

            def get(self, key: str, default: Any = None) -> Any:
                batch.clear()
                return default

        batch.extend([Emptying(), Emptying(), {"b2b": True}])
        return compile_profile(PROFILE, backend).score_many(batch)

    native, python = run("native"), run("python")
    assert native == python
    assert len(native) == 1


def test_list_items_may_vanish_while_they_are_hashed() -> None:
    answer: list[str] = []

    class Vanishing(str):
        def __hash__(self) -> int:
            answer.clear()  # drops the list's reference to this very item
            return str.__hash__(self)

    def run(backend: Backend) -> Any:
        answer[:] = [Vanishing("HubSpot" * 100), Vanishing("Zoho")]
        return compile_profile(PROFILE, backend).score({"crm": answer})

    assert run("native") == run("python")


@pytest.mark.parametrize(
    ("choices", "answer", "earned"),
    [
        ({"A": 3, "B": 3.0}, ["b", "a"], 3),
        ({"A": 3, "B": 3.0}, ["a", "b"], 3),
        ({"B": 3.0, "A": 3}, ["a", "b"], 3.0),
        ({"A": 3, "B": 3.0}, ["b"], 3.0),
        ({"A": 1, "B": 3.0, "a ": 3}, ["a", "b"], 3.0),
    ],
)
def test_best_match_ties_go_to_the_choice_stored_first(
    backend: Backend,
    reference: Any,
    choices: dict[str, int | float],
    answer: list[str],
    earned: int | float,
) -> None:
    """Equal points of different types (3 and 3.0) print differently in JSON; the winner is
    the first in stored order, as max() over the stored choices picks, never set order."""
    rule = Rule("r", "t", "fit", "list", {"choices": choices, "mode": "best-match"})
    [contribution] = compile_profile([rule], backend).score({"t": answer})["fit"].contributions
    assert contribution["pointsEarned"] == earned
    assert type(contribution["pointsEarned"]) is type(earned)
    [expected] = reference([rule], {"t": answer})["fit"]["contributions"]
    assert type(expected["pointsEarned"]) is type(earned)
