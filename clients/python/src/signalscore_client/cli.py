"""The `signalscore-client` command line: load and export data, follow events.

    signalscore-client push values FILE [--resume]
    signalscore-client push assignments FILE --profile ID [--resume]
    signalscore-client export scores --profile ID [--dimension fit|urgency] [--format csv|ndjson]
    signalscore-client events follow [--after N]

Configuration: `--url` / `--api-key`, or `SIGNALSCORE_URL` / `SIGNALSCORE_API_KEY`.
Exit status: 0 done, 1 the server refused something (bad lines, unknown profile, ...) or
could not be reached, 2 a usage error.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from signalscore_client import bulk
from signalscore_client.client import Client, resolve_config
from signalscore_client.errors import ApiError, SignalscoreError, TransportError
from signalscore_client.models import Dimension
from signalscore_client.retry import RetryPolicy

DEFAULT_CHUNK_LINES = 100_000
EXPORT_COLUMNS = (
    "profileId",
    "objectType",
    "objectId",
    "dimension",
    "score",
    "tier",
    "version",
    "signalCoverage",
    "totalRules",
    "computedAt",
)

# No markup (messages hold `lines[7]`), no wrapping (a log keeps one message per line).
stderr = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


class UsageError(Exception):
    pass


class Failed(Exception):
    """Reported already; exit 1."""


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        disable=not enabled,
        transient=False,
    )


def _client(args: argparse.Namespace) -> Client:
    url, key = resolve_config(args.url, args.api_key)
    if not key:
        raise UsageError("no API key: pass --api-key or set SIGNALSCORE_API_KEY")
    return Client(url, key, timeout=args.timeout, retry=RetryPolicy(attempts=args.retries))


def _report_api_error(exc: ApiError, where: str) -> None:
    stderr.print(f"signalscore-client: {where}: {exc.status} {exc.error_code}: {exc.message}")
    for item in exc.fields:
        stderr.print(f"  {item.get('field')}: {item.get('message')} ({item.get('code', '')})")


# --- push ------------------------------------------------------------------------------------


def _checkpoint_path(args: argparse.Namespace, path: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    return path.with_name(path.name + ".checkpoint.json")


def _open_checkpoint(
    args: argparse.Namespace,
    kind: str,
    path: Path,
    fmt: bulk.Format,
    profile_id: str | None,
) -> tuple[bulk.Checkpoint, Any]:
    """The checkpoint to continue from (a fresh one unless --resume found one) and the
    sha256 of the file up to it, verified."""
    where = _checkpoint_path(args, path)
    fresh = bulk.Checkpoint(where, kind, str(path.resolve()), fmt, profile_id)
    if not args.resume:
        return fresh, bulk.hash_prefix(path, 0)
    found = bulk.Checkpoint.load(where)
    if found is None:
        stderr.print(f"no checkpoint at {where}: starting from the beginning")
        return fresh, bulk.hash_prefix(path, 0)
    if (found.kind, found.file, found.profile_id) != (kind, fresh.file, profile_id):
        raise UsageError(
            f"the checkpoint {where} is of another load ({found.kind} of {found.file}"
            + (f" into profile {found.profile_id}" if found.profile_id else "")
            + ")"
        )
    if found.fmt != fmt:
        raise UsageError(f"the checkpoint {where} read the file as {found.fmt}, not {fmt}")
    if path.stat().st_size < found.offset:
        raise UsageError(f"{path} is shorter than when the checkpoint was written")
    hasher = bulk.hash_prefix(path, found.offset)
    if hasher.hexdigest() != found.prefix_sha256:
        raise UsageError(
            f"{path} changed before line {found.line} since the checkpoint was written: "
            "resuming would skip lines that were not loaded; push it again without --resume"
        )
    stderr.print(
        f"resuming {path} at line {found.line} ({found.chunks} chunk(s), "
        f"{found.totals.get('records', 0):,} records already confirmed)"
    )
    return found, hasher


def _report_bad_lines(
    exc: ApiError, chunk: bulk.Chunk, path: Path, checkpoint: bulk.Checkpoint
) -> None:
    listed = 0
    for item in exc.fields:
        parsed = bulk.parse_line_field(str(item.get("field", "")))
        if parsed is None:
            stderr.print(f"{path}: {item.get('field')}: {item.get('message')}")
            continue
        body_line, column = parsed
        line = chunk.file_line(body_line)
        what = f"{column}: " if column else ""
        stderr.print(f"{path}:{line}: {what}{item.get('message')} ({item.get('code', '')})")
        listed += 1
    bad = exc.details.get("badLines", listed)
    more = f" (the first {listed} listed)" if isinstance(bad, int) and bad > listed else ""
    stderr.print(
        f"signalscore-client: {bad} bad line(s){more} in lines {chunk.first_line}-"
        f"{chunk.last_line}; nothing of those lines was written. {_loaded(checkpoint)}"
    )


def _loaded(checkpoint: bulk.Checkpoint) -> str:
    if not checkpoint.chunks:
        return "Nothing was loaded; fix the file and push it again."
    return (
        f"Lines before {checkpoint.line} are loaded ({checkpoint.chunks} chunk(s)); fix the "
        "file and rerun with --resume."
    )


def _push_chunks(
    args: argparse.Namespace,
    chunks_from: Callable[[IO[bytes], bulk.Checkpoint, Any], Iterator[bulk.Chunk]],
    send: Callable[[Client, bulk.Chunk], dict[str, Any]],
    path: Path,
    kind: str,
    size: int,
    client: Client,
    source: IO[bytes],
    progress: Progress,
    checkpoint: bulk.Checkpoint,
    hasher: Any,
) -> None:
    task = progress.add_task(f"push {kind}", total=size or 1, completed=checkpoint.offset, info="")
    chunks = bulk.prefetch(chunks_from(source, checkpoint, hasher))
    while True:
        try:
            chunk = next(chunks, None)
        except bulk.BadRecord as exc:
            progress.stop()
            stderr.print(f"{path}:{exc.line}: {exc.message}")
            stderr.print(
                f"signalscore-client: stopped at line {exc.line}; the chunk holding it was "
                f"not sent. {_loaded(checkpoint)}"
            )
            raise Failed from exc
        if chunk is None:
            break
        if chunk.has_records:
            try:
                result = send(client, chunk)
            except ApiError as exc:
                progress.stop()
                if exc.status == 422 and any(
                    bulk.parse_line_field(str(f.get("field", ""))) for f in exc.fields
                ):
                    _report_bad_lines(exc, chunk, path, checkpoint)
                else:
                    _report_api_error(exc, f"lines {chunk.first_line}-{chunk.last_line}")
                raise Failed from exc
            for key, value in result.items():
                checkpoint.totals[key] = checkpoint.totals.get(key, 0) + int(value)
        checkpoint.offset = chunk.end_offset
        checkpoint.line = chunk.last_line + 1
        checkpoint.chunks += 1
        checkpoint.prefix_sha256 = chunk.prefix_sha256
        checkpoint.save()
        records = checkpoint.totals.get("records", 0)
        progress.update(task, completed=chunk.end_offset, info=f"{records:,} records")


def _push(
    args: argparse.Namespace,
    kind: str,
    chunks_from: Callable[[IO[bytes], bulk.Checkpoint, Any], Iterator[bulk.Chunk]],
    send: Callable[[Client, bulk.Chunk], dict[str, Any]],
    path: Path,
    fmt: bulk.Format,
    profile_id: str | None,
) -> int:
    started = time.monotonic()
    size = path.stat().st_size
    show = not args.no_progress and stderr.is_terminal
    checkpoint, hasher = _open_checkpoint(args, kind, path, fmt, profile_id)
    resumed_at = checkpoint.line
    with _client(args) as client, path.open("rb") as source:
        # The key is checked, and its organisation known, before anything is sent.
        organization_id = client.organization()["id"]
        if checkpoint.organization_id not in (None, organization_id):
            raise UsageError(
                f"the checkpoint {checkpoint.path} is of a load into organisation "
                f"{checkpoint.organization_id}; this key is of {organization_id}"
            )
        checkpoint.organization_id = organization_id
        with _progress(show) as progress:
            _push_chunks(
                args,
                chunks_from,
                send,
                path,
                kind,
                size,
                client,
                source,
                progress,
                checkpoint,
                hasher,
            )
    summary = {
        "file": str(path),
        **checkpoint.totals,
        "chunks": checkpoint.chunks,
        "resumedAtLine": resumed_at if resumed_at > 1 else None,
        "seconds": round(time.monotonic() - started, 3),
        "checkpoint": str(checkpoint.path),
    }
    print(json.dumps(summary), flush=True)
    return 0


def cmd_push_values(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    fmt = bulk.detect_format(path, args.format)
    header: bytes | None = None
    header_end = 0
    if fmt == "csv":
        header, header_end = bulk.read_csv_header(path)

    def chunks_from(
        source: IO[bytes], checkpoint: bulk.Checkpoint, hasher: Any
    ) -> Iterator[bulk.Chunk]:
        offset, line = checkpoint.offset, checkpoint.line
        if fmt == "csv" and offset < header_end:
            source.seek(0)
            hasher.update(source.read(header_end))  # the header is line 1, sent with every chunk
            offset, line = header_end, 2
        return bulk.value_chunks(source, fmt, header, offset, line, args.chunk_lines, hasher)

    def send(client: Client, chunk: bulk.Chunk) -> dict[str, Any]:
        return dict(client.import_values(chunk.body, format=chunk.fmt))

    return _push(args, "values", chunks_from, send, path, fmt, None)


def cmd_push_assignments(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    fmt = bulk.detect_format(path, args.format)
    columns: list[str] | None = None
    header_end = 0
    if fmt == "csv":
        header, header_end = bulk.read_csv_header(path)
        try:
            columns = [name.strip() for name in next(csv.reader([header.decode().strip()]))]
        except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
            raise UsageError(f"{path}:1: the header cannot be read: {exc}") from exc
        if "objectId" not in columns:
            raise UsageError(f"{path}:1: the header has no objectId column")

    def chunks_from(
        source: IO[bytes], checkpoint: bulk.Checkpoint, hasher: Any
    ) -> Iterator[bulk.Chunk]:
        offset, line = checkpoint.offset, checkpoint.line
        if fmt == "csv" and offset < header_end:
            source.seek(0)
            hasher.update(source.read(header_end))
            offset, line = header_end, 2
        return bulk.assignment_chunks(source, fmt, columns, offset, line, args.chunk_lines, hasher)

    def send(client: Client, chunk: bulk.Chunk) -> dict[str, Any]:
        return dict(client.import_assignments(args.profile, chunk.body, format="ndjson"))

    return _push(args, "assignments", chunks_from, send, path, fmt, args.profile)


# --- export ----------------------------------------------------------------------------------


def cmd_export_scores(args: argparse.Namespace) -> int:
    dimensions: list[Dimension] = [args.dimension] if args.dimension else ["fit", "urgency"]
    out: IO[str] = open(args.output, "w", newline="") if args.output else sys.stdout  # noqa: SIM115
    show = not args.no_progress and stderr.is_terminal
    written = 0
    try:
        with _client(args) as client, _progress(show) as progress:
            writer = csv.writer(out, lineterminator="\n") if args.format == "csv" else None
            if writer is not None:
                writer.writerow(EXPORT_COLUMNS)
            for dimension in dimensions:
                total = client.get_distribution(args.profile, dimension)["scored"]
                task = progress.add_task(f"export {dimension}", total=total or 1, info="")
                rows = client.iter_ranked_scores(
                    args.profile,
                    dimension,
                    tier=args.tier,
                    order=args.order,
                    page_size=args.page_size,
                )
                for row in rows:
                    if writer is not None:
                        cells: dict[str, Any] = dict(row)
                        writer.writerow(
                            ["" if cells[c] is None else cells[c] for c in EXPORT_COLUMNS]
                        )
                    else:
                        out.write(json.dumps(row, ensure_ascii=False) + "\n")
                    written += 1
                    if written % 1000 == 0:
                        progress.update(task, advance=1000, info=f"{written:,} rows")
                progress.update(task, completed=total or 1, info=f"{written:,} rows")
    except ApiError as exc:
        _report_api_error(exc, "export scores")
        raise Failed from exc
    finally:
        out.flush()
        if args.output:
            out.close()
    if args.output:
        stderr.print(f"exported {written:,} score rows to {args.output}")
    return 0


# --- events ----------------------------------------------------------------------------------


def cmd_events_follow(args: argparse.Namespace) -> int:
    after = args.after
    where = Path(args.checkpoint) if args.checkpoint else None
    if where is not None and where.exists():
        after = max(after, int(json.loads(where.read_text())["after"]))
    try:
        with _client(args) as client:
            while True:
                page = client.list_events(
                    after=after, types=args.type or None, profile_id=args.profile, limit=1000
                )
                for event in page["data"]:
                    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
                sys.stdout.flush()
                after = page["nextAfter"]
                if where is not None and page["data"]:
                    tmp = where.with_name(where.name + ".tmp")
                    tmp.write_text(json.dumps({"after": after}))
                    tmp.replace(where)
                if len(page["data"]) < 1000:
                    if args.once:
                        return 0
                    time.sleep(args.poll)
    except ApiError as exc:
        _report_api_error(exc, "events follow")
        raise Failed from exc
    except KeyboardInterrupt:
        return 0


# --- the parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="signalscore-client",
        description="Load and export signalscore data.",
        epilog="Configuration: --url/--api-key or SIGNALSCORE_URL/SIGNALSCORE_API_KEY.",
    )
    parser.add_argument("--url", help="server URL [env SIGNALSCORE_URL; http://127.0.0.1:8000]")
    parser.add_argument("--api-key", help="API key [env SIGNALSCORE_API_KEY]")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per request [600]")
    parser.add_argument(
        "--retries",
        type=int,
        default=5,
        help="attempts per request, the first included, for 429/503 and lost connections [5]",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)

    push = commands.add_parser("push", help="load a file").add_subparsers(
        dest="what", required=True
    )
    for what in ("values", "assignments"):
        sub = push.add_parser(
            what,
            help=f"load {what} from a CSV or NDJSON file",
            description=(
                "CSV header objectType,objectId,signalTemplateId,value[,observedAt] (a list "
                "value as a JSON array) or NDJSON items of PUT /v1/signals/values."
                if what == "values"
                else "CSV with an objectId column (and optionally objectType; other columns "
                "are ignored, so an export can be pushed as it is) or NDJSON objects."
            ),
        )
        sub.add_argument("file")
        if what == "assignments":
            sub.add_argument("--profile", required=True, help="profile id")
        sub.add_argument("--format", choices=["csv", "ndjson"], help="[by extension]")
        sub.add_argument(
            "--chunk-lines",
            type=int,
            default=DEFAULT_CHUNK_LINES,
            help=f"lines per import call, each all or nothing [{DEFAULT_CHUNK_LINES:,}]",
        )
        sub.add_argument("--resume", action="store_true", help="continue from the checkpoint")
        sub.add_argument("--checkpoint", help="checkpoint file [FILE.checkpoint.json]")
        sub.set_defaults(handler=cmd_push_values if what == "values" else cmd_push_assignments)

    export = commands.add_parser("export", help="write data out").add_subparsers(
        dest="what", required=True
    )
    scores = export.add_parser("scores", help="a profile's ranked scores, streamed")
    scores.add_argument("--profile", required=True, help="profile id")
    scores.add_argument("--dimension", choices=["fit", "urgency"], help="[both]")
    scores.add_argument("--format", choices=["csv", "ndjson"], default="csv")
    scores.add_argument("--tier", help="only rows of this tier")
    scores.add_argument("--order", choices=["desc", "asc"], default=None)
    scores.add_argument("--page-size", type=int, default=1000)
    scores.add_argument("--output", "-o", help="file to write [stdout]")
    scores.set_defaults(handler=cmd_export_scores)

    events = commands.add_parser("events", help="the event feed").add_subparsers(
        dest="what", required=True
    )
    follow = events.add_parser("follow", help="print events as NDJSON as they come")
    follow.add_argument("--after", type=int, default=0, help="last sequence already seen [0]")
    follow.add_argument("--type", action="append", help="only this event type (repeatable)")
    follow.add_argument("--profile", help="only this profile's events")
    follow.add_argument("--poll", type=float, default=1.0, help="seconds between polls [1]")
    follow.add_argument("--once", action="store_true", help="stop once caught up")
    follow.add_argument("--checkpoint", help="file keeping the last sequence printed")
    follow.set_defaults(handler=cmd_events_follow)
    return parser


def main(argv: Sequence[str] | None = None) -> NoReturn:
    args = build_parser().parse_args(argv)
    if getattr(args, "chunk_lines", 1) < 1 or args.retries < 1:
        stderr.print("signalscore-client: --chunk-lines and --retries must be at least 1")
        sys.exit(2)
    try:
        code = int(args.handler(args))
    except UsageError as exc:
        stderr.print(f"signalscore-client: {exc}")
        code = 2
    except Failed:
        code = 1
    except TransportError as exc:
        stderr.print(f"signalscore-client: the server could not be reached: {exc}")
        code = 1
    except ApiError as exc:
        _report_api_error(exc, args.command)
        code = 1
    except SignalscoreError as exc:
        stderr.print(f"signalscore-client: {exc}")
        code = 1
    except BrokenPipeError:
        # The reader went away (`... | head`): no traceback, and none at exit either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except OSError as exc:  # a file that cannot be read, a checkpoint that cannot be written
        stderr.print(f"signalscore-client: {exc}")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
