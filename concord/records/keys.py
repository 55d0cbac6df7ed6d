"""Client API keys (SPEC §2.8): generation, storage by SHA-256, and the cached lookup.

A key is `ck-` + 40 url-safe random characters, shown once at creation; the database keeps only
its SHA-256 and a short display prefix. `KeyStore.lookup` is on every request's path, so it
answers from an in-process cache:

- at `start()` every active key is loaded, then a background task polls every `refresh_interval`
  (0.5 s) for rows whose `updated_at` moved (creation or revocation, in any process), so a key
  revoked anywhere stops working here within about one poll;
- a hash the cache does not know is looked up in the database once, and a miss is remembered
  for `negative_ttl` (≤ 1 s), so a brand-new key from another process works at once while a
  flood of wrong keys costs at most one query per key per second;
- expiry is checked at lookup time against the clock, not by the poller.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from concord.records.db import Database
from concord.records.errors import InvalidRecord, KeyNotFound
from concord.records.tables import api_keys

log = logging.getLogger("concord.records.keys")

KEY_PREFIX = "ck-"
_KEY_RANDOM_BYTES = 30  # 30 bytes → 40 url-safe base64 characters (SPEC §2.8)
_DISPLAY_CHARS = 4
# Rows are re-read this far behind the newest `updated_at` seen, so a write whose transaction
# commits after a later one (or a writer whose clock is slightly behind) is not skipped.
_POLL_OVERLAP = timedelta(seconds=5)
_MAX_NEGATIVE_ENTRIES = 100_000


def generate_key() -> str:
    """A new client key: `ck-` + 40 url-safe random characters."""
    return KEY_PREFIX + secrets.token_urlsafe(_KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    """The hex SHA-256 under which a key is stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    """What lists show instead of the key: `ck-AbC1…`."""
    return key[: len(KEY_PREFIX) + _DISPLAY_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a key belongs to, as the gateway needs it for routing and accounting."""

    workspace: str
    key_name: str
    key_id: str
    user: str | None = None
    tags: frozenset[str] = frozenset()
    expires: float | None = None  # epoch seconds

    @property
    def key(self) -> str:
        """The key's name, under the attribute the gateway's Principal uses."""
        return self.key_name


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key as lists show it: never the key, never its hash."""

    id: str
    name: str
    prefix: str
    workspace: str
    user: str | None
    tags: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def status(self, now: datetime | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "workspace": self.workspace,
            "user": self.user,
            "tags": list(self.tags),
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "status": self.status(),
        }


@dataclass(slots=True)
class _Cache:
    positive: dict[str, Principal] = field(default_factory=dict)
    negative: dict[str, float] = field(default_factory=dict)  # sha256 → monotonic deadline
    watermark: datetime | None = None


class KeyStore:
    """Creates, lists and revokes keys in the database; looks them up from a cache."""

    def __init__(
        self,
        database: Database,
        *,
        refresh_interval: float = 0.5,
        negative_ttl: float = 1.0,
    ) -> None:
        self._db = database
        self._refresh_interval = refresh_interval
        self._negative_ttl = negative_ttl
        self._cache = _Cache()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every active key and start polling for changes."""
        if self._task is not None:
            return
        await self.refresh()
        self._task = asyncio.create_task(self._poll_forever(), name="concord-key-refresh")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> KeyStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- admin operations --------------------------------------------------------------------

    async def create(
        self,
        workspace: str,
        name: str,
        user: str | None = None,
        tags: Iterable[str] = (),
        expires_at: datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """Store a new key; returns its record and the plaintext key, which is never kept."""
        workspace, name = _required(workspace, "workspace"), _required(name, "name")
        if expires_at is not None and expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        plaintext = generate_key()
        now = datetime.now(UTC)
        record = KeyRecord(
            id="key_" + secrets.token_hex(6),
            name=name,
            prefix=display_prefix(plaintext),
            workspace=workspace,
            user=user or None,
            tags=tuple(dict.fromkeys(str(t) for t in tags)),
            created_at=now,
            expires_at=expires_at,
        )
        async with self._db.begin() as conn:
            await conn.execute(
                api_keys.insert().values(
                    id=record.id,
                    sha256=hash_key(plaintext),
                    prefix=record.prefix,
                    name=record.name,
                    workspace=record.workspace,
                    user=record.user,
                    tags=list(record.tags),
                    created_at=now,
                    updated_at=self._now_expr(now),
                    expires_at=expires_at,
                )
            )
        return record, plaintext

    async def list(
        self, workspace: str | None = None, user: str | None = None
    ) -> Sequence[KeyRecord]:
        """Every key (revoked ones included) of `workspace` and of `user` when given, newest
        first; never the key nor its hash."""
        query = sa.select(*_RECORD_COLUMNS).order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        if workspace is not None:
            query = query.where(api_keys.c.workspace == workspace)
        if user is not None:
            query = query.where(api_keys.c.user == user)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def get(self, key_id: str) -> KeyRecord:
        async with self._db.connect() as conn:
            row = (
                (await conn.execute(sa.select(*_RECORD_COLUMNS).where(api_keys.c.id == key_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return _record(row)

    async def revoke(self, key_id: str) -> KeyRecord:
        """Mark a key revoked (idempotent); every process stops accepting it within ~1 s."""
        records = await self._revoke_where(api_keys.c.id == key_id)
        if not records:
            raise KeyNotFound(f"no API key with id {key_id!r}")
        return records[0]

    async def revoke_user(self, user: str, workspace: str | None = None) -> list[KeyRecord]:
        """Revoke every key of `user` not revoked yet (in `workspace` only, when given), newest
        first; this process stops accepting them at once, every other one within ~1 s. None to
        revoke is `KeyNotFound`, so repeating it says so."""
        if not isinstance(user, str) or not user.strip():
            raise InvalidRecord("user must not be empty")
        condition = sa.and_(api_keys.c.user == user, api_keys.c.revoked_at.is_(None))
        if workspace is not None:
            condition = sa.and_(condition, api_keys.c.workspace == workspace)
        records = await self._revoke_where(condition)
        if not records:
            where = f" in workspace {workspace!r}" if workspace is not None else ""
            raise KeyNotFound(f"no active API key of user {user!r}{where}")
        return records

    async def revoke_value(self, key: str) -> KeyRecord:
        """Revoke the key whose value is `key`, found by its SHA-256 (idempotent, as `revoke`).
        The value is only hashed: it is not kept, logged or repeated in an error."""
        if not isinstance(key, str) or not key.strip():
            raise InvalidRecord("key must not be empty")
        records = await self._revoke_where(api_keys.c.sha256 == hash_key(key.strip()))
        if not records:
            raise KeyNotFound("no API key matches the given key")
        return records[0]

    async def _revoke_where(self, condition: Any) -> list[KeyRecord]:
        """Revoke the keys `condition` selects (those revoked already keep their time), forget
        them in this process at once; their records, newest first."""
        now = datetime.now(UTC)
        async with self._db.begin(immediate=True) as conn:
            rows = (
                await conn.execute(sa.select(api_keys.c.id, api_keys.c.sha256).where(condition))
            ).all()
            ids = [row.id for row in rows]
            if ids:
                await conn.execute(
                    api_keys.update()
                    .where(api_keys.c.id.in_(ids), api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now, updated_at=self._now_expr(now))
                )
        for row in rows:
            self._forget(row.sha256)
        if not ids:
            return []
        query = (
            sa.select(*_RECORD_COLUMNS)
            .where(api_keys.c.id.in_(ids))
            .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        )
        async with self._db.connect() as conn:
            return [_record(row) for row in (await conn.execute(query)).mappings().all()]

    # -- hot path ----------------------------------------------------------------------------

    async def lookup(self, sha256: str) -> Principal | None:
        """The principal of an active, unexpired key; None for unknown, revoked or expired."""
        principal = self._cache.positive.get(sha256)
        if principal is None:
            deadline = self._cache.negative.get(sha256)
            if deadline is not None and deadline > time.monotonic():
                return None
            principal = await self._lookup_database(sha256)
            if principal is None:
                return None
        if principal.expires is not None and principal.expires <= time.time():
            return None
        return principal

    async def _lookup_database(self, sha256: str) -> Principal | None:
        async with self._db.connect() as conn:
            row = (
                (await conn.execute(sa.select(api_keys).where(api_keys.c.sha256 == sha256)))
                .mappings()
                .first()
            )
        if row is None or row["revoked_at"] is not None:
            negative = self._cache.negative
            if len(negative) >= _MAX_NEGATIVE_ENTRIES:
                negative.clear()
            negative[sha256] = time.monotonic() + self._negative_ttl
            return None
        principal = _principal(row)
        self._cache.positive[sha256] = principal
        return principal

    # -- cache maintenance -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Apply key changes made since the last refresh (all active keys the first time)."""
        cache = self._cache
        query = sa.select(api_keys)
        if cache.watermark is None:
            query = query.where(api_keys.c.revoked_at.is_(None))
        else:
            query = query.where(api_keys.c.updated_at >= cache.watermark - _POLL_OVERLAP)
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        for row in rows:
            sha = row["sha256"]
            if row["revoked_at"] is None:
                cache.positive[sha] = _principal(row)
                cache.negative.pop(sha, None)
            else:
                cache.positive.pop(sha, None)
            if cache.watermark is None or row["updated_at"] > cache.watermark:
                cache.watermark = row["updated_at"]
        if cache.watermark is None:
            cache.watermark = datetime.now(UTC)
        now = time.monotonic()
        cache.negative = {k: v for k, v in cache.negative.items() if v > now}

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self._refresh_interval)
            try:
                await self.refresh()
            except Exception as exc:  # keep serving from the cache while the database is away
                if not failing:
                    log.warning("key refresh failed, serving cached keys: %s", type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("key refresh recovered")
                failing = False

    def _forget(self, sha256: str) -> None:
        self._cache.positive.pop(sha256, None)

    def _now_expr(self, now: datetime) -> Any:
        # PostgreSQL: stamp with the server's clock so pollers on other hosts compare like
        # with like; SQLite lives on one host and shares its clock.
        return sa.func.now() if self._db.dialect == "postgresql" else now


_RECORD_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.prefix,
    api_keys.c.workspace,
    api_keys.c.user,
    api_keys.c.tags,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        id=row["id"],
        name=row["name"],
        prefix=row["prefix"],
        workspace=row["workspace"],
        user=row["user"],
        tags=tuple(row["tags"] or ()),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _principal(row: Any) -> Principal:
    expires = row["expires_at"]
    return Principal(
        workspace=row["workspace"],
        key_name=row["name"],
        key_id=row["id"],
        user=row["user"],
        tags=frozenset(row["tags"] or ()),
        expires=expires.timestamp() if expires is not None else None,
    )


def _required(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidRecord(f"{what} must not be empty")
    if len(value) > 200:
        raise InvalidRecord(f"{what} must be at most 200 characters")
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None
