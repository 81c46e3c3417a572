"""Generate one straight-line scoring loop per compiled profile.

Scoring 20 rules per object in plain Python is dominated by interpreter overhead: a function
call, a loop step and a few list appends per (object, rule) cost more than the rule itself.
So a profile is compiled into the source of a single function with one loop over the objects
and every rule unrolled inside it: each template's value is fetched and prepared once (the
number's text, the list's normalised set and joined text, that text already cut to
``MAX_MATCHED_VALUE_CHARS``), each rule is a few inline operations on local variables, and
per-dimension sums, coverage counters and contribution lists are built from locals.

The source never contains user data. Rule ids, template ids, choices and points live in the
namespace the function is compiled with, under generated names (``K0``, ``TABLE3``, ...); the
source holds only those names, so no rule content can change what the code does.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import Any

from signalscore.engine._decay import ShiftedDates, check_observed, decay_days
from signalscore.engine._model import DimensionResult
from signalscore.engine._numbers import exact_sum
from signalscore.engine._rules import (
    MAX_MATCHED_VALUE_CHARS,
    BooleanRule,
    CompiledRule,
    ListRule,
    RangeRule,
    bound_matched_value,
    decay_points,
    max_possible,
    sums_exactly_as_floats,
)

#: ``scorer(values_list, memo)``, or ``scorer(values_list, memo, observed_list, thresholds)``
#: to read observedAt and apply decay (``thresholds``: ``_decay.thresholds`` of the profile's
#: ``_decay.decay_days``).
BatchScorer = Callable[..., list[dict[str, Any]]]

#: Floats with an integral value below this magnitude print as integers (see _numbers).
_INTEGRAL_FLOAT_LIMIT = 1e16

#: The longest text of a float in matchedValue: ``repr`` of a finite float has at most 24
#: characters (``"-2.2250738585072014e-308"``), ``"nan"``/``"-inf"`` fewer, and an integral
#: float below 1e16 prints as at most 17 digits and a sign.
FLOAT_TEXT_MAX = 24

#: Most distinct ``earned`` values whose score a compiled profile remembers per dimension.
#: With int points there are few distinct sums; with float points the memo simply fills up
#: and stops growing, and later misses compute the score directly.
SCORE_MEMO_SIZE = 4096


def as_number(value: object) -> int | float | None:
    """Slow path for a numeric value that is not exactly ``int``/``float`` (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value) if isinstance(value, int) else float(value)


def as_list(value: object) -> list[str] | None:
    """Slow path for a list value that is not exactly a ``list``: tuples are accepted."""
    return list(value) if isinstance(value, list | tuple) else None


def additive_float_points(points_by_key: dict[str, tuple[float, ...]], answer: set[str]) -> Any:
    """Additive mode with float points: every matched choice's points, summed exactly."""
    return exact_sum(p for key in points_by_key.keys() & answer for p in points_by_key[key])


