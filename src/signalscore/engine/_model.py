"""Plain data types shared by the engine modules: rules in, dimension results out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

#: A stored signal value as the database layer hands it over: ``bool`` for boolean templates,
#: ``int``/``float`` for number, percentage and currency templates, a list of strings for list
#: templates. ``None`` (or an absent key) means "no value".
SignalValue = bool | int | float | Sequence[str] | None

#: An object's values, keyed by signal template id.
SignalValues = Mapping[str, SignalValue]

#: One entry of ``DimensionResult.contributions``; keys are exactly the JSON keys of SPEC §6.
Contribution = dict[str, Any]


class Rule(NamedTuple):
    """One scoring rule of a profile, as stored (SPEC §4).

    ``point_values`` is exactly the JSON shape of SPEC §4 for the rule's ``answer_type``.
    """

    id: str
    signal_template_id: str
    dimension: str
    answer_type: str
    point_values: Mapping[str, Any]


class DimensionResult(NamedTuple):
    """The score of one object on one dimension of a profile (SPEC §6)."""

    score: float
    earned: float
    max_possible: float
    signal_coverage: int
    total_rules: int
    contributions: list[Contribution]
