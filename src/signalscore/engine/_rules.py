"""Rule compilation: parse a rule's ``point_values`` once into lookup tables and constants.

Nothing here runs per object. ``_codegen`` turns the compiled rules of a profile into one
straight-line scoring loop that reads these tables.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from signalscore.engine._model import Contribution, Rule
from signalscore.engine._numbers import EXACT_INT_LIMIT, exact_sum, format_number
from signalscore.vocabulary import LIST_MODES, NUMERIC_ANSWER_TYPES

Number = int | float

#: The longest ``matchedValue`` the engine produces, in code points (Python ``len``). A list
#: answer may hold 100 items of 200 characters, and a score row holds every rule's
#: contribution twice (``contributions`` and ``previousContributions``), so an unbounded text
#: would let one signal value amplify every score row that mentions it. Longer texts are cut
#: by ``bound_matched_value``; the C loop gets this limit and ``ELLIPSIS`` through its plan.
MAX_MATCHED_VALUE_CHARS = 200

#: What ends a cut ``matchedValue``: U+2026 HORIZONTAL ELLIPSIS (one code point).
ELLIPSIS = "\u2026"


def bound_matched_value(text: str) -> str:
    """``text`` itself when it has at most ``MAX_MATCHED_VALUE_CHARS`` code points; otherwise
    its first ``MAX_MATCHED_VALUE_CHARS - 1`` code points followed by ``ELLIPSIS``."""
    if len(text) <= MAX_MATCHED_VALUE_CHARS:
        return text
    return text[: MAX_MATCHED_VALUE_CHARS - len(ELLIPSIS)] + ELLIPSIS


class InvalidRuleError(ValueError):
    """A rule's ``answer_type`` / ``point_values`` cannot be compiled."""


def normalize_choice(text: str) -> str:
    """The form list choices and list answers are compared in: trimmed, then case-folded."""
    return text.strip().casefold()


class NormalizedStrings(dict[str, str]):
    """Memo of ``normalize_choice`` for one batch: a hit costs one dict lookup."""

    def __missing__(self, key: str) -> str:
        value = self[key] = key.strip().casefold()
        return value


