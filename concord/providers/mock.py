"""The built-in `mock` provider: offline, deterministic answers in every wire format (SPEC §2.2.1).

- Reply: the provider's `reply`, else `Echo: <text of the last user message>`.
- A request whose `tool_choice` forces a tool (OpenAI `required`/named, Anthropic `any`/`tool`)
  is answered with a call of that tool (the first tool for `required`/`any`) with arguments `{}`.
- `max_tokens` (or `max_completion_tokens`) cuts the reply and reports a length stop.
- Tokens are counted as whitespace-separated words: input = the words of every text in the
  request (system, messages, tool results, prompt; a prompt of token ids counts one per id),
  output = the words of the reply; a tool call counts as 1 + the words of its arguments. Cheap,
  deterministic, easy to assert in tests.
- Choices as OpenAI gives them: chat returns `n` identical choices; legacy completions return `n`
  per prompt when `prompt` lists several (index = prompt_index * n + i, each echoing its own
  prompt). Output usage is summed over the choices; streams interleave the choices chunk by
  chunk, each ending with its own finish_reason. `n` outside 1..128 is a 400, as upstream.
  Messages has no `n`: always one answer.
- Embeddings: unit vectors derived from a hash of each input, 1536 floats unless `dimensions`
  asks otherwise; `encoding_format: base64` is honoured.

The response builders are public so test fakes can speak the same formats.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import struct
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain, zip_longest
from typing import Any

import orjson

from concord.engine.graph import ProviderSpec
from concord.providers.base import (
    SSEEvent,
    UpstreamEndpoint,
    UpstreamRequest,
    UpstreamResponse,
    UpstreamStatusError,
)
from concord.translate.usage import Usage, anthropic_usage_dict, openai_usage_dict

JSON = dict[str, Any]
DEFAULT_DIMENSIONS = 1536
MAX_CHOICES = 128  # OpenAI's own ceiling on `n`


# ---- what to answer ----------------------------------------------------------------------------


def _hex_id(size: int = 16) -> str:
    """A random id body in the upstreams' shape, without the cost of building a UUID."""
    return os.urandom(size).hex()


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: str = "{}"
    id: str = field(default_factory=lambda: "call_" + _hex_id(12))


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer, format-neutral: text or a tool call, and why generation stopped."""

    text: str = ""
    tool_call: ToolCall | None = None
    truncated: bool = False

    @property
    def openai_finish(self) -> str:
        return "tool_calls" if self.tool_call else "length" if self.truncated else "stop"

    @property
    def anthropic_stop(self) -> str:
        return "tool_use" if self.tool_call else "max_tokens" if self.truncated else "end_turn"

    @property
    def output_tokens(self) -> int:
        if self.tool_call:
            return 1 + count_tokens(self.tool_call.arguments)
        return count_tokens(self.text)


Replies = Reply | Sequence[Reply]  # a builder takes one answer or every choice's, in index order


def _as_list(replies: Replies) -> Sequence[Reply]:
    return (replies,) if isinstance(replies, Reply) else replies


def count_tokens(text: str) -> int:
    """The mock's token count: whitespace-separated words."""
    return len(text.split())


def _texts(content: Any) -> list[str]:
    """Every text inside an OpenAI or Anthropic message content (tool results included)."""
    if isinstance(content, str):
        return [content]
    texts: list[str] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "tool_result":
            texts.extend(_texts(part.get("content")))
        elif part.get("type") == "tool_use":
            texts.append(json.dumps(part.get("input") or {}))
    return texts


