"""The client against the server's OpenAPI document (fetched from the live server), so the
two cannot drift: every server operation has a client method and the reverse, and every
model's fields, required keys and JSON types equal the schema's, nested models included."""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, is_typeddict

import httpx2 as httpx
import pytest

from conftest import LiveServer
from signalscore_client import _calls, models

# Endpoints of SPEC §10 that the client implements from the SPEC while the server is being
# built: allowed to be missing from the server, checked as soon as the server has them.
AHEAD_OF_SERVER = {"list_events", "get_history"}

JSON_TYPES = {"string", "integer", "number", "boolean", "null", "array", "object"}


@pytest.fixture(scope="module")
def openapi(sqlite_server: LiveServer) -> dict[str, Any]:
    document = httpx.get(f"{sqlite_server.url}/openapi.json", timeout=30).json()
    assert isinstance(document, dict)
    return document


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def _operations(openapi: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), _shape(path)): operation
        for path, methods in openapi["paths"].items()
        for method, operation in methods.items()
    }


def test_every_server_operation_has_a_client_method_and_the_reverse(
    openapi: dict[str, Any],
) -> None:
    server = set(_operations(openapi))
    client = {(method, _shape(path)): name for name, (method, path) in _calls.ENDPOINTS.items()}
    missing = sorted(server - set(client))
    assert not missing, f"server operations without a client method: {missing}"
    extra = {client[key] for key in set(client) - server}
    assert extra <= AHEAD_OF_SERVER, f"client methods for no server operation: {extra}"
    for name in _calls.ENDPOINTS:
        assert callable(getattr(__import__("signalscore_client").Client, name))
        assert callable(getattr(__import__("signalscore_client").AsyncClient, name))


class Checker:
    def __init__(self, openapi: dict[str, Any]) -> None:
        self.components = openapi["components"]["schemas"]
        self.checked: set[str] = set()
        self.problems: list[str] = []

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def alternatives(self, schema: dict[str, Any]) -> list[dict[str, Any]]:
        schema = self.resolve(schema)
        if "type" in schema or "properties" in schema:
            return [schema]  # an anyOf / oneOf beside them only refines them
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return [alt for option in schema[key] for alt in self.alternatives(option)]
        return [schema]

    def schema_types(self, schema: dict[str, Any]) -> set[str] | None:
        """The JSON types a schema allows; None for any."""
        found: set[str] = set()
        for alt in self.alternatives(schema):
            kind = alt.get("type")
            if isinstance(kind, list):
                found |= set(kind)
            elif isinstance(kind, str):
                found.add(kind)
            elif "enum" in alt or "const" in alt:
                values = alt.get("enum", [alt.get("const")])
                found |= {_json_type(v) for v in values}
            elif "properties" in alt or "additionalProperties" in alt:
                found.add("object")
            else:
                return None
        if found & {"integer", "number"}:
            found |= {"integer", "number"}  # JSON numbers: an integer is a number
        return found

    def check_model(self, model: type, schema: dict[str, Any], where: str, response: bool) -> None:
        schema = self.resolve(schema)
        self.checked.add(model.__name__)
        hints = typing.get_type_hints(model)
        properties: dict[str, Any] = schema.get("properties", {})
        if set(hints) != set(properties):
            self.problems.append(
                f"{where} ({model.__name__}): client fields {sorted(hints)} != schema "
                f"properties {sorted(properties)}"
            )
            return
        required = set(schema.get("required", []))
        client_required: frozenset[str] = model.__required_keys__  # type: ignore[attr-defined]
        if response and not required <= client_required:
            self.problems.append(
                f"{where} ({model.__name__}): the server always sends {sorted(required)}, "
                f"the client marks {sorted(required - client_required)} optional"
            )
        if not response and set(client_required) != required:
            self.problems.append(
                f"{where} ({model.__name__}): client requires {sorted(client_required)}, "
                f"the server {sorted(required)}"
            )
        for name, annotation in hints.items():
            self.check_type(annotation, properties[name], f"{where}.{name}", response)

    def check_type(
        self, annotation: Any, schema: dict[str, Any], where: str, response: bool
    ) -> None:
        client = _client_types(annotation)
        server = self.schema_types(schema)
        if client is not None and server is not None:
            if response and not server <= client:
                self.problems.append(f"{where}: the server sends {server}, client takes {client}")
            if not response and not client - {"number"} <= server | {"number"}:
                self.problems.append(f"{where}: the client sends {client}, server takes {server}")
        for member in _members(annotation):
            alts = self.alternatives(schema)
            if is_typeddict(member):
                objects = [a for a in alts if "properties" in a]
                if not objects:
                    self.problems.append(f"{where}: no object schema for {member.__name__}")
                    continue
                self.check_model(member, objects[0], where, response)
            elif get_origin(member) is list:
                arrays = [a for a in alts if a.get("type") == "array"]
                if arrays and "items" in arrays[0]:
                    self.check_type(get_args(member)[0], arrays[0]["items"], f"{where}[]", response)
            elif get_origin(member) is dict:
                maps = [a for a in alts if isinstance(a.get("additionalProperties"), dict)]
                if maps:
                    item = maps[0]["additionalProperties"]
                    self.check_type(get_args(member)[1], item, f"{where}{{}}", response)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _client_types(annotation: Any) -> set[str] | None:
    if annotation is Any:
        return None
    if get_origin(annotation) in (Union, types.UnionType):
        found: set[str] = set()
        for member in get_args(annotation):
            kinds = _client_types(member)
            if kinds is None:
                return None
            found |= kinds
        return found
    if get_origin(annotation) is Literal:
        return {_json_type(v) for v in get_args(annotation)}
    simple = {
        str: {"string"},
        int: {"integer", "number"},
        float: {"number", "integer"},
        bool: {"boolean"},
        type(None): {"null"},
    }
    if annotation in simple:
        return simple[annotation]
    if get_origin(annotation) is list:
        return {"array"}
    if get_origin(annotation) is dict or is_typeddict(annotation):
        return {"object"}
    raise AssertionError(f"no JSON type for {annotation!r}")


