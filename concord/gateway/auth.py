"""Client key → principal (SPEC §2.8).

Keys arrive as `Authorization: Bearer <key>` (OpenAI SDK) or `x-api-key: <key>` (Anthropic SDK) and
are looked up by their SHA-256 in a `KeyStore`. `ConfigKeyStore` serves the keys declared in the
config; `DatabaseKeys` adapts the records layer's store to the same protocol, and `ChainedKeyStore`
asks the declared keys first, then the database. Only the hash is ever compared or kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from concord.gateway.errors import KeysUnavailable, Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: tags are the key's tags joined with its workspace's."""

    workspace: str = "default"
    key: str | None = None
    user: str | None = None
    tags: frozenset[str] = frozenset()
    expires: float | None = None  # epoch seconds
    key_id: str | None = None  # database keys only: what usage records and admin lists name


ANONYMOUS = Principal()


class KeyStore(Protocol):
    """Looks a client key up by the hex SHA-256 of its text."""

    async def lookup(self, sha256: str) -> Principal | None: ...


class ConfigKeyStore:
    """The keys declared under `auth.keys`, resolved once per graph."""

    def __init__(self, keys: Mapping[str, Any], workspaces: Mapping[str, Any]) -> None:
        self.principals = {digest: _principal(spec, workspaces) for digest, spec in keys.items()}

    async def lookup(self, sha256: str) -> Principal | None:
        return self.principals.get(sha256)


class ChainedKeyStore:
    """Asks each store in turn; the first that knows the key answers (SPEC §2.8: keys declared
    in the config come first, then the keys issued into the database)."""

    def __init__(self, stores: Sequence[KeyStore]) -> None:
        self.stores = tuple(stores)

    async def lookup(self, sha256: str) -> Principal | None:
        for store in self.stores:
            principal = await store.lookup(sha256)
            if principal is not None:
                return principal
        return None


class RecordLookup(Protocol):
    """The records layer's key store (`concord.records.KeyStore`) as this module uses it: its
    principals carry `workspace`, `key_name`, `key_id`, `user`, `tags` and `expires`."""

    async def lookup(self, sha256: str) -> Any | None: ...


class WorkspaceTags(Protocol):
    """What key lookups need of the database workspaces (`gateway.workspace_directory`)."""

    def knows(self, name: str) -> bool: ...

    async def learn(self, name: str) -> None: ...

    def tags(self, name: str) -> frozenset[str]: ...


class DatabaseKeys:
    """The records layer's keys behind the gateway's `KeyStore` protocol.

    Each principal gets its workspace's tags joined to the key's (SPEC §2.4.1 `tags`) and keeps
    its `key_id` for the usage log. A key of a workspace the directory has not seen yet makes it
    read that workspace first, so its budget applies from the key's first request. While
    `available()` is false (the database was not reachable since start-up) a lookup raises
    `KeysUnavailable` instead of guessing; a database error on a cache miss does the same.
    """

    def __init__(
        self,
        store: RecordLookup,
        workspaces: WorkspaceTags,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        self._workspaces = workspaces
        self._available = available
        # sha256 → (records principal, workspace tags, gateway principal): converted once
        self._converted: dict[str, tuple[Any, frozenset[str], Principal]] = {}

    async def lookup(self, sha256: str) -> Principal | None:
        if not self._available():
            raise _keys_unavailable()
        try:
            found = await self._store.lookup(sha256)
        except Exception:
            raise _keys_unavailable() from None
        if found is None:
            self._converted.pop(sha256, None)
            return None
        workspaces = self._workspaces
        if not workspaces.knows(found.workspace):
            try:
                await workspaces.learn(found.workspace)
            except Exception:
                raise _keys_unavailable() from None
        workspace_tags = workspaces.tags(found.workspace)
        cached = self._converted.get(sha256)
        if cached is not None and cached[0] is found and cached[1] == workspace_tags:
            return cached[2]
        principal = Principal(
            workspace=found.workspace,
            key=found.key_name,
            user=found.user,
            tags=frozenset(found.tags) | workspace_tags,
            expires=found.expires,
            key_id=found.key_id,
        )
        self._converted[sha256] = (found, workspace_tags, principal)
        return principal


def _keys_unavailable() -> KeysUnavailable:
    return KeysUnavailable(
        "The key database is unavailable; retry shortly.", headers={"retry-after": "1"}
    )


def _principal(spec: Any, workspaces: Mapping[str, Any]) -> Principal:
    workspace = getattr(spec, "workspace", None) or "default"
    workspace_spec = workspaces.get(workspace)
    tags = set(getattr(spec, "tags", None) or ())
    tags.update(getattr(workspace_spec, "tags", None) or ())
    return Principal(
        workspace=workspace,
        key=getattr(spec, "name", None),
        user=getattr(spec, "user", None),
        tags=frozenset(tags),
        expires=_epoch(getattr(spec, "expires", None)),
    )


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def client_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent: `Authorization: Bearer <key>` (any case), a bare
    `Authorization: <key>` (the `Bearer` prefix is optional, as the earlier proxies took it),
    or `x-api-key`."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            if token.strip():
                return token.strip()
        elif not token and scheme:
            return scheme
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def open_principal(workspaces: Mapping[str, Any]) -> Principal:
    """`auth.mode: open`: everyone is the `default` workspace (SPEC §2.8)."""
    spec = workspaces.get("default")
    return Principal(tags=frozenset(getattr(spec, "tags", None) or ()))


async def authenticate(
    headers: Mapping[str, str],
    store: KeyStore | None,
    *,
    open_mode: bool,
    anonymous: Principal,
    declared: Mapping[str, Principal] | None = None,
) -> Principal:
    """The caller's principal, or Unauthenticated (401 invalid_api_key).

    `declared` (keys from the config, by digest) is looked at first, without a suspension
    point; `store` (the database's keys) only for a key it does not hold. In open mode a known
    key still identifies its workspace; anything else is `anonymous`.
    """
    key = client_key(headers)
    if key is None:
        if open_mode:
            return anonymous
        raise Unauthenticated(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    digest = hashlib.sha256(key.encode()).hexdigest()
    principal = declared.get(digest) if declared is not None else None
    if principal is None and store is not None:
        principal = await store.lookup(digest)
    if principal is not None and principal.expires is not None and principal.expires <= time.time():
        principal = None
    if principal is None:
        if open_mode:
            return anonymous
        raise Unauthenticated("Incorrect API key provided.")
    return principal
