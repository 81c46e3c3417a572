"""Assertions shared by the HTTP tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx

from signalscore.auth import service as auth_service
from signalscore.db.engine import Database

# Written out by hand from SPEC §3 rather than derived from the application's own model,
# so a drift in the model cannot make the test agree with itself.
ENVELOPE_KEYS = {
    "type": str,
    "code": str,
    "message": str,
    "errorCode": str,
    "errorAction": str,
    "details": dict,
    "requestId": str,
    "fields": list,
}
ERROR_ACTIONS = {"FIX_REQUEST", "CHECK_CREDENTIALS", "RETRY", "NONE"}


def assert_error(
    response: httpx.Response,
    status: int,
    code: str,
    *,
    type_: str | None = None,
    error_code: str | None = None,
    fields: list[str] | None = None,
) -> dict[str, Any]:
    """Check `response` is a well-formed SPEC §3 envelope with the given status and codes."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) - {"debug"} == set(ENVELOPE_KEYS), error
    for key, kind in ENVELOPE_KEYS.items():
        assert isinstance(error[key], kind), (key, error[key])
    assert error["code"] == code
    if type_ is not None:
        assert error["type"] == type_
    assert error["errorAction"] in ERROR_ACTIONS
    assert error["errorCode"] == error["errorCode"].upper()
    assert error["errorCode"].replace("_", "").isalnum()
    assert error["message"]
    assert str(uuid.UUID(error["requestId"])) == error["requestId"]
    assert response.headers["x-request-id"] == error["requestId"]
    for item in error["fields"]:
        assert set(item) == {"field", "message"}
        assert isinstance(item["field"], str)
        assert isinstance(item["message"], str)
    if "debug" in error:
        assert isinstance(error["debug"], dict)
        assert isinstance(error["debug"]["cause"], str)
    if error_code is not None:
        assert error["errorCode"] == error_code
    if fields is not None:
        assert [f["field"] for f in error["fields"]] == fields
    return dict(error)


@dataclass(frozen=True)
class Tenant:
    """An organisation and a valid key for it."""

    org_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(database: Database, name: str = "Acme") -> Tenant:
    with database.write() as conn:
        org, issued = auth_service.create_organization(conn, name)
    return Tenant(org_id=org.id, key=issued.key)
