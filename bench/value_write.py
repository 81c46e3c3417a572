"""The cost of a value write (`PUT /v1/signals/values`'s service, in process, no HTTP).

A scratch database with the 20 templates of bench/recompute.py and 2,000 companies with a
value for each of 4 templates (no profile: nothing is queued, so the write is what is
timed). Each round writes 1,000 values in one unit of work, as the route does
(`db.write(org=..., value_templates=...)` + `signals.service.write_values`), in three
shapes, in turn:

- **changed**: 1,000 existing values, each changed;
- **new**: 1,000 values of keys not stored yet (then deleted again outside the timing);
- **mixed**: 500 changed and 500 deleted (the deleted ones written back outside the timing).

The baseline, timed in the same rounds: the same 1,000 rows upserted by one `executemany`
`INSERT ... ON CONFLICT DO UPDATE` in a transaction of their own, the database's own cost
of the write. Run it against another code version with `PYTHONPATH=<its src>`:

    .venv/bin/python bench/value_write.py                     # PostgreSQL, 30 rounds
    .venv/bin/python bench/value_write.py --backend sqlite --rounds 20
    PYTHONPATH=/tmp/old/src .venv/bin/python bench/value_write.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import TEMPLATES, announce, company_ids, load_average, scratch_database
from signalscore.auth.service import create_organization
from signalscore.db.dialect import upsert
from signalscore.db.engine import Database, create_db_engine
from signalscore.db.migrate import upgrade_to_head
from signalscore.db.tables import signal_values
from signalscore.db.types import utcnow
from signalscore.signals import service as signals
from signalscore.signals.schemas import SignalValueIn, TemplateCreate

BATCH = 1_000
NUMBERS = [t for t, answer in TEMPLATES if answer == "number"][:4]


def item(company: str, template: str, value: Any) -> SignalValueIn:
    return SignalValueIn(
        objectType="company", objectId=company, signalTemplateId=template, value=value
    )


def write(db: Database, org_id: str, items: list[SignalValueIn]) -> float:
    shaped, templates = signals.shape_items(items)
    start = time.perf_counter()
    with db.write(org=org_id, value_templates=templates) as conn:
        signals.write_values(conn, org_id, shaped)
    return time.perf_counter() - start


def baseline(db: Database, org_id: str, items: list[SignalValueIn]) -> float:
    now = utcnow()
    rows = [
        {
            "organization_id": org_id,
            "object_type": "company",
            "object_id": i.objectId,
            "signal_template_id": i.signalTemplateId,
            "value": i.value,
            "observed_at": now,
            "updated_at": now,
        }
        for i in items
        if i.value is not None
    ]
    with db.engine.connect() as conn:
        insert = upsert(conn, signal_values)  # the backend's INSERT
    statement = insert.on_conflict_do_update(
        index_elements=["organization_id", "object_type", "object_id", "signal_template_id"],
        set_={"value": insert.excluded.value, "updated_at": insert.excluded.updated_at},
    )
    start = time.perf_counter()
    with db.engine.begin() as conn:
        conn.execute(statement, rows)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    announce(f"value write, {args.backend}")
    with scratch_database(args.backend, "value_write") as scratch:
        db = Database(create_db_engine(scratch.url))
        upgrade_to_head(db.engine)
        with db.write() as conn:
            org, _ = create_organization(conn, "bench")
        with db.write(org=org.id, structure=True) as conn:
            for template_id, answer in TEMPLATES:
                signals.create_template(
                    conn,
                    org.id,
                    TemplateCreate(
                        id=template_id, name=template_id, objectType="company", answerType=answer
                    ),
                )
        stored = company_ids(2_000)
        fresh = [f"new-{c}" for c in stored]
        initial = [item(c, t, 1) for c in stored for t in NUMBERS]
        for start in range(0, len(initial), BATCH):  # a request holds at most 1,000
            write(db, org.id, initial[start : start + BATCH])
        pairs = [(c, t) for c in stored for t in NUMBERS]
        times: dict[str, list[float]] = {"changed": [], "new": [], "mixed": [], "baseline": []}
        for n in range(args.rounds):
            value = n + 2
            chosen = pairs[(n * BATCH) % len(pairs) :][:BATCH]
            shapes: dict[str, list[SignalValueIn]] = {
                "changed": [item(c, t, value) for c, t in chosen],
                "new": [item(fresh[i // 4], NUMBERS[i % 4], value) for i in range(BATCH)],
                "mixed": [
                    item(c, t, None if i % 2 else value + 1000) for i, (c, t) in enumerate(chosen)
                ],
            }
            for name, items in shapes.items():
                times[name].append(write(db, org.id, items))
            times["baseline"].append(baseline(db, org.id, shapes["changed"]))
            # Put back what the round deleted or added, untimed.
            write(db, org.id, [item(c, t, 1) for c, t in chosen])
            write(db, org.id, [item(fresh[i // 4], NUMBERS[i % 4], None) for i in range(BATCH)])
        db.engine.dispose()
    base = statistics.median(times["baseline"])
    print(f"load average {load_average()}; {args.rounds} rounds of {BATCH:,} values")
    print("| write | median | p90 | vs baseline |")
    print("|---|---|---|---|")
    for name, found in times.items():
        found.sort()
        p90 = found[int(len(found) * 0.9) - 1]
        print(f"| {name} | {statistics.median(found) * 1000:.1f} ms | {p90 * 1000:.1f} ms "
              f"| {statistics.median(found) / base:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
