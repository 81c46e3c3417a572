"""A profile's rules compiled once, then scored for one object or a whole batch."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from signalscore.engine import _native_plan
from signalscore.engine._codegen import BatchScorer, build_batch_scorer
from signalscore.engine._decay import decay_days, thresholds, utc_now
from signalscore.engine._model import DimensionResult, ObservedAt, Rule, SignalValues
from signalscore.engine._rules import CompiledRule, NormalizedStrings, compile_rule

#: ``"native"``: the C loop (``_native.c``); ``"python"``: the generated Python loop
#: (``_codegen``); ``"auto"``: native when it is built, else python. Both give equal results.
Backend = Literal["auto", "native", "python"]

#: The backends this installation can run.
BACKENDS: tuple[str, ...] = ("native", "python") if _native_plan.AVAILABLE else ("python",)


class CompiledProfile:
    """A profile's rules, precompiled. Immutable after construction; safe to share."""

    __slots__ = ("_scorer", "backend", "decay_days", "dimensions", "rules")

    def __init__(self, rules: Sequence[Rule], backend: Backend = "auto") -> None:
        compiled = [compile_rule(rule) for rule in rules]
        #: The compiled rules, in the caller's order.
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)
        #: Dimensions with at least one rule, in output order (sorted: "fit" before "urgency").
        self.dimensions: tuple[str, ...] = tuple(sorted({rule.dimension for rule in compiled}))
        by_dimension = [
            (name, [rule for rule in compiled if rule.dimension == name])
            for name in self.dimensions
        ]
        #: The distinct ``afterDays`` of all decay steps, sorted (``()`` without decay).
        self.decay_days: tuple[int, ...] = decay_days(compiled)
        if backend == "auto":
            backend = "native" if _native_plan.AVAILABLE else "python"
        #: The backend scoring this profile: "native" or "python".
        self.backend: str = backend
        if backend == "native":
            self._scorer: BatchScorer = _native_plan.build_native_scorer(by_dimension)
        elif backend == "python":
            self._scorer = build_batch_scorer(by_dimension)
        else:
            raise ValueError(f"unknown engine backend {backend!r}")

    def score(
        self,
        values: SignalValues,
        observed: ObservedAt | None = None,
        now: datetime | None = None,
    ) -> dict[str, DimensionResult]:
        """Score one object: a result per dimension that has at least one rule.

        ``observed``: the values' observedAt texts by template id (see ``score_many``)."""
        return self.score_many((values,), None if observed is None else (observed,), now)[0]

    def score_many(
        self,
        values_list: Sequence[SignalValues],
        observed_list: Sequence[ObservedAt | None] | None = None,
        now: datetime | None = None,
    ) -> list[dict[str, DimensionResult]]:
        """Score many objects in one call; equal to ``[self.score(v) for v in values_list]``.

        ``observed_list``, parallel to ``values_list``, gives each object's observedAt texts
        by template id (canonical UTC, 27 characters); ``None`` for the list, an object, or
        a template means none is known, so nothing decays. Decay steps are judged against
        ``now`` (an aware datetime; the current time when ``None``, read once per call).

        List answers are normalised through a memo shared by the whole batch, so a choice
        spelled the same way by many objects is trimmed and case-folded once.
        """
        if observed_list is None:
            if now is not None:
                utc_now(now)  # checked all the same
            return self._scorer(values_list, NormalizedStrings())
        steps = thresholds(self.decay_days, utc_now(now))
        return self._scorer(values_list, NormalizedStrings(), observed_list, steps)


def compile_profile(rules: Sequence[Rule], backend: Backend = "auto") -> CompiledProfile:
    """Compile a profile's rules (ordered by createdAt, then id) for scoring."""
    return CompiledProfile(rules, backend)


def score_object(
    rules: Sequence[Rule],
    values: SignalValues,
    backend: Backend = "auto",
    observed: ObservedAt | None = None,
    now: datetime | None = None,
) -> dict[str, DimensionResult]:
    """Score one object from scratch: ``compile_profile(rules).score(values, observed, now)``."""
    return compile_profile(rules, backend).score(values, observed, now)
