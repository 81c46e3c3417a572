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
from signalscore.schemas import NAME_PATTERN
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


def _trimmed_name_ok(value: str) -> bool:
    return 1 <= len(value.strip()) <= 200 and "\x00" not in value


@FAST
@given(st.one_of(TEXT, st.from_regex(NAME_PATTERN), st.text(max_size=230)))
def test_the_name_pattern_is_exactly_one_to_two_hundred_characters_after_trimming(
    value: str,
) -> None:
    assert bool(re.search(NAME_PATTERN, value)) == _trimmed_name_ok(value), repr(value)


@FAST
@given(st.one_of(TEXT, st.from_regex(TEMPLATE_ID_RE.pattern)))
def test_template_ids_mean_the_same_in_python_and_in_the_document(value: str) -> None:
    in_document = jsonschema_rs.validator_for(
        {"type": "string", "pattern": TEMPLATE_ID_RE.pattern}
    ).is_valid(value)
    assert in_document == bool(TEMPLATE_ID_RE.fullmatch(value))
    assert not value.endswith("\n") or not in_document
