"""Path ids: a malformed UUID in a path is a 404, exactly like an unknown one (SPEC §4)."""

from __future__ import annotations

import uuid

from signalscore.errors import NotFound


def uuid_or_404(value: str, what: str, error_code: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"{what} not found", error_code=error_code) from None
