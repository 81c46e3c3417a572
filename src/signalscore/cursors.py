"""Opaque cursors of paginated lists (SPEC part two): base64url of a JSON array holding a
fingerprint of the read they belong to and the position of the last item returned. A cursor
is not secret (it names a position the caller could read anyway), so it is not signed: what
matters is that a foreign or forged one is refused with a clear error, never run."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from signalscore.errors import Invalid

# A cursor longer than this is not one of ours (query parameter limit).
MAX_CURSOR_CHARS = 2000


def fingerprint(*read: Any) -> str:
    """What a cursor belongs to: the read's identity and filters, as JSON-able values."""
    return hashlib.blake2b(json.dumps(list(read)).encode(), digest_size=6).hexdigest()


def encode(belongs: str, *position: Any) -> str:
    text = json.dumps([belongs, *position], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _bad(why: str) -> Invalid:
    return Invalid.one("cursor", "INVALID_CURSOR", why)


def decode(cursor: str, belongs: str, size: int) -> list[Any]:
    """The position (`size` values) a cursor continues after; 422 `INVALID_CURSOR` for
    anything that is not a cursor of this very read."""
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), b"-_", validate=True)
        items = json.loads(text.decode())
    except (ValueError, TypeError, RecursionError):
        raise _bad("'cursor' is not a cursor this API returned") from None
    if not isinstance(items, list) or len(items) != size + 1:
        raise _bad("'cursor' is not a cursor this API returned")
    if items[0] != belongs:
        raise _bad(
            "'cursor' belongs to another read: send the same parameters as the request that "
            "returned it"
        )
    return items[1:]


def invalid(why: str = "'cursor' is not a cursor this API returned") -> Invalid:
    """For a caller whose position check fails."""
    return _bad(why)
