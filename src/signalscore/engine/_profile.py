"""A profile's rules compiled once, then scored for one object or a whole batch."""

from __future__ import annotations

from collections.abc import Sequence

from signalscore.engine._codegen import BatchScorer, build_batch_scorer
from signalscore.engine._model import DimensionResult, Rule, SignalValues
from signalscore.engine._rules import CompiledRule, NormalizedStrings, compile_rule


class CompiledProfile:
    """A profile's rules, precompiled. Immutable after construction; safe to share."""

    __slots__ = ("_scorer", "dimensions", "rules")

    def __init__(self, rules: Sequence[Rule]) -> None:
        compiled = [compile_rule(rule) for rule in rules]
        #: The compiled rules, in the caller's order.
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)
        #: Dimensions with at least one rule, in output order (sorted: "fit" before "urgency").
        self.dimensions: tuple[str, ...] = tuple(sorted({rule.dimension for rule in compiled}))
        by_dimension = [
            (name, [rule for rule in compiled if rule.dimension == name])
            for name in self.dimensions
        ]
        self._scorer: BatchScorer = build_batch_scorer(by_dimension)

    def score(self, values: SignalValues) -> dict[str, DimensionResult]:
        """Score one object: a result per dimension that has at least one rule."""
        return self._scorer((values,), NormalizedStrings())[0]

    def score_many(self, values_list: Sequence[SignalValues]) -> list[dict[str, DimensionResult]]:
        """Score many objects in one call; equal to ``[self.score(v) for v in values_list]``.

        List answers are normalised through a memo shared by the whole batch, so a choice
        spelled the same way by many objects is trimmed and case-folded once.
        """
        return self._scorer(values_list, NormalizedStrings())


def compile_profile(rules: Sequence[Rule]) -> CompiledProfile:
    """Compile a profile's rules (ordered by createdAt, then id) for scoring."""
    return CompiledProfile(rules)


def score_object(rules: Sequence[Rule], values: SignalValues) -> dict[str, DimensionResult]:
    """Score one object from scratch: ``compile_profile(rules).score(values)``."""
    return compile_profile(rules).score(values)
