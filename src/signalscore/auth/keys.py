"""API key format (SPEC §2): `sk_live_` followed by 40 cryptographically random base62 chars."""

from __future__ import annotations

import hashlib
import re
import secrets
import string

KEY_PREFIX = "sk_live_"
SECRET_LENGTH = 40  # 40 * log2(62) ≈ 238 bits
DISPLAY_SECRET_CHARS = 8  # how much of the secret listings show
_BASE62 = string.ascii_letters + string.digits
_KEY_RE = re.compile(r"^sk_live_[A-Za-z0-9]{32,200}$")


def generate_key() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))


def is_well_formed(key: str) -> bool:
    return _KEY_RE.fullmatch(key) is not None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def display_prefix(key: str) -> str:
    """The part of a key that is safe to show in listings, e.g. `sk_live_Ab3dEf9h`."""
    return key[: len(KEY_PREFIX) + DISPLAY_SECRET_CHARS]
