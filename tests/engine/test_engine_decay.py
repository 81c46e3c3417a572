"""Time decay (SPEC §13): both loops against the reference on random profiles with decay,
values observed exactly on a step's boundary and one microsecond either side, and the
decisions documented in ``signalscore.engine`` as explicit examples."""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from signalscore.engine import (
    Backend,
    DimensionResult,
    InvalidRuleError,
    Rule,
    compile_profile,
    score_object,
)
from signalscore.engine._rules import decay_points

Reference = Callable[..., dict[str, dict[str, Any]]]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
TEMPLATES = ["t0", "t1", "t2", "t3"]
WORDS = ["Salesforce", "HubSpot", "Zoho", "Close"]
MODES = ["additive", "best-match", "contains-all", "contains-none", "exact-match"]
US = timedelta(microseconds=1)


def at(instant: datetime) -> str:
    """Canonical UTC text of an aware datetime."""
    t = instant.astimezone(UTC)
    return f"{t.year:04d}-{t.strftime('%m-%dT%H:%M:%S.%f')}Z"


def decay(*steps: tuple[int, int | float]) -> dict[str, Any]:
    return {"steps": [{"afterDays": d, "factor": f} for d, f in steps]}


# --- strategies --------------------------------------------------------------------------------

points = st.one_of(
    st.integers(-50, 50),
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    # Ties and near-ties of round(x, 2), tiny values that round to (negative) zero.
    st.sampled_from([0.125, 2.675, -2.675, 1.005, -0.001, 0.004, -0.004, 1e-9, 0.0, -0.0, 0.5]),
)
factors = st.one_of(
    st.sampled_from([1, 1.0, 0.9, 0.75, 0.5, 0.333, 0.3, 0.25, 0.1, 0.05, 0.01, 0, 0.0]),
    st.floats(0, 1),
)


@st.composite
def decays(draw: st.DrawFn) -> dict[str, Any] | None:
    if draw(st.integers(0, 3)) == 0:
        return None
    count = draw(st.sampled_from([1, 1, 2, 2, 3, 10]))
    pool = st.one_of(
        st.integers(1, 400),
        st.sampled_from([1, 7, 30, 90, 365]),
        st.sampled_from([3_652_058, 3_652_059, 10**6, 10**9, 10**12]),  # past year 9999 / 1
    )
    days = sorted(set(draw(st.lists(pool, min_size=count, max_size=count))))
    chosen = sorted(draw(st.lists(factors, min_size=len(days), max_size=len(days))), reverse=True)
    return decay(*zip(days, chosen, strict=True))


@st.composite
def rules_strategy(draw: st.DrawFn) -> list[Rule]:
    rules = []
    for i in range(draw(st.integers(1, 6))):
        template = draw(st.sampled_from(TEMPLATES))
        dimension = draw(st.sampled_from(["fit", "urgency"]))
        kind = draw(st.sampled_from(["boolean", "number", "list"]))
        pv: dict[str, Any]
        if kind == "boolean":
            pv = {"true": draw(points), "false": draw(points)}
        elif kind == "number":
            edges = sorted(set(draw(st.lists(st.integers(-100, 100), min_size=1, max_size=4))))
            pv = {"ranges": [{"max": edges[0], "points": draw(points)}]}
            pv["ranges"] += [{"min": a, "max": b, "points": draw(points)}
                             for a, b in itertools.pairwise(edges)]  # fmt: skip
        else:
            words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True))
            pv = {"choices": {w: draw(points) for w in words}, "mode": draw(st.sampled_from(MODES))}
        rules.append(Rule(f"rule-{i}", template, dimension, kind, pv, draw(decays())))
    return rules