def request_texts(endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> list[str]:
    """The input texts of a request, in order, for counting and echoing."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        return (
            [prompt] if isinstance(prompt, str) else [p for p in prompt or [] if isinstance(p, str)]
        )
    if endpoint == "embeddings":
        value = body.get("input")
        return [value] if isinstance(value, str) else [v for v in value or [] if isinstance(v, str)]
    texts = _texts(body.get("system")) if endpoint == "messages" else []
    for message in body.get("messages") or []:
        texts.extend(_texts(message.get("content")))
        for call in message.get("tool_calls") or []:
            texts.append((call.get("function") or {}).get("arguments") or "")
    return texts


def input_tokens(endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> int:
    words = sum(count_tokens(text) for text in request_texts(endpoint, body))
    if endpoint == "completions":  # a prompt given as token ids: one token each
        return words + _token_ids(body.get("prompt"))
    return words


def _token_ids(prompt: Any) -> int:
    """How many token ids a legacy prompt holds (`[1, 2]` or `[[1, 2], [3]]`); 0 for text."""
    return sum(len(item) for item in prompts(prompt) if isinstance(item, list))


def last_user_text(endpoint: UpstreamEndpoint, body: Mapping[str, Any]) -> str:
    if endpoint in ("completions", "embeddings"):
        texts = request_texts(endpoint, body)
        return texts[-1] if texts else ""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return " ".join(t for t in _texts(message.get("content")) if t)
    return ""


def forced_tool(body: Mapping[str, Any]) -> str | None:
    """The tool a request forces, if any, in either wire format."""
    tools = body.get("tools") or []
    if not tools:
        return None
    choice = body.get("tool_choice")
    first = tools[0].get("name") or (tools[0].get("function") or {}).get("name")
    if choice == "required" or (isinstance(choice, dict) and choice.get("type") == "any"):
        return first
    if isinstance(choice, dict):
        return choice.get("name") or (choice.get("function") or {}).get("name")
    return None


def compose_reply(endpoint: UpstreamEndpoint, body: Mapping[str, Any], fixed: str | None) -> Reply:
    """One answer to the request (for several prompts, the last one's)."""
    tool = forced_tool(body) if endpoint in ("chat", "messages") else None
    if tool:
        return Reply(tool_call=ToolCall(name=tool))
    return _text_reply(last_user_text(endpoint, body), body, fixed)


def _text_reply(said: str, body: Mapping[str, Any], fixed: str | None) -> Reply:
    """The echo of `said` (or the fixed reply), cut at the request's max tokens."""
    text = fixed if fixed is not None else f"Echo: {said}".rstrip()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and 0 < limit < count_tokens(text):
        return Reply(text=" ".join(text.split()[:limit]), truncated=True)
    return Reply(text=text)


def choice_count(body: Mapping[str, Any]) -> int:
    """`n`, refused as OpenAI refuses it when out of range, so a bad value is not served quietly
    (and a huge one cannot make the mock build millions of choices)."""
    n = body.get("n")
    if n is None:
        return 1
    if isinstance(n, bool) or not isinstance(n, int):
        problem = f"{n!r} is not of type 'integer'"
    elif n < 1:
        problem = f"{n} is less than the minimum of 1"
    elif n > MAX_CHOICES:
        problem = f"{n} is greater than the maximum of {MAX_CHOICES}"
    else:
        return n
    error = {"message": f"{problem} - 'n'", "type": "invalid_request_error", "param": "n"}
    raise UpstreamStatusError(problem, status=400, body={"error": {**error, "code": None}})


def prompts(prompt: Any) -> list[Any]:
    """The separate prompts of a legacy completions request: a string, strings, one token
    array, or token arrays (a missing or empty prompt counts as one empty prompt)."""
    if not isinstance(prompt, list) or not prompt:
        return [prompt if isinstance(prompt, str) else ""]
    if all(isinstance(item, int) for item in prompt):
        return [prompt]
    return list(prompt)


def compose_replies(
    endpoint: UpstreamEndpoint, body: Mapping[str, Any], fixed: str | None
) -> list[Reply]:
    """Every choice of the answer, in index order: `n` per prompt for OpenAI endpoints."""
    if endpoint == "messages":
        return [compose_reply(endpoint, body, fixed)]
    n = choice_count(body)
    if endpoint == "completions":
        texts = [p if isinstance(p, str) else "" for p in prompts(body.get("prompt"))]
        return [reply for text in texts for reply in [_text_reply(text, body, fixed)] * n]
    first = compose_reply(endpoint, body, fixed)
    return [first, *[_again(first) for _ in range(n - 1)]]


def _output_tokens(replies: list[Reply]) -> int:
    """Summed over the choices, as OpenAI bills `n`."""
    return sum(reply.output_tokens for reply in replies)


def _again(reply: Reply) -> Reply:
    """The same answer as another choice: a tool call gets its own id, as each choice's does."""
    if reply.tool_call is None:
        return reply
    return replace(reply, tool_call=ToolCall(reply.tool_call.name, reply.tool_call.arguments))


# ---- OpenAI formats ---------------------------------------------------------------------------


def _tool_call_json(call: ToolCall) -> JSON:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _chat_choice(index: int, reply: Reply) -> JSON:
    message: JSON = {
        "role": "assistant",
        "content": None if reply.tool_call else reply.text,
        "refusal": None,
    }
    if reply.tool_call:
        message["tool_calls"] = [_tool_call_json(reply.tool_call)]
    return {
        "index": index,
        "message": message,
        "finish_reason": reply.openai_finish,
        "logprobs": None,
    }


def openai_chat_response(
    model: str, reply: Replies, usage: Usage, *, id: str | None = None
) -> JSON:
    return {
        "id": id or "chatcmpl-" + _hex_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_chat_choice(index, one) for index, one in enumerate(_as_list(reply))],
        "usage": openai_usage_dict(usage),
        "system_fingerprint": None,
    }


def _dump(body: JSON) -> str:
    """An event's data: compact JSON, built fast since a stream is one event per word."""
    return orjson.dumps(body).decode()


def _pieces(text: str) -> list[str]:
    """Split text into stream deltas that concatenate back to it exactly."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


def _interleave(streams: list[list[JSON]]) -> list[JSON]:
    """Choices' chunks taken in turn, as several choices generated side by side arrive."""
    if len(streams) == 1:
        return streams[0]
    return [item for item in chain.from_iterable(zip_longest(*streams)) if item is not None]


def _chat_deltas(index: int, reply: Reply) -> list[JSON]:
    """One choice's stream: the role, its tool call or text pieces, then its finish_reason."""

    def delta(value: JSON, finish: str | None = None) -> JSON:
        return {"index": index, "delta": value, "finish_reason": finish, "logprobs": None}

    deltas = [delta({"role": "assistant", "content": "" if not reply.tool_call else None})]
    if reply.tool_call:
        call = reply.tool_call
        head = {
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append(delta({"tool_calls": [head]}))
        deltas.append(
            delta({"tool_calls": [{"index": 0, "function": {"arguments": call.arguments}}]})
        )
    deltas += [delta({"content": piece}) for piece in _pieces(reply.text)]
    deltas.append(delta({}, reply.openai_finish))
    return deltas


def openai_chat_chunks(
    model: str, reply: Replies, usage: Usage, *, include_usage: bool, id: str | None = None
) -> list[SSEEvent]:
    """The chunks of a streamed chat completion, one choice per chunk, `[DONE]` included."""
    chunk_id = id or "chatcmpl-" + _hex_id()
    created = int(time.time())

    def chunk(choices: list[JSON], usage_value: Any = None) -> SSEEvent:
        body: JSON = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage_value
        return SSEEvent(data=_dump(body))

    streams = [_chat_deltas(index, one) for index, one in enumerate(_as_list(reply))]
    events = [chunk([choice]) for choice in _interleave(streams)]
    if include_usage:
        events.append(chunk([], openai_usage_dict(usage)))
    events.append(SSEEvent(data="[DONE]"))
    return events


def _completion_usage(usage: Usage) -> JSON:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def completion_response(model: str, reply: Replies, usage: Usage) -> JSON:
    return {
        "id": "cmpl-" + _hex_id(),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"text": one.text, "index": index, "logprobs": None, "finish_reason": one.openai_finish}
            for index, one in enumerate(_as_list(reply))
        ],
        "usage": _completion_usage(usage),
    }


