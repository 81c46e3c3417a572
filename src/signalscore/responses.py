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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError
from starlette.responses import Response

from signalscore.errors import Invalid

MAX_RESPONSE_BYTES = 16 * 1024 * 1024

Item = TypeVar("Item")


def _to_json(item: BaseModel) -> bytes:
    try:
        # No warnings: rows built without validation (`ScoreRow.from_row`) hold their
        # nested documents as the stored dicts, which serialise the same.
        return item.__pydantic_serializer__.to_json(item, warnings=False)
    except PydanticSerializationError:
        # Text no UTF-8 encoder accepts (a lone surrogate stored before the API refused
        # them): escaped, as JSON allows, rather than failing every read of the object.
        return json.dumps(item.model_dump(mode="json")).encode()


def bounded_json_list(
    items: Iterable[Any], *, narrow: str, render: Callable[[Any], bytes] = _to_json
) -> Response:
    """A JSON array of `items` (models, or what `render` turns into JSON), or 422
    `RESPONSE_TOO_LARGE` (`narrow` says how to ask for less) once it would pass
    `MAX_RESPONSE_BYTES`."""
    limit = MAX_RESPONSE_BYTES
    parts: list[bytes] = []
    size = 2
    for item in items:
        part = render(item)
        size += len(part) + (1 if parts else 0)
        if size > limit:
            raise Invalid(
                f"the answer would be larger than {limit:,} bytes; {narrow}",
                error_code="RESPONSE_TOO_LARGE",
                details={"maxBytes": limit},
            )
        parts.append(part)
    return Response(b"[" + b",".join(parts) + b"]", media_type="application/json")


def json_page(
    items: Sequence[Item],
    next_cursor: str | None,
    *,
    cursor_after: Callable[[Item], str],
    max_bytes: int = MAX_RESPONSE_BYTES,
    render: Callable[[Item], bytes] = _to_json,  # type: ignore[assignment]
) -> Response:
    """A page of a paginated list, `{"data": [...], "nextCursor": ...}`. A page never passes
    `max_bytes`: it stops before the item that would, with the cursor after the last item
    it holds (`cursor_after`), so the client continues exactly there and loses nothing. Its
    first item is always sent (one item is bounded well below the limit)."""
    parts: list[bytes] = []
    size = 32
    for i, item in enumerate(items):
        part = render(item)
        size += len(part) + 1
        if parts and size > max_bytes:
            next_cursor = cursor_after(items[i - 1])
            break
        parts.append(part)
    cursor = b"null" if next_cursor is None else json.dumps(next_cursor).encode()
    body = b'{"data":[' + b",".join(parts) + b'],"nextCursor":' + cursor + b"}"
    return Response(body, media_type="application/json")