def _value(draw: st.DrawFn, rules: Sequence[Rule], template: str) -> Any:
    kinds = [r.answer_type for r in rules if r.signal_template_id == template]
    kind = draw(st.sampled_from([*kinds, *kinds, *kinds, "none", "wrong"]))
    if kind == "none":
        return None
    if kind == "wrong":  # a value of another type: no value for the rule
        return draw(st.sampled_from(["text", 3, True, ["a"]]))
    if kind == "boolean":
        return draw(st.booleans())
    if kind == "number":
        return draw(st.one_of(st.integers(-150, 150), st.floats(-150, 150)))
    return draw(st.lists(st.sampled_from([*WORDS, "other"]), max_size=4))


@st.composite
def nows(draw: st.DrawFn) -> datetime:
    return draw(
        st.one_of(
            st.just(NOW),
            st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
            # thresholds before year 1 (steps that cannot pass), next changes after 9999
            st.sampled_from([datetime(1, 3, 1, tzinfo=UTC), datetime(9999, 12, 1, tzinfo=UTC)]),
        )
    )


def _observed(draw: st.DrawFn, rules: Sequence[Rule], now: datetime) -> str | None:
    """An observedAt, most often exactly on a step's boundary or one microsecond beside it."""
    days = [s["afterDays"] for r in rules if r.decay for s in r.decay["steps"]]
    how = draw(st.sampled_from(["boundary", "boundary", "anywhere", "recent", "none", "far"]))
    if how == "none":
        return None
    if how == "far":
        return draw(st.sampled_from(["0001-01-01T00:00:00.000000Z", "9999-12-31T23:59:59.999999Z",
                                     "2000-02-29T12:00:00.000000Z"]))  # fmt: skip
    if how == "boundary" and days:
        age = timedelta(days=min(draw(st.sampled_from(days)), 3_000_000))
        age += draw(st.sampled_from([timedelta(0), US, -US]))
    elif how == "recent":
        age = draw(st.timedeltas(timedelta(days=-3), timedelta(days=3)))
    else:
        age = draw(st.timedeltas(timedelta(days=-500), timedelta(days=1000)))
    try:
        return at(now - age)
    except OverflowError:
        return None


@st.composite
def cases(
    draw: st.DrawFn,
) -> tuple[list[Rule], list[dict[str, Any]], list[dict[str, str | None] | None], datetime]:
    rules = draw(rules_strategy())
    now = draw(nows())
    objects: list[dict[str, Any]] = []
    observed: list[dict[str, str | None] | None] = []
    for _ in range(draw(st.integers(1, 5))):
        values = {t: _value(draw, rules, t) for t in TEMPLATES if draw(st.integers(0, 5))}
        objects.append(values)
        if draw(st.integers(0, 7)) == 0:
            observed.append(None)  # nothing known for this object
            continue
        texts = {t: _observed(draw, rules, now) for t in TEMPLATES if draw(st.integers(0, 7))}
        observed.append(texts)
    return rules, objects, observed, now


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


def _assert_agrees(result: dict[str, DimensionResult], expected: dict[str, Any]) -> None:
    actual = _as_reference(result)
    assert actual == expected
    for dimension, summary in actual.items():
        assert type(summary["earned"]) is float
        assert type(summary["score"]) is float
        for got, want in zip(summary["contributions"], expected[dimension]["contributions"],
                             strict=True):  # fmt: skip
            # == says 0 == 0.0 == -0.0 and 1 == 1.0: the types and signs must agree too.
            for key in ("pointsEarned", "decayFactor"):
                assert type(got[key]) is type(want[key]), (dimension, key)
                assert math.copysign(1, got[key]) == math.copysign(1, want[key]), key
            assert list(got) == [
                "ruleId",
                "signalTemplateId",
                "matchedValue",
                "pointsEarned",
                "maxPoints",
                "observedAt",
                "decayFactor",
            ]
            assert got["observedAt"] is None or got["matchedValue"] is not None
            earned = got["pointsEarned"]
            if got["decayFactor"] != 1 and earned == 0 and type(earned) is float:
                assert math.copysign(1, earned) == 1  # decay never gives -0.0


# --- properties --------------------------------------------------------------------------------


