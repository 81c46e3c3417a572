"""The patterns the OpenAPI document states agree with what the server accepts: whatever a
client generates from the document is accepted, and whatever the server accepts is in the
document (the one exception, `OBJECT_ID_TOO_LONG`, is listed in tests/fuzz)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalscore.errors import FieldProblem
from signalscore.objects import OBJECT_ID_SCHEMAS, normalize_object_id
from signalscore.schemas import NAME_PATTERN, trimmed_pattern
from signalscore.signals.schemas import TEMPLATE_ID_RE

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
TEXT = st.text(st.characters(codec="utf-8"), max_size=60)


def _server_accepts(object_type: str, raw: str) -> bool:
    try:
        normalize_object_id(object_type, raw)
    except FieldProblem as problem:
        return problem.code == "OBJECT_ID_TOO_LONG"
    return True


def _document_accepts(schema: dict[str, Any], value: str) -> bool:
    return jsonschema_rs.validator_for(schema).is_valid(value)


def _near_ids(object_type: str) -> st.SearchStrategy[str]:
    """Strings around valid ids: valid ones with noise added, cut or cased differently."""
    base = st.from_regex(OBJECT_ID_SCHEMAS[object_type]["pattern"])
    return st.one_of(
        base,
        st.tuples(base, TEXT, st.integers(0, 80)).map(lambda t: t[0][: t[2]] + t[1]),
        st.tuples(TEXT, base).map(lambda t: t[0] + t[1]),
        base.map(lambda s: s + "\n"),
        base.map(str.swapcase),
    )


@pytest.mark.parametrize("object_type", ["company", "contact"])
def test_every_id_the_document_allows_is_accepted(object_type: str) -> None:
    @FAST
    @given(st.from_regex(OBJECT_ID_SCHEMAS[object_type]["pattern"]))
    def check(raw: str) -> None:
        if _document_accepts(OBJECT_ID_SCHEMAS[object_type], raw):
            assert _server_accepts(object_type, raw), raw

    check()


@pytest.mark.parametrize("object_type", ["company", "contact"])
def test_every_id_the_server_accepts_is_in_the_document(object_type: str) -> None:
    @FAST
    @given(_near_ids(object_type))
    def check(raw: str) -> None:
        if 1 <= len(raw) <= 500 and _server_accepts(object_type, raw):
            assert _document_accepts(OBJECT_ID_SCHEMAS[object_type], raw), raw

    check()


# Characters where regex engines disagree on `\s`: Python strips U+001C-U+001F and U+0085,
# ECMA-262 (JSON Schema) has U+FEFF and not those.
EDGE_SPACE = st.text(st.sampled_from(" \t\x1c\x1f\x85\xa0\u2028\u3000\ufeffAb"), max_size=8)


@FAST
@given(
    st.one_of(TEXT, st.from_regex(NAME_PATTERN), st.text(max_size=230), EDGE_SPACE),
    st.sampled_from([NAME_PATTERN, trimmed_pattern(50)]),
)
def test_the_name_patterns_are_exactly_their_lengths_after_trimming(
    value: str, pattern: str
) -> None:
    most = 200 if pattern == NAME_PATTERN else 50
    expected = 1 <= len(value.strip()) <= most and "\x00" not in value
    assert bool(re.search(pattern, value)) == expected, repr(value)
    # And as a JSON Schema validator reads it (ECMA-262 classes, not Python's).
    assert _document_accepts({"type": "string", "pattern": pattern}, value) == expected, repr(value)


@FAST
@given(st.one_of(TEXT, st.from_regex(TEMPLATE_ID_RE.pattern)))
def test_template_ids_mean_the_same_in_python_and_in_the_document(value: str) -> None:
    in_document = jsonschema_rs.validator_for(
        {"type": "string", "pattern": TEMPLATE_ID_RE.pattern}
    ).is_valid(value)
    assert in_document == bool(TEMPLATE_ID_RE.fullmatch(value))
    assert not value.endswith("\n") or not in_document
