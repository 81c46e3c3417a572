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

#: An object's ``observedAt`` texts, keyed by signal template id: canonical UTC text of exactly
#: 27 characters, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. ``None`` (or an absent key) means "unknown".
ObservedAt = Mapping[str, str | None]

#: One entry of ``DimensionResult.contributions``; keys are exactly the JSON keys of SPEC §6
#: and §13: ruleId, signalTemplateId, matchedValue, pointsEarned, maxPoints, observedAt,
#: decayFactor.
Contribution = dict[str, Any]


class Rule(NamedTuple):
    """One scoring rule of a profile, as stored (SPEC §4).

    ``point_values`` is exactly the JSON shape of SPEC §4 for the rule's ``answer_type``;
    ``decay`` exactly the JSON shape of SPEC §13 (``{"steps": [{"afterDays": 30, "factor":
    0.5}, ...]}``), or ``None`` for a rule whose points do not decay.
    """

    id: str
    signal_template_id: str
    dimension: str
    answer_type: str
    point_values: Mapping[str, Any]
    decay: Mapping[str, Any] | None = None


class DimensionResult(NamedTuple):
    """The score of one object on one dimension of a profile (SPEC §6)."""

    score: float
    earned: float
    max_possible: float
    signal_coverage: int
    total_rules: int
    contributions: list[Contribution]
    #: SPEC §13: the earliest instant at which a decay step of one of the dimension's rules
    #: passes for the object's values (canonical 27-character UTC text), or ``None``.
    next_change_at: str | None = None