def _completion_deltas(index: int, reply: Reply) -> list[JSON]:
    """One choice's stream: its text pieces, then an empty piece with its finish_reason."""
    pieces: list[tuple[str, str | None]] = [(piece, None) for piece in _pieces(reply.text)]
    pieces.append(("", reply.openai_finish))
    return [
        {"text": text, "index": index, "logprobs": None, "finish_reason": finish}
        for text, finish in pieces
    ]


def completion_chunks(
    model: str, reply: Replies, usage: Usage, *, include_usage: bool
) -> list[SSEEvent]:
    """The chunks of a streamed legacy completion, one choice per chunk, `[DONE]` included."""
    chunk_id = "cmpl-" + _hex_id()
    created = int(time.time())

    def chunk(choice: JSON) -> SSEEvent:
        body = {
            "id": chunk_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
        }
        return SSEEvent(data=_dump(body))

    streams = [_completion_deltas(index, one) for index, one in enumerate(_as_list(reply))]
    events = [chunk(choice) for choice in _interleave(streams)]
    if include_usage:
        body = {
            "id": chunk_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [],
            "usage": _completion_usage(usage),
        }
        events.append(SSEEvent(data=_dump(body)))
    events.append(SSEEvent(data="[DONE]"))
    return events


def embedding_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    raw = b""
    counter = 0
    while len(raw) < dimensions * 4:
        raw += hashlib.sha256(f"{counter}:{text}".encode()).digest()
        counter += 1
    values = [
        (n / 0xFFFFFFFF) * 2 - 1 for n in struct.unpack(f"<{dimensions}I", raw[: dimensions * 4])
    ]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def embedding_response(model: str, body: Mapping[str, Any]) -> JSON:
    value = body.get("input")
    # OpenAI's four input shapes: a string, strings, one token array, token arrays
    single = isinstance(value, str) or (bool(value) and isinstance(value[0], int))
    inputs = [value] if single else list(value or [])
    dimensions = body.get("dimensions") or DEFAULT_DIMENSIONS
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(str(t) for t in item)
        tokens += count_tokens(text) if isinstance(item, str) else len(item)
        vector = embedding_vector(text, dimensions)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# ---- Anthropic formats ------------------------------------------------------------------------