class _Emitter:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {}
        self._counter = 0

    def const(self, prefix: str, value: Any) -> str:
        """Bind ``value`` to a fresh generated name and return the name."""
        name = f"{prefix}{self._counter}"
        self._counter += 1
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def build_batch_scorer(dimensions: Sequence[tuple[str, Sequence[CompiledRule]]]) -> BatchScorer:
    """Compile the scoring loop for ``dimensions`` (name and rules in output order).

    The function has two loops: one for calls without ``observed_list`` (no observedAt, so
    no decay either: exactly the loop of SPEC §6), and one that also reads each value's
    observedAt and applies the rules' decay steps against the per-call ``thresholds``
    (``_decay.thresholds`` of ``_decay.decay_days``)."""
    out = _Emitter()
    out.namespace.update(
        DR=DimensionResult,
        new=tuple.__new__,
        fsum=math.fsum,
        bisect=bisect_right,
        ZEROS=repeat(0),  # infinite, so sharing one across calls is safe
        join=", ".join,
        as_number=as_number,
        as_list=as_list,
        additive_float_points=additive_float_points,
        LIM=_INTEGRAL_FLOAT_LIMIT,
        MAXMV=MAX_MATCHED_VALUE_CHARS,
        bound=bound_matched_value,
        SCORE_MEMO_SIZE=SCORE_MEMO_SIZE,
        NOOBS={}.get,
        bad_observed=check_observed,
        ShiftedDates=ShiftedDates,
        decay_points=decay_points,
        zip=zip,
    )
    days = decay_days(rule for _, rules in dimensions for rule in rules)
    day_index = {d: i for i, d in enumerate(days)}

    # Per numeric template: how long its number's text may be before some rule's matchedValue
    # (the text and that rule's longest range label) could pass MAX_MATCHED_VALUE_CHARS.
    room: dict[str, int] = {}
    for _, rules in dimensions:
        for rule in rules:
            if isinstance(rule, RangeRule):
                left = MAX_MATCHED_VALUE_CHARS - max(len(x) for _, x, _ in rule.intervals)
                room[rule.signal_template_id] = min(left, room.get(rule.signal_template_id, left))

    out.emit(0, "def score_batch(values_list, memo, observed_list=None, thresholds=()):")
    out.emit(1, "normalized = memo.__getitem__")
    out.emit(1, "results = []")
    out.emit(1, "append = results.append")
    out.emit(1, "if observed_list is None:")
    out.emit(2, "for values in values_list:")
    out.emit(3, "get = values.get")
    _emit_body(out, dimensions, room, 3, None)
    out.emit(2, "return results")
    # With observedAt: the per-call step thresholds and date-shift memos as locals.
    if days:
        out.emit(1, f"{', '.join(f'th{i}' for i in range(len(days)))}, = thresholds")
        for i, d in enumerate(days):
            out.emit(1, f"sh{i} = ShiftedDates({out.const('DAYS', d)}).__getitem__")
    else:
        out.emit(1, "() = thresholds")
    out.emit(1, "for values, observed in zip(values_list, observed_list, strict=True):")
    out.emit(2, "get = values.get")
    out.emit(2, "oget = NOOBS if observed is None else observed.get")
    _emit_body(out, dimensions, room, 2, day_index)
    out.emit(1, "return results")

    source = "\n".join(out.lines) + "\n"
    namespace = dict(out.namespace)
    code = compile(source, "<signalscore.engine generated scorer>", "exec")
    exec(code, namespace)  # noqa: S102 - source built above from generated names only
    scorer: BatchScorer = namespace["score_batch"]
    scorer.__doc__ = source  # kept for debugging: help(profile) shows what runs
    return scorer


def _emit_decay(
    out: _Emitter, b: int, rule: CompiledRule, o: str, nc: str, day_index: dict[int, int]
) -> None:
    """Emit: k = the number of the rule's decay steps that have passed for observedAt ``o``
    (a prefix: thresholds fall as afterDays rises), and fold the instant the next one passes
    (if any, and before year 10000) into the dimension's earliest, ``nc``."""
    steps = [day_index[step.after_days] for step in rule.decay]
    n = len(steps)
    out.emit(b, f"if {o} is None:")
    out.emit(b + 1, "k = 0; nx = None")
    out.emit(b, f"elif {o} < th{steps[-1]}:")
    out.emit(b + 1, f"k = {n}; nx = None")
    for k in range(n - 1, 0, -1):
        out.emit(b, f"elif {o} < th{steps[k - 1]}:")
        out.emit(b + 1, f"k = {k}; nx = sh{steps[k]}({o}[:10])")
    out.emit(b, "else:")
    out.emit(b + 1, f"k = 0; nx = sh{steps[0]}({o}[:10])")
    out.emit(b, "if nx is not None:")
    out.emit(b + 1, f"nx += {o}[10:]")
    out.emit(b + 1, f"if {nc} is None or nx < {nc}:")
    out.emit(b + 2, f"{nc} = nx")


