"""Helpers of the console's tests: signing in through the pages, and reading their forms."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

_HIDDEN = r'name="{name}" value="([^"]+)"'


def hidden_value(html: str, name: str) -> str:
    """The value of the page's (first) hidden input `name`."""
    found = re.search(_HIDDEN.format(name=re.escape(name)), html)
    assert found is not None, f"no {name} field in the page"
    return found.group(1)


def sign_in(client: TestClient, key: str) -> str:
    """Sign in through the sign-in form; returns the session's CSRF token."""
    page = client.get("/console/login")
    assert page.status_code == 200, page.text
    done = client.post(
        "/console/login",
        data={"loginToken": hidden_value(page.text, "loginToken"), "apiKey": key},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == "/console/profiles"
    profiles = client.get("/console/profiles")
    assert profiles.status_code == 200
    return hidden_value(profiles.text, "csrf")


def second_client(client: TestClient) -> TestClient:
    """Another browser (its own cookies) on the same application."""
    return TestClient(client.app, raise_server_exceptions=False)
