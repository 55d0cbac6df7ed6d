"""The response cache (SPEC §2.5): complete non-streamed responses, keyed by what shapes them.

The gateway asks `cache_directives(headers)` whether the client allows the cache, builds the key
with `cache_key` from the resolved model and the body it will send, and stores the client-format
response body plus its usage with `ResponseCache.put`. A hit is replayed as-is, or translated into
a stream by the gateway when the client asked for one; the stored body is never a stream.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

import orjson

from concord.state.backend import StateBackend, StateUnavailable

# Body fields that do not change what the model answers, left out of the key so that, e.g., a
# streamed and a non-streamed request share an entry (SPEC §2.5):
#   stream, stream_options            transport only; hits are replayed as a stream on request
#   user, safety_identifier, metadata end-user and bookkeeping ids (OpenAI and Anthropic)
#   store, service_tier               OpenAI storage and latency tier
#   prompt_cache_key, prompt_cache_retention   provider-side prompt caching hints
# Everything else (messages, tools, temperature, seed, n, max_tokens, response_format...) counts.
IGNORED_FIELDS = frozenset(
    {
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)

_KEY_VERSION = "v1"


def _canonical_scalar(value: Any) -> Any:
    """`temperature: 0` and `temperature: 0.0` ask for the same thing."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def cache_key(model: str, endpoint: str, body: Mapping[str, Any], scope_id: str | None) -> str:
    """The entry name for a request: sha256 of the canonical JSON (sorted keys) of the endpoint,
    the resolved model and every output-shaping body field. `scope_id` is the workspace for
    `scope: workspace`, so workspaces never read each other's entries; None for `scope: global`.
    """
    fields = {k: _canonical_scalar(v) for k, v in body.items() if k not in IGNORED_FIELDS}
    fields.pop("model", None)
    canonical = orjson.dumps(
        {"endpoint": endpoint, "model": model, "body": fields},
        option=orjson.OPT_SORT_KEYS,
    )
    digest = hashlib.sha256(canonical).hexdigest()
    return f"{_KEY_VERSION}:{_scope(scope_id)}:{digest}"


@lru_cache(maxsize=4096)  # the same few workspaces again and again: skip the escaping
def _scope(scope_id: str | None) -> str:
    return "global" if scope_id is None else "ws:" + quote(scope_id, safe="")


@dataclass(frozen=True, slots=True)
class CacheDirectives:
    """What the client's request headers allow: reading a stored answer, storing a new one."""

    read: bool = True
    write: bool = True


_DEFAULT_DIRECTIVES = CacheDirectives()


def cache_directives(headers: Mapping[str, str]) -> CacheDirectives:
    """HTTP semantics: `no-cache` (or `Pragma: no-cache`) skips the lookup but may refresh the
    entry; `no-store` neither reads nor writes. `headers` keys are lower-case."""
    if "cache-control" not in headers and "pragma" not in headers:
        return _DEFAULT_DIRECTIVES  # the usual request: nothing to parse
    tokens = {
        part.split("=", 1)[0].strip().lower()
        for part in headers.get("cache-control", "").split(",")
    }
    if "no-store" in tokens:
        return CacheDirectives(read=False, write=False)
    if "no-cache" in tokens or "no-cache" in headers.get("pragma", "").lower():
        return CacheDirectives(read=False, write=True)
    return CacheDirectives()


def should_bypass(headers: Mapping[str, str]) -> bool:
    """True when the request must not be answered from the cache (`x-concord-cache: bypass`)."""
    return not cache_directives(headers).read


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A stored answer: the exact client-format JSON body, its usage, and where it came from."""

    body: bytes
    usage: Mapping[str, int] = field(default_factory=dict)
    model: str | None = None
    provider: str | None = None
    stored_at: float = 0.0

    def to_bytes(self) -> bytes:
        return encode_entry(self.body, self.usage, self.model, self.provider, self.stored_at)

    @classmethod
    def from_bytes(cls, raw: bytes) -> CachedResponse | None:
        """Decode a stored entry; None for anything unreadable (treated as a miss)."""
        head, sep, body = raw.partition(b"\n")
        if not sep:
            return None
        try:
            meta = orjson.loads(head)
            return cls(body, meta["u"], meta["m"], meta["p"], meta["t"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


def encode_entry(
    body: bytes,
    usage: Mapping[str, int],
    model: str | None,
    provider: str | None,
    stored_at: float,
) -> bytes:
    """`CachedResponse(...).to_bytes()` without building the response first (the store path).
    One compact JSON header line, then the body untouched: no re-encoding of large bodies."""
    meta = {"u": dict(usage), "m": model, "p": provider, "t": stored_at}
    return orjson.dumps(meta) + b"\n" + body


class ResponseCache:
    """Stores and fetches `CachedResponse`s; an unreachable backend reads as a miss."""

    def __init__(self, backend: StateBackend, *, namespace: str = "resp:") -> None:
        self.backend = backend
        self.namespace = namespace

    async def get(self, key: str) -> CachedResponse | None:
        try:
            raw = await self.backend.cache_get(self.namespace + key)
        except StateUnavailable:
            return None
        return CachedResponse.from_bytes(raw) if raw is not None else None

    async def put(self, key: str, response: CachedResponse, ttl: float) -> None:
        if not response.stored_at:
            response = CachedResponse(
                response.body, response.usage, response.model, response.provider, time.time()
            )
        try:
            await self.backend.cache_set(self.namespace + key, response.to_bytes(), ttl)
        except StateUnavailable:
            pass  # SPEC §1: a missing cache never fails a request
