"""Time decay (SPEC §13): the per-call work on instants, shared by both scoring loops.

Instants travel as canonical UTC text of exactly 27 characters, ``YYYY-MM-DDTHH:MM:SS.ffffffZ``:
fixed width, so string order is time order, and a step "has passed" when the value's
``observedAt`` text is less than the step's threshold text ``now - afterDays days``, computed
once per call here. Only the next-change instant (``observed + afterDays days``) needs date
arithmetic, and since whole days in UTC never move the time of day, only the date part
(the first 10 characters) is shifted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

#: Length of a canonical UTC text, ``2026-11-30T12:00:00.000000Z``.
OBSERVED_CHARS = 27

#: Length of its date part, ``2026-11-30``.
DATE_CHARS = 10

#: The threshold of a step that cannot pass: ``now - afterDays`` is before year 1, and no
#: text is less than the empty string.
NEVER = ""

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


def canonical(instant: datetime) -> str:
    """An aware datetime as canonical UTC text (27 characters; years below 1000 zero-padded,
    which ``strftime("%Y")`` does not do everywhere)."""
    t = instant.astimezone(UTC)
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond:06d}Z"
    )


def utc_now(now: datetime | None) -> datetime:
    """``now`` checked (an aware datetime), or the current time when ``None``."""
    if now is None:
        return datetime.now(UTC)
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    # In UTC before any arithmetic: days subtracted in a zone with DST would move the
    # wall clock, not the instant.
    return now.astimezone(UTC)


def decay_days(rules: Iterable[object]) -> tuple[int, ...]:
    """The distinct ``afterDays`` of the rules' decay steps, sorted: the index of a step's
    threshold in the per-call ``thresholds``."""
    return tuple(sorted({step.after_days for rule in rules for step in rule.decay}))  # type: ignore[attr-defined]


def thresholds(days: Iterable[int], now: datetime) -> tuple[str, ...]:
    """Per afterDays, the canonical text of ``now - afterDays days`` (``NEVER`` before year 1):
    a value observed at a text less than it has passed that step."""
    out = []
    for d in days:
        try:
            out.append(canonical(now - timedelta(days=d)))
        except OverflowError:
            out.append(NEVER)
    return tuple(out)


def check_observed(text: object) -> None:
    """Raise ``ValueError`` for an ``observedAt`` the loops cannot compare as text (the
    callers check type, length and ASCII inline; this only reports)."""
    raise ValueError(
        f"observedAt must be canonical UTC text of {OBSERVED_CHARS} ASCII characters "
        f"(YYYY-MM-DDTHH:MM:SS.ffffffZ), got {text!r}"
    )


def shift_date(text: str, days: int) -> str | None:
    """The date text ``YYYY-MM-DD`` plus ``days`` days; ``None`` past 9999-12-31. Raises
    ``ValueError`` for anything but a valid date in that exact form."""
    if not _DATE.fullmatch(text):
        raise ValueError(f"observedAt must start with a date YYYY-MM-DD, got {text!r}")
    try:
        day = date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        raise ValueError(f"observedAt must start with a valid date, got {text!r}") from None
    try:
        later = day + timedelta(days=days)
    except OverflowError:
        return None
    return f"{later.year:04d}-{later.month:02d}-{later.day:02d}"


class ShiftedDates(dict[str, str | None]):
    """Memo of ``shift_date(text, days)`` for one ``days`` and one call: values observed on
    the same day share one entry."""

    __slots__ = ("days",)

    def __init__(self, days: int) -> None:
        super().__init__()
        self.days = days

    def __missing__(self, text: str) -> str | None:
        value = self[text] = shift_date(text, self.days)
        return value