def _response_schema(operation: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    for status, answer in sorted(operation["responses"].items()):
        if status.startswith("2"):
            content = answer.get("content", {}).get("application/json")
            return status, (content or {}).get("schema")
    raise AssertionError("no 2xx response")


def test_every_model_equals_its_schema(openapi: dict[str, Any]) -> None:
    operations = _operations(openapi)
    checker = Checker(openapi)
    absent = []
    for name, (method, path) in _calls.ENDPOINTS.items():
        operation = operations.get((method, _shape(path)))
        if operation is None:
            absent.append(name)
            continue
        request_model, response_model = _calls.MODELS[name]
        body = operation.get("requestBody", {}).get("content", {})
        if request_model is None:
            assert "application/json" not in body, f"{name}: the server takes a JSON body"
        else:
            checker.check_model(
                request_model, body["application/json"]["schema"], f"{name} body", False
            )
        status, schema = _response_schema(operation)
        if response_model is None:
            assert status == "204", f"{name}: the server answers {status}"
            assert schema is None, f"{name}: the server answers a body"
            continue
        assert schema is not None, f"{name}: no JSON answer in the document"
        if isinstance(response_model, list):
            schema = checker.resolve(schema)
            assert schema.get("type") == "array", f"{name}: the server answers no array"
            checker.check_model(response_model[0], schema["items"], f"{name} answer[]", True)
        else:
            checker.check_model(response_model, schema, f"{name} answer", True)
    checker.check_model(
        models.ErrorEnvelope, checker.components["ErrorEnvelope"], "error envelope", True
    )
    assert not checker.problems, "\n".join(checker.problems)
    assert set(absent) <= AHEAD_OF_SERVER
    # Every model is compared with a schema, except those of endpoints still to come.
    ahead = {"Event", "EventPage", "EventChange", "ContributionState", "HistoryPage"}
    if not absent:
        ahead = set()
    every = {n for n, v in vars(models).items() if isinstance(v, type) and is_typeddict(v)}
    unchecked = every - checker.checked - ahead
    assert not unchecked, f"models compared with no schema: {sorted(unchecked)}"


def test_the_checker_catches_a_drift(openapi: dict[str, Any]) -> None:
    """A model with a field too many, one too few, or a wrong type is reported."""
    from typing import TypedDict

    class Short(TypedDict):
        id: str
        name: str

    class WrongType(TypedDict):
        status: int

    checker = Checker(openapi)
    checker.check_model(Short, checker.components["Template"], "short", True)
    checker.check_model(WrongType, checker.components["Health"], "wrong type", True)
    assert len(checker.problems) == 2, checker.problems
    assert "client fields" in checker.problems[0]
    assert "the server sends {'string'}" in checker.problems[1]
