"""Answers whose size a client controls only through its filters are bounded.

A read of scores or values returns rows of several objects at once, and every row's size is
bounded (100 rules per profile, `matchedValue` at most 200 characters, lists at most 100
items of 200 characters), but how many rows match depends on how many profiles and templates
an organisation has. `bounded_json_list` serialises rows one at a time, in the route's worker
thread rather than on the event loop, and refuses an answer that would pass
`MAX_RESPONSE_BYTES` with 422 `RESPONSE_TOO_LARGE` instead of building it: the client
narrows the read (fewer `objectId`s, a `profileId` or `dimension` filter) and loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from starlette.responses import Response

from signalscore.errors import Invalid

MAX_RESPONSE_BYTES = 16 * 1024 * 1024


def _to_json(item: BaseModel) -> bytes:
    try:
        return item.__pydantic_serializer__.to_json(item)
    except PydanticSerializationError:
        # Text no UTF-8 encoder accepts (a lone surrogate stored before the API refused
        # them): escaped, as JSON allows, rather than failing every read of the object.
        return json.dumps(item.model_dump(mode="json")).encode()


def bounded_json_list(items: Iterable[BaseModel], *, narrow: str) -> Response:
    """A JSON array of `items`, or 422 `RESPONSE_TOO_LARGE` (`narrow` says how to ask for
    less) once it would pass `MAX_RESPONSE_BYTES`."""
    limit = MAX_RESPONSE_BYTES
    parts: list[bytes] = []
    size = 2
    for item in items:
        part = _to_json(item)
        size += len(part) + (1 if parts else 0)
        if size > limit:
            raise Invalid(
                f"the answer would be larger than {limit:,} bytes; {narrow}",
                error_code="RESPONSE_TOO_LARGE",
                details={"maxBytes": limit},
            )
        parts.append(part)
    return Response(b"[" + b",".join(parts) + b"]", media_type="application/json")
