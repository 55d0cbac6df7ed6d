"""The provider seam: one small adapter per upstream API behind one interface (SPEC §2.2).

The data plane hands a provider an `UpstreamRequest` whose body is already in the provider's
native wire format (`Provider.wire`) with `model` set to the upstream model. The provider sends it
with its pooled aiohttp session and returns an `UpstreamResponse`, or an `UpstreamStream` of
server-sent events; failures raise `UpstreamError`, which says whether the attempt may be retried.

    UpstreamError                     any failed upstream call
    ├── UpstreamTimeout               no answer within the attempt's timeout ("timeout")
    ├── UpstreamConnectionError       could not connect, or the connection dropped ("connection")
    └── UpstreamStatusError           the upstream answered with an HTTP error status
        └── ContextLengthError        the input does not fit the model's window (SPEC §2.5.1)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Wire = Literal["openai", "anthropic"]
UpstreamEndpoint = Literal["chat", "completions", "embeddings", "messages"]


@dataclass(slots=True)
class UpstreamRequest:
    endpoint: UpstreamEndpoint
    body: dict[str, Any]
    timeout: float
    api_key: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    body: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class SSEEvent:
    """One server-sent event: `event` is None for OpenAI's unnamed events; `data` is raw text."""

    data: str
    event: str | None = None


class UpstreamStream(Protocol):
    """An open streaming response; iterating yields events until the upstream ends the stream."""

    status: int
    headers: Mapping[str, str]

    def __aiter__(self) -> AsyncIterator[SSEEvent]: ...

    async def aclose(self) -> None: ...


class UpstreamError(Exception):
    """A failed upstream call. `kind` feeds `retry.on`; `retry_after` is seconds, if given."""

    kind: str = "error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retry_after = retry_after
        self.body = body


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamConnectionError(UpstreamError):
    kind = "connection"


class UpstreamStatusError(UpstreamError):
    kind = "status"


class ContextLengthError(UpstreamStatusError):
    kind = "context_length"


class Provider(Protocol):
    """What every adapter offers.

    `wire` is the format its chat bodies are in; `native` lists the endpoints it accepts as-is
    (openai/azure: chat, completions, embeddings; anthropic: messages; mock: all four). The data
    plane passes a request through untouched when its endpoint is native to the provider, and
    translates chat <-> messages otherwise.
    """

    name: str
    wire: Wire
    native: frozenset[UpstreamEndpoint]

    @property
    def available(self) -> bool:
        """False when every API key is cooling down for every model (401/403), or none is
        configured; a key cooling for one model after a 429 leaves the provider available."""
        ...

    def key_status(self) -> list[dict[str, Any]]:
        """Per key: a masked label (never the key), `cooldown_until` (epoch s) or None for a
        cooldown of every model, and `models`, the models it is cooling for after a 429."""
        ...

    async def send(self, request: UpstreamRequest) -> UpstreamResponse: ...

    async def stream(self, request: UpstreamRequest) -> UpstreamStream: ...

    async def close(self) -> None: ...
