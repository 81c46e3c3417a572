"""The scoring engine: SPEC §6 as pure functions from (rules, signal values) to score results.

No I/O, no framework, no database. Compile a profile's rules once with :func:`compile_profile`,
then score one object with :meth:`CompiledProfile.score` or a batch with
:meth:`CompiledProfile.score_many` (same results; the pipeline should call this one).

How it is fast
    Compiling a profile parses every rule once (maxPoints, normalised choice maps, range
    boundaries flattened into a binary-search table, contribution templates). Two loops then
    run the per-object work over those tables, with equal results (the tests run both against
    the reference):

    - ``native`` (the default when built): ``_native.c``, a C loop that the install compiles.
      Per object it fetches and prepares each template's value once, evaluates every rule with
      C comparisons, a C binary search and set operations, and builds the result objects with
      the C API. It pauses the cyclic GC while it runs: it creates no reference cycles, and
      without the pause the GC walks the growing batch every few hundred allocations (about
      a quarter of the time). Python code runs inside it only on paths the API never feeds it
      (values of unusual types, float points in additive mode). ``_native_plan`` hands it
      the compiled tables.
    - ``python``: one straight-line loop per profile generated as Python source (``_codegen``),
      with every rule inlined. Rule content never enters the generated source; it is bound to
      generated names.

    ``compile_profile(rules, backend="auto" | "native" | "python")`` chooses; ``BACKENDS``
    lists what this installation has. Two memos, both pure functions of their key: list
    strings → their normalised form (per ``score_many`` call), and per dimension ``earned`` →
    score (per compiled profile, at most 4096 entries). No result of an object is ever reused
    for another object. NumPy does not pay here: every object's output is Python dicts and
    strings, and converting columns to arrays and back costs more than the arithmetic it
    would vectorise.

Inputs
    ``Rule(id, signal_template_id, dimension, answer_type, point_values, decay=None)`` with
    ``point_values`` exactly in the JSON shape of SPEC §4 and ``decay`` in that of SPEC §13
    (``{"steps": [{"afterDays": 30, "factor": 0.5}, ...]}``), rules in the profile's order
    (createdAt, then id). Values are a mapping from signal template id to value: ``bool`` for
    boolean templates, ``int``/``float`` for number, percentage and currency templates, a list
    (or tuple) of ``str`` for list templates. An absent key or ``None`` means "no value".

    ``score(values, observed=None, now=None)`` and ``score_many(values_list, observed_list=None,
    now=None)``: ``observed`` maps template ids to their value's ``observedAt`` as canonical
    UTC text, exactly 27 characters ``YYYY-MM-DDTHH:MM:SS.ffffffZ``; ``observed_list`` is
    parallel to ``values_list`` (a different length raises ``ValueError``). A missing list,
    object mapping, key or ``None`` means the time is unknown: nothing decays. ``now`` is an
    aware datetime (any zone; converted to UTC before any arithmetic), the current time when
    ``None``, read once per call.

How decay runs (SPEC §13)
    Compiling a profile precomputes, per decay step, the rule's contribution templates and
    (boolean and range rules) its decayed points. Per call, each distinct ``afterDays`` gets
    one threshold text, ``now - afterDays days``; the canonical text is fixed-width, so string
    order is time order and "the step has passed" is one string comparison (``memcmp`` in C)
    per step. Steps pass as a prefix (thresholds fall as afterDays rises), so each loop scans
    a rule's steps from the last. Without ``observed`` the loops run exactly as before decay.

Decisions where SPEC §13 is silent
    - Boundary: a step has passed when ``observedAt < now - afterDays days``, strictly; a value
      observed exactly ``afterDays`` days before ``now`` has not decayed yet (its next change is
      ``now``).
    - Rounding: ``pointsEarned = round(points * factor, 2)`` exactly as Python's ``round``
      gives it (the C loop calls the same helper, or uses values precomputed by it), so int
      points times an int factor 0 stay the int ``0``, and a float result is correctly rounded
      to 2 decimals (``round(5.625, 2) == 5.62``). A negative zero (``-2.5 * 0.0``, ``round(
      -0.004, 2)``) becomes ``0.0``. A factor equal to 1 leaves ``pointsEarned`` as it is, type
      included. ``maxPoints`` and ``signalCoverage`` never decay; ``earned`` is the fsum of the
      decayed points (a rule whose factors may produce floats leaves the int-only fast sum).
    - ``decayFactor``: the factor of the passed step with the largest ``afterDays``, as given
      in the rule (``0.5``, ``0``, ``1.0``); the int ``1`` when no step has passed, the rule has
      no decay, or the rule has no value or no observedAt. ``observedAt`` is the text given
      when the rule has a value (``matchedValue`` not null), else null.
    - ``DimensionResult.next_change_at``: over the dimension's rules with decay, a value and an
      observedAt, the earliest ``observedAt + afterDays days`` of a step not yet passed, as
      canonical text (whole days in UTC keep the time of day, so only the date part is
      shifted); ``None`` when there is none. A step whose ``now - afterDays`` falls before year
      1 cannot pass; an instant after 9999-12-31 is no change (``None``).
    - An ``observedAt`` that is not a ``str`` of 27 ASCII characters raises ``ValueError``
      (checked when its value is present); its date part is parsed (and a bad date raises
      ``ValueError``) only when a next change is computed from it. The caller's contract is
      canonical text; the loops check no more than they need to compare it safely.

Decisions where SPEC §6 is silent
    - A value of the wrong type for its rule (a number for a boolean rule, a ``bool`` for a
      numeric rule - bools are never numbers - a string for a list rule) counts as no value:
      0 points, ``matchedValue`` null, not counted in ``signalCoverage``. The API validates
      values by answer type, so this only guards against bad data.
    - List matching compares ``str.strip().casefold()`` of both the answer's values and the
      rule's choices. Two choices with the same normal form (the API rejects that) each count.
      ``matchedValue`` joins the answer's values as stored (not normalised) with ``", "``; an
      empty list is a value (coverage counts it) whose ``matchedValue`` is ``""``.
    - ``matchedValue`` is at most ``MAX_MATCHED_VALUE_CHARS`` (200) characters, counted as
      Python ``len`` does (code points, so at most 800 bytes of UTF-8). A longer text (in
      practice a list rule's joined answer, but the bound holds for every rule type) becomes
      its first 199 characters followed by ``"…"`` (U+2026), 200 characters in all; a text of
      200 characters or fewer is unchanged. Without the bound one list answer (up to 100 items
      of 200 characters) would put ~20 KB into every contribution that mentions it, twice per
      score row with ``previousContributions``. The cut is by code point: it never splits an
      astral character such as "😀", but may separate a combining mark from its base letter.
    - ``maxPoints`` of the all-or-nothing list modes (contains-all, contains-none, exact-match)
      is ``max(sum of all choice points, 0)``: the most such a rule can earn. best-match:
      ``max(largest choice points, 0)``; additive: the sum of the positive choice points.
    - Overlapping ranges (the API rejects them): the first range in stored order that holds the
      value wins. A range holds ``min <= v < max``; NaN holds no range.
    - Numbers in ``matchedValue``: ``int`` as ``str(int)``; a float with an integral value and
      magnitude below 1e16 without ``.0`` (``874.0`` → ``"874"``); any other float as ``repr``
      (``0.1`` → ``"0.1"``, ``1e16`` → ``"1e+16"``). Range labels: ``"100–1000"`` (en dash),
      ``"≥1000"`` (no max), ``"<100"`` (no min), ``"any"`` (neither), ``"no range"``.
    - Types: ``pointsEarned`` and ``maxPoints`` keep the rule's number type where possible (an
      ``int`` rule point gives an ``int``; no value gives ``0``; a sum of ``int`` points is an
      ``int``, a sum involving floats is their ``math.fsum``). ``earned`` and ``max_possible``
      are always ``float``: the ``math.fsum`` of pointsEarned / maxPoints, so they never depend
      on summation order (for all-``int`` profiles the engine uses ``float(sum(...))``, which is
      provably identical while every partial sum stays below 2**53).
    - ``score = 0.0 if max_possible == 0 else round(min(100.0, max(0.0, 100.0 * earned /
      max_possible)), 2)``.
    - Tiers (SPEC §9) are applied to a score after it is computed: ``TierTable.tier_of``
      gives the name of the tier with the largest ``minScore`` <= score, or ``None``.
    - The result holds one entry per dimension with at least one rule, keys in sorted order
      (``"fit"`` before ``"urgency"``); contributions keep the rules' order.
"""

from signalscore.engine._model import (
    Contribution,
    DimensionResult,
    ObservedAt,
    Rule,
    SignalValue,
    SignalValues,
)
from signalscore.engine._numbers import format_number
from signalscore.engine._profile import (
    BACKENDS,
    Backend,
    CompiledProfile,
    compile_profile,
    score_object,
)
from signalscore.engine._rules import (
    MAX_MATCHED_VALUE_CHARS,
    InvalidRuleError,
    bound_matched_value,
    normalize_choice,
)
from signalscore.engine._tiers import TierTable, tier_tables

__all__ = [
    "BACKENDS",
    "MAX_MATCHED_VALUE_CHARS",
    "Backend",
    "CompiledProfile",
    "Contribution",
    "DimensionResult",
    "InvalidRuleError",
    "ObservedAt",
    "Rule",
    "SignalValue",
    "SignalValues",
    "TierTable",
    "bound_matched_value",
    "compile_profile",
    "format_number",
    "normalize_choice",
    "score_object",
    "tier_tables",
]
