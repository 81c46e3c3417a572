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
import io
import json
import os
import queue
import re
import threading
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


def _physical_lines(raw: bytes) -> int:
    return raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)


def records(source: IO[bytes], fmt: Format, first_line: int) -> Iterator[tuple[int, bytes]]:
    """(file line where it starts, bytes with line ends) of every record from the current
    position, whose line number is `first_line`. A multi-line CSV record comes whole. Blank
    lines are records too (the server skips them)."""
    line_no = first_line
    pending: list[bytes] = []
    start = line_no
    in_quotes = False
    is_csv = fmt == "csv"
    for line in source:
        if not pending:
            start = line_no
        pending.append(line)
        line_no += 1
        if is_csv and b'"' in line and line.count(b'"') % 2:
            in_quotes = not in_quotes
        if in_quotes:
            continue
        raw = pending[0] if len(pending) == 1 else b"".join(pending)
        pending = []
        yield start, raw
    if pending:  # an unterminated quote at the end: sent as it is, the server reports it
        yield start, b"".join(pending)


@dataclass
class Chunk:
    """One import call: `body` to send, and where its lines are in the file."""

    body: bytes
    first_line: int  # file line of its first line
    last_line: int  # file line of its last line
    has_records: bool  # not only blank lines
    end_offset: int  # file offset right after it
    prefix_sha256: str  # of the file up to `end_offset`
    fmt: Format
    header: bool  # the body starts with a CSV header line (file line 1)
    line_map: list[int] | None = None  # file line of each body line, when not contiguous

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
    organization_id: str | None = None
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
            organization_id=data.get("organizationId"),
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
            "organizationId": self.organization_id,
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
    """The file from `start_offset` (line `start_line`) as import bodies of about
    `lines_per_chunk` lines, sent as they are (a CSV chunk gets the file's header line
    first). The hot loop of `push values`: each line is written once into the chunk's
    buffer (no list of lines), with a quote count for CSV lines that have quotes; the
    chunk is hashed once."""
    source.seek(start_offset)
    offset = start_offset
    line_no = start_line
    is_csv = fmt == "csv"
    start = len(header or b"")

    def new_buffer() -> io.BytesIO:
        buffer = io.BytesIO()
        if header is not None:
            buffer.write(header)
        return buffer

    buffer = new_buffer()
    count = 0
    in_quotes = nonblank = False
    last = b"\n"

    def emit() -> Chunk:
        nonlocal offset, line_no
        if not last.endswith(b"\n"):
            buffer.write(b"\n")  # the file's last line, without its end
            size = buffer.tell() - start - 1
        else:
            size = buffer.tell() - start
        body = buffer.getvalue()
        hasher.update(memoryview(body)[start : start + size])
        first, offset, line_no = line_no, offset + size, line_no + count
        return Chunk(
            body=body,
            first_line=first,
            last_line=line_no - 1,
            has_records=nonblank,
            end_offset=offset,
            prefix_sha256=hasher.hexdigest(),
            fmt=fmt,
            header=header is not None,
        )

    write = buffer.write
    for line in source:
        write(line)
        count += 1
        last = line
        if not nonblank and line.strip():
            nonblank = True
        if is_csv and b'"' in line and line.count(b'"') % 2:
            in_quotes = not in_quotes
        if count >= lines_per_chunk and not in_quotes:
            yield emit()
            buffer = new_buffer()
            write = buffer.write
            count = 0
            nonblank = False
    if count:
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
    first = next_line = start_line
    pending = False  # records consumed since the last chunk
    id_index = type_index = -1
    width = len(columns or ())
    if columns is not None:
        if "objectId" not in columns:
            raise BadRecord(1, "the CSV header has no objectId column")
        id_index = columns.index("objectId")
        type_index = columns.index("objectType") if "objectType" in columns else -1

    def emit() -> Chunk:
        return Chunk(
            body=b"".join(lines),
            first_line=first,
            last_line=next_line - 1,
            has_records=bool(lines),
            end_offset=offset,
            prefix_sha256=hasher.hexdigest(),
            fmt="ndjson",
            header=False,
            line_map=line_map,
        )

    for start, raw in records(source, fmt, start_line):
        hasher.update(raw)
        offset += len(raw)
        if not pending:
            first = start
        pending = True
        next_line = start + _physical_lines(raw)
        if raw.strip():
            item: dict[str, Any]
            try:
                if fmt == "csv":
                    row = _csv_row(raw)
                    if len(row) != width:
                        raise BadRecord(start, f"{len(row)} fields where the header has {width}")
                    item = {"objectId": row[id_index]}
                    if type_index >= 0:
                        item["objectType"] = row[type_index]
                else:
                    data = json.loads(raw)
                    if not isinstance(data, dict) or "objectId" not in data:
                        raise BadRecord(start, "each line must be an object with objectId")
                    item = {"objectId": data["objectId"]}
                    if "objectType" in data:
                        item["objectType"] = data["objectType"]
            except (UnicodeDecodeError, csv.Error, ValueError) as exc:
                raise BadRecord(start, f"the line cannot be read: {exc}") from exc
            lines.append(json.dumps(item, ensure_ascii=False).encode() + b"\n")
            line_map.append(start)
        if len(lines) >= lines_per_chunk:
            yield emit()
            lines, line_map, pending = [], [], False
    if pending:
        yield emit()


def parse_line_field(name: str) -> tuple[int, str] | None:
    """`lines[7].value` -> (7, "value")."""
    found = LINE_FIELD.match(name)
    if not found:
        return None
    return int(found.group(1)), found.group(2)


def prefetch(chunks: Iterator[Chunk]) -> Iterator[Chunk]:
    """The chunks, the next one read by a thread while the caller sends the current one
    (the sender waits on its socket, without the GIL). The thread starts a chunk only once
    the caller has taken the previous one, so at most two are in memory: the one being
    sent and the next. An exception comes in place of the chunk that raised it."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue()
    taken = threading.Semaphore(1)

    def read() -> None:
        try:
            while True:
                taken.acquire()
                chunk = next(chunks, None)
                if chunk is None:
                    break
                ready.put(("chunk", chunk))
        except BaseException as exc:
            ready.put(("error", exc))
            return
        ready.put(("done", None))

    threading.Thread(target=read, name="read-chunks", daemon=True).start()
    while True:
        kind, value = ready.get()
        if kind == "chunk":
            taken.release()
            yield value
        elif kind == "error":
            raise value
        else:
            return
