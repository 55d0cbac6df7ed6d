"""Between the client's endpoint and the target's: pass through or translate (SPEC §3).

When the client's endpoint is native to the provider the body passes through untouched except
`model` (unknown fields preserved). Otherwise the request is translated (messages ⇄ chat; legacy
completions → chat, then → messages for an Anthropic target) and the answer translated back,
streams included. Every answer carries the model name the client asked for.

One exception to "untouched": an OpenAI-format stream always asks the upstream for usage
(`stream_options.include_usage`), because spend is computed from it (SPEC §2.6); the usage chunk is
removed again when the client did not ask for it. When the client sent no `stream_options`, the
field is a `GatewayStreamOptions`, so an adapter may leave it out for a server that refuses it
(`HTTPProvider.stream`); such a stream then brings no usage. An OpenAI stream that ends without
`[DONE]` (which `HTTPStream` accepts once a choice has finished) gets one from the gateway, so the
client sees the stream end as OpenAI ends it.

A chat request using OpenAI's deprecated `functions` (not `tools`) and served by a Messages
upstream is answered the legacy way, `function_call` instead of `tool_calls`, streams included:
the handler says so (`legacy_functions`), since bridges are shared by every request between the
same two endpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from concord.engine.graph import Endpoint
from concord.gateway.errors import InvalidRequest
from concord.providers.base import SSEEvent, UpstreamEndpoint
from concord.providers.http import GatewayStreamOptions
from concord.providers.sse import encode_event
from concord.translate.anthropic_openai import (
    DEFAULT_MAX_TOKENS,
    Untranslatable,
    anthropic_request_to_openai,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
    openai_response_to_anthropic,
)
from concord.translate.collect import Collector
from concord.translate.completions import (
    ChatToCompletionStream,
    chat_response_to_completion,
    completion_request_to_chat,
)
from concord.translate.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from concord.translate.usage import StreamUsageMeter, Usage, usage_from_anthropic, usage_from_openai

JSON = dict[str, Any]
_DONE = b"data: [DONE]\n\n"
_DONE_EVENT = SSEEvent(data="[DONE]")


class Stage(Protocol):
    """One step of a stream pipeline: upstream-side events in, client-side events out."""

    def feed(self, event: SSEEvent) -> list[SSEEvent]: ...

    def finish(self) -> list[SSEEvent]: ...


@dataclass(frozen=True, slots=True)
class Bridge:
    """How one client endpoint reaches one upstream endpoint."""

    client: Endpoint
    upstream: UpstreamEndpoint

    @property
    def upstream_wire(self) -> str:
        return "anthropic" if self.upstream == "messages" else "openai"

    def request(self, body: JSON, upstream_model: str, output_limit: int | None = None) -> JSON:
        """The upstream body: the client's, translated if needed, with the upstream model.
        Content the upstream's format cannot carry is a 400 naming it, never dropped.
        `output_limit`: the catalog model's `max_output_tokens`, for an upstream that requires
        a limit the client did not set (Anthropic's `max_tokens`)."""
        try:
            out = self._translated(body, output_limit or DEFAULT_MAX_TOKENS)
        except Untranslatable as exc:
            raise InvalidRequest(str(exc), param=exc.param) from None
        out["model"] = upstream_model
        if out.get("stream") and self.upstream_wire == "openai" and self.upstream != "embeddings":
            options = body.get("stream_options") if self.client != "messages" else None
            if isinstance(options, dict):  # the client's own: an upstream's 400 is theirs
                out["stream_options"] = {**options, "include_usage": True}
            else:
                out["stream_options"] = GatewayStreamOptions(include_usage=True)
        return out

    def _translated(self, body: JSON, output_limit: int) -> JSON:
        client, upstream = self.client, self.upstream
        if client == upstream:
            return dict(body)
        if client == "messages":
            return anthropic_request_to_openai(body)
        if client == "chat":
            return openai_request_to_anthropic(body, default_max_tokens=output_limit)
        out = completion_request_to_chat(body)  # completions
        if upstream == "messages":
            return openai_request_to_anthropic(out, default_max_tokens=output_limit)
        return out

    def usage(self, upstream_body: JSON) -> Usage:
        if self.upstream == "messages":
            return usage_from_anthropic(upstream_body)
        return usage_from_openai(upstream_body)

    def response(self, upstream_body: JSON, model: str, *, legacy_functions: bool = False) -> JSON:
        """The upstream answer in the client's format, naming the requested `model`;
        `legacy_functions`: a chat client's `functions` request (module docstring)."""
        client, upstream = self.client, self.upstream
        if client == upstream:
            upstream_body["model"] = model
            return upstream_body
        if client == "messages":
            return openai_response_to_anthropic(upstream_body, model=model)
        if client == "chat":
            return anthropic_response_to_openai(
                upstream_body, model=model, legacy_functions=legacy_functions
            )
        chat = upstream_body
        if upstream == "messages":
            chat = anthropic_response_to_openai(upstream_body, model=model)
        out = chat_response_to_completion(chat)
        out["model"] = model
        return out

    def relay(
        self, model: str, *, include_usage: bool, input_tokens: int, legacy_functions: bool = False
    ) -> Relay:
        """A stream translator from upstream events to client bytes."""
        client, upstream = self.client, self.upstream
        stages: list[Stage]
        if upstream == "messages":
            if client == "messages":
                meter = StreamUsageMeter("anthropic")
                stage: Any = AnthropicPassStage(model, meter)
                return Relay([stage], lambda: meter.usage)
            translator = AnthropicToOpenAIStream(
                model,
                include_usage=include_usage,
                legacy_functions=client == "chat" and legacy_functions,
            )
            stages = [translator]
            if client == "completions":
                stages.append(ChatToCompletionStream())
            return Relay(stages, lambda: translator.usage)
        first = OpenAIPassStage(model, include_usage=include_usage or client == "messages")
        stages = [first]
        if client == "messages":
            stages.append(OpenAIToAnthropicStream(model, input_tokens_hint=input_tokens))
        elif client == "completions" and upstream == "chat":
            stages.append(ChatToCompletionStream())  # copies the model the first stage set
        return Relay(stages, lambda: first.usage)


_BRIDGES: dict[tuple[str, frozenset[str]], Bridge] = {}


def bridge_for(endpoint: Endpoint, native: frozenset[str]) -> Bridge:
    """The bridge from a client endpoint to a provider with `native` endpoints (memoised)."""
    key = (endpoint, native)
    bridge = _BRIDGES.get(key)
    if bridge is None:
        bridge = _BRIDGES[key] = Bridge(endpoint, _upstream_endpoint(endpoint, native))
    return bridge


def _upstream_endpoint(endpoint: Endpoint, native: frozenset[str]) -> UpstreamEndpoint:
    if endpoint in native:
        return endpoint
    if endpoint == "embeddings":
        raise InvalidRequest(
            "This model's provider does not offer embeddings.", param="model", code="unsupported"
        )
    if endpoint == "messages":
        if "chat" in native:
            return "chat"
    elif "chat" in native:  # chat cannot be native here; completions prefers chat
        return "chat"
    if "messages" in native:
        return "messages"
    raise InvalidRequest(f"This model's provider cannot serve {endpoint} requests.", param="model")


class OpenAIPassStage:
    """OpenAI chunks through, as they came but for `model`; keeps usage, hides it if unasked.
    Ends the stream with `[DONE]` when the upstream ended it without one."""

    def __init__(self, model: str, *, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.usage = Usage()
        self.done = False

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        data = event.data
        if data == "[DONE]":
            self.done = True
            return [event]
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return [event]
        if not isinstance(chunk, dict):
            return [event]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage_from_openai(usage)
        if not self.include_usage and "usage" in chunk:
            if usage and not chunk.get("choices"):
                return []  # the usage-only chunk the client did not ask for
            del chunk["usage"]
        if "model" in chunk:
            chunk["model"] = self.model
        return [SSEEvent(orjson.dumps(chunk).decode(), event.event)]

    def finish(self) -> list[SSEEvent]:
        return [] if self.done else [_DONE_EVENT]


class AnthropicPassStage:
    """Anthropic events through untouched, but for the model named in `message_start`."""

    def __init__(self, model: str, meter: StreamUsageMeter) -> None:
        self.model = model
        self.meter = meter

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        self.meter.observe(event)
        if event.event == "message_start":
            try:
                payload = orjson.loads(event.data)
                payload["message"]["model"] = self.model
                return [SSEEvent(orjson.dumps(payload).decode(), event.event)]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return [event]
        return [event]

    def finish(self) -> list[SSEEvent]:
        return []


class Relay:
    """A pipeline of stages; `feed`/`finish` return the bytes to send the client. A `collector`,
    when set, sees every upstream event first (to rebuild the whole answer for the cache)."""

    def __init__(self, stages: Sequence[Stage], usage: Callable[[], Usage]) -> None:
        self._stages = stages
        self._usage = usage
        self.collector: Collector | None = None

    @property
    def usage(self) -> Usage:
        return self._usage()

    def feed(self, event: SSEEvent) -> bytes:
        if self.collector is not None:
            self.collector.feed(event)
        events = [event]
        for stage in self._stages:
            events = [out for item in events for out in stage.feed(item)]
            if not events:
                return b""
        return _encode(events)

    def finish(self) -> bytes:
        """The closing bytes, once the upstream stream ended complete."""
        if self.collector is not None:
            self.collector.ended()
        events: list[SSEEvent] = []
        for stage in self._stages:
            events = [out for item in events for out in stage.feed(item)] + stage.finish()
        return _encode(events)


def _encode(events: list[SSEEvent]) -> bytes:
    if len(events) == 1:
        event = events[0]
        if event.data == "[DONE]":
            return _DONE
        return encode_event(event)
    return b"".join(_DONE if e.data == "[DONE]" else encode_event(e) for e in events)