def _emit_body(
    out: _Emitter,
    dimensions: Sequence[tuple[str, Sequence[CompiledRule]]],
    room: dict[str, int],
    b: int,
    day_index: dict[int, int] | None,
) -> None:
    """Emit the per-object body at indent ``b``; with observedAt when ``day_index`` is given
    (a mapping afterDays → index of its threshold), else the loop of SPEC §6 alone."""
    observed = day_index is not None
    prepared: dict[tuple[str, str], str] = {}  # (template id, kind) → variable suffix

    def prepare(rule: CompiledRule) -> str:
        key = (rule.signal_template_id, rule.kind)
        if key in prepared:
            return prepared[key]
        suffix = str(len(prepared))
        prepared[key] = suffix
        k = out.const("K", rule.signal_template_id)
        v = f"v{suffix}"
        out.emit(b, f"{v} = get({k})")
        if rule.kind == "range":
            # v: int/float or None; s: its text for matchedValue; w: whether s plus a label
            # may be too long for matchedValue (then the rules measure and cut it).
            fits = out.const("ROOM", room[rule.signal_template_id])
            out.emit(b, f"t = type({v})")
            out.emit(b, f"if t is not int and t is not float and {v} is not None:")
            out.emit(b + 1, f"{v} = as_number({v})")
            out.emit(b + 1, f"t = type({v})")
            out.emit(b, "if t is int:")
            out.emit(b + 1, f"s{suffix} = str({v}); w{suffix} = len(s{suffix}) > {fits}")
            out.emit(b, "elif t is float:")
            out.emit(
                b + 1,
                f"s{suffix} = str(int({v})) if {v}.is_integer() and -LIM < {v} < LIM "
                f"else repr({v})",
            )
            # A literal: no float's text is longer than FLOAT_TEXT_MAX.
            out.emit(b + 1, f"w{suffix} = {room[rule.signal_template_id] < FLOAT_TEXT_MAX}")
        elif rule.kind == "list":
            # v: list or None; a: normalised set; s: joined text, cut to MAXMV characters.
            out.emit(b, f"if {v} is not None and type({v}) is not list:")
            out.emit(b + 1, f"{v} = as_list({v})")
            out.emit(b, f"if {v} is not None:")
            out.emit(b + 1, f"a{suffix} = {{*map(normalized, {v})}}")
            out.emit(b + 1, f"s{suffix} = join({v})")
            out.emit(b + 1, f"if len(s{suffix}) > MAXMV:")
            out.emit(b + 2, f"s{suffix} = bound(s{suffix})")
        if observed:
            # o: the value's observedAt (fetched only for a value), checked once per object.
            o = f"o{suffix}"
            out.emit(b, f"{o} = None if {v} is None else oget({k})")
            out.emit(
                b,
                f"if {o} is not None and (type({o}) is not str or len({o}) != 27 "
                f"or not {o}.isascii()):",
            )
            out.emit(b + 1, f"bad_observed({o})")
        return suffix

    for d_index, (_, rules) in enumerate(dimensions):
        # Coverage is counted as "rules minus absent values": absent is the rarer branch.
        counter = f"m{d_index}"
        nc = f"nc{d_index}"
        out.emit(b, f"{counter} = 0; {nc} = None")
        for r_index, rule in enumerate(rules):
            suffix = prepare(rule)
            e, c, v = f"e{d_index}_{r_index}", f"c{d_index}_{r_index}", f"v{suffix}"
            o = f"o{suffix}"
            decays = observed and bool(rule.decay)
            absent = out.const("ABSENT", rule.absent.copy)

            def stamp(indent: int, c: str = c, o: str = o) -> None:
                if observed:
                    out.emit(indent, f"if {o} is not None:")
                    out.emit(indent + 1, f"{c}['observedAt'] = {o}")

            if isinstance(rule, BooleanRule) and decays:
                assert day_index is not None
                ts = out.const("TSTEPS", tuple((p, t.copy) for p, t in rule.true_steps))
                fs = out.const("FSTEPS", tuple((p, t.copy) for p, t in rule.false_steps))
                out.emit(b, f"if {v} is True or {v} is False:")
                _emit_decay(out, b + 1, rule, o, nc, day_index)
                out.emit(b + 1, f"{e}, tm = {ts}[k] if {v} else {fs}[k]")
                out.emit(b + 1, f"{c} = tm()")
                stamp(b + 1)
                out.emit(b, "else:")
                out.emit(b + 1, f"{e} = 0; {c} = {absent}(); {counter} += 1")
            elif isinstance(rule, BooleanRule):
                pt, pf = out.const("PT", rule.on_true), out.const("PF", rule.on_false)
                ct, cf = out.const("CT", rule.if_true.copy), out.const("CF", rule.if_false.copy)
                out.emit(b, f"if {v} is True:")
                out.emit(b + 1, f"{e} = {pt}; {c} = {ct}()")
                stamp(b + 1)
                out.emit(b, f"elif {v} is False:")
                out.emit(b + 1, f"{e} = {pf}; {c} = {cf}()")
                stamp(b + 1)
                out.emit(b, "else:")
                out.emit(b + 1, f"{e} = 0; {c} = {absent}(); {counter} += 1")
            elif isinstance(rule, RangeRule):
                bounds = out.const("BOUNDS", rule.boundaries)
                out.emit(b, f"if {v} is None:")
                out.emit(b + 1, f"{e} = 0; {c} = {absent}(); {counter} += 1")
                out.emit(b, "else:")
                index = f"bisect({bounds}, {v}) if {v} == {v} else -1"
                if decays:
                    assert day_index is not None
                    tables = out.const(
                        "TABLES",
                        tuple(
                            [(p, x, tm.copy) for p, x, tm in entries]
                            for entries in rule.interval_steps
                        ),
                    )
                    _emit_decay(out, b + 1, rule, o, nc, day_index)
                    out.emit(b + 1, f"{e}, x, tm = {tables}[k][{index}]")
                else:
                    table = out.const("TABLE", [(p, x, tm.copy) for p, x, tm in rule.intervals])
                    out.emit(b + 1, f"{e}, x, tm = {table}[{index}]")
                # Measured and cut only when w says it may be needed (bound() returns a
                # short text unchanged).
                out.emit(b + 1, f"{c} = tm()")
                out.emit(
                    b + 1,
                    f"{c}['matchedValue'] = bound(s{suffix} + x) if w{suffix} else s{suffix} + x",
                )
                stamp(b + 1)
            elif isinstance(rule, ListRule):
                a = f"a{suffix}"
                out.emit(b, f"if {v} is None:")
                out.emit(b + 1, f"{e} = 0; {c} = {absent}(); {counter} += 1")
                out.emit(b, "else:")
                points = out.const("POINTS", rule.points_by_key)
                keys, total = out.const("KEYS", rule.keys), out.const("TOTAL", rule.total)
                if rule.mode == "additive" and rule.int_points:
                    # Unmatched answers add 0; map(get, answer, repeat(0)) stays in C.
                    expr = f"sum(map({out.const('GET', rule.points_by_key.get)}, {a}, ZEROS))"
                elif rule.mode == "additive":
                    expr = f"additive_float_points({points}, {a})"
                elif rule.mode == "best-match":
                    keys_view = out.const("KEYSVIEW", rule.points_by_key.keys())
                    item = out.const("ITEM", rule.points_by_key.__getitem__)
                    out.emit(b + 1, f"matched = {keys_view} & {a}")
                    expr = f"max(map({item}, matched))[0] if matched else 0"
                elif rule.mode == "contains-all":
                    expr = f"{total} if {keys} <= {a} else 0"
                elif rule.mode == "contains-none":
                    expr = f"{total} if {keys}.isdisjoint({a}) else 0"
                else:  # exact-match
                    expr = f"{total} if {keys} == {a} else 0"
                out.emit(b + 1, f"{e} = {expr}")
                if decays:
                    assert day_index is not None
                    _emit_decay(out, b + 1, rule, o, nc, day_index)
                    factors = out.const("FACTORS", (1, *(s.factor for s in rule.decay)))
                    steps = out.const("TEMPLATES", tuple(t.copy for t in rule.template_steps))
                    out.emit(b + 1, "if k:")
                    out.emit(b + 2, f"{e} = decay_points({e}, {factors}[k])")
                    out.emit(b + 1, f"{c} = {steps}[k]()")
                else:
                    template = out.const("TEMPLATE", rule.template.copy)
                    out.emit(b + 1, f"{c} = {template}()")
                out.emit(b + 1, f"{c}['matchedValue'] = s{suffix}")
                out.emit(b + 1, f"{c}['pointsEarned'] = {e}")
                stamp(b + 1)
            else:  # pragma: no cover - compile_rule only makes the three kinds
                raise TypeError(f"cannot generate code for {type(rule).__name__}")

    entries = []
    for d_index, (name, rules) in enumerate(dimensions):
        earned_terms = [f"e{d_index}_{r}" for r in range(len(rules))]
        contributions = ", ".join(f"c{d_index}_{r}" for r in range(len(rules)))
        maximum = max_possible(rules)
        mp = out.const("MAXP", maximum)
        total = out.const("TOTAL_RULES", len(rules))
        if sums_exactly_as_floats(rules):
            out.emit(b, f"earned{d_index} = float({' + '.join(earned_terms)})")
        else:
            out.emit(b, f"earned{d_index} = fsum(({', '.join(earned_terms)},))")
        if maximum == 0:
            out.emit(b, f"score{d_index} = 0.0")
        else:
            # The score is a pure function of earned (max_possible is fixed), and round() is
            # the costliest step, so it is memoised per dimension (bounded; see SCORE_MEMO_SIZE).
            memo = out.const("SCORES", {})
            out.emit(b, f"score{d_index} = {memo}.get(earned{d_index})")
            out.emit(b, f"if score{d_index} is None:")
            # Same as round(min(100.0, max(0.0, raw)), 2), without two builtin calls.
            out.emit(b + 1, f"raw = 100.0 * earned{d_index} / {mp}")
            out.emit(
                b + 1,
                f"score{d_index} = 0.0 if raw <= 0.0 else 100.0 if raw >= 100.0 else round(raw, 2)",
            )
            out.emit(b + 1, f"if len({memo}) < SCORE_MEMO_SIZE:")
            out.emit(b + 2, f"{memo}[earned{d_index}] = score{d_index}")
        key = out.const("DIM", name)
        entries.append(
            f"{key}: new(DR, (score{d_index}, earned{d_index}, {mp}, {total} - m{d_index}, "
            f"{total}, [{contributions}], {f'nc{d_index}' if observed else 'None'}))"
        )
    out.emit(b, f"append({{{', '.join(entries)}}})")