@SETTINGS
@given(cases())
def test_score_many_with_decay_agrees_with_reference(
    backend: Backend, reference: Reference, case: Any
) -> None:
    rules, objects, observed, now = case
    results = compile_profile(rules, backend).score_many(objects, observed, now)
    assert len(results) == len(objects)
    for values, texts, result in zip(objects, observed, results, strict=True):
        _assert_agrees(result, reference(rules, values, texts, now))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_both_loops_and_every_entry_point_agree(reference: Reference, case: Any) -> None:
    rules, objects, observed, now = case
    native = compile_profile(rules, "native")
    python = compile_profile(rules, "python")
    batch = native.score_many(objects, observed, now)
    assert python.score_many(objects, observed, now) == batch
    # The same objects again, in another order: memos warmed differently.
    assert native.score_many(objects[::-1], observed[::-1], now)[::-1] == batch
    assert python.score_many(objects[::-1], observed[::-1], now)[::-1] == batch
    for values, texts, result in zip(objects, observed, batch, strict=True):
        assert native.score(values, texts, now) == result
        assert python.score(values, texts, now) == result
        assert score_object(rules, values, "native", texts, now) == result
    # Without observedAt nothing decays: as if the rules had no decay.
    plain = [rule._replace(decay=None) for rule in rules]
    for profile in (native, python):
        assert profile.score_many(objects) == compile_profile(plain).score_many(objects)
        assert profile.score_many(objects, None, now) == profile.score_many(objects)


@SETTINGS
@given(points, factors)
def test_decayed_points_are_python_round(value: int | float, factor: int | float) -> None:
    """The rounding rule itself (both loops use it): round(points * factor, 2), no -0.0,
    and a factor of exactly 1 leaves the points (and their type) alone."""
    got = decay_points(value, factor)
    if factor == 1:
        assert got is value
        return
    want = round(value * factor, 2)
    assert got == want
    assert type(got) is type(want)
    if type(got) is float and got == 0:
        assert math.copysign(1, got) == 1


# --- explicit examples -------------------------------------------------------------------------

B2B = Rule("b2b", "b2b", "fit", "boolean", {"true": 10, "false": -4}, decay((30, 0.5), (90, 0)))
SIZE = Rule(
    "size",
    "employees",
    "fit",
    "number",
    {"ranges": [{"max": 100, "points": 3}, {"min": 100, "points": 7.5}]},
    decay((10, 0.75)),
)
CRM = Rule("crm", "crm", "urgency", "list", {"choices": {"HubSpot": 5, "Zoho": -3}},
           decay((7, 0.333), (14, 0.0)))  # fmt: skip
PLAIN = Rule("plain", "b2b", "urgency", "boolean", {"true": 2})


def _contribution(result: dict[str, DimensionResult], rule_id: str) -> dict[str, Any]:
    return next(c for r in result.values() for c in r.contributions if c["ruleId"] == rule_id)


@pytest.mark.parametrize(
    ("age", "earned", "factor"),
    [
        (timedelta(days=30) - US, 10, 1),
        (timedelta(days=30), 10, 1),  # exactly on the boundary: not passed
        (timedelta(days=30) + US, 5.0, 0.5),
        (timedelta(days=90), 5.0, 0.5),
        (timedelta(days=90) + US, 0, 0),  # int points times int 0: int 0, as round() gives
        (timedelta(days=-1), 10, 1),  # observed in the future
    ],
)
def test_step_boundaries(
    backend: Backend, age: timedelta, earned: int | float, factor: int | float
) -> None:
    observed = at(NOW - age)
    result = compile_profile([B2B], backend).score({"b2b": True}, {"b2b": observed}, NOW)
    c = _contribution(result, "b2b")
    assert (c["pointsEarned"], c["decayFactor"], c["observedAt"]) == (earned, factor, observed)
    assert type(c["pointsEarned"]) is type(earned)
    assert type(c["decayFactor"]) is type(factor)
    assert result["fit"].earned == float(earned)
    assert result["fit"].score == round(100.0 * earned / 10, 2)


