"""Client key → principal (SPEC §2.8).

Keys arrive as `Authorization: Bearer <key>` (OpenAI SDK) or `x-api-key: <key>` (Anthropic SDK) and
are looked up by their SHA-256 in a `KeyStore`. `ConfigKeyStore` serves the keys declared in the
config; a database store plugs in behind the same protocol. Only the hash is ever compared or kept.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.datastructures import Headers

from concord.gateway.errors import Unauthenticated


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: tags are the key's tags joined with its workspace's."""

    workspace: str = "default"
    key: str | None = None
    user: str | None = None
    tags: frozenset[str] = frozenset()
    expires: float | None = None  # epoch seconds


ANONYMOUS = Principal()


class KeyStore(Protocol):
    """Looks a client key up by the hex SHA-256 of its text."""

    async def lookup(self, sha256: str) -> Principal | None: ...


class ConfigKeyStore:
    """The keys declared under `auth.keys`, resolved once per graph."""

    def __init__(self, keys: Mapping[str, Any], workspaces: Mapping[str, Any]) -> None:
        self._principals = {digest: _principal(spec, workspaces) for digest, spec in keys.items()}

    async def lookup(self, sha256: str) -> Principal | None:
        return self._principals.get(sha256)


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


def client_key(headers: Headers) -> str | None:
    """The key the client sent, from either header form."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def open_principal(workspaces: Mapping[str, Any]) -> Principal:
    """`auth.mode: open`: everyone is the `default` workspace (SPEC §2.8)."""
    spec = workspaces.get("default")
    return Principal(tags=frozenset(getattr(spec, "tags", None) or ()))


async def authenticate(
    headers: Headers, store: KeyStore, *, open_mode: bool, anonymous: Principal
) -> Principal:
    """The caller's principal, or Unauthenticated (401 invalid_api_key).

    In open mode a known key still identifies its workspace; anything else is `anonymous`.
    """
    key = client_key(headers)
    if key is None:
        if open_mode:
            return anonymous
        raise Unauthenticated(
            "Missing API key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
        )
    principal = await store.lookup(hashlib.sha256(key.encode()).hexdigest())
    if principal is not None and principal.expires is not None and principal.expires <= time.time():
        principal = None
    if principal is None:
        if open_mode:
            return anonymous
        raise Unauthenticated("Incorrect API key provided.")
    return principal
