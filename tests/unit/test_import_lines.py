"""The import body's line splitter, fed the same body in every kind of chunking."""

from __future__ import annotations

import random

import pytest

from signalscore import imports


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
