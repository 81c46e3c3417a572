"""Reading a CSV or NDJSON file as chunks for the bulk import endpoints, streamed (memory
bounded by one chunk, whatever the file's size), with the file line of every line sent, and
checkpoints to resume from.

A chunk ends only between records: a CSV record whose quoted field spans lines stays whole
(RFC 4180 doubles quotes inside quoted fields, so an odd count of `"` on a line toggles
whether the record continues). Lines are counted as the server counts them: split on `\\n`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

Format = Literal["csv", "ndjson"]
BOM = b"\xef\xbb\xbf"
LINE_FIELD = re.compile(r"^lines\[(\d+)\]\.?(.*)$")


def detect_format(path: Path, given: str | None) -> Format:
    if given in ("csv", "ndjson"):
        return given  # type: ignore[return-value]
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".ndjson", ".jsonl", ".json"):
        return "ndjson"
    with path.open("rb") as source:
        for line in source:
            stripped = line.lstrip(BOM).strip()
            if stripped:
                return "ndjson" if stripped.startswith(b"{") else "csv"
    return "csv"


@dataclass
class Record:
    line: int  # file line where the record starts
    raw: bytes  # its bytes, line ends included (more than one line for a multi-line CSV record)


def records(
    source: IO[bytes], fmt: Format, first_line: int, hasher: Any
) -> Iterator[tuple[Record, int]]:
    """(record, bytes consumed) from the current position, whose line number is
    `first_line`. Blank lines are records too (the server skips them). `hasher` sees every
    byte consumed."""
    line_no = first_line
    pending: list[bytes] = []
    start = line_no
    in_quotes = False
    for line in source:
        hasher.update(line)
        if not pending:
            start = line_no
        pending.append(line)
        line_no += 1
        if fmt == "csv" and line.count(b'"') % 2:
            in_quotes = not in_quotes
        if in_quotes:
            continue
        raw = pending[0] if len(pending) == 1 else b"".join(pending)
        pending = []
        yield Record(start, raw), len(raw)
    if pending:  # an unterminated quote at the end: send it, the server reports it
        raw = b"".join(pending)
        yield Record(start, raw), len(raw)


@dataclass
class Chunk:
    """One import call: `body` to send, and the file line of each of its lines."""

    body: bytes
    first_line: int  # file line of its first record
    last_line: int  # file line of its last record
    records: int  # non-blank records
    end_offset: int  # file offset right after it
    fmt: Format
    header: bool  # the body starts with a CSV header line (file line 1)
    line_map: list[int] | None = None  # file line of each body record, when not contiguous

    def file_line(self, body_line: int) -> int:
        """The file line of line `body_line` (from 1) of this chunk's body."""
        if self.header and body_line == 1:
            return 1
        index = body_line - (2 if self.header else 1)
        if self.line_map is not None:
            if 0 <= index < len(self.line_map):
                return self.line_map[index]
            return self.first_line
        return self.first_line + index  # the body's lines are the file's, in order