def _points(value: Any, where: str) -> Number:
    if type(value) is bool or not isinstance(value, int | float):
        raise InvalidRuleError(f"{where} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRuleError(f"{where} must be finite, got {value!r}")
    return value if type(value) in (int, float) else float(value)


def _bound(value: Any, where: str) -> Number | None:
    return None if value is None else _points(value, where)


#: Most steps a rule's decay may have (SPEC §13).
MAX_DECAY_STEPS = 10


class DecayStep(NamedTuple):
    """One step of a rule's decay: after ``after_days`` days, points times ``factor``."""

    after_days: int
    factor: Number


def compile_decay(decay: Any) -> tuple[DecayStep, ...]:
    """A rule's ``decay`` (SPEC §13) as its steps, checked; ``()`` for ``None``.

    The API validates the same constraints; here they guard what the loops rely on (steps
    in increasing ``afterDays`` order pass as a prefix)."""
    if decay is None:
        return ()
    steps = decay.get("steps") if isinstance(decay, Mapping) else None
    if (
        not isinstance(decay, Mapping)
        or set(decay) != {"steps"}
        or not isinstance(steps, Sequence)
        or isinstance(steps, str)
        or not 1 <= len(steps) <= MAX_DECAY_STEPS
    ):
        raise InvalidRuleError(f"decay must be {{'steps': [...]}} with 1-{MAX_DECAY_STEPS} steps")
    out: list[DecayStep] = []
    for i, step in enumerate(steps):
        if not isinstance(step, Mapping) or set(step) != {"afterDays", "factor"}:
            raise InvalidRuleError(f"decay.steps[{i}] must be {{afterDays, factor}}")
        days, factor = step["afterDays"], step["factor"]
        if type(days) is bool or not isinstance(days, int) or days < 1:
            raise InvalidRuleError(f"decay.steps[{i}].afterDays must be a positive integer")
        factor = _points(factor, f"decay.steps[{i}].factor")
        if not 0 <= factor <= 1:
            raise InvalidRuleError(f"decay.steps[{i}].factor must be between 0 and 1")
        if out and (days <= out[-1].after_days or factor > out[-1].factor):
            raise InvalidRuleError(
                "decay steps need strictly increasing afterDays and non-increasing factors"
            )
        out.append(DecayStep(int(days), factor))
    return tuple(out)


def decay_points(points: Number, factor: Number) -> Number:
    """pointsEarned after a passed decay step (SPEC §13): ``round(points * factor, 2)`` with
    a negative zero made ``0.0``; ``points`` itself (its type kept) when ``factor == 1``."""
    if factor == 1:
        return points
    decayed = round(points * factor, 2)
    return 0.0 if decayed == 0 and type(decayed) is float else decayed


class CompiledRule:
    """What every compiled rule has: identity, maxPoints, a bound on |pointsEarned|, and its
    decay steps."""

    kind = ""

    def __init__(self, rule: Rule, max_points: Number, int_bound: int | None) -> None:
        self.rule_id = rule.id
        self.signal_template_id = rule.signal_template_id
        self.dimension = rule.dimension
        self.max_points = max_points
        #: The decay steps, in increasing ``after_days`` order; ``()`` without decay.
        self.decay: tuple[DecayStep, ...] = compile_decay(rule.decay)
        if self.decay and int_bound is not None:
            try:  # points * factor: the int points must convert to a float
                float(int_bound)
            except OverflowError:
                raise InvalidRuleError("points too large for a rule with decay") from None
            if any(type(step.factor) is not int and step.factor != 1 for step in self.decay):
                int_bound = None  # a decayed pointsEarned may be a float
        #: When every pointsEarned this rule can produce is an ``int``: a bound on its
        #: magnitude. ``None`` when it can produce a float.
        self.int_bound = int_bound
        #: The contribution of an object without a value.
        self.absent = self.contribution(None, 0)

    def contribution(self, matched: str | None, earned: Number) -> Contribution:
        return {
            "ruleId": self.rule_id,
            "signalTemplateId": self.signal_template_id,
            "matchedValue": None if matched is None else bound_matched_value(matched),
            "pointsEarned": earned,
            "maxPoints": self.max_points,
            "observedAt": None,
            "decayFactor": 1,
        }

    def decayed(self, earned: Number, template: Contribution) -> list[tuple[Number, Contribution]]:
        """``(pointsEarned, contribution template)`` of a value earning ``earned`` with
        ``template``: index 0 when no decay step has passed, index k after step k."""
        return [
            (earned, template),
            *(
                (
                    points := decay_points(earned, step.factor),
                    {**template, "pointsEarned": points, "decayFactor": step.factor},
                )
                for step in self.decay
            ),
        ]


class BooleanRule(CompiledRule):
    kind = "boolean"

    def __init__(self, rule: Rule, point_values: Mapping[str, Any]) -> None:
        unknown = set(point_values) - {"true", "false"}
        if unknown:
            raise InvalidRuleError(f"boolean pointValues has unknown keys {sorted(unknown)}")
        self.on_true = _points(point_values.get("true", 0), "pointValues.true")
        self.on_false = _points(point_values.get("false", 0), "pointValues.false")
        both_int = type(self.on_true) is int and type(self.on_false) is int
        super().__init__(
            rule,
            max(self.on_true, self.on_false, 0),
            int(max(abs(self.on_true), abs(self.on_false))) if both_int else None,
        )
        self.if_true = self.contribution("true", self.on_true)
        self.if_false = self.contribution("false", self.on_false)
        #: ``decayed`` of the true and the false answer.
        self.true_steps = self.decayed(self.on_true, self.if_true)
        self.false_steps = self.decayed(self.on_false, self.if_false)


def _range_label(low: Number | None, high: Number | None) -> str:
    if low is None and high is None:
        return "any"
    if high is None:
        return f"≥{format_number(low)}"  # type: ignore[arg-type]
    if low is None:
        return f"<{format_number(high)}"
    return f"{format_number(low)}–{format_number(high)}"


class RangeRule(CompiledRule):
    """Ranges flattened into elementary intervals between all distinct finite bounds.

    ``bisect_right(boundaries, v)`` is the index of the interval ``[b[j-1], b[j])`` holding v;
    every range is a union of whole intervals, so ``intervals[j]`` can be precomputed as the
    first range (in stored order) holding that interval, or "no range". This is exact for any
    ranges, overlapping or not, and costs one C-level binary search per value.
    """

    kind = "range"

    def __init__(self, rule: Rule, point_values: Mapping[str, Any]) -> None:
        unknown = set(point_values) - {"ranges"}
        ranges = point_values.get("ranges")
        if unknown or not isinstance(ranges, Sequence) or isinstance(ranges, str):
            raise InvalidRuleError("numeric pointValues must be {'ranges': [...]}")
        parsed: list[tuple[Number | None, Number | None, Number]] = []
        for i, item in enumerate(ranges):
            if not isinstance(item, Mapping) or "points" not in item:
                raise InvalidRuleError(f"pointValues.ranges[{i}] must be an object with points")
            unknown_keys = set(item) - {"min", "max", "points"}
            if unknown_keys:
                raise InvalidRuleError(f"pointValues.ranges[{i}] has unknown keys")
            parsed.append(
                (
                    _bound(item.get("min"), f"pointValues.ranges[{i}].min"),
                    _bound(item.get("max"), f"pointValues.ranges[{i}].max"),
                    _points(item["points"], f"pointValues.ranges[{i}].points"),
                )
            )
        all_points = [p for _, _, p in parsed]
        all_int = all(type(p) is int for p in all_points)
        super().__init__(
            rule,
            max([*all_points, 0]),
            int(max((abs(p) for p in all_points), default=0)) if all_int else None,
        )
        self.ranges = parsed
        bounds = {b for lo, hi, _ in parsed for b in (lo, hi) if b is not None}
        self.boundaries: list[Number] = sorted(bounds)
        # One entry per elementary interval, then a last one for "no range" (used for NaN):
        # (pointsEarned, matchedValue suffix, contribution to copy).
        self.intervals: list[tuple[Number, str, Contribution]] = []
        edges: list[Number] = [-math.inf, *self.boundaries]
        for start in edges:
            # ``start`` lies in exactly the intervals' ranges that hold it, since every range
            # bound is a boundary; -inf stands for "below the first boundary".
            holder = next((r for r in parsed if _holds(r, start)), None)
            self.intervals.append(self._entry(holder))
        self.intervals.append(self._entry(None))
        #: ``intervals`` after each decay step: ``interval_steps[k]`` once step k has passed
        #: (``interval_steps[0]`` is ``intervals``).
        self.interval_steps: list[list[tuple[Number, str, Contribution]]] = [
            list(entries)
            for entries in zip(
                *(
                    [(points, suffix, template) for points, template in self.decayed(p, tm)]
                    for p, suffix, tm in self.intervals
                ),
                strict=True,
            )
        ]

    def _entry(
        self, holder: tuple[Number | None, Number | None, Number] | None
    ) -> tuple[Number, str, Contribution]:
        if holder is None:
            return 0, " (no range)", self.contribution(None, 0)
        low, high, points = holder
        return points, f" ({_range_label(low, high)})", self.contribution(None, points)


def _holds(rng: tuple[Number | None, Number | None, Number], value: float) -> bool:
    """Does the range hold every value of the interval starting at ``value``?"""
    low, high, _ = rng
    if value == -math.inf:  # the interval below the first boundary
        return low is None and (high is None or high > value)
    return (low is None or low <= value) and (high is None or value < high)


class ListRule(CompiledRule):
    kind = "list"

    def __init__(self, rule: Rule, point_values: Mapping[str, Any]) -> None:
        unknown = set(point_values) - {"choices", "mode"}
        choices = point_values.get("choices")
        mode = point_values.get("mode")
        mode = "additive" if mode is None else mode
        if unknown or not isinstance(choices, Mapping):
            raise InvalidRuleError("list pointValues must be {'choices': {...}, 'mode': ...}")
        if mode not in LIST_MODES:
            raise InvalidRuleError(f"unknown list mode {mode!r}")
        # Normalised choice → the points of every choice with that normal form (one, unless two
        # stored keys differ only in case or outer whitespace: then each counts, per SPEC §6).
        grouped: dict[str, list[Number]] = {}
        # best-match: normalised choice → (points, -position) of its best stored choice. The
        # larger pair wins, so among equal points (3 and 3.0) the choice stored first does,
        # exactly as max() over the stored order picks; without the position the winner's
        # type would depend on set iteration order, which changes between processes.
        ranked: dict[str, tuple[Number, int]] = {}
        all_points: list[Number] = []  # in stored order
        for position, (key, value) in enumerate(choices.items()):
            if not isinstance(key, str):
                raise InvalidRuleError(f"choice {key!r} must be a string")
            points = _points(value, f"pointValues.choices.{key}")
            normal = normalize_choice(key)
            grouped.setdefault(normal, []).append(points)
            all_points.append(points)
            if normal not in ranked or (points, -position) > ranked[normal]:
                ranked[normal] = (points, -position)
        self.int_points = all(type(p) is int for p in all_points)
        self.mode: str = mode
        self.keys = frozenset(grouped)
        self.total = exact_sum(all_points)
        if mode == "additive":
            max_points: Number = exact_sum(p for p in all_points if p > 0)
            bound = sum(abs(p) for p in all_points)
        elif mode == "best-match":
            max_points = max([*all_points, 0])
            bound = max((abs(p) for p in all_points), default=0)
        else:
            max_points = max(self.total, 0)
            bound = abs(self.total)
        super().__init__(rule, max_points, int(bound) if self.int_points else None)
        #: additive (all int): key → summed points; additive (floats): key → tuple of points;
        #: best-match: key → (largest points, -position of that choice); see ``ranked``.
        self.points_by_key: dict[str, Any]
        if mode == "additive" and self.int_points:
            self.points_by_key = {k: sum(ps) for k, ps in grouped.items()}
        elif mode == "additive":
            self.points_by_key = {k: tuple(ps) for k, ps in grouped.items()}
        elif mode == "best-match":
            self.points_by_key = ranked
        else:
            self.points_by_key = {}
        self.template = self.contribution(None, 0)
        #: ``template`` after each decay step (index 0: none passed); pointsEarned is set
        #: per object.
        self.template_steps = [template for _, template in self.decayed(0, self.template)]


def compile_rule(rule: Rule) -> CompiledRule:
    """Compile one rule; raises ``InvalidRuleError`` when its point values do not fit its type."""
    point_values = rule.point_values
    if not isinstance(point_values, Mapping):
        raise InvalidRuleError("pointValues must be an object")
    if rule.answer_type == "boolean":
        return BooleanRule(rule, point_values)
    if rule.answer_type in NUMERIC_ANSWER_TYPES:
        return RangeRule(rule, point_values)
    if rule.answer_type == "list":
        return ListRule(rule, point_values)
    raise InvalidRuleError(f"unknown answer type {rule.answer_type!r}")


def max_possible(rules: Sequence[CompiledRule]) -> float:
    """A dimension's maxPossible: the exact (order-independent) sum of its rules' maxPoints."""
    return math.fsum(rule.max_points for rule in rules)


def sums_exactly_as_floats(rules: Sequence[CompiledRule]) -> bool:
    """Can the dimension's ``earned`` be summed as plain floats and still equal ``math.fsum``?

    True when every pointsEarned is an ``int`` and their magnitudes add up to at most 2**53:
    every partial sum is then an exactly representable integer, so both sums are exact.
    """
    bounds = [rule.int_bound for rule in rules]
    return all(b is not None for b in bounds) and sum(b or 0 for b in bounds) <= EXACT_INT_LIMIT