def test_next_change_at_is_the_earliest_step_still_to_pass(backend: Backend) -> None:
    profile = compile_profile([B2B, SIZE, CRM, PLAIN], backend)
    observed = {
        "b2b": at(NOW - timedelta(days=40)),  # 30 passed; 90 passes at observed + 90 days
        "employees": at(NOW - timedelta(days=2, hours=5)),  # 10 passes at observed + 10 days
        "crm": at(NOW - timedelta(days=30)),  # both passed: no next change
    }
    values: dict[str, Any] = {"b2b": True, "employees": 500, "crm": ["hubspot", "Zoho"]}
    result = profile.score(values, observed, NOW)
    assert result["fit"].next_change_at == at(NOW - timedelta(days=2, hours=5) + timedelta(days=10))
    assert result["urgency"].next_change_at is None
    crm = _contribution(result, "crm")
    assert (crm["pointsEarned"], crm["decayFactor"]) == (0.0, 0.0)  # 2 * 0.0, a float zero
    assert _contribution(result, "plain") == {
        "ruleId": "plain",
        "signalTemplateId": "b2b",
        "matchedValue": "true",
        "pointsEarned": 2,
        "maxPoints": 2,
        "observedAt": observed["b2b"],  # stamped even without decay
        "decayFactor": 1,
    }
    size = _contribution(result, "size")
    assert (size["pointsEarned"], size["decayFactor"]) == (7.5, 1)
    # Ten days later the size step has passed; the b2b step at 90 days is the next one.
    later = profile.score(values, observed, NOW + timedelta(days=10))
    assert _contribution(later, "size")["pointsEarned"] == 5.62  # round(5.625, 2): 5.62
    assert later["fit"].next_change_at == at(NOW - timedelta(days=40) + timedelta(days=90))


def test_negative_points_decay_to_zero_not_negative_zero(backend: Backend) -> None:
    rules = [
        Rule("neg", "b", "fit", "boolean", {"true": -2.5}, decay((1, 0.0))),
        Rule("tiny", "c", "fit", "boolean", {"true": -0.004}, decay((1, 0.5))),
        Rule("int", "d", "fit", "boolean", {"true": -3}, decay((1, 0))),
    ]
    old = at(NOW - timedelta(days=5))
    result = compile_profile(rules, backend).score(
        {"b": True, "c": True, "d": True}, {"b": old, "c": old, "d": old}, NOW
    )["fit"]
    earned = [c["pointsEarned"] for c in result.contributions]
    assert earned == [0.0, 0.0, 0]
    assert [type(e) for e in earned] == [float, float, int]
    assert all(math.copysign(1, e) == 1 for e in earned)
    assert result.earned == 0.0
    assert math.copysign(1, result.earned) == 1


def test_without_observed_at_nothing_decays(backend: Backend) -> None:
    profile = compile_profile([B2B, SIZE, CRM], backend)
    values: dict[str, Any] = {"b2b": True, "employees": 50, "crm": ["HubSpot"]}
    expected = compile_profile([r._replace(decay=None) for r in (B2B, SIZE, CRM)]).score(values)
    for observed in (None, {}, {"b2b": None, "employees": None}, {"other": at(NOW)}):
        result = profile.score(values, observed, NOW)
        assert result == expected
        for summary in result.values():
            assert summary.next_change_at is None
            assert all(c["observedAt"] is None and c["decayFactor"] == 1
                       for c in summary.contributions)  # fmt: skip
    # A list with None for an object, and the default now (the current time).
    many = profile.score_many([values, values], [None, {"b2b": at(NOW)}])
    assert many[0] == expected
    assert _contribution(many[1], "b2b")["observedAt"] == at(NOW)


