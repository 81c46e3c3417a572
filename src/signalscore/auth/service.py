"""Organisations and API keys: creation, listing, revocation, authentication."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from signalscore.auth.keys import display_prefix, generate_key, hash_key, is_well_formed
from signalscore.db.engine import Database
from signalscore.db.tables import api_keys, organizations
from signalscore.db.types import utcnow


@dataclass(frozen=True, slots=True)
class Organization:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: uuid.UUID
    organization_id: str
    prefix: str
    name: str | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created key: the only moment the plain key exists outside the client."""

    info: ApiKeyInfo
    key: str


def new_organization_id() -> str:
    return secrets.token_hex(12)


def create_organization(conn: Connection, name: str) -> tuple[Organization, IssuedKey]:
    """Create an organisation together with its first API key."""
    org = Organization(id=new_organization_id(), name=name, created_at=utcnow())
    conn.execute(organizations.insert().values(id=org.id, name=org.name, created_at=org.created_at))
    return org, create_api_key(conn, org.id)


def get_organization(conn: Connection, org_id: str) -> Organization | None:
    row = conn.execute(sa.select(organizations).where(organizations.c.id == org_id)).one_or_none()
    return None if row is None else Organization(row.id, row.name, row.created_at)


def count_organizations(conn: Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(organizations)).scalar_one()


def create_api_key(conn: Connection, org_id: str, name: str | None = None) -> IssuedKey:
    key = generate_key()
    info = ApiKeyInfo(
        id=uuid.uuid4(),
        organization_id=org_id,
        prefix=display_prefix(key),
        name=name,
        created_at=utcnow(),
        revoked_at=None,
    )
    conn.execute(
        api_keys.insert().values(
            id=info.id,
            organization_id=org_id,
            prefix=info.prefix,
            key_hash=hash_key(key),
            name=name,
            created_at=info.created_at,
        )
    )
    return IssuedKey(info=info, key=key)


def list_api_keys(conn: Connection, org_id: str) -> list[ApiKeyInfo]:
    rows = conn.execute(
        sa.select(api_keys)
        .where(api_keys.c.organization_id == org_id)
        .order_by(api_keys.c.created_at, api_keys.c.id)
    )
    return [_key_info(r) for r in rows]


def revoke_api_key(conn: Connection, id_or_prefix: str) -> list[ApiKeyInfo]:
    """Revoke the key with this id, or the active keys whose displayed prefix matches exactly.

    Returns the keys revoked now; raises `LookupError` if nothing matches and `ValueError`
    when a prefix is ambiguous, so one typo never revokes several keys.
    """
    try:
        key_id: uuid.UUID | None = uuid.UUID(id_or_prefix)
    except ValueError:
        key_id = None
    cond = api_keys.c.id == key_id if key_id is not None else api_keys.c.prefix == id_or_prefix
    rows = conn.execute(sa.select(api_keys).where(cond)).all()
    if not rows:
        raise LookupError(f"no API key matches {id_or_prefix!r}")
    if len(rows) > 1:
        raise ValueError(f"{id_or_prefix!r} matches {len(rows)} keys; revoke by id instead")
    row = rows[0]
    if row.revoked_at is not None:
        return []
    now = utcnow()
    conn.execute(sa.update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=now))
    forget_key(row.key_hash)
    return [replace(_key_info(row), revoked_at=now)]


def authenticate(conn: Connection, key: str) -> tuple[str, uuid.UUID] | None:
    """(organisation id, key id) of an active key; None for a malformed, unknown or revoked
    key."""
    if not is_well_formed(key):
        return None
    return _active_key(conn, hash_key(key))


def _active_key(conn: Connection, key_hash: str) -> tuple[str, uuid.UUID] | None:
    row = conn.execute(
        sa.select(api_keys.c.organization_id, api_keys.c.id).where(
            api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None)
        )
    ).one_or_none()
    return None if row is None else (row.organization_id, row.id)


class KeyCache:
    """Valid keys a process has seen, by SHA-256 (the plain key is never kept): key hash ->
    (organisation id, key id) for `ttl_seconds`. A key revoked in this process is forgotten at
    once (`forget_key`); one revoked by another process (the CLI, another server) keeps
    working here until its entry expires. Unknown and revoked keys are never cached: failed
    authentication is limited per address instead (ratelimit.py)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str, uuid.UUID]] = {}
        with _caches_lock:
            _caches.add(self)

    def get(self, key_hash: str) -> tuple[str, uuid.UUID] | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, org_id, key_id = entry
        if expires <= self._clock():
            self._entries.pop(key_hash, None)
            return None
        return org_id, key_id

    def put(self, key_hash: str, found: tuple[str, uuid.UUID]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
                if len(self._entries) >= self.MAX_ENTRIES:
                    self._entries = {}
            self._entries[key_hash] = (now + self.ttl_seconds, *found)

    def discard(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)


_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


def forget_key(key_hash: str) -> None:
    """Drop a key from every cache of this process (it was just revoked)."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.discard(key_hash)


def authenticate_cached(
    db: Database, key: str, cache: KeyCache | None
) -> tuple[str, uuid.UUID] | None:
    """`authenticate`, answered from `cache` when the key was seen valid in the last
    `cache.ttl_seconds`; else one read transaction (and the answer cached if valid)."""
    if not is_well_formed(key):
        return None
    key_hash = hash_key(key)
    if cache is not None:
        found = cache.get(key_hash)
        if found is not None:
            return found
    with db.read() as conn:
        found = _active_key(conn, key_hash)
    if found is not None and cache is not None:
        cache.put(key_hash, found)
    return found


def _key_info(row: sa.Row[tuple[object, ...]]) -> ApiKeyInfo:
    m = row._mapping
    return ApiKeyInfo(
        id=m["id"],
        organization_id=m["organization_id"],
        prefix=m["prefix"],
        name=m["name"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
    )
