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

from signalscore.engine._model import DimensionResult, SignalValues
from signalscore.engine._numbers import exact_sum
from signalscore.engine._rules import (
    MAX_MATCHED_VALUE_CHARS,
    BooleanRule,
    CompiledRule,
    ListRule,
    NormalizedStrings,
    RangeRule,
    bound_matched_value,
    max_possible,
    sums_exactly_as_floats,
)

BatchScorer = Callable[[Sequence[SignalValues], NormalizedStrings], list[dict[str, Any]]]

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
    """Compile the scoring loop for ``dimensions`` (name and rules in output order)."""
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
    )
    out.emit(0, "def score_batch(values_list, memo):")
    out.emit(1, "normalized = memo.__getitem__")
    out.emit(1, "results = []")
    out.emit(1, "append = results.append")
    out.emit(1, "for values in values_list:")
    out.emit(2, "get = values.get")

    prepared: dict[tuple[str, str], str] = {}  # (template id, kind) → variable suffix

    # Per numeric template: how long its number's text may be before some rule's matchedValue
    # (the text and that rule's longest range label) could pass MAX_MATCHED_VALUE_CHARS.
    room: dict[str, int] = {}
    for _, rules in dimensions:
        for rule in rules:
            if isinstance(rule, RangeRule):
                left = MAX_MATCHED_VALUE_CHARS - max(len(x) for _, x, _ in rule.intervals)
                room[rule.signal_template_id] = min(left, room.get(rule.signal_template_id, left))

    def prepare(rule: CompiledRule) -> str:
        key = (rule.signal_template_id, rule.kind)
        if key in prepared:
            return prepared[key]
        suffix = str(len(prepared))
        prepared[key] = suffix
        k = out.const("K", rule.signal_template_id)
        v = f"v{suffix}"
        out.emit(2, f"{v} = get({k})")
        if rule.kind == "range":
            # v: int/float or None; s: its text for matchedValue; w: whether s plus a label
            # may be too long for matchedValue (then the rules measure and cut it).
            fits = out.const("ROOM", room[rule.signal_template_id])
            out.emit(2, f"t = type({v})")
            out.emit(2, f"if t is not int and t is not float and {v} is not None:")
            out.emit(3, f"{v} = as_number({v})")
            out.emit(3, f"t = type({v})")
            out.emit(2, "if t is int:")
            out.emit(3, f"s{suffix} = str({v}); w{suffix} = len(s{suffix}) > {fits}")
            out.emit(2, "elif t is float:")
            out.emit(
                3,
                f"s{suffix} = str(int({v})) if {v}.is_integer() and -LIM < {v} < LIM "
                f"else repr({v})",
            )
            # A literal: no float's text is longer than FLOAT_TEXT_MAX.
            out.emit(3, f"w{suffix} = {room[rule.signal_template_id] < FLOAT_TEXT_MAX}")
        elif rule.kind == "list":
            # v: list or None; a: normalised set; s: joined text, cut to MAXMV characters.
            out.emit(2, f"if {v} is not None and type({v}) is not list:")
            out.emit(3, f"{v} = as_list({v})")
            out.emit(2, f"if {v} is not None:")
            out.emit(3, f"a{suffix} = {{*map(normalized, {v})}}")
            out.emit(3, f"s{suffix} = join({v})")
            out.emit(3, f"if len(s{suffix}) > MAXMV:")
            out.emit(4, f"s{suffix} = bound(s{suffix})")
        return suffix

    for d_index, (_, rules) in enumerate(dimensions):
        # Coverage is counted as "rules minus absent values": absent is the rarer branch.
        counter = f"m{d_index}"
        out.emit(2, f"{counter} = 0")
        for r_index, rule in enumerate(rules):
            suffix = prepare(rule)
            e, c, v = f"e{d_index}_{r_index}", f"c{d_index}_{r_index}", f"v{suffix}"
            absent = out.const("ABSENT", rule.absent.copy)
            if isinstance(rule, BooleanRule):
                pt, pf = out.const("PT", rule.on_true), out.const("PF", rule.on_false)
                ct, cf = out.const("CT", rule.if_true.copy), out.const("CF", rule.if_false.copy)
                out.emit(2, f"if {v} is True:")
                out.emit(3, f"{e} = {pt}; {c} = {ct}()")
                out.emit(2, f"elif {v} is False:")
                out.emit(3, f"{e} = {pf}; {c} = {cf}()")
                out.emit(2, "else:")
                out.emit(3, f"{e} = 0; {c} = {absent}(); {counter} += 1")
            elif isinstance(rule, RangeRule):
                bounds = out.const("BOUNDS", rule.boundaries)
                table = out.const("TABLE", [(p, x, tm.copy) for p, x, tm in rule.intervals])
                out.emit(2, f"if {v} is None:")
                out.emit(3, f"{e} = 0; {c} = {absent}(); {counter} += 1")
                out.emit(2, "else:")
                out.emit(3, f"{e}, x, tm = {table}[bisect({bounds}, {v}) if {v} == {v} else -1]")
                # Measured and cut only when w says it may be needed (bound() returns a
                # short text unchanged).
                out.emit(3, f"{c} = tm()")
                out.emit(
                    3,
                    f"{c}['matchedValue'] = bound(s{suffix} + x) if w{suffix} else s{suffix} + x",
                )
            elif isinstance(rule, ListRule):
                a = f"a{suffix}"
                template = out.const("TEMPLATE", rule.template.copy)
                out.emit(2, f"if {v} is None:")
                out.emit(3, f"{e} = 0; {c} = {absent}(); {counter} += 1")
                out.emit(2, "else:")
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
                    out.emit(3, f"matched = {keys_view} & {a}")
                    expr = f"max(map({item}, matched))[0] if matched else 0"
                elif rule.mode == "contains-all":
                    expr = f"{total} if {keys} <= {a} else 0"
                elif rule.mode == "contains-none":
                    expr = f"{total} if {keys}.isdisjoint({a}) else 0"
                else:  # exact-match
                    expr = f"{total} if {keys} == {a} else 0"
                out.emit(3, f"{e} = {expr}")
                out.emit(3, f"{c} = {template}(); {c}['matchedValue'] = s{suffix}")
                out.emit(3, f"{c}['pointsEarned'] = {e}")
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
            out.emit(2, f"earned{d_index} = float({' + '.join(earned_terms)})")
        else:
            out.emit(2, f"earned{d_index} = fsum(({', '.join(earned_terms)},))")
        if maximum == 0:
            out.emit(2, f"score{d_index} = 0.0")
        else:
            # The score is a pure function of earned (max_possible is fixed), and round() is
            # the costliest step, so it is memoised per dimension (bounded; see SCORE_MEMO_SIZE).
            memo = out.const("SCORES", {})
            out.emit(2, f"score{d_index} = {memo}.get(earned{d_index})")
            out.emit(2, f"if score{d_index} is None:")
            # Same as round(min(100.0, max(0.0, raw)), 2), without two builtin calls.
            out.emit(3, f"raw = 100.0 * earned{d_index} / {mp}")
            out.emit(
                3,
                f"score{d_index} = 0.0 if raw <= 0.0 else 100.0 if raw >= 100.0 else round(raw, 2)",
            )
            out.emit(3, f"if len({memo}) < SCORE_MEMO_SIZE:")
            out.emit(4, f"{memo}[earned{d_index}] = score{d_index}")
        key = out.const("DIM", name)
        entries.append(
            f"{key}: new(DR, (score{d_index}, earned{d_index}, {mp}, {total} - m{d_index}, "
            f"{total}, [{contributions}]))"
        )
    out.emit(2, f"append({{{', '.join(entries)}}})")
    out.emit(1, "return results")

    source = "\n".join(out.lines) + "\n"
    namespace = dict(out.namespace)
    code = compile(source, "<signalscore.engine generated scorer>", "exec")
    exec(code, namespace)  # noqa: S102 - source built above from generated names only
    scorer: BatchScorer = namespace["score_batch"]
    scorer.__doc__ = source  # kept for debugging: help(profile) shows what runs
    return scorer
