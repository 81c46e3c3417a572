"""The webhook signature verifier against Standard Webhooks (SPEC §11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from conftest import LiveServer
from signalscore_client import Client, WebhookVerificationError, sign_webhook, verify_webhook

# The example of the Standard Webhooks specification and its reference libraries.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def reference_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Computed here from the definition, without the client's code."""
    key = base64.b64decode(secret[len("whsec_") :])
    mac = hmac.new(key, msg_id.encode() + b"." + str(timestamp).encode() + b"." + body, "sha256")
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_the_standard_webhooks_example_verifies() -> None:
    assert reference_signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.encode()) == (
        SPEC_SIGNATURE
    )
    assert sign_webhook(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    got = verify_webhook(
        SPEC_SECRET,
        headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE),
        SPEC_BODY.encode(),
        now=SPEC_TIMESTAMP + 10,
    )
    assert got == {"test": 2432232314}


@pytest.mark.parametrize("seed", range(20))
def test_random_deliveries_match_the_reference(seed: int) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24 + seed)).decode()
    msg_id = f"msg_{secrets.token_hex(8)}"
    timestamp = 1_700_000_000 + seed * 7919
    body = json.dumps({"events": [{"sequence": seed, "objectId": "acme.com"}]}).encode()
    signature = reference_signature(secret, msg_id, timestamp, body)
    assert sign_webhook(secret, msg_id, timestamp, body) == signature
    assert verify_webhook(secret, headers(msg_id, timestamp, signature), body, now=timestamp)


def test_a_changed_body_id_timestamp_or_secret_is_refused() -> None:
    now = SPEC_TIMESTAMP
    good = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(SPEC_SECRET, good, SPEC_BODY.replace("2", "3"), now=now)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(SPEC_SECRET, {**good, "webhook-id": SPEC_ID + "x"}, SPEC_BODY, now=now)
    shifted = {**good, "webhook-timestamp": str(SPEC_TIMESTAMP + 1)}
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(SPEC_SECRET, shifted, SPEC_BODY, now=now)
    other = "whsec_" + base64.b64encode(b"another secret of 24 bytes").decode()
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify_webhook(other, good, SPEC_BODY, now=now)


def test_the_timestamp_must_be_within_the_tolerance() -> None:
    good = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
    verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP + 300)
    verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP - 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP - 301)
    verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP + 3600, tolerance=3600)
    with pytest.raises(WebhookVerificationError, match="Unix time"):
        verify_webhook(SPEC_SECRET, {**good, "webhook-timestamp": "1e9"}, SPEC_BODY, now=1e9)


def test_any_of_several_signatures_may_match_and_other_versions_are_ignored() -> None:
    wrong = "v1," + base64.b64encode(hashlib.sha256(b"nope").digest()).decode()
    several = f"v1a,{SPEC_SIGNATURE[3:]} {wrong} {SPEC_SIGNATURE}"
    good = headers(SPEC_ID, SPEC_TIMESTAMP, several)
    verify_webhook(SPEC_SECRET, good, SPEC_BODY, now=SPEC_TIMESTAMP)
    # The right bytes under another version name are not a v1 signature.
    only_other = headers(SPEC_ID, SPEC_TIMESTAMP, f"v2,{SPEC_SIGNATURE[3:]} {wrong}")
    with pytest.raises(WebhookVerificationError):
        verify_webhook(SPEC_SECRET, only_other, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_headers_are_matched_ignoring_case_and_missing_ones_are_named() -> None:
    upper = {k.upper(): v for k, v in headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE).items()}
    verify_webhook(SPEC_SECRET, upper, SPEC_BODY, now=SPEC_TIMESTAMP)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        partial = headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_SIGNATURE)
        del partial[name]
        with pytest.raises(WebhookVerificationError, match=name):
            verify_webhook(SPEC_SECRET, partial, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_the_comparison_is_constant_time() -> None:
    """hmac.compare_digest is the comparison; a plain == would leak the matching prefix."""
    import inspect

    from signalscore_client import webhooks

    source = inspect.getsource(webhooks.verify)
    assert "hmac.compare_digest" in source
    assert "== expected" not in source


def test_the_server_s_deliveries_verify(server: LiveServer) -> None:
    """End to end: a subscription on the live server, its test delivery and real score
    events received by a local receiver, each verified with the secret the server gave;
    after a rotation the old secret no longer verifies."""
    received: list[tuple[dict[str, str], bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

    receiver = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    tag = secrets.token_hex(3)
    try:
        with Client(server.url, server.key) as client:
            profile = client.create_profile("company", f"Hooks {tag}")
            hook = client.create_webhook(
                url, ["score.created"], profile_ids=[profile["id"]], description="test"
            )
            secret = hook["secret"]
            assert secret.startswith("whsec_")
            assert "secret" not in client.get_webhook(hook["id"])
            assert hook["id"] in [w["id"] for w in client.list_webhooks()]

            delivery = client.test_webhook(hook["id"])
            assert delivery["statusCode"] == 204
            headers, body = received[-1]
            payload = verify_webhook(secret, headers, body)
            assert payload["events"][0]["type"] == "webhook.test"
            assert headers["webhook-id"] == delivery["id"]

            template = client.create_template("n", "company", "number", id=f"hook-{tag}")
            client.put_rule(
                profile["id"],
                template["id"],
                "fit",
                "number",
                {"ranges": [{"min": 0, "max": None, "points": 1}]},
            )
            client.create_assignment(profile["id"], "company", f"hook-{tag}.example.com")
            deadline = time.monotonic() + 30
            events: list[Any] = []
            while not events and time.monotonic() < deadline:
                for headers, body in received[1:]:
                    events += verify_webhook(secret, headers, body)["events"]
                time.sleep(0.1)
            assert [e["objectId"] for e in events] == [f"hook-{tag}.example.com"]
            assert client.list_webhook_deliveries(hook["id"], limit=1)[0]["statusCode"] == 204

            rotated = client.rotate_webhook_secret(hook["id"])
            client.test_webhook(hook["id"])
            headers, body = received[-1]
            verify_webhook(rotated["secret"], headers, body)
            with pytest.raises(WebhookVerificationError):
                verify_webhook(secret, headers, body)
            disabled = client.update_webhook(hook["id"], enabled=False, description=None)
            assert disabled["enabled"] is False
            assert disabled["description"] is None
            assert disabled["url"] == url
            client.delete_webhook(hook["id"])
    finally:
        receiver.shutdown()
        receiver.server_close()