def test_observed_at_of_a_missing_value_is_null(backend: Backend) -> None:
    profile = compile_profile([B2B, SIZE], backend)
    old = at(NOW - timedelta(days=400))
    result = profile.score({"b2b": "yes"}, {"b2b": old, "employees": old}, NOW)["fit"]
    assert [(c["observedAt"], c["decayFactor"], c["pointsEarned"]) for c in result.contributions
            ] == [(None, 1, 0), (None, 1, 0)]  # fmt: skip
    assert result.next_change_at is None


def test_now_defaults_to_the_current_time_and_may_be_in_any_zone(backend: Backend) -> None:
    profile = compile_profile([B2B], backend)
    real_now = datetime.now(UTC)
    observed = {"b2b": at(real_now - timedelta(days=31))}
    assert _contribution(profile.score({"b2b": True}, observed), "b2b")["decayFactor"] == 0.5
    fresh = {"b2b": at(real_now - timedelta(days=29))}
    assert _contribution(profile.score({"b2b": True}, fresh), "b2b")["decayFactor"] == 1
    # The same instant in another zone; and DST is never applied to the day arithmetic.
    east = NOW.astimezone(timezone(timedelta(hours=5, minutes=30)))
    observed = {"b2b": at(NOW - timedelta(days=30))}
    assert profile.score({"b2b": True}, observed, east) == profile.score(
        {"b2b": True}, observed, NOW
    )
    with pytest.raises(ValueError, match="aware"):
        profile.score({"b2b": True}, observed, datetime(2026, 12, 7))


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-30T12:00:00Z",  # not the canonical width
        "2026-11-30T12:00:00.000000+00:00",
        "2026-11-30T12:00:00.00000\N{LATIN SMALL LETTER E WITH ACUTE}Z",  # 27, not ASCII
        20261130,
        b"2026-11-30T12:00:00.000000Z",
    ],
)
def test_observed_at_that_is_not_canonical_text_is_an_error(text: Any) -> None:
    for backend in ("native", "python"):
        profile = compile_profile([PLAIN], backend)
        with pytest.raises(ValueError, match="observedAt"):
            profile.score({"b2b": True}, {"b2b": text}, NOW)
        # Unused (the value is missing): not looked at.
        assert profile.score({}, {"b2b": text}, NOW) == profile.score({})


@pytest.mark.parametrize("text", ["2027-02-29T12:00:00.000000Z", "9999-13-01T00:00:00.000000Z",
                                  "2026-12-00T00:00:00.000000Z", "2026/11/30T12:00:00.000000Z",
                                  "2026-1x-30T12:00:00.000000Z"])  # fmt: skip
def test_a_date_that_must_be_shifted_is_checked(text: str) -> None:
    """The date of a text whose next step is computed must be a valid YYYY-MM-DD. (A text
    older than every step's threshold is only compared, never parsed: the caller's contract
    is canonical text, and the loops check no more than they need.)"""
    for backend in ("native", "python"):
        profile = compile_profile([B2B], backend)
        with pytest.raises(ValueError, match="observedAt"):
            profile.score({"b2b": True}, {"b2b": text}, NOW)


def test_next_changes_beyond_year_9999_and_steps_before_year_1(backend: Backend) -> None:
    # 3,652,058 days: from 0001-01-01 to 9999-12-31, the longest shift that stays in range.
    rule = B2B._replace(decay=decay((1, 0.5), (3_652_058, 0.25)))
    profile = compile_profile([rule], backend)
    late = "9999-12-30T00:00:00.000000Z"
    fit = profile.score({"b2b": True}, {"b2b": late}, NOW)["fit"]
    assert fit.next_change_at == "9999-12-31T00:00:00.000000Z"
    fit = profile.score({"b2b": True}, {"b2b": late}, datetime(9999, 12, 31, 1, tzinfo=UTC))["fit"]
    assert fit.next_change_at is None  # 3,652,058 days later is after 9999
    assert fit.contributions[0]["decayFactor"] == 0.5
    early = "0001-01-01T00:00:00.000000Z"
    fit = profile.score({"b2b": True}, {"b2b": early}, NOW)["fit"]
    assert fit.contributions[0]["decayFactor"] == 0.5  # the last step cannot pass
    assert fit.next_change_at == "9999-12-31T00:00:00.000000Z"