@dataclass
class Checkpoint:
    """What the server has confirmed: every record before `offset` / `line` is applied."""

    path: Path
    kind: str
    file: str
    fmt: Format
    profile_id: str | None = None
    offset: int = 0
    line: int = 1
    chunks: int = 0
    prefix_sha256: str = ""
    totals: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(
            path=path,
            kind=data["kind"],
            file=data["file"],
            fmt=data["format"],
            profile_id=data.get("profileId"),
            offset=int(data["offset"]),
            line=int(data["line"]),
            chunks=int(data["chunks"]),
            prefix_sha256=data["prefixSha256"],
            totals={k: int(v) for k, v in data["totals"].items()},
        )

    def save(self) -> None:
        """Atomically: a kill at any moment leaves the previous or the new checkpoint."""
        data = {
            "version": 1,
            "kind": self.kind,
            "file": self.file,
            "format": self.fmt,
            "profileId": self.profile_id,
            "offset": self.offset,
            "line": self.line,
            "chunks": self.chunks,
            "prefixSha256": self.prefix_sha256,
            "totals": self.totals,
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as out:
            json.dump(data, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def hash_prefix(path: Path, length: int) -> Any:
    """A sha256 of the first `length` bytes of the file, ready to continue."""
    hasher = hashlib.sha256()
    remaining = length
    with path.open("rb") as source:
        while remaining > 0:
            block = source.read(min(remaining, 1 << 20))
            if not block:
                break
            hasher.update(block)
            remaining -= len(block)
    return hasher


def value_chunks(
    source: IO[bytes],
    fmt: Format,
    header: bytes | None,
    start_offset: int,
    start_line: int,
    lines_per_chunk: int,
    hasher: Any,
) -> Iterator[Chunk]:
    """The file from `start_offset` as import bodies of about `lines_per_chunk` lines, sent
    as they are (a CSV chunk gets the file's header line first)."""
    source.seek(start_offset)
    offset = start_offset
    parts: list[bytes] = []
    count = 0
    nonblank = 0
    first = last = start_line

    def emit() -> Chunk:
        body_parts = parts if header is None else [header, *parts]
        if body_parts and not body_parts[-1].endswith(b"\n"):
            body_parts[-1] += b"\n"
        return Chunk(
            body=b"".join(body_parts),
            first_line=first,
            last_line=last,
            records=nonblank,
            end_offset=offset,
            fmt=fmt,
            header=header is not None,
        )

    for record, size in records(source, fmt, start_line, hasher):
        if not parts:
            first = record.line
        parts.append(record.raw)
        last = record.line
        offset += size
        count += record.raw.count(b"\n") or 1
        if record.raw.strip():
            nonblank += 1
        if count >= lines_per_chunk:
            yield emit()
            parts, count, nonblank = [], 0, 0
    if parts:
        yield emit()


def read_csv_header(path: Path) -> tuple[bytes, int]:
    """The header line (without a BOM, with its line end) and the offset after it."""
    with path.open("rb") as source:
        line = source.readline()
    header = line.removeprefix(BOM)
    if not header.endswith(b"\n"):
        header += b"\n"
    return header, len(line)


class BadRecord(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _csv_row(raw: bytes) -> list[str]:
    rows = list(csv.reader([raw.decode("utf-8").rstrip("\r\n")], strict=True))
    return rows[0] if rows else []


def assignment_chunks(
    source: IO[bytes],
    fmt: Format,
    columns: list[str] | None,
    start_offset: int,
    start_line: int,
    lines_per_chunk: int,
    hasher: Any,
) -> Iterator[Chunk]:
    """The file's objects as NDJSON import bodies of `{"objectId"[, "objectType"]}` lines,
    whatever other columns or keys the file has (so an `export scores` file can be pushed
    as it is). A line that cannot be read raises `BadRecord` with its file line."""
    source.seek(start_offset)
    offset = start_offset
    lines: list[bytes] = []
    line_map: list[int] = []
    nonblank = 0
    first = last = start_line
    id_index = type_index = -1
    if columns is not None:
        if "objectId" not in columns:
            raise BadRecord(1, "the CSV header has no objectId column")
        id_index = columns.index("objectId")
        type_index = columns.index("objectType") if "objectType" in columns else -1

    pending = False  # records consumed since the last chunk
    for record, size in records(source, fmt, start_line, hasher):
        offset += size
        if not pending:
            first = record.line
        pending = True
        last = record.line
        if record.raw.strip():
            try:
                if fmt == "csv":
                    row = _csv_row(record.raw)
                    if len(row) != len(columns or ()):
                        raise BadRecord(
                            record.line,
                            f"{len(row)} fields where the header has {len(columns or ())}",
                        )
                    item: dict[str, Any] = {"objectId": row[id_index]}
                    if type_index >= 0:
                        item["objectType"] = row[type_index]
                else:
                    data = json.loads(record.raw)
                    if not isinstance(data, dict) or "objectId" not in data:
                        raise BadRecord(record.line, "each line must be an object with objectId")
                    item = {"objectId": data["objectId"]}
                    if "objectType" in data:
                        item["objectType"] = data["objectType"]
            except (UnicodeDecodeError, csv.Error, ValueError) as exc:
                raise BadRecord(record.line, f"the line cannot be read: {exc}") from exc
            lines.append(json.dumps(item, ensure_ascii=False).encode() + b"\n")
            line_map.append(record.line)
            nonblank += 1
        if len(lines) >= lines_per_chunk:
            yield Chunk(b"".join(lines), first, last, nonblank, offset, "ndjson", False, line_map)
            lines, line_map, nonblank, pending = [], [], 0, False
    if pending:
        yield Chunk(b"".join(lines), first, last, nonblank, offset, "ndjson", False, line_map)


def parse_line_field(name: str) -> tuple[int, str] | None:
    """`lines[7].value` -> (7, "value")."""
    found = LINE_FIELD.match(name)
    if not found:
        return None
    return int(found.group(1)), found.group(2)
