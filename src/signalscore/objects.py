"""Object ids (SPEC §1): companies are domains, contacts are LinkedIn profile URLs.

Every endpoint that takes an `objectId` normalises it here, so `Acme.COM.` and `acme.com` are
one object everywhere, as are `linkedin.com/in/JaneDoe/?trk=x` and
`https://www.linkedin.com/in/janedoe`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from signalscore.errors import FieldProblem, Problems

MAX_RAW_LENGTH = 500
MAX_DOMAIN_LENGTH = 253

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_LINKEDIN_RE = re.compile(
    r"^(?:https?://)?(?:(?:www|[a-z]{2})\.)?linkedin\.com/in/"
    r"([^/?#\s\x00-\x1f\x7f]+)"  # the slug: no separators, whitespace or control characters
    r"/?(?:[?#][^\x00]*)?$",
    re.IGNORECASE,
)

DOMAIN_MESSAGE = (
    "'domain' must be a valid hostname (e.g., 'example.com') without protocol (https://) or path"
)
LINKEDIN_MESSAGE = (
    "'objectId' must be a LinkedIn profile URL (e.g., 'https://www.linkedin.com/in/janedoe')"
)


def normalize_domain(raw: str) -> str:
    domain = raw.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or len(domain) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.match(domain):
        raise FieldProblem("INVALID_DOMAIN", DOMAIN_MESSAGE)
    return domain


def normalize_linkedin_url(raw: str) -> str:
    match = _LINKEDIN_RE.match(raw.strip())
    if match is None:
        raise FieldProblem("INVALID_LINKEDIN_URL", LINKEDIN_MESSAGE)
    return f"https://www.linkedin.com/in/{match.group(1).lower()}"


def normalize_object_id(object_type: str, raw: str) -> str:
    """The canonical id of an object, or `FieldProblem` with the SPEC's message.

    Both the id as sent and its canonical form must be 1-500 characters: canonicalising a
    contact adds `https://www.` (a 490-character `linkedin.com/in/...` becomes 502), and the
    stored id is the canonical one."""
    if not 1 <= len(raw) <= MAX_RAW_LENGTH:
        raise FieldProblem("INVALID_OBJECT_ID", f"'objectId' must be 1-{MAX_RAW_LENGTH} characters")
    canonical = normalize_domain(raw) if object_type == "company" else normalize_linkedin_url(raw)
    if len(canonical) > MAX_RAW_LENGTH:
        raise FieldProblem(
            "OBJECT_ID_TOO_LONG",
            f"'objectId' must be at most {MAX_RAW_LENGTH} characters in its canonical form "
            f"({canonical[:30]}... has {len(canonical)})",
        )
    return canonical


def normalize_object_ids(object_type: str, raw_ids: Sequence[str], *, field: str) -> list[str]:
    """Normalise a list of ids; one 422 lists every bad one as `field[i]`."""
    normalized: list[str] = []
    problems = Problems()
    for index, raw in enumerate(raw_ids):
        try:
            normalized.append(normalize_object_id(object_type, raw))
        except FieldProblem as problem:
            problems.fields.append(problem.at(f"{field}[{index}]"))
    problems.raise_if_any(what="object ids")
    return normalized
