"""A copy of this tree's `src/` with the score events left out, for the A/B of issue 14's
"events cost at most 1.3x the recompute without them" (docs/benchmarks.md, "Score events:
their cost in a recompute").

    .venv/bin/python bench/without_events.py /tmp/noev      # then:
    PYTHONPATH=/tmp/noev/src .venv/bin/python bench/recompute.py --backend postgresql \\
        --runner cli --objects 200000 --verify 0

In the copy, the changed rows' UPDATE returns `'[]'::jsonb` instead of building each row's
`changes` (`dialect._PG_CHANGES`), and the pre-commit step of the event log reserves no
sequences and writes no event rows. Everything else runs as in this tree, the kept
distribution counts included (they are applied from the same deltas). For benchmarks only:
the copy answers the API with an empty event log.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

from _common import REPO

RESERVE = """            last = dialect.reserve_sequences(conn, org_id, total)
            first = last - total + 1
            dialect.insert_events(conn, org_id, first, now, waiting.events)
"""


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit("usage: bench/without_events.py DIRECTORY")
    target = Path(sys.argv[1])
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "HEAD", "src"], check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    for built in (REPO / "src/signalscore/engine").glob("_native*.so"):
        (target / "src/signalscore/engine" / built.name).write_bytes(built.read_bytes())

    dialect = target / "src/signalscore/db/dialect.py"
    text = dialect.read_text()
    start = text.index('_PG_CHANGES = """')
    end = text.index('"""', start + len('_PG_CHANGES = """')) + 3
    dialect.write_text(text[:start] + '_PG_CHANGES = """\'[]\'::jsonb"""' + text[end:])

    log = target / "src/signalscore/events/log.py"
    text = log.read_text()
    if RESERVE not in text:
        raise SystemExit("events/log.py changed: update bench/without_events.py")
    log.write_text(text.replace(RESERVE, "            first = 0  # no event rows\n"))
    print(f"PYTHONPATH={target / 'src'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
