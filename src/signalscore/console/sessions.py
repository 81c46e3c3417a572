"""Console sessions: an API key is exchanged once, at sign-in, for a server-side session.

The cookie holds `<organization_id>.<secret>` (the secret: 256 random bits); the database
holds only the SHA-256 of the secret, so a copy of the table opens no session. A session
belongs to one organisation and to the key that opened it: it ends at `expires_at`
(`SESSION_HOURS` after sign-in, however active it is), at sign-out (the row is deleted), or
when that key is revoked (every lookup joins the active key).

The CSRF token of a session is an HMAC of a fixed label under the session's secret: the
server can recompute it from the cookie of each request, nothing more is stored, and the
stored hash cannot derive it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.db.tables import api_keys, console_sessions, organizations
from signalscore.db.types import utcnow

SESSION_HOURS = 12
COOKIE_NAME = "signalscore_console"
COOKIE_PATH = "/console"

s = console_sessions
_COOKIE_RE = re.compile(r"^([0-9a-f]{24})\.([A-Za-z0-9_-]{43})$")
_CSRF_LABEL = b"signalscore console csrf v1"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A live session, as one request sees it."""

    organization_id: str
    organization_name: str
    api_key_id: uuid.UUID
    token_hash: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class OpenedSession:
    cookie: str
    expires_at: datetime


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def csrf_token_for(secret: str) -> str:
    return hmac.new(secret.encode("ascii"), _CSRF_LABEL, hashlib.sha256).hexdigest()


def parse_cookie(value: str | None) -> tuple[str, str] | None:
    """(organisation id, secret) of a well-formed cookie value, else None."""
    if not value:
        return None
    found = _COOKIE_RE.fullmatch(value)
    return None if found is None else (found.group(1), found.group(2))


def open_session(
    conn: Connection, org_id: str, api_key_id: uuid.UUID, now: datetime | None = None
) -> OpenedSession:
    """A new session of this organisation and key; the organisation's expired sessions are
    deleted on the way (sign-ins are rare, so this keeps the table small without a sweep)."""
    now = now or utcnow()
    conn.execute(sa.delete(s).where(s.c.organization_id == org_id, s.c.expires_at <= now))
    secret = secrets.token_urlsafe(32)
    expires_at = now + timedelta(hours=SESSION_HOURS)
    conn.execute(
        s.insert().values(
            organization_id=org_id,
            token_hash=_hash(secret),
            api_key_id=api_key_id,
            created_at=now,
            expires_at=expires_at,
        )
    )
    return OpenedSession(cookie=f"{org_id}.{secret}", expires_at=expires_at)


def find_session(
    conn: Connection, cookie: str | None, now: datetime | None = None
) -> ConsoleSession | None:
    """The live session of this cookie value: unexpired, and its key not revoked."""
    parsed = parse_cookie(cookie)
    if parsed is None:
        return None
    org_id, secret = parsed
    token_hash = _hash(secret)
    k, o = api_keys, organizations
    row = conn.execute(
        sa.select(s.c.api_key_id, s.c.expires_at, o.c.name)
        .join(k, sa.and_(k.c.id == s.c.api_key_id, k.c.organization_id == s.c.organization_id))
        .join(o, o.c.id == s.c.organization_id)
        .where(
            s.c.organization_id == org_id,
            s.c.token_hash == token_hash,
            s.c.expires_at > (now or utcnow()),
            k.c.revoked_at.is_(None),
        )
    ).one_or_none()
    if row is None:
        return None
    return ConsoleSession(
        organization_id=org_id,
        organization_name=row.name,
        api_key_id=row.api_key_id,
        token_hash=token_hash,
        csrf_token=csrf_token_for(secret),
        expires_at=row.expires_at,
    )


def close_session(conn: Connection, session: ConsoleSession) -> None:
    """Sign-out: the row is deleted, so the cookie opens nothing any more."""
    conn.execute(
        sa.delete(s).where(
            s.c.organization_id == session.organization_id, s.c.token_hash == session.token_hash
        )
    )


def same_token(sent: str | None, expected: str) -> bool:
    return sent is not None and hmac.compare_digest(sent.encode(), expected.encode())
