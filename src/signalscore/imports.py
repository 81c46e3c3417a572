"""Bulk imports (docs/api.md, "Bulk imports"): a request body streamed line by line.

An import endpoint reads its body as it arrives, never whole: NDJSON (one JSON object per
line) or CSV (a header line naming the columns, then one record per line). Each record is
validated as it is read; the valid ones go to a temporary staging table, a chunk at a time,
and only when the whole body has been read and found valid does the import change the real
tables, in the same transaction (all or nothing). Memory stays flat in the size of the load:
a chunk of records, the first `MAX_LISTED_PROBLEMS` errors and a count of the rest.

Errors name the line: `lines[7].value` is the `value` of the record on line 7 of the body,
counting from 1 (in CSV the header is line 1; a quoted field spanning lines counts from the
line where its record starts).
"""

from __future__ import annotations

import codecs
import csv
import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import anyio.from_thread
import orjson
from pydantic import ValidationError
from starlette.requests import Request

from signalscore.body import MAX_DEPTH, MAX_KEYS, check_structure, parse_json
from signalscore.errors import BadRequest, FieldError, Invalid, UnsupportedMediaType
from signalscore.validation import validation_error

Row = TypeVar("Row")

# Records staged per statement.
STAGE_CHUNK = 5_000
# The longest line (or CSV field) accepted; a longer one is an error, not a memory spike.
MAX_LINE_BYTES = 1024 * 1024
# Errors listed in a 422; the count of every bad line is in `details.badLines`.
MAX_LISTED_PROBLEMS = 100


class Format(enum.Enum):
    NDJSON = "ndjson"
    CSV = "csv"


_MEDIA_TYPES = {
    "application/x-ndjson": Format.NDJSON,
    "application/ndjson": Format.NDJSON,
    "application/jsonl": Format.NDJSON,
    "text/csv": Format.CSV,
}
MEDIA_TYPES = tuple(_MEDIA_TYPES)


