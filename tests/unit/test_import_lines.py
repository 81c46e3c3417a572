"""The import body's line splitter, fed the same body in every kind of chunking."""

from __future__ import annotations

import random

import pytest

from signalscore import imports
from signalscore.errors import Invalid


def split(body: bytes, sizes: random.Random) -> list[bytes]:
    chunks, start = [], 0
    while start < len(body):
        size = sizes.randint(1, 40)
        chunks.append(body[start : start + size])
        start += size
    return chunks


def test_lines_are_the_same_however_the_body_is_chunked() -> None:
    rng = random.Random(7)
    for _ in range(200):
        lines = [
            bytes(rng.choice(b"ab,{}\r") for _ in range(rng.randint(0, 30)))
            for _ in range(rng.randint(0, 12))
        ]
        body = b"\n".join(lines) + (b"\n" if rng.random() < 0.5 else b"")
        problems = imports.LineProblems()
        got = list(imports._lines(split(body, rng), problems))
        expected = [
            (number, line.rstrip(b"\r"))
            for number, line in enumerate(body.split(b"\n"), start=1)
            if not (number == len(body.split(b"\n")) and line == b"")
        ]
        assert got == expected
        assert not problems


def test_an_overlong_line_is_skipped_without_being_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "MAX_LINE_BYTES", 10)
    body = b"short\n" + b"x" * 100 + b"\nafter\n" + b"y" * 11 + b"\nlast"
    for size in (1, 3, 7, 1000):
        problems = imports.LineProblems()
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        assert list(imports._lines(chunks, problems)) == [
            (1, b"short"),
            (3, b"after"),
            (5, b"last"),
        ]
        assert [f.field for f in problems.fields] == ["lines[2]", "lines[4]"]
        assert problems.bad_lines == 2


def test_staging_writes_whole_chunks_then_the_rest_and_nothing_after_a_bad_line() -> None:
    written: list[list[int]] = []
    problems = imports.LineProblems()
    staging = imports.Staging[int](lambda rows: written.append(list(rows)), problems)
    for row in range(imports.STAGE_CHUNK * 2 + 3):
        staging.add(row)
    staging.finish(imports.STAGE_CHUNK * 2 + 3)
    assert [len(chunk) for chunk in written] == [imports.STAGE_CHUNK, imports.STAGE_CHUNK, 3]
    assert [row for chunk in written for row in chunk] == list(range(imports.STAGE_CHUNK * 2 + 3))

    written.clear()
    staging = imports.Staging[int](lambda rows: written.append(list(rows)), problems)
    staging.add(1)
    problems.add(2, "value", "INVALID_NUMBER", "value must be a finite number")
    staging.add(3)
    with pytest.raises(Invalid) as raised:
        staging.finish(3)
    assert [f.field for f in raised.value.fields] == ["lines[2].value"]
    assert written == []

    empty = imports.Staging[int](lambda rows: written.append(list(rows)), imports.LineProblems())
    with pytest.raises(Invalid, match="no records"):
        empty.finish(0)
