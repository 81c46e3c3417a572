"""Benchmark the scoring engine against GoRules zen-engine on the same 20-rule profile.

    python bench/engine.py [--objects 100000] [--zen-objects 5000] [--batch 1000] [--seed 7]
                           [--decay-repeat 5]

Builds a deterministic (seeded) set of companies, scores them with ``signalscore.engine`` on one
core (each backend: the C loop, the default, and the generated-Python fallback), then
evaluates the same rules with zen-engine (one decision graph: input node → one
decision table per rule, collect hit policy → output node; points summed per dimension), checks
that both agree on every object zen evaluated, and prints objects/s for each and the ratio.
Exits non-zero if the agreement check fails.

Time decay (SPEC §13): the same objects, each value with an ``observedAt`` 0–240 days before
a fixed ``now`` (so some decay steps pass and some do not), scored in batches by (a) the
profile without decay and (b) the same profile with a 1–3-step decay on every other rule
(half of them), each backend, with the run without observedAt interleaved in the same
rounds. Prints objects/s (median of the rounds), (b)/(a) (target: at least 0.8) and
(a)/(no observedAt), the cost of reading and stamping observedAt. Exits non-zero if the two
loops disagree on the decayed results.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import random
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import INDUSTRIES, REGIONS, ROLES, RULES, TECH
from signalscore.engine import (
    BACKENDS,
    CompiledProfile,
    Rule,
    SignalValue,
    compile_profile,
    normalize_choice,
)


def build_rules() -> list[Rule]:
    """The 20-rule profile shared with the recompute and load benchmarks (bench/_common.py):
    6 numeric range rules, 6 boolean, 8 list rules over all five modes."""
    return [
        Rule(f"rule-{i:02d}", template, dimension, answer_type, point_values)
        for i, (template, dimension, answer_type, point_values) in enumerate(RULES)
    ]


#: The instant the decay runs are scored at (fixed, so every run decays the same values).
DECAY_NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)

#: Decay schedules, given in turn to every other rule: one, two and three steps.
DECAYS: list[list[tuple[int, float]]] = [
    [(30, 0.5)],
    [(30, 0.75), (90, 0.25)],
    [(14, 0.9), (60, 0.5), (180, 0.0)],
]


def build_decayed_rules(rules: Sequence[Rule]) -> list[Rule]:
    """The same rules, every other one (half of them) with a 1-3-step decay."""
    return [
        rule._replace(
            decay={
                "steps": [{"afterDays": d, "factor": f} for d, f in DECAYS[(i // 2) % len(DECAYS)]]
            }
        )
        if i % 2 == 0
        else rule
        for i, rule in enumerate(rules)
    ]


def build_observed(
    objects: Sequence[dict[str, SignalValue]], seed: int
) -> list[dict[str, str | None]]:
    """Per object, an observedAt for each of its values: 0-240 days before DECAY_NOW, to the
    microsecond, as canonical UTC text."""
    rnd = random.Random(seed)
    observed = []
    for values in objects:
        texts: dict[str, str | None] = {}
        for template in values:
            when = DECAY_NOW - timedelta(microseconds=rnd.randrange(240 * 86_400 * 10**6))
            texts[template] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        observed.append(texts)
    return observed


def _vary(text: str, rnd: random.Random) -> str:
    """The same choice as different writers spell it (case only: the writer trims)."""
    roll = rnd.random()
    if roll < 0.7:
        return text
    if roll < 0.85:
        return text.lower()
    return text.upper()


def _pick(vocabulary: Sequence[str], rnd: random.Random, most: int) -> list[str]:
    return [_vary(t, rnd) for t in rnd.sample(vocabulary, rnd.randint(0, most))]


def build_objects(count: int, seed: int, presence: float = 0.8) -> list[dict[str, SignalValue]]:
    """Deterministic companies; each template has a value with probability ``presence``."""
    rnd = random.Random(seed)
    generators: dict[str, Callable[[], SignalValue]] = {
        "employees": lambda: int(rnd.lognormvariate(4.5, 1.6)),
        "revenue": lambda: round(rnd.lognormvariate(15.5, 2.0), 2),
        "growth": lambda: round(rnd.gauss(18, 25), 1),
        "funding": lambda: float(round(rnd.lognormvariate(15.0, 1.8), -3)),
        "open_roles": lambda: rnd.randint(0, 60),
        "web_traffic": lambda: int(rnd.lognormvariate(9.5, 2.0)),
        "b2b": lambda: rnd.random() < 0.7,
        "has_sales_team": lambda: rnd.random() < 0.6,
        "uses_competitor": lambda: rnd.random() < 0.2,
        "hiring_sales": lambda: rnd.random() < 0.3,
        "recent_funding": lambda: rnd.random() < 0.25,
        "leadership_change": lambda: rnd.random() < 0.1,
        "crm": lambda: _pick(TECH[:10], rnd, 2),
        "data_stack": lambda: _pick(TECH[10:16], rnd, 4),
        "industry": lambda: _pick(INDUSTRIES, rnd, 2),
        "region": lambda: _pick(REGIONS, rnd, 3),
        "sales_tools": lambda: _pick(TECH[20:], rnd, 5),
        "hiring_roles": lambda: _pick(ROLES, rnd, 3),
    }
    objects: list[dict[str, SignalValue]] = []
    for _ in range(count):
        objects.append({tid: make() for tid, make in generators.items() if rnd.random() < presence})
    return objects


# --- zen-engine --------------------------------------------------------------------------------


def _zen_literal(value: float) -> str:
    return repr(value) if isinstance(value, float) and not value.is_integer() else str(int(value))


def _zen_rows(rule: Rule) -> list[tuple[str, float]]:
    """Decision-table rows (unary test on the rule's input, points) for one rule."""
    pv = rule.point_values
    if rule.answer_type == "boolean":
        return [(key, pv[key]) for key in ("true", "false") if key in pv]
    if rule.answer_type != "list":
        rows = []
        for r in pv["ranges"]:
            lo, hi = r.get("min"), r.get("max")
            if lo is None and hi is None:
                test = "$ != null"
            elif hi is None:
                test = f">= {_zen_literal(lo)}"
            elif lo is None:
                test = f"< {_zen_literal(hi)}"
            else:
                test = f"[{_zen_literal(lo)}..{_zen_literal(hi)})"
            rows.append((test, r["points"]))
        return rows
    choices = {normalize_choice(k): p for k, p in pv["choices"].items()}
    keys = json.dumps(sorted(choices))
    total = sum(choices.values())
    mode = pv.get("mode", "additive")
    if mode in ("additive", "best-match"):
        return [(f"$ != null and contains($, {json.dumps(k)})", p) for k, p in choices.items()]
    if mode == "contains-all":
        return [(f"$ != null and all({keys}, contains($, #))", total)]
    if mode == "contains-none":
        return [(f"$ != null and none($, # in {keys})", total)]
    return [(f"$ != null and all($, # in {keys}) and all({keys}, contains($, #))", total)]


def build_zen_graph(rules: Sequence[Rule]) -> dict[str, Any]:
    """One graph: input → one collect decision table per rule (output at its rule id) → output."""
    nodes: list[dict[str, Any]] = [
        {"id": "request", "type": "inputNode", "name": "request", "position": {"x": 0, "y": 0}},
        {
            "id": "response",
            "type": "outputNode",
            "name": "response",
            "position": {"x": 600, "y": 0},
        },
    ]
    edges: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        node_id = f"t{i:02d}"
        field = rule.signal_template_id
        if rule.answer_type == "list":
            # Case-insensitive, trimmed matching is done by zen itself.
            field = f"{field} != null ? map({field}, lower(trim(#))) : null"
        content = {
            "hitPolicy": "collect",
            "outputPath": node_id,
            "inputs": [{"id": "in", "name": rule.signal_template_id, "field": field}],
            "outputs": [{"id": "points", "name": "points", "field": "points"}],
            "rules": [
                {"_id": f"{node_id}-{k}", "in": test, "points": _zen_literal(points)}
                for k, (test, points) in enumerate(_zen_rows(rule))
            ],
        }
        nodes.append(
            {
                "id": node_id,
                "type": "decisionTableNode",
                "name": rule.id,
                "position": {"x": 300, "y": 100 * i},
                "content": content,
            }
        )
        edges.append(
            {"id": f"in-{node_id}", "sourceId": "request", "targetId": node_id, "type": "edge"}
        )
        edges.append(
            {"id": f"{node_id}-out", "sourceId": node_id, "targetId": "response", "type": "edge"}
        )
    return {"contentType": "application/vnd.gorules.decision", "nodes": nodes, "edges": edges}


def zen_scorer(rules: Sequence[Rule]) -> Callable[[dict[str, SignalValue]], dict[str, float]]:
    """Evaluate one object with zen and sum points per dimension (best-match takes the max)."""
    import zen

    decision = zen.ZenEngine().create_decision(json.dumps(build_zen_graph(rules)))
    plan = [
        (f"t{i:02d}", rule.dimension, rule.point_values.get("mode") == "best-match")
        for i, rule in enumerate(rules)
    ]
    dimensions = sorted({rule.dimension for rule in rules})

    def score(values: dict[str, SignalValue]) -> dict[str, float]:
        result = decision.evaluate(values)["result"]
        totals: dict[str, list[float]] = {d: [] for d in dimensions}
        for node_id, dimension, best in plan:
            hits = [row["points"] for row in result[node_id]]
            if hits:
                totals[dimension].append(max(hits) if best else sum(hits))
        return {d: math.fsum(points) for d, points in totals.items()}

    return score


# --- measurement -------------------------------------------------------------------------------


def _seconds(run: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scoring engine vs zen-engine, one core.")
    parser.add_argument("--objects", type=int, default=100_000, help="objects scored by the engine")
    parser.add_argument("--zen-objects", type=int, default=5_000, help="objects evaluated by zen")
    parser.add_argument("--batch", type=int, default=1_000, help="score_many batch size")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes of the engine")
    parser.add_argument("--check", type=int, default=1_000, help="objects checked against zen")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--decay-repeat", type=int, default=5, help="rounds of the decay runs")
    args = parser.parse_args(argv)

    rules = build_rules()
    objects = build_objects(args.objects, args.seed)
    n = len(objects)
    present = sum(len(o) for o in objects) / (n * len({r.signal_template_id for r in rules}))
    print(f"profile: {len(rules)} rules; objects: {n} (values present: {present:.0%}); "
          f"python {sys.version.split()[0]}, one process")  # fmt: skip

    probe = min(timeit.repeat("sum(range(1000))", number=2_000, repeat=5)) / 2_000
    print(f"machine speed probe: sum(range(1000)) takes {probe * 1e6:.1f} µs")

    medians: dict[str, float] = {}
    for backend in BACKENDS:
        medians[backend] = _measure(compile_profile(rules, backend), objects, args)
    if "native" not in medians:
        print("NOTE: the C scoring loop is not built (pip install -e .); only python was measured")
    median = medians[BACKENDS[0]]

    zen_n = min(n, args.zen_objects)
    score_zen = zen_scorer(rules)
    zen_results: list[dict[str, float]] = []
    zen_time = _seconds(lambda: zen_results.extend(score_zen(v) for v in objects[:zen_n]))
    zen_rate = zen_n / zen_time
    subset = f"the first {zen_n} objects" if zen_n < n else f"all {n} objects"
    print(f"zen-engine {_zen_version()}, one evaluate() per object on {subset}: "
          f"{zen_rate:,.0f} objects/s")  # fmt: skip
    for backend, rate in medians.items():
        print(f"ratio engine ({backend}) / zen, per-object throughput, median pass: "
              f"{rate / zen_rate:,.1f}x")  # fmt: skip

    check_n = min(zen_n, args.check)
    for backend in BACKENDS:
        engine_results = compile_profile(rules, backend).score_many(objects[:check_n])
        mismatches = [
            i
            for i in range(check_n)
            for dim, result in engine_results[i].items()
            if result.earned != zen_results[i][dim]
        ]
        if mismatches:
            i = mismatches[0]
            print(f"AGREEMENT CHECK FAILED ({backend}) on {len(mismatches)} of {check_n} objects, "
                  f"e.g. #{i}:")  # fmt: skip
            print(f"  values: {objects[i]}")
            print(f"  engine: { {d: r.earned for d, r in engine_results[i].items()} }")
            print(f"  zen:    {zen_results[i]}")
            return 1
    print(f"agreement: engine earned == zen points per dimension on all {check_n} objects checked "
          f"({', '.join(BACKENDS)})")  # fmt: skip
    print(f"targets ({BACKENDS[0]}, the default): >=50,000 objects/s (median) "
          f"{'met' if median >= 50_000 else 'NOT met'}; "
          f">=10x zen {'met' if median / zen_rate >= 10 else 'NOT met'}")  # fmt: skip
    return _measure_decay(rules, objects, args)


def _measure_decay(rules: list[Rule], objects: list[dict[str, SignalValue]], args: Any) -> int:
    """Time decay: no observedAt, (a) observedAt without decay, (b) with decay on half the
    rules; interleaved rounds, each backend. Returns the exit status."""
    n = len(objects)
    decayed_rules = build_decayed_rules(rules)
    observed = build_observed(objects, args.seed + 1)
    with_decay = sum(1 for r in decayed_rules if r.decay)
    print(f"decay: {with_decay} of {len(rules)} rules with 1-3 steps; every value observed 0-240 "
          f"days before {DECAY_NOW:%Y-%m-%d %H:%M}Z; batches of {args.batch}, "
          f"{args.decay_repeat} interleaved rounds")  # fmt: skip

    check_n = min(n, args.check)
    scored = {
        backend: compile_profile(decayed_rules, backend).score_many(
            objects[:check_n], observed[:check_n], DECAY_NOW
        )
        for backend in BACKENDS
    }
    if len({repr(r) for r in scored.values()}) != 1:
        print(f"DECAY CHECK FAILED: the loops disagree on the first {check_n} objects")
        return 1
    contributions = [c for result in scored[BACKENDS[0]] for r in result.values()
                     for c in r.contributions if c["decayFactor"] != 1]  # fmt: skip
    print(f"decay check: {', '.join(BACKENDS)} agree on {check_n} objects; "
          f"{len(contributions)} contributions decayed")  # fmt: skip

    for backend in BACKENDS:
        plain = compile_profile(rules, backend)
        decayed = compile_profile(decayed_rules, backend)
        variants: dict[str, tuple[CompiledProfile, list[dict[str, str | None]] | None]] = {
            "no observedAt": (plain, None),
            "(a) observedAt, no decay": (plain, observed),
            "(b) observedAt, decay on half": (decayed, observed),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.decay_repeat):
            for name, (profile, texts) in variants.items():
                times[name].append(
                    _seconds(functools.partial(_batches, profile, objects, texts, args.batch))
                )
        rates = {name: n / sorted(t)[len(t) // 2] for name, t in times.items()}
        for name, rate in rates.items():
            print(f"engine ({backend}), {name}: {rate:,.0f} objects/s (median)")
        a, b = rates["(a) observedAt, no decay"], rates["(b) observedAt, decay on half"]
        ratio = b / a
        print(f"engine ({backend}): ratio (b)/(a) {ratio:.2f} (target >= 0.8: "
              f"{'met' if ratio >= 0.8 else 'NOT met'}); ratio (a)/(no observedAt) "
              f"{a / rates['no observedAt']:.2f}")  # fmt: skip
    return 0


def _batches(
    profile: CompiledProfile,
    objects: list[dict[str, SignalValue]],
    observed: list[dict[str, str | None]] | None,
    batch: int,
) -> None:
    """Score in batches as the recompute worker does (with observedAt when given at
    DECAY_NOW), keeping one score per batch."""
    sink = []
    for start in range(0, len(objects), batch):
        end = start + batch
        if observed is None:
            results = profile.score_many(objects[start:end])
        else:
            results = profile.score_many(objects[start:end], observed[start:end], DECAY_NOW)
        sink.append(results[-1]["fit"].score)


def _measure(profile: CompiledProfile, objects: list[dict[str, SignalValue]], args: Any) -> float:
    """Time one backend three ways; print them; return the median batched objects/s."""
    n = len(objects)
    sink: list[float] = []

    def pipeline() -> None:
        # What the recompute worker does: score a batch, use the rows, drop them.
        for start in range(0, n, args.batch):
            results = profile.score_many(objects[start : start + args.batch])
            sink.append(results[-1]["fit"].score)

    name = f"engine ({profile.backend})"
    passes = sorted(_seconds(pipeline) for _ in range(args.repeat))
    best, median = n / passes[0], n / passes[len(passes) // 2]
    print(f"{name}, score_many in batches of {args.batch}: {best:,.0f} objects/s best, "
          f"{median:,.0f} median of {args.repeat} passes")  # fmt: skip
    retained = _seconds(lambda: profile.score_many(objects))
    print(f"{name}, one score_many call keeping all {n} results: {n / retained:,.0f} objects/s")
    single_n = min(n, 20_000)
    single = _seconds(lambda: [profile.score(v) for v in objects[:single_n]])
    print(f"{name}, score() per object ({single_n} objects): {single_n / single:,.0f} objects/s")
    return median


def _zen_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("zen-engine")
    except PackageNotFoundError:
        return "(unknown version)"


if __name__ == "__main__":
    sys.exit(main())
