"""Object ids (SPEC §1): companies are domains, contacts are LinkedIn profile URLs.

Every endpoint that takes an `objectId` normalises it here, so `Acme.COM.` and `acme.com` are
one object everywhere, as are `linkedin.com/in/JaneDoe/?trk=x` and
`https://www.linkedin.com/in/janedoe`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from signalscore.errors import FieldProblem, Problems
from signalscore.vocabulary import PATTERN_END

MAX_RAW_LENGTH = 500
MAX_DOMAIN_LENGTH = 253

_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*{PATTERN_END}")
# Case-insensitive by spelling both cases (not re.IGNORECASE, which also lets the Kelvin sign
# pass for "k"), so the server and the OpenAPI document use the very same expression.
_LINKEDIN_HOST = (
    r"(?:[Hh][Tt][Tt][Pp][Ss]?://)?(?:(?:[Ww][Ww][Ww]|[a-zA-Z]{2})\.)?"
    r"[Ll][Ii][Nn][Kk][Ee][Dd][Ii][Nn]\.[Cc][Oo][Mm]/[Ii][Nn]/"
)
_SLUG = r"[^/?#\s\x00-\x1f\x7f]"  # no separators, whitespace or control characters
_LINKEDIN_TAIL = rf"/?(?:[?#][^\x00]*)?{PATTERN_END}"
_LINKEDIN_RE = re.compile(rf"^{_LINKEDIN_HOST}({_SLUG}+){_LINKEDIN_TAIL}")
_CANONICAL_PREFIX = "https://www.linkedin.com/in/"

# What the OpenAPI document says an `objectId` may be: the same expressions, with the length
# limits spelled in. The one limit a pattern cannot state is a slug whose lowercase form is
# longer than itself (`İ` lowercases to two characters): that is `OBJECT_ID_TOO_LONG`.
DOMAIN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": rf"^{_LABEL}(?:\.{_LABEL})*\.?{PATTERN_END}",
    # At most 253 characters, not counting a trailing dot.
    "anyOf": [
        {"maxLength": MAX_DOMAIN_LENGTH},
        {"maxLength": MAX_DOMAIN_LENGTH + 1, "pattern": rf"\.{PATTERN_END}"},
    ],
}
LINKEDIN_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_RAW_LENGTH,
    "pattern": (
        rf"^{_LINKEDIN_HOST}{_SLUG}{{1,{MAX_RAW_LENGTH - len(_CANONICAL_PREFIX)}}}"
        rf"{_LINKEDIN_TAIL}"
    ),
}
OBJECT_ID_SCHEMAS = {"company": DOMAIN_SCHEMA, "contact": LINKEDIN_SCHEMA}


def object_id_schema(object_type: str | None = None) -> dict[str, Any]:
    """The JSON Schema of an `objectId` of one type, or of either type."""
    if object_type is None:
        return {"type": "string", "anyOf": list(OBJECT_ID_SCHEMAS.values())}
    return OBJECT_ID_SCHEMAS[object_type]


def object_id_variants(field: str, *, many: bool = False) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra`: `field` (one id, or a list when `many`) must be an id of
    the body's `objectType`, stated as one variant per object type."""

    def extra(schema: dict[str, Any]) -> None:
        schema["oneOf"] = [
            {
                "properties": {
                    "objectType": {"const": object_type},
                    field: {"items": object_id_schema(object_type)}
                    if many
                    else object_id_schema(object_type),
                }
            }
            for object_type in OBJECT_ID_SCHEMAS
        ]

    return extra


DOMAIN_MESSAGE = (
    "'domain' must be a valid hostname (e.g., 'example.com') without protocol (https://) or path"
)
LINKEDIN_MESSAGE = (
    "'objectId' must be a LinkedIn profile URL (e.g., 'https://www.linkedin.com/in/janedoe')"
)


def normalize_domain(raw: str) -> str:
    domain = raw.lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or len(domain) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.fullmatch(domain):
        raise FieldProblem("INVALID_DOMAIN", DOMAIN_MESSAGE)
    return domain


def normalize_linkedin_url(raw: str) -> str:
    match = _LINKEDIN_RE.fullmatch(raw)
    if match is None:
        raise FieldProblem("INVALID_LINKEDIN_URL", LINKEDIN_MESSAGE)
    return f"{_CANONICAL_PREFIX}{match.group(1).lower()}"


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
