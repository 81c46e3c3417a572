"""A slow, obviously-correct reference for SPEC §6 and §13, shared by the engine tests as a
fixture.

Written straight from the text of SPEC §6 and §13 (plus the decisions documented in
``signalscore.engine``), one rule and one object at a time, with exact rational arithmetic for
the per-rule sums and ``datetime`` arithmetic for decay (no comparisons of texts). It shares no
code with the engine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from signalscore.engine import BACKENDS, Backend, Rule

ReferenceResult = dict[str, dict[str, Any]]


def _norm(text: str) -> str:
    return text.strip().casefold()


def _bounded(text: str) -> str:
    """matchedValue is at most 200 characters (code points): a longer text keeps its first 199
    and ends with "…" (U+2026 HORIZONTAL ELLIPSIS)."""
    return text if len(text) <= 200 else text[:199] + "\N{HORIZONTAL ELLIPSIS}"


def _exact_sum(points: Sequence[int | float]) -> int | float:
    total = sum((Fraction(p) for p in points), Fraction(0))
    if all(type(p) is int for p in points):
        return int(total)
    return float(total)  # Fraction → float is correctly rounded, like math.fsum


def _text(number: int | float) -> str:
    if isinstance(number, int):
        return str(number)
    if number.is_integer() and abs(number) < 1e16:
        return str(int(number))
    return repr(number)


def _label(low: int | float | None, high: int | float | None) -> str:
    if low is None and high is None:
        return "any"
    if high is None:
        return "≥" + _text(low)  # type: ignore[arg-type]
    if low is None:
        return "<" + _text(high)
    return _text(low) + "–" + _text(high)


def _max_points(rule: Rule) -> int | float:
    pv = rule.point_values
    if rule.answer_type == "boolean":
        on_true: int | float = pv.get("true", 0)
        on_false: int | float = pv.get("false", 0)
        return max(on_true, on_false, 0)
    if rule.answer_type == "list":
        points: list[int | float] = list(pv["choices"].values())
        mode = pv.get("mode") or "additive"
        if mode == "additive":
            return _exact_sum([p for p in points if p > 0])
        if mode == "best-match":
            return max([*points, 0])
        return max(_exact_sum(points), 0)
    range_points: list[int | float] = [r["points"] for r in pv["ranges"]]
    return max([*range_points, 0])


def _evaluate(rule: Rule, value: Any) -> tuple[str | None, int | float]:
    """(matchedValue, pointsEarned) of one rule for one value; (None, 0) when no value."""
    matched, points = _evaluate_unbounded(rule, value)
    return (None if matched is None else _bounded(matched)), points


def _evaluate_unbounded(rule: Rule, value: Any) -> tuple[str | None, int | float]:
    """``_evaluate`` before matchedValue is cut to its 200 characters."""
    pv = rule.point_values
    if rule.answer_type == "boolean":
        if value is True:
            return "true", pv.get("true", 0)
        if value is False:
            return "false", pv.get("false", 0)
        return None, 0
    if rule.answer_type == "list":
        if not isinstance(value, (list, tuple)):
            return None, 0
        answer = {_norm(s) for s in value}
        choices: Mapping[str, int | float] = pv["choices"]
        matched = [p for key, p in choices.items() if _norm(key) in answer]
        everything = list(choices.values())
        mode = pv.get("mode") or "additive"
        if mode == "additive":
            points: int | float = _exact_sum(matched)
        elif mode == "best-match":
            points = max(matched) if matched else 0
        elif mode == "contains-all":
            every = all(_norm(key) in answer for key in choices)
            points = _exact_sum(everything) if every else 0
        elif mode == "contains-none":
            none = not any(_norm(key) in answer for key in choices)
            points = _exact_sum(everything) if none else 0
        else:
            same = answer == {_norm(key) for key in choices}
            points = _exact_sum(everything) if same else 0
        return ", ".join(value), points
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, 0
    for r in pv["ranges"]:  # stored order: the first range holding the value
        low, high = r.get("min"), r.get("max")
        if (low is None or low <= value) and (high is None or value < high):
            return f"{_text(value)} ({_label(low, high)})", r["points"]
    return f"{_text(value)} (no range)", 0


def parse_instant(text: str) -> datetime:
    """Canonical UTC text (``2026-11-30T12:00:00.000000Z``) as an aware datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def format_instant(instant: datetime) -> str:
    """An aware datetime as canonical UTC text: 27 characters, the year zero-padded."""
    t = instant.astimezone(UTC)
    return f"{t.year:04d}-{t.strftime('%m-%dT%H:%M:%S.%f')}Z"