def _anthropic_content(reply: Reply) -> list[JSON]:
    if reply.tool_call:
        call = reply.tool_call
        return [
            {
                "type": "tool_use",
                "id": "toolu_" + call.id.removeprefix("call_"),
                "name": call.name,
                "input": json.loads(call.arguments),
            }
        ]
    return [{"type": "text", "text": reply.text}]


def anthropic_message_response(
    model: str, reply: Reply, usage: Usage, *, id: str | None = None
) -> JSON:
    return {
        "id": id or "msg_" + _hex_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_content(reply),
        "stop_reason": reply.anthropic_stop,
        "stop_sequence": None,
        "usage": anthropic_usage_dict(usage),
    }


def _event(payload: JSON) -> SSEEvent:
    return SSEEvent(data=_dump(payload), event=payload["type"])


def anthropic_message_events(
    model: str, reply: Reply, usage: Usage, *, id: str | None = None
) -> list[SSEEvent]:
    """The full Messages stream: message_start ... message_stop, with a ping like the real API."""
    message = anthropic_message_response(model, reply, usage, id=id)
    start_usage = dict(message["usage"], output_tokens=1)
    events = [
        _event(
            {
                "type": "message_start",
                "message": dict(message, content=[], stop_reason=None, usage=start_usage),
            }
        ),
    ]
    block = _anthropic_content(reply)[0]
    if reply.tool_call:
        events.append(
            _event(
                {"type": "content_block_start", "index": 0, "content_block": dict(block, input={})}
            )
        )
        events.append(_event({"type": "ping"}))
        delta = {"type": "input_json_delta", "partial_json": reply.tool_call.arguments}
        events.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
    else:
        events.append(
            _event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
        )
        events.append(_event({"type": "ping"}))
        for piece in _pieces(reply.text):
            delta = {"type": "text_delta", "text": piece}
            events.append(_event({"type": "content_block_delta", "index": 0, "delta": delta}))
    events.append(_event({"type": "content_block_stop", "index": 0}))
    events.append(
        _event(
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.anthropic_stop, "stop_sequence": None},
                "usage": {"output_tokens": usage.output_tokens},
            }
        )
    )
    events.append(_event({"type": "message_stop"}))
    return events


# ---- the provider -----------------------------------------------------------------------------


class MockStream:
    """A finished list of events served as a stream."""

    def __init__(self, events: list[SSEEvent]) -> None:
        self.status = 200
        self.headers: Mapping[str, str] = {"content-type": "text/event-stream"}
        self._events = events
        self._closed = False

    def __aiter__(self) -> AsyncIterator[SSEEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SSEEvent]:
        for event in self._events:
            if self._closed:
                return
            yield event

    async def aclose(self) -> None:
        self._closed = True


class MockProvider:
    """SPEC §2.2.1: answers all four endpoints natively, with no network and no key."""

    wire = "openai"
    native: frozenset[UpstreamEndpoint] = frozenset(
        {"chat", "completions", "embeddings", "messages"}
    )

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        self.name = spec.name

    @property
    def available(self) -> bool:
        return True

    def key_status(self) -> list[dict[str, Any]]:
        return []

    def answer(self, request: UpstreamRequest) -> tuple[list[Reply], Usage]:
        """What the mock says to `request`, every choice of it, and the usage it reports."""
        replies = compose_replies(request.endpoint, request.body, self.spec.reply)
        usage = Usage(
            input_tokens=input_tokens(request.endpoint, request.body),
            output_tokens=_output_tokens(replies),
        )
        return replies, usage

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        await self._delay()
        model = str(request.body.get("model") or "mock")
        if request.endpoint == "embeddings":
            return UpstreamResponse(status=200, body=embedding_response(model, request.body))
        replies, usage = self.answer(request)
        if request.endpoint == "messages":
            body = anthropic_message_response(model, replies[0], usage)
        elif request.endpoint == "completions":
            body = completion_response(model, replies, usage)
        else:
            body = openai_chat_response(model, replies, usage)
        return UpstreamResponse(status=200, body=body, headers={"content-type": "application/json"})

    async def stream(self, request: UpstreamRequest) -> MockStream:
        await self._delay()
        model = str(request.body.get("model") or "mock")
        replies, usage = self.answer(request)
        include_usage = bool((request.body.get("stream_options") or {}).get("include_usage"))
        if request.endpoint == "messages":
            events = anthropic_message_events(model, replies[0], usage)
        elif request.endpoint == "completions":
            events = completion_chunks(model, replies, usage, include_usage=include_usage)
        elif request.endpoint == "chat":
            events = openai_chat_chunks(model, replies, usage, include_usage=include_usage)
        else:
            raise ValueError(f"{self.name}: {request.endpoint} cannot be streamed")
        return MockStream(events)

    async def close(self) -> None:
        return None

    async def _delay(self) -> None:
        if self.spec.latency > 0:
            await asyncio.sleep(self.spec.latency)