def test_observed_list_must_be_parallel(backend: Backend) -> None:
    profile = compile_profile([B2B], backend)
    with pytest.raises(ValueError, match=r"shorter|longer"):
        profile.score_many([{}, {}], [{}], NOW)
    with pytest.raises(ValueError, match=r"shorter|longer"):
        profile.score_many([{}], [{}, {}], NOW)


class Texts(Mapping[str, str]):
    """A mapping that is not a dict: read through ``get``."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def __getitem__(self, key: str) -> str:
        return self.data[key]

    def __iter__(self) -> Any:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def test_observed_mappings_of_any_type_and_iterables(reference: Reference) -> None:
    rules = [B2B, SIZE, CRM]
    values: list[dict[str, Any]] = [{"b2b": False, "employees": 120.5, "crm": ("Zoho",)}] * 3
    observed = {"b2b": at(NOW - timedelta(days=95)), "crm": at(NOW - timedelta(days=8))}
    want = reference(rules, values[0], observed, NOW)
    for backend in ("native", "python"):
        profile = compile_profile(rules, backend)
        results = profile.score_many(values, [Texts(observed)] * 3, NOW)
        for result in results:
            _assert_agrees(result, want)


def test_gc_and_memos_with_decay(backend: Backend) -> None:
    profile = compile_profile([B2B, SIZE, CRM], backend)
    values: list[dict[str, Any]] = [
        {"b2b": i % 2 == 0, "employees": i, "crm": ["HubSpot"]} for i in range(300)
    ]
    observed = [{t: at(NOW - timedelta(days=i % 120, hours=i)) for t in ("b2b", "employees", "crm")}
                for i in range(300)]  # fmt: skip
    first = profile.score_many(values, observed, NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        assert profile.score_many(values, observed, NOW) == first
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert [profile.score(v, o, NOW) for v, o in zip(values, observed, strict=True)] == first


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"steps": []},
        {"steps": [{"afterDays": 0, "factor": 0.5}]},
        {"steps": [{"afterDays": 1.5, "factor": 0.5}]},
        {"steps": [{"afterDays": True, "factor": 0.5}]},
        {"steps": [{"afterDays": 3, "factor": 1.5}]},
        {"steps": [{"afterDays": 3, "factor": -0.1}]},
        {"steps": [{"afterDays": 3, "factor": math.nan}]},
        {"steps": [{"afterDays": 3, "factor": False}]},
        {"steps": [{"afterDays": 3, "factor": 0.5}, {"afterDays": 3, "factor": 0.2}]},
        {"steps": [{"afterDays": 3, "factor": 0.5}, {"afterDays": 9, "factor": 0.6}]},
        {"steps": [{"afterDays": 3, "factor": 0.5, "extra": 1}]},
        {"steps": [{"afterDays": d, "factor": 0.5} for d in range(1, 12)]},
        {"steps": "30 days"},
        [{"afterDays": 3, "factor": 0.5}],
    ],
)
def test_invalid_decay_is_rejected(bad: Any) -> None:
    with pytest.raises(InvalidRuleError):
        compile_profile([B2B._replace(decay=bad)])


def test_rules_built_positionally_have_no_decay() -> None:
    rule = Rule("r", "t", "fit", "boolean", {"true": 1})
    assert rule.decay is None
    result = compile_profile([rule]).score({"t": True}, {"t": at(NOW)}, NOW)["fit"]
    assert result.contributions[0]["decayFactor"] == 1
    assert result.next_change_at is None
    assert result == DimensionResult(*result[:6], None)


@given(st.datetimes(timezones=st.just(UTC)))
def test_canonical_text_sorts_as_time(instant: datetime) -> None:
    """What the loops rely on: the fixed-width text orders as the instants do."""
    assume(instant.year > 1)
    text = at(instant)
    assert len(text) == 27
    assert at(instant - US) < text