def _decay(
    rule: Rule, points: int | float, observed: datetime, now: datetime
) -> tuple[int | float, int | float, datetime | None]:
    """SPEC §13 for one rule with a value observed at ``observed``: (pointsEarned,
    decayFactor, the earliest instant at which a step not yet passed will pass)."""
    passed: list[tuple[int, int | float]] = []
    upcoming: list[datetime] = []
    for step in (rule.decay or {}).get("steps", []):
        days = step["afterDays"]
        try:
            has_passed = observed < now - timedelta(days=days)
        except OverflowError:  # now - afterDays is before year 1: nothing is older
            has_passed = False
        if has_passed:
            passed.append((days, step["factor"]))
            continue
        with contextlib.suppress(OverflowError):  # after year 9999: never
            upcoming.append(observed + timedelta(days=days))
    next_change = min(upcoming, default=None)
    if not passed:
        return points, 1, next_change
    factor = max(passed)[1]  # the step with the largest afterDays
    if factor == 1:
        return points, factor, next_change
    decayed = round(points * factor, 2)
    if decayed == 0:
        decayed = 0.0 if isinstance(decayed, float) else decayed  # no negative zero
    return decayed, factor, next_change


def reference_score(
    rules: Sequence[Rule],
    values: Mapping[str, Any],
    observed: Mapping[str, str | None] | None = None,
    now: datetime | None = None,
) -> ReferenceResult:
    """SPEC §6 and §13 for one object: {dimension: {score, earned, maxPossible, ...}}.

    ``observed``: the values' observedAt texts by template id; ``now`` is required with it."""
    out: ReferenceResult = {}
    for dimension in sorted({rule.dimension for rule in rules}):
        contributions = []
        earned_list: list[int | float] = []
        max_list: list[int | float] = []
        coverage = 0
        next_changes: list[datetime] = []
        for rule in rules:
            if rule.dimension != dimension:
                continue
            matched, points = _evaluate(rule, values.get(rule.signal_template_id))
            max_points = _max_points(rule)
            coverage += matched is not None
            text = None if matched is None else (observed or {}).get(rule.signal_template_id)
            factor: int | float = 1
            if text is not None:
                assert now is not None, "the reference needs now with observedAt"
                points, factor, next_change = _decay(rule, points, parse_instant(text), now)
                if next_change is not None:
                    next_changes.append(next_change)
            earned_list.append(points)
            max_list.append(max_points)
            contributions.append(
                {
                    "ruleId": rule.id,
                    "signalTemplateId": rule.signal_template_id,
                    "matchedValue": matched,
                    "pointsEarned": points,
                    "maxPoints": max_points,
                    "observedAt": text,
                    "decayFactor": factor,
                }
            )
        earned = math.fsum(earned_list)
        max_possible = math.fsum(max_list)
        if max_possible == 0:
            score = 0.0
        else:
            score = round(min(100.0, max(0.0, 100.0 * earned / max_possible)), 2)
        out[dimension] = {
            "score": score,
            "earned": earned,
            "maxPossible": max_possible,
            "signalCoverage": coverage,
            "totalRules": len(contributions),
            "contributions": contributions,
            "nextChangeAt": format_instant(min(next_changes)) if next_changes else None,
        }
    return out


@pytest.fixture(scope="session")
def reference() -> Callable[..., ReferenceResult]:
    """The reference implementation of SPEC §6 and §13 (see module docstring):
    ``reference(rules, values, observed=None, now=None)``."""
    return reference_score


@pytest.fixture(scope="session", params=["native", "python"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Every engine test runs on both scoring loops: the C one and the generated Python one.

    The native loop must be built (the test command installs the package, which compiles it);
    a missing build fails here rather than silently testing only the fallback.
    """
    name: Backend = request.param
    if name not in BACKENDS:
        pytest.fail(
            "the C scoring engine is not built (signalscore.engine._native); "
            "run scripts/bootstrap or `pip install -e .`"
        )
    return name
