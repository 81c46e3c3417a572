"""Object ids (SPEC §1): companies are domains, contacts are LinkedIn profile URLs.

Every endpoint that takes an `objectId` normalises it here, so `Acme.COM.` and `acme.com` are
one object everywhere, as are `linkedin.com/in/JaneDoe/?trk=x` and
`https://www.linkedin.com/in/janedoe`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

from signalscore.errors import FieldError, Invalid

ObjectType = Literal["company", "contact"]

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


class InvalidObjectId(ValueError):
    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def normalize_domain(raw: str) -> str:
    domain = raw.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not domain or len(domain) > MAX_DOMAIN_LENGTH or not _DOMAIN_RE.match(domain):
        raise InvalidObjectId("INVALID_DOMAIN", DOMAIN_MESSAGE)
    return domain


def normalize_linkedin_url(raw: str) -> str:
    match = _LINKEDIN_RE.match(raw.strip())
    if match is None:
        raise InvalidObjectId("INVALID_LINKEDIN_URL", LINKEDIN_MESSAGE)
    return f"https://www.linkedin.com/in/{match.group(1).lower()}"


def normalize_object_id(object_type: str, raw: str) -> str:
    """The canonical id of an object, or `InvalidObjectId` with the SPEC's message."""
    if not 1 <= len(raw) <= MAX_RAW_LENGTH:
        raise InvalidObjectId(
            "INVALID_OBJECT_ID", f"'objectId' must be 1-{MAX_RAW_LENGTH} characters"
        )
    if object_type == "company":
        return normalize_domain(raw)
    return normalize_linkedin_url(raw)


def normalize_object_ids(object_type: str, raw_ids: Sequence[str], *, field: str) -> list[str]:
    """Normalise a list of ids; one 422 lists every bad one as `field[i]`."""
    normalized: list[str] = []
    fields: list[FieldError] = []
    codes: list[str] = []
    for index, raw in enumerate(raw_ids):
        try:
            normalized.append(normalize_object_id(object_type, raw))
        except InvalidObjectId as exc:
            codes.append(exc.error_code)
            fields.append(FieldError(field=f"{field}[{index}]", message=exc.message))
    if fields:
        raise Invalid.listing(fields, codes[0], what="object ids")
    return normalized
