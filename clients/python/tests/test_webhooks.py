"""The webhook signature verifier against Standard Webhooks (SPEC §11)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

import pytest

from signalscore_client import WebhookVerificationError, sign_webhook, verify_webhook

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