def body_format(request: Request) -> Format:
    """The body's format from its Content-Type, or 415."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    found = _MEDIA_TYPES.get(media_type)
    if found is None:
        raise UnsupportedMediaType(
            f"an import body must be NDJSON (application/x-ndjson) or CSV (text/csv), "
            f"not {media_type or 'unlabelled'}",
            details={"accepted": list(MEDIA_TYPES)},
        )
    return found


def body_chunks(request: Request) -> Iterator[bytes]:
    """The request body as it arrives, for a thread of the pool (the import runs there):
    each chunk is fetched from the event loop."""
    stream = request.stream()
    while True:
        try:
            chunk = anyio.from_thread.run(stream.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


class LineProblems:
    """The errors of an import: the first `MAX_LISTED_PROBLEMS`, and how many lines had any."""

    def __init__(self) -> None:
        self.fields: list[FieldError] = []
        self.bad_lines = 0
        self._last_bad_line = 0

    def __bool__(self) -> bool:
        return self.bad_lines > 0

    def add(self, line: int, path: str, code: str, message: str) -> None:
        if line != self._last_bad_line:
            self.bad_lines += 1
            self._last_bad_line = line
        if len(self.fields) < MAX_LISTED_PROBLEMS:
            where = f"lines[{line}]" + (f".{path}" if path and path[0] != "[" else path)
            self.fields.append(FieldError(field=where, code=code, message=message))

    def add_field_errors(self, line: int, errors: Sequence[FieldError]) -> None:
        for error in errors:
            path = "" if error.field == "body" else error.field
            self.add(line, path, error.code, error.message)

    def add_validation_error(self, line: int, exc: ValidationError) -> None:
        errors = exc.errors(include_url=False, include_input=False)
        self.add_field_errors(line, validation_error(errors).fields)

    def raise_if_any(self) -> None:
        if not self:
            return
        error = Invalid.listing(self.fields, what="lines")
        if self.bad_lines != 1 or len(self.fields) != 1:
            error.message = (
                f"validation failed on {self.bad_lines} line(s); nothing was changed"
                + (
                    f" (the first {len(self.fields)} errors are listed)"
                    if self.bad_lines > len(self.fields)
                    else ""
                )
            )
        error.details = {"badLines": self.bad_lines, "listed": len(self.fields)}
        raise error


def _lines(chunks: Iterable[bytes], problems: LineProblems) -> Iterator[tuple[int, bytes]]:
    """(line number, line without its end) for every line; a line longer than
    `MAX_LINE_BYTES` is reported and skipped without being held whole."""
    number = 0
    pending = b""
    skipping = False
    for chunk in chunks:
        parts = (pending + chunk if pending else chunk).split(b"\n")
        pending = parts.pop()
        for part in parts:
            number += 1
            if skipping:
                skipping = False
            elif len(part) > MAX_LINE_BYTES:
                _too_long(problems, number)
            else:
                yield number, part.rstrip(b"\r")
        if len(pending) > MAX_LINE_BYTES:
            if not skipping:
                _too_long(problems, number + 1)
            skipping = True
            pending = b""
    if pending and not skipping:
        yield number + 1, pending.rstrip(b"\r")


def _too_long(problems: LineProblems, line: int) -> None:
    problems.add(line, "", "LINE_TOO_LONG", f"a line may be at most {MAX_LINE_BYTES:,} bytes")


def _json_record(raw: bytes, line: int, problems: LineProblems) -> dict[str, Any] | None:
    """One NDJSON line as an object, parsed as any body is (`body.parse_json`) and after the
    body's structural checks (NUL, lone surrogates, nesting), or None with its problems
    recorded."""
    try:
        data = parse_json(raw)
    except BadRequest:
        problems.add(line, "", "MALFORMED_JSON", "the line is not valid JSON")
        return None
    except Invalid as exc:  # nested too deep to parse
        problems.add_field_errors(line, exc.fields)
        return None
    if not isinstance(data, dict):
        problems.add(line, "", "INVALID_LINE", "each line must be a JSON object")
        return None
    if _plain(raw):
        return data
    return _checked(data, line, problems)


def _plain(raw: bytes) -> bool:
    """Whether a JSON line has nothing for the structural checks to find: JSON text holds a
    NUL or a lone surrogate only as a \\u escape, a line nests no deeper than it has
    brackets, and it has no more keys than colons. Most lines are plain."""
    return (
        b"\\u" not in raw
        and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH
        and raw.count(b":") <= MAX_KEYS
    )


def _plain_cells(row: dict[str, str]) -> bool:
    """Whether a CSV record, its cells converted (a JSON cell parsed), has nothing for the
    structural checks to find, as `_plain` tells of a JSON line: its text was decoded as
    strict UTF-8, so it holds a lone surrogate only as a JSON \\u escape, and a NUL only
    as one or literally; a parsed cell nests no deeper than it has brackets (the record is
    one level more), and has no more keys than colons (the record adds its columns). Most
    records are plain: the structural walk took half of the time of reading a CSV body."""
    text = "".join(row.values())
    return (
        "\\u" not in text
        and "\x00" not in text
        and text.count("[") + text.count("{") < MAX_DEPTH
        and text.count(":") + len(row) <= MAX_KEYS
    )


def _checked(record: dict[str, Any], line: int, problems: LineProblems) -> dict[str, Any] | None:
    """The record, if it passes the structural checks of every body (no NUL, no lone
    surrogate, bounded nesting), or None with its problems recorded."""
    try:
        check_structure(record)
    except Invalid as exc:
        problems.add_field_errors(line, exc.fields)
        return None
    return record


def _csv_records(
    lines: Iterator[tuple[int, bytes]],
    problems: LineProblems,
    required: Sequence[str],
    optional: Sequence[str],
) -> Iterator[tuple[int, dict[str, str]]]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    numbers: list[int] = []

    def text_lines() -> Iterator[str]:
        for number, raw in lines:
            numbers.append(number)
            try:
                yield decoder.decode(raw + b"\n")
            except UnicodeDecodeError:
                decoder.reset()
                problems.add(number, "", "INVALID_CHARACTER", "the line is not valid UTF-8")
                yield "\n"

    reader = csv.reader(text_lines(), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        problems.add(1, "", "INVALID_CSV", f"the header is not valid CSV: {exc}")
        return
    if header is None:
        return
    header = [name.strip().lstrip("\ufeff") for name in header]
    allowed = (*required, *optional)
    unknown = [name for name in header if name not in allowed]
    missing = [name for name in required if name not in header]
    if unknown or missing or len(set(header)) != len(header):
        problems.add(
            1,
            "",
            "INVALID_HEADER",
            f"the header must name the columns {', '.join(required)}"
            + (f" and optionally {', '.join(optional)}" if optional else "")
            + ", each once",
        )
        return
    width = len(header)
    while True:
        first = len(numbers)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = numbers[first] if first < len(numbers) else numbers[-1]
            del numbers[: len(numbers) - 1]
            problems.add(line, "", "INVALID_CSV", f"the record is not valid CSV: {exc}")
            continue
        line = numbers[first] if first < len(numbers) else numbers[-1]
        del numbers[: len(numbers) - 1]
        if not row:
            continue  # a blank line
        if len(row) != width:
            problems.add(
                line, "", "INVALID_CSV", f"the record has {len(row)} fields, the header {width}"
            )
            continue
        yield line, dict(zip(header, row, strict=True))


def read_records(
    chunks: Iterable[bytes],
    fmt: Format,
    problems: LineProblems,
    *,
    csv_required: Sequence[str],
    csv_optional: Sequence[str] = (),
    csv_cell: Callable[[str, str], Any] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for every record of the body. NDJSON records are the parsed
    objects; CSV records map each header name to its cell, converted by `csv_cell(column,
    text)` when given (which raises `ValueError` with the reason for a bad cell). Blank lines
    are skipped; malformed ones are recorded in `problems` and skipped."""
    lines = _lines(chunks, problems)
    if fmt is Format.NDJSON:
        for line, raw in lines:
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = None
            if type(data) is dict and _plain(raw):
                yield line, data  # the common line, without a further call
                continue
            if not raw.strip():
                continue
            record = _json_record(raw, line, problems)
            if record is not None:
                yield line, record
        return
    csv.field_size_limit(MAX_LINE_BYTES)
    for line, row in _csv_records(lines, problems, csv_required, csv_optional):
        if csv_cell is None:
            if _checked(row, line, problems) is not None:
                yield line, row
            continue
        converted: dict[str, Any] = {}
        bad = False
        for column, text in row.items():
            try:
                converted[column] = csv_cell(column, text)
            except ValueError as exc:
                problems.add(line, column, "INVALID_CELL", str(exc))
                bad = True
        if not bad and (_plain_cells(row) or _checked(converted, line, problems) is not None):
            yield line, converted


class Staging(Generic[Row]):
    """Valid records on their way to a staging table, `STAGE_CHUNK` per statement: `add`
    each, then `finish`, which raises the import's 422 if any line was bad or none was read,
    and stages the rest otherwise."""

    def __init__(self, write: Callable[[list[Row]], None], problems: LineProblems) -> None:
        self._write = write
        self._problems = problems
        self._rows: list[Row] = []

    def add(self, row: Row) -> None:
        if self._problems.bad_lines:
            return  # nothing will be written: the import only looks for more errors
        self._rows.append(row)
        if len(self._rows) >= STAGE_CHUNK:
            self._write(self._rows)
            self._rows = []

    def finish(self, records: int) -> None:
        self._problems.raise_if_any()
        if not records:
            raise empty_import()
        if self._rows:
            self._write(self._rows)
            self._rows = []


def openapi_body(description: str) -> dict[str, Any]:
    """The OpenAPI request body of an import route (FastAPI cannot infer a streamed one)."""
    text = {"schema": {"type": "string"}}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/x-ndjson": text, "text/csv": text},
        }
    }


def empty_import() -> Invalid:
    return Invalid.one("body", "EMPTY_IMPORT", "the body holds no records to import")
