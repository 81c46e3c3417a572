"""JSON request bodies: read after authentication, parsed and checked off the event loop.

FastAPI parses a JSON body with the standard library and validates it on the event loop, and
it does both before any dependency runs, so an anonymous caller could make the server parse
5 MiB, and one hostile body (300,000 keys, say) stalled every other request while pydantic
listed 300,000 errors. `V1Route` changes the order for every `/v1` route:

1. the API key is checked (in the thread pool) before a byte of the body is read;
2. the body is read (at most 5 MiB, `BodyLimitMiddleware`), then parsed and checked by
   `checked_body` in the thread pool: orjson first, the standard library when orjson refuses
   (it also reads `NaN`, integers beyond 64 bits and lone surrogates, which the checks then
   report precisely); then the structural limits below; then the route's pydantic model;
3. FastAPI receives the validated model, which it passes through without a second parse.

The structural limits, documented in docs/api.md, keep the cost of the worst body bounded:

- nesting at most `MAX_DEPTH` levels (`NESTING_TOO_DEEP`);
- at most `MAX_KEYS` object keys in the whole body (`TOO_MANY_KEYS`);
- no NUL (U+0000) and no lone surrogate (U+D800-U+DFFF without its pair) in any string or
  key (`INVALID_CHARACTER`, at the exact path): PostgreSQL stores neither, and orjson cannot
  encode a lone surrogate, so one stored would break every later read of its object.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from signalscore.deps import authenticate
from signalscore.errors import BadRequest, Invalid, Problems
from signalscore.validation import json_path, validation_error

MAX_DEPTH = 32
MAX_KEYS = 10_000
# Problems listed by the structural checks before they stop looking.
_MAX_PROBLEMS = 100


def parse_json(raw: bytes) -> Any:
    """The parsed body, or 400 `MALFORMED_JSON` / 422 `NESTING_TOO_DEEP`."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except RecursionError:
        raise _too_deep("body") from None
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON") from None


def _too_deep(path: str) -> Invalid:
    return Invalid.one(
        path,
        "NESTING_TOO_DEEP",
        f"JSON may be nested at most {MAX_DEPTH} levels deep",
        details={"maxDepth": MAX_DEPTH},
    )


def _bad_text(text: str) -> str | None:
    """Why `text` cannot be stored, or None."""
    if "\x00" in text:
        return "text must not contain NUL (\\u0000) characters"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "text must not contain lone surrogates (\\ud800-\\udfff without their pair)"
    return None


def check_structure(data: Any) -> None:
    """Raise one 422 for the structural limits of the module docstring."""
    problems = Problems()
    keys = 0
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(data, ())]
    while stack and len(problems) < _MAX_PROBLEMS:
        value, path = stack.pop()
        if isinstance(value, str):
            reason = _bad_text(value)
            if reason:
                problems.add(json_path(path), "INVALID_CHARACTER", reason)
            continue
        if isinstance(value, dict):
            children: list[tuple[Any, tuple[int | str, ...]]] = []
            keys += len(value)
            if keys > MAX_KEYS:
                raise Invalid.one(
                    "body",
                    "TOO_MANY_KEYS",
                    f"a body may hold at most {MAX_KEYS:,} object keys in all",
                    details={"maxKeys": MAX_KEYS},
                )
            for key, item in value.items():
                reason = _bad_text(key)
                if reason:
                    problems.add(json_path((*path, _printable(key))), "INVALID_CHARACTER", reason)
                children.append((item, (*path, key)))
        elif isinstance(value, list):
            children = [(item, (*path, index)) for index, item in enumerate(value)]
        else:
            continue
        if len(path) >= MAX_DEPTH and children:
            raise _too_deep(json_path(path))
        # Reversed, so the walk (and the list of problems) follows document order.
        stack.extend(reversed(children))
    problems.raise_if_any(what="fields")


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def checked_body(raw: bytes, model: type[BaseModel]) -> BaseModel:
    """Parse, check and validate a body; any problem is raised as the envelope's error."""
    data = parse_json(raw)
    check_structure(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False, include_input=False)) from None


def _is_json(request: Request) -> bool:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


class _CheckedRequest(Request):
    """A request whose body has been read and validated; FastAPI gets the model as its
    "parsed JSON" and validates a model instance without copying it."""

    def __init__(self, request: Request, raw: bytes, model: BaseModel) -> None:
        super().__init__(request.scope, request.receive)
        self._raw = raw
        self._model = model

    async def body(self) -> bytes:
        return self._raw

    async def json(self) -> Any:
        return self._model


class V1Route(APIRoute):
    """Every authenticated route: key first, then the body, parsed and validated off the
    event loop (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        annotation = field.field_info.annotation if field is not None else None
        model: type[BaseModel] | None = None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation

        async def checked_handler(request: Request) -> Response:
            await run_in_threadpool(authenticate, request)
            if model is None or not _is_json(request):
                return await handler(request)
            raw = await request.body()
            if not raw:
                return await handler(request)
            checked = await run_in_threadpool(checked_body, raw, model)
            return await handler(_CheckedRequest(request, raw, checked))

        return checked_handler
