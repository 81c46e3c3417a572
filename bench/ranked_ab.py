"""Interleaved A/B of ranked pages (issue 13): two code versions served side by side on one
database, each request sent to both in alternating order, so that both see the same load.

    python bench/ranked_ab.py --database-url URL --before-src DIR [--rounds 200]

`URL` is a database kept by `bench/ranked.py --keep` (one profile, 1,000,000 `fit` rows).
`DIR` is the `src` directory of the old code, e.g. from
`git archive <commit> src | tar -x -C /tmp/before`; the other server runs this tree. Each
server is `signalscore serve` (no embedded worker) as in bench/ranked.py, and server time is
the access log's `durationMs`. Each round reads: the first page (desc), a page from a cursor
at a random row (desc and asc), a page from a random row of the 0 tie (`tier=D&maxScore=0`)
and the first `tier=B` page; 20 warm-up rounds are not counted. Prints p50 / p95 per read
and the after/before ratios (docs/benchmarks.md, "One round trip a page").
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import uuid
from typing import Any

import httpx2 as httpx
import sqlalchemy as sa

from ranked import Server
from signalscore.auth.service import create_api_key
from signalscore.db.engine import Database, create_db_engine
from signalscore.scores import service

WARM_UP = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--before-src", required=True, help="src/ of the old code")
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    db = Database(create_db_engine(args.database_url))
    with db.write() as conn:
        org_id, profile_id = conn.execute(
            sa.text("SELECT organization_id, id FROM scoring_profiles")
        ).one()
        key = create_api_key(conn, org_id).key
        sample = conn.execute(
            sa.text(
                "SELECT score, object_id FROM score_results TABLESAMPLE SYSTEM (0.2)"
                " WHERE profile_id = :p AND dimension = 'fit' LIMIT 2000"
            ),
            {"p": profile_id},
        ).all()
    db.dispose()
    zeros = [row for row in sample if row[0] == 0]
    rng = random.Random(13)

    def cursor(read: service.RankedRead, score: float, object_id: str) -> str:
        return service.encode_cursor(read.fingerprint(profile_id), score, object_id)

    def reads() -> dict[str, dict[str, Any]]:
        row, zero = rng.choice(sample), rng.choice(zeros)
        desc, asc = service.RankedRead("fit"), service.RankedRead("fit", order="asc")
        tie = service.RankedRead("fit", tier="D", max_score=0.0)
        return {
            "first page, desc": {"dimension": "fit"},
            "cursor at a random row, desc": {"dimension": "fit", "cursor": cursor(desc, *row)},
            "cursor at a random row, asc": {
                "dimension": "fit",
                "order": "asc",
                "cursor": cursor(asc, *row),
            },
            "0 tie, cursor at a random row": {
                "dimension": "fit",
                "tier": "D",
                "maxScore": 0,
                "cursor": cursor(tie, 0.0, zero[1]),
            },
            "tier=B, first page": {"dimension": "fit", "tier": "B"},
        }

    os.environ["PYTHONPATH"] = args.before_src
    servers = {"before": Server(args.database_url)}
    del os.environ["PYTHONPATH"]
    servers["after"] = Server(args.database_url)
    clients = {}
    for name, server in servers.items():
        client = httpx.Client(
            base_url=server.base, headers={"authorization": f"Bearer {key}"}, timeout=60
        )
        server.wait_ready(client)
        clients[name] = client
    ids: dict[str, dict[str, list[str]]] = {name: {} for name in servers}
    path = f"/v1/scoring/profiles/{profile_id}/scores"
    try:
        for i in range(args.rounds + WARM_UP):
            order = list(servers) if i % 2 else list(servers)[::-1]
            for label, params in reads().items():
                for name in order:
                    rid = str(uuid.uuid4())
                    response = clients[name].get(path, params=params, headers={"x-request-id": rid})
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text}")
                    if i >= WARM_UP:
                        ids[name].setdefault(label, []).append(rid)
        print(f"{args.rounds} rounds, interleaved; load average {os.getloadavg()}")
        print("| read | before p50 / p95 | after p50 / p95 | after / before p50 | p95 |")
        print("|---|---|---|---|---|")
        for label in ids["before"]:
            found = {}
            for name, server in servers.items():
                times = sorted(server.server_times(ids[name][label]))
                found[name] = (statistics.median(times), times[int(0.95 * len(times)) - 1])
            (b50, b95), (a50, a95) = found["before"], found["after"]
            print(
                f"| {label} | {b50:.2f} / {b95:.2f} | {a50:.2f} / {a95:.2f} "
                f"| {a50 / b50:.2f} | {a95 / b95:.2f} |"
            )
    finally:
        for server in servers.values():
            server.failed()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
