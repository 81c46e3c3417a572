"""Object id normalisation (SPEC §1), as units."""

from __future__ import annotations

import pytest

from signalscore.errors import FieldProblem
from signalscore.objects import DOMAIN_MESSAGE, normalize_object_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("acme.com", "acme.com"),
        ("Acme.COM.", "acme.com"),
        ("sub.Acme.co.uk", "sub.acme.co.uk"),
        ("localhost", "localhost"),
        ("a-b.c0", "a-b.c0"),
        ("x" * 63 + ".com", "x" * 63 + ".com"),
    ],
)
def test_domains(raw: str, expected: str) -> None:
    assert normalize_object_id("company", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "https://acme.com",
        "acme.com/about",
        "acme.com:443",
        "acme.com?x=1",
        "-acme.com",
        "acme-.com",
        "ac me.com",
        "acme..com",
        ".",
        "x" * 64 + ".com",
        "a." * 127 + "a",
        "acme.com..",
        "ac_me.com",
        "ümlaut.de",
        "  sub.acme.co.uk ",  # ids are not trimmed: surrounding whitespace is an error
        "acme.com\n",
    ],
)
def test_bad_domains(raw: str) -> None:
    with pytest.raises(FieldProblem) as info:
        normalize_object_id("company", raw)
    assert info.value.code == "INVALID_DOMAIN"
    assert info.value.message == DOMAIN_MESSAGE


@pytest.mark.parametrize(
    "raw",
    [
        "https://www.linkedin.com/in/janedoe",
        "linkedin.com/in/JaneDoe/?trk=x",
        "http://uk.linkedin.com/in/janedoe",
        "www.linkedin.com/in/janedoe/",
        "https://linkedin.com/in/JANEDOE#experience",
    ],
)
def test_linkedin_urls(raw: str) -> None:
    assert normalize_object_id("contact", raw) == "https://www.linkedin.com/in/janedoe"


@pytest.mark.parametrize(
    "raw",
    [
        "https://twitter.com/janedoe",
        "linkedin.com/company/acme",
        "linkedin.com/in/",
        "linkedin.com/in/jane/doe",
        "https://evil.com/linkedin.com/in/jane",
        "https://linkedin.com.evil.io/in/jane",
        "ftp://linkedin.com/in/jane",
        "janedoe",
        "https://abc.linkedin.com/in/jane",
        "  linkedin.com/in/janedoe  ",
        "linkedin.com/in/janedoe\n",
        "lin\u212aedin.com/in/jane",  # the Kelvin sign is not a "k"
    ],
)
def test_bad_linkedin_urls(raw: str) -> None:
    with pytest.raises(FieldProblem) as info:
        normalize_object_id("contact", raw)
    assert info.value.code == "INVALID_LINKEDIN_URL"


def test_length_limit_applies_before_normalisation() -> None:
    with pytest.raises(FieldProblem) as info:
        normalize_object_id("company", " " * 498 + "a.co")
    assert info.value.code == "INVALID_OBJECT_ID"
