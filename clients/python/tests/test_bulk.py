"""Chunking a file for the imports, without a server: chunks end between records, their
lines map back to the file's, and a checkpoint refuses a file changed before it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import CLIENT_CLI
from signalscore_client import bulk

HEADER = b"objectType,objectId,signalTemplateId,value\n"


def csv_file() -> bytes:
    lines = [HEADER]
    for i in range(40):
        if i % 7 == 3:  # a record on three lines: a JSON array broken inside the cell
            lines.append(f'company,m{i}.test,l,"[\n""a"",\n""b""]"\n'.encode())
        else:
            lines.append(f"company,c{i}.test,n,{i}\n".encode())
    return b"".join(lines)


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 5, 10, 1000])
def test_chunks_end_between_records_and_map_lines_back(per_chunk: int) -> None:
    data = csv_file()
    hasher = hashlib.sha256(HEADER)
    chunks = list(
        bulk.value_chunks(io.BytesIO(data), "csv", HEADER, len(HEADER), 2, per_chunk, hasher)
    )
    file_lines = data.split(b"\n")
    body = b""
    expected_first = 2
    for chunk in chunks:
        assert chunk.body.startswith(HEADER)
        rest = chunk.body[len(HEADER) :]
        body += rest
        assert chunk.first_line == expected_first
        # Every body line is the file line the chunk says it is.
        for k, line in enumerate(chunk.body.split(b"\n")[:-1], start=1):
            assert file_lines[chunk.file_line(k) - 1] == line
        # Each chunk holds whole records: an even number of quotes.
        assert rest.count(b'"') % 2 == 0
        assert chunk.prefix_sha256 == hashlib.sha256(data[: chunk.end_offset]).hexdigest()
        expected_first = chunk.last_line + 1
    assert body == data[len(HEADER) :]
    assert chunks[-1].end_offset == len(data)
    assert chunks[-1].last_line == data.count(b"\n")


def test_ndjson_chunks_are_the_lines_as_they_are() -> None:
    data = b"".join(json.dumps({"i": i}).encode() + b"\n" for i in range(10)) + b"\n{}"
    chunks = list(bulk.value_chunks(io.BytesIO(data), "ndjson", None, 0, 1, 4, hashlib.sha256()))
    assert [(c.first_line, c.last_line) for c in chunks] == [(1, 4), (5, 8), (9, 12)]
    assert chunks[-1].body == b'{"i": 8}\n{"i": 9}\n\n{}\n'  # the missing last line end added
    assert chunks[-1].file_line(4) == 12
    only_blank = list(
        bulk.value_chunks(io.BytesIO(b"\n\n"), "ndjson", None, 0, 1, 5, hashlib.sha256())
    )
    assert [c.has_records for c in only_blank] == [False]


def test_assignment_chunks_keep_the_ids_and_the_line_of_each() -> None:
    data = (
        b"score,objectId,objectType,tier\n"
        b'1,a.test,company,"A, the best"\n'
        b"\n"
        b'2,b.test,company,"B\nsecond line"\n'
        b"3,c.test,company,C\n"
    )
    columns = ["score", "objectId", "objectType", "tier"]
    header_end = data.index(b"\n") + 1
    chunks = list(
        bulk.assignment_chunks(io.BytesIO(data), "csv", columns, header_end, 2, 2, hashlib.sha256())
    )
    assert [json.loads(line) for c in chunks for line in c.body.splitlines()] == [
        {"objectId": "a.test", "objectType": "company"},
        {"objectId": "b.test", "objectType": "company"},
        {"objectId": "c.test", "objectType": "company"},
    ]
    assert [c.line_map for c in chunks] == [[2, 4], [6]]
    assert [(c.first_line, c.last_line) for c in chunks] == [(2, 5), (6, 6)]
    with pytest.raises(bulk.BadRecord) as caught:
        list(
            bulk.assignment_chunks(
                io.BytesIO(b"x,y\n1\n"), "csv", ["objectId", "y"], 4, 2, 10, hashlib.sha256()
            )
        )
    assert caught.value.line == 2


def test_resume_refuses_a_file_changed_before_the_checkpoint(tmp_path: Path) -> None:
    data = csv_file()
    path = tmp_path / "values.csv"
    path.write_bytes(data)
    checkpoint = tmp_path / "values.csv.checkpoint.json"
    offset = data.index(b"company,c11.test")
    line = data[:offset].count(b"\n") + 1
    bulk.Checkpoint(
        checkpoint,
        "values",
        str(path.resolve()),
        "csv",
        offset=offset,
        line=line,
        chunks=1,
        prefix_sha256=hashlib.sha256(data[:offset]).hexdigest(),
        totals={"records": 10},
    ).save()
    env = {
        **os.environ,
        "SIGNALSCORE_URL": "http://127.0.0.1:9",
        "SIGNALSCORE_API_KEY": "sk_live_x",
    }

    def resume() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(CLIENT_CLI),
                "--retries",
                "1",
                "--no-progress",
                "push",
                "values",
                str(path),
                "--resume",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    path.write_bytes(data.replace(b"c2.test", b"c2.tesT"))  # before the checkpoint
    refused = resume()
    assert refused.returncode == 2
    assert f"changed before line {line}" in refused.stderr
    path.write_bytes(data + b"company,new.test,n,1\n")  # grown after it: resumes (and then
    grown = resume()  # finds no server here)
    assert "resuming" in grown.stderr
    assert grown.returncode == 1
    assert "could not be reached" in grown.stderr
