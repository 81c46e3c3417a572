"""Hand a compiled profile to the C scoring loop (``_native.c``).

The C loop does only the per-object work. Everything that decides a result is computed here
and in ``_rules`` once per profile, by the same code the generated Python scorer uses: range
tables, contribution templates, choice maps, maxPossible and the exact-sum decision, and the
``matchedValue`` bound (limit and ellipsis) that ``bound_matched_value`` applies. The plan
is a nest of tuples whose layout is documented at the top of ``_native.c``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from signalscore.engine._codegen import (
    SCORE_MEMO_SIZE,
    BatchScorer,
    additive_float_points,
    as_list,
    as_number,
)
from signalscore.engine._decay import decay_days
from signalscore.engine._model import DimensionResult
from signalscore.engine._rules import (
    ELLIPSIS,
    MAX_MATCHED_VALUE_CHARS,
    BooleanRule,
    CompiledRule,
    ListRule,
    RangeRule,
    decay_points,
    max_possible,
    sums_exactly_as_floats,
)

try:
    from signalscore.engine import _native
except ImportError:  # pragma: no cover - the extension is built by `pip install`
    _native = None  # type: ignore[assignment]

#: Whether the C scoring loop is built and importable.
AVAILABLE = _native is not None

_SLOT_KINDS = {"boolean": 0, "range": 1, "list": 2}
_RULE_BOOLEAN, _RULE_RANGE, _RULE_LIST = 0, 1, 2
_MODES = {
    "best-match": 2,
    "contains-all": 3,
    "contains-none": 4,
    "exact-match": 5,
}


def _list_mode(rule: ListRule) -> int:
    if rule.mode == "additive":
        return 0 if rule.int_points else 1
    return _MODES[rule.mode]


def build_plan(dimensions: Sequence[tuple[str, Sequence[CompiledRule]]]) -> tuple[Any, ...]:
    """The plan the C ``Scorer`` runs: helpers, value slots, and per dimension its rules.

    Decay steps refer to the per-call thresholds by index into ``_decay.decay_days`` of the
    same rules, the order in which ``CompiledProfile`` computes them."""
    slots: dict[tuple[str, str], int] = {}  # (template id, kind) → slot index

    def slot(rule: CompiledRule) -> int:
        return slots.setdefault((rule.signal_template_id, rule.kind), len(slots))

    days = decay_days(rule for _, rules in dimensions for rule in rules)
    day_index = {d: i for i, d in enumerate(days)}

    def steps(rule: CompiledRule) -> tuple[tuple[Any, ...], ...]:
        """Per decay step: (threshold index, afterDays, factor, what the kind needs)."""
        out: list[tuple[Any, ...]] = []
        for k, step in enumerate(rule.decay, start=1):
            head = (day_index[step.after_days], step.after_days, step.factor)
            if isinstance(rule, BooleanRule):
                (on_true, if_true), (on_false, if_false) = rule.true_steps[k], rule.false_steps[k]
                out.append((*head, on_true, on_false, if_true, if_false))
            elif isinstance(rule, RangeRule):
                out.append((*head, tuple((p, t) for p, _, t in rule.interval_steps[k])))
            elif isinstance(rule, ListRule):
                # {}: the step's memo of decayed points (bounded by SCORE_MEMO_SIZE)
                out.append((*head, rule.template_steps[k], {}))
        return tuple(out)

    def spec(rule: CompiledRule) -> tuple[Any, ...]:
        if isinstance(rule, BooleanRule):
            return (_RULE_BOOLEAN, slot(rule), rule.absent, rule.on_true, rule.on_false,
                    rule.if_true, rule.if_false, steps(rule))  # fmt: skip
        if isinstance(rule, RangeRule):
            return (_RULE_RANGE, slot(rule), rule.absent, tuple(rule.boundaries),
                    tuple(rule.intervals), steps(rule))  # fmt: skip
        if isinstance(rule, ListRule):
            return (_RULE_LIST, slot(rule), rule.absent, _list_mode(rule), rule.template,
                    rule.points_by_key, rule.keys, rule.total, steps(rule))  # fmt: skip
        raise TypeError(f"cannot plan {type(rule).__name__}")  # pragma: no cover

    dims: tuple[tuple[Any, ...], ...] = tuple(
        (
            name,
            max_possible(rules),
            sums_exactly_as_floats(rules),
            {},  # earned → score memo, bounded by SCORE_MEMO_SIZE
            len(rules),
            tuple(spec(rule) for rule in rules),
        )
        for name, rules in dimensions
    )
    helpers = (DimensionResult, math.fsum, round, as_number, as_list, additive_float_points,
               decay_points, len(days), SCORE_MEMO_SIZE, MAX_MATCHED_VALUE_CHARS,
               ELLIPSIS)  # fmt: skip
    slot_specs = tuple((template, _SLOT_KINDS[kind]) for (template, kind) in slots)
    return helpers, slot_specs, dims


def build_native_scorer(dimensions: Sequence[tuple[str, Sequence[CompiledRule]]]) -> BatchScorer:
    """The C scoring loop for ``dimensions``; same signature and results as the generated one."""
    if _native is None:
        raise RuntimeError(
            "the C scoring engine (signalscore.engine._native) is not built; "
            "install the package (scripts/bootstrap) or use backend='python'"
        )
    scorer: BatchScorer = _native.Scorer(build_plan(dimensions)).score_batch
    return scorer
