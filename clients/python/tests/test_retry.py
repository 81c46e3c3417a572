"""Retries against a real local HTTP server (http.server in a thread): 429 and 503 with
`Retry-After` are waited out and retried; a write that may have been applied is not."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from signalscore_client import ApiError, AsyncClient, Client, RetryPolicy, TransportError

PROFILE = {
    "id": "0b0e5f0e-8d43-4a8a-9c7a-3e2b8f1d2c11",
    "organizationId": "0" * 24,
    "type": "company",
    "name": "x",
    "description": None,
    "tiers": None,
    "createdAt": "2026-01-01T00:00:00Z",
    "updatedAt": "2026-01-01T00:00:00Z",
}


class Script:
    """What the server answers, request by request: (status, headers) or "drop" (read the
    whole request, then close the connection without a word)."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.seen: list[tuple[str, str, bytes, float]] = []
        self.lock = threading.Lock()

    def next(self) -> Any:
        with self.lock:
            index = len(self.seen) - 1
        return self.steps[index] if index < len(self.steps) else (200, {})


def make_handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            with script.lock:
                script.seen.append((self.command, self.path, body, time.monotonic()))
            step = script.next()
            if step == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            status, headers = step
            if status >= 400:
                payload = json.dumps(
                    {
                        "error": {
                            "type": "X",
                            "code": "X",
                            "message": "scripted",
                            "errorCode": "SCRIPTED",
                            "errorAction": "RETRY",
                            "details": {},
                            "requestId": "r",
                            "fields": [],
                        }
                    }
                ).encode()
            elif self.path.startswith("/v1/scoring/profiles"):
                payload = json.dumps(PROFILE if self.command == "POST" else [PROFILE]).encode()
            else:
                payload = json.dumps({"status": "ok"}).encode()
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _answer

    return Handler


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Any]], tuple[str, Script]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(steps: list[Any]) -> tuple[str, Script]:
        script = Script(steps)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(script))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", script

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05)


def gaps(script: Script) -> list[float]:
    times = [seen[3] for seen in script.seen]
    return [b - a for a, b in itertools.pairwise(times)]


@pytest.mark.parametrize("status", [429, 503])
def test_a_get_waits_for_retry_after_then_succeeds(scripted: Any, status: int) -> None:
    url, script = scripted([(status, {"Retry-After": "1"}), (200, {})])
    with Client(url, "sk_live_x", retry=FAST) as client:
        assert client.health() == {"status": "ok"}
    assert len(script.seen) == 2
    assert gaps(script)[0] >= 0.95  # the server's Retry-After, not the 10 ms backoff


@pytest.mark.parametrize("status", [429, 503])
def test_a_post_answered_429_or_503_is_retried(scripted: Any, status: int) -> None:
    """The server answered before doing anything, so even a non-idempotent create is safe."""
    url, script = scripted(
        [(status, {"Retry-After": "1"}), (status, {"Retry-After": "0"}), (201, {})]
    )
    with Client(url, "sk_live_x", retry=FAST) as client:
        assert client.create_profile("company", "x")["id"] == PROFILE["id"]
    assert [s[0] for s in script.seen] == ["POST"] * 3
    assert all(s[2] == script.seen[0][2] for s in script.seen)  # the same body each time
    assert gaps(script)[0] >= 0.95


def test_without_retry_after_the_backoff_is_used_and_attempts_run_out(scripted: Any) -> None:
    url, script = scripted([(503, {})] * 10)
    with Client(url, "sk_live_x", retry=FAST) as client, pytest.raises(ApiError) as caught:
        client.health()
    assert caught.value.status == 503
    assert caught.value.error_code == "SCRIPTED"
    assert len(script.seen) == FAST.attempts


def test_a_retry_after_beyond_the_limit_is_not_waited_for(scripted: Any) -> None:
    url, script = scripted([(429, {"Retry-After": "3600"})])
    started = time.monotonic()
    with Client(url, "sk_live_x", retry=FAST) as client, pytest.raises(ApiError) as caught:
        client.health()
    assert caught.value.status == 429
    assert len(script.seen) == 1
    assert time.monotonic() - started < 5


def test_other_errors_are_not_retried(scripted: Any) -> None:
    url, script = scripted([(422, {}), (200, {})])
    with Client(url, "sk_live_x", retry=FAST) as client, pytest.raises(ApiError) as caught:
        client.health()
    assert caught.value.status == 422
    assert len(script.seen) == 1


def test_a_post_is_not_retried_after_the_connection_drops_mid_request(scripted: Any) -> None:
    """The server read the whole request and closed the connection without answering: the
    profile may have been created, so the client must not create it a second time."""
    url, script = scripted(["drop", (201, {})])
    with Client(url, "sk_live_x", retry=FAST) as client, pytest.raises(TransportError) as caught:
        client.create_profile("company", "x")
    assert caught.value.sent is True
    assert [s[0] for s in script.seen] == ["POST"]


def test_an_idempotent_call_is_retried_after_the_connection_drops(scripted: Any) -> None:
    url, script = scripted(["drop", "drop", (200, {})])
    with Client(url, "sk_live_x", retry=FAST) as client:
        assert client.list_profiles() == [PROFILE]
    assert [s[0] for s in script.seen] == ["GET"] * 3


def test_an_import_is_retried_after_the_connection_drops(scripted: Any) -> None:
    """Re-sending an import leaves the same final state: it is retried, with the same body."""
    url, script = scripted(["drop", (200, {})])
    with Client(url, "sk_live_x", retry=FAST) as client:
        client.import_values(b'{"a": 1}\n', format="ndjson")
    assert [s[0] for s in script.seen] == ["POST", "POST"]
    assert script.seen[0][2] == script.seen[1][2] == b'{"a": 1}\n'


def test_a_refused_connection_is_retried_even_for_a_create() -> None:
    """Nothing was sent: a create is safe to retry; the attempts then run out."""
    with Client("http://127.0.0.1:9", "sk_live_x", retry=FAST) as client:
        started = time.monotonic()
        with pytest.raises(TransportError) as caught:
            client.create_profile("company", "x")
    assert caught.value.sent is False
    assert time.monotonic() - started < 5


def test_the_async_client_retries_the_same_way(scripted: Any) -> None:
    url, script = scripted([(429, {"Retry-After": "1"}), (201, {}), "drop"])

    async def run() -> None:
        async with AsyncClient(url, "sk_live_x", retry=FAST) as client:
            assert (await client.create_profile("company", "x"))["id"] == PROFILE["id"]
            with pytest.raises(TransportError):
                await client.create_profile("company", "y")

    asyncio.run(run())
    assert [s[0] for s in script.seen] == ["POST"] * 3
    assert gaps(script)[0] >= 0.95
