"""Standard Webhooks signatures (SPEC §11): `webhook-signature` is `v1,` + base64 of
HMAC-SHA256, keyed with the secret's bytes (base64 after `whsec_`), over
`"{webhook-id}.{webhook-timestamp}.{body}"`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    """`whsec_` + base64 of 24 random bytes."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
