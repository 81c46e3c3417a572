"""The fixed lists of the contract (SPEC §1, §4, §5, §6), spelled once.

Tables (their CHECK constraints), request and response models, the rule validator and the
engine all import these, so adding an answer type or a list mode is one change here.
"""

from __future__ import annotations

from typing import Literal, get_args

ObjectType = Literal["company", "contact"]
AnswerType = Literal["boolean", "number", "percentage", "currency", "list"]
Dimension = Literal["fit", "urgency"]
ListMode = Literal["additive", "best-match", "contains-all", "contains-none", "exact-match"]

OBJECT_TYPES: tuple[str, ...] = get_args(ObjectType)
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)
NUMERIC_ANSWER_TYPES: tuple[str, ...] = ("number", "percentage", "currency")
DIMENSIONS: tuple[str, ...] = get_args(Dimension)
LIST_MODES: tuple[str, ...] = get_args(ListMode)

# The largest integer a double holds exactly: larger integers are stored as floats, so that
# both databases give back the same number (see `signalscore.db.engine.load_json`).
MAX_EXACT_INT = 2**53


# The end of a pattern shared by the server and the OpenAPI document. Python's `$` also
# matches before a final newline; JSON Schema's (ECMA 262) does not. With the lookahead both
# mean "the end of the text", and generators that read the document in Python (Schemathesis)
# produce what the server accepts.
PATTERN_END = r"(?!\n)$"


def sql_in(column: str, values: tuple[str, ...]) -> str:
    """`column IN ('a', 'b')` for a CHECK constraint over one of the lists above."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"
