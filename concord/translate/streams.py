"""Streaming translation between OpenAI chunks and Anthropic events (SPEC §3).

Each translator is a small state machine: `feed(event)` takes one upstream SSE event and returns
the client-format events it implies (possibly none), `finish()` closes the stream properly when the
upstream ended. Both keep the usage they saw in `.usage` (SPEC §2.6: spend from usage).

`AnthropicToOpenAIStream(legacy_functions=True)` answers a request that used OpenAI's deprecated
`functions` as OpenAI would: the first tool call as `delta.function_call` chunks (`name` in the
first, `arguments` pieces after), later calls dropped, and `finish_reason: "function_call"`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from concord.providers.base import SSEEvent
from concord.providers.sse import stream_error_status
from concord.translate.anthropic_openai import (
    ANTHROPIC_TO_OPENAI_FINISH,
    anthropic_error_to_openai,
    anthropic_message_id,
    anthropic_stop_reason,
    openai_completion_id,
    openai_error_to_anthropic,
)
from concord.translate.usage import (
    Usage,
    anthropic_usage_dict,
    merge_anthropic_usage,
    openai_usage_dict,
    usage_from_anthropic,
    usage_from_openai,
)

JSON = dict[str, Any]
DONE = SSEEvent(data="[DONE]")


def _dumps(payload: JSON) -> str:
    return orjson.dumps(payload).decode()


def _loads(data: str) -> JSON | None:
    try:
        payload = orjson.loads(data)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def _anthropic_event(payload: JSON) -> SSEEvent:
    return SSEEvent(data=_dumps(payload), event=payload["type"])


class OpenAIToAnthropicStream:
    """chat.completion.chunk events in, Anthropic Messages stream events out."""

    def __init__(self, model: str, *, input_tokens_hint: int = 0) -> None:
        self.model = model
        self.usage = Usage(input_tokens=input_tokens_hint)
        self._input_hint = input_tokens_hint
        self._started = False
        self._finished = False
        self._block: int | None = None  # index of the open content block
        self._block_kind: str | None = None  # "text" or "tool:<openai index>"
        self._next_block = 0
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool_call index -> block index
        # tool calls after the first, held whole until the stream ends: OpenAI may interleave
        # the arguments of parallel calls, Anthropic's blocks follow one another
        self._pending: dict[int, JSON] = {}
        self._finish_reason: str | None = None
        self._saw_usage = False
        self._refused = False  # the model declined (OpenAI's `refusal` text)

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        if self._finished:
            return []
        if event.data.strip() == "[DONE]":
            return self.finish()
        chunk = _loads(event.data)
        if chunk is None:
            return []
        status = stream_error_status(chunk)  # `"error": null` (some servers) is no error
        if status is not None:
            self._finished = True
            return [_anthropic_event(openai_error_to_anthropic(chunk, status))]
        out = self._start(chunk)
        if isinstance(chunk.get("usage"), dict):
            self.usage = usage_from_openai(chunk["usage"])
            self._saw_usage = True
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # SPEC §3: one choice is translated; n > 1 has no Anthropic form
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if not text and delta.get("refusal"):
                text, self._refused = delta["refusal"], True
            if text:
                out += self._text(text)
            for call in delta.get("tool_calls") or []:
                out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[SSEEvent]:
        if self._finished:
            return []
        self._finished = True
        out = self._start({})
        out += self._close_block()
        out += self._flush_pending()
        stop = anthropic_stop_reason(self._finish_reason, refused=self._refused)
        usage: JSON = {"output_tokens": self.usage.output_tokens}
        if self._saw_usage:  # cumulative totals, as Anthropic's own message_delta carries them
            usage = anthropic_usage_dict(self.usage)
        out.append(
            _anthropic_event(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": usage,
                }
            )
        )
        out.append(_anthropic_event({"type": "message_stop"}))
        return out

    def _start(self, chunk: JSON) -> list[SSEEvent]:
        if self._started:
            return []
        self._started = True
        message = {
            "id": anthropic_message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": anthropic_usage_dict(Usage(input_tokens=self._input_hint)),
        }
        return [_anthropic_event({"type": "message_start", "message": message})]

    def _open(self, kind: str, content_block: JSON) -> list[SSEEvent]:
        out = self._close_block()
        self._block = self._next_block
        self._block_kind = kind
        self._next_block += 1
        start = {"type": "content_block_start", "index": self._block}
        return [*out, _anthropic_event({**start, "content_block": content_block})]

    def _close_block(self) -> list[SSEEvent]:
        if self._block is None:
            return []
        event = _anthropic_event({"type": "content_block_stop", "index": self._block})
        self._block = None
        self._block_kind = None
        return [event]

    def _delta(self, index: int, delta: JSON) -> SSEEvent:
        return _anthropic_event({"type": "content_block_delta", "index": index, "delta": delta})

    def _text(self, text: str) -> list[SSEEvent]:
        out = [] if self._block_kind == "text" else self._open("text", {"type": "text", "text": ""})
        assert self._block is not None
        return [*out, self._delta(self._block, {"type": "text_delta", "text": text})]

    def _tool_call(self, call: JSON) -> list[SSEEvent]:
        """The first tool call streams as it comes; later ones are held (`_pending`) and sent
        whole at the end, so no argument ever arrives for a block already closed."""
        position = call.get("index", 0)
        function = call.get("function") or {}
        arguments = function.get("arguments")
        out: list[SSEEvent] = []
        if position not in self._tool_blocks:
            if self._tool_blocks or position in self._pending:
                held = self._pending.setdefault(position, _tool_block(call, position))
                held["name"] = held["name"] or function.get("name") or ""
                held["arguments"] = held.get("arguments", "") + (arguments or "")
                return []
            out = self._open(f"tool:{position}", _tool_block(call, position))
            assert self._block is not None
            self._tool_blocks[position] = self._block
        if arguments:
            index = self._tool_blocks[position]
            out.append(self._delta(index, {"type": "input_json_delta", "partial_json": arguments}))
        return out

    def _flush_pending(self) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        for position in sorted(self._pending):
            held = self._pending[position]
            arguments = held.pop("arguments", "")
            out += self._open(f"tool:{position}", held)
            assert self._block is not None
            if arguments:
                delta = {"type": "input_json_delta", "partial_json": arguments}
                out.append(self._delta(self._block, delta))
            out += self._close_block()
        self._pending.clear()
        return out


def _tool_block(call: JSON, position: int) -> JSON:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id") or f"toolu_{position}",
        "name": function.get("name") or "",
        "input": {},
    }


class AnthropicToOpenAIStream:
    """Anthropic Messages stream events in, chat.completion.chunk events (and [DONE]) out."""

    def __init__(self, model: str, *, include_usage: bool, legacy_functions: bool = False) -> None:
        self.model = model
        self.include_usage = include_usage
        self.legacy_functions = legacy_functions
        self.usage = Usage()
        self._raw_usage: dict[str, Any] = {}
        self._id = openai_completion_id(None)
        self._created = int(time.time())
        self._started = False
        self._finished = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_call index
        self._no_arguments: set[int] = set()  # tool_use blocks (by index) with no JSON yet
        self._finish_reason = "stop"

    def feed(self, event: SSEEvent) -> list[SSEEvent]:
        if self._finished:
            return []
        payload = _loads(event.data)
        if payload is None:
            return []
        kind = payload.get("type") or event.event
        if kind == "error":
            self._finished = True
            return [SSEEvent(data=_dumps(anthropic_error_to_openai(payload, 500)))]
        if kind == "message_start":
            message = payload.get("message") or {}
            self._id = openai_completion_id(message.get("id"))
            self._record_usage(message.get("usage"))
            return self._start()
        out = self._start()
        if kind == "content_block_start":
            out += self._block_start(payload)
        elif kind == "content_block_delta":
            out += self._block_delta(payload)
        elif kind == "content_block_stop":
            out += self._block_stop(payload)
        elif kind == "message_delta":
            stop = (payload.get("delta") or {}).get("stop_reason")
            if stop:
                self._finish_reason = ANTHROPIC_TO_OPENAI_FINISH.get(stop, "stop")
            self._record_usage(payload.get("usage"))
        elif kind == "message_stop":
            out += self.finish()
        return out

    def finish(self) -> list[SSEEvent]:
        if self._finished:
            return []
        self._finished = True
        out = self._start()
        finish_reason = self._finish_reason
        if self.legacy_functions and finish_reason == "tool_calls":
            finish_reason = "function_call"
        out.append(self._chunk({}, finish_reason=finish_reason))
        if self.include_usage:
            usage_chunk = self._envelope([])
            usage_chunk["usage"] = openai_usage_dict(self.usage)
            out.append(SSEEvent(data=_dumps(usage_chunk)))
        out.append(DONE)
        return out

    def _record_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            merge_anthropic_usage(self._raw_usage, usage)
            self.usage = usage_from_anthropic(self._raw_usage)

    def _start(self) -> list[SSEEvent]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _envelope(self, choices: list[JSON]) -> JSON:
        chunk: JSON = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI does on every chunk but the last
        return chunk

    def _chunk(self, delta: JSON, *, finish_reason: str | None = None) -> SSEEvent:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return SSEEvent(data=_dumps(self._envelope([choice])))

    def _block_start(self, payload: JSON) -> list[SSEEvent]:
        block = payload.get("content_block") or {}
        if block.get("type") == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if block.get("type") != "tool_use":
            return []
        position = len(self._tools)
        if self.legacy_functions and position:
            return []  # `function_call` is one call: later ones have no legacy form
        index = payload.get("index", 0)
        self._tools[index] = position
        self._no_arguments.add(index)
        if self.legacy_functions:
            function = {"name": block.get("name"), "arguments": ""}
            return [self._chunk({"function_call": function})]
        call = {
            "index": position,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, payload: JSON) -> list[SSEEvent]:
        delta = payload.get("delta") or {}
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if delta.get("type") == "input_json_delta" and delta.get("partial_json"):
            index = payload.get("index", 0)
            position = self._tools.get(index)
            if position is None:
                return []
            self._no_arguments.discard(index)
            return [self._arguments(position, delta["partial_json"])]
        return []  # thinking, signatures and citations have no OpenAI form

    def _block_stop(self, payload: JSON) -> list[SSEEvent]:
        """A call without parameters streams no JSON (or only `""`): OpenAI's `arguments` are
        then `"{}"`, as the non-streamed translation gives and as OpenAI itself sends."""
        index = payload.get("index", 0)
        if index not in self._no_arguments:
            return []
        self._no_arguments.discard(index)
        return [self._arguments(self._tools[index], "{}")]

    def _arguments(self, position: int, text: str) -> SSEEvent:
        """One piece of a call's `arguments`, as a tool call or a legacy `function_call`."""
        if self.legacy_functions:
            return self._chunk({"function_call": {"arguments": text}})
        call = {"index": position, "function": {"arguments": text}}
        return self._chunk({"tool_calls": [call]})
