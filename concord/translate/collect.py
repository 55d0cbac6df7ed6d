"""A streamed answer folded back into the complete answer the same request would have had without
`stream` (SPEC §2.5: streamed answers are cached like the others, and replayed either way).

Each collector takes the upstream's events in its own format, as they pass through the gateway,
and gives the upstream-format body once the stream has ended properly; the bridge then turns it
into the client's format, exactly as for a non-streamed answer. A collector that meets something
it cannot rebuild faithfully (log probabilities, audio, a block type it does not know) or a stream
that did not finish gives nothing: that answer is simply not cached.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from concord.providers.base import SSEEvent, UpstreamEndpoint

JSON = dict[str, Any]


class Collector(Protocol):
    def feed(self, event: SSEEvent) -> None: ...

    def ended(self) -> None:
        """The upstream stream ended complete (its transport's judgement: an OpenAI-compatible
        server may close after the finished choice without `[DONE]`)."""
        ...

    def result(self) -> JSON | None: ...


def collector_for(upstream: UpstreamEndpoint) -> Collector | None:
    """The collector for an upstream endpoint's stream; None where answers never stream."""
    if upstream == "chat":
        return ChatCollector()
    if upstream == "completions":
        return CompletionCollector()
    if upstream == "messages":
        return MessageCollector()
    return None


def _load(event: SSEEvent) -> JSON | None:
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


class _OpenAICollector:
    """Shared by chat and legacy completions: `choices` by index, the last `usage`, `[DONE]`."""

    object_name = ""

    def __init__(self) -> None:
        self.head: JSON = {}
        self.choices: dict[int, JSON] = {}
        self.usage: JSON | None = None
        self.done = False
        self.broken = False

    def ended(self) -> None:
        self.done = True  # complete without `[DONE]`: the stream's transport said so

    def feed(self, event: SSEEvent) -> None:
        if self.broken:
            return
        if event.data == "[DONE]":
            self.done = True
            return
        chunk = _load(event)
        if chunk is None:
            self.broken = True
            return
        if not self.head:
            self.head = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
            if "system_fingerprint" in chunk:
                self.head["system_fingerprint"] = chunk["system_fingerprint"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("logprobs") is not None:
                self.broken = True  # log probabilities are not rebuilt: do not cache
                return
            index = choice.get("index", 0)
            into = self.choices.setdefault(index, self.new_choice(index))
            self.merge(into, choice)
            if choice.get("finish_reason") is not None:
                into["finish_reason"] = choice["finish_reason"]

    def result(self) -> JSON | None:
        if self.broken or not self.done or not self.choices:
            return None
        if any(c.get("finish_reason") is None for c in self.choices.values()):
            return None
        body: JSON = {**self.head, "object": self.object_name}
        body["choices"] = [self.finish_choice(self.choices[i]) for i in sorted(self.choices)]
        if self.usage is not None:
            body["usage"] = self.usage
        return body

    def new_choice(self, index: int) -> JSON:
        raise NotImplementedError

    def merge(self, into: JSON, choice: JSON) -> None:
        raise NotImplementedError

    def finish_choice(self, choice: JSON) -> JSON:
        return choice


class ChatCollector(_OpenAICollector):
    """`chat.completion.chunk` events → one `chat.completion`."""

    object_name = "chat.completion"
    _KNOWN = frozenset({"role", "content", "tool_calls", "refusal"})

    def new_choice(self, index: int) -> JSON:
        return {"index": index, "message": {"role": "assistant", "content": None}}

    def merge(self, into: JSON, choice: JSON) -> None:
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict) or not set(delta) <= self._KNOWN:
            self.broken = True  # audio, a legacy function_call...: not rebuilt
            return
        message = into["message"]
        for field in ("content", "refusal"):
            if delta.get(field) is not None:
                message[field] = (message.get(field) or "") + delta[field]
        for call in delta.get("tool_calls") or ():
            self._merge_tool_call(message, call)

    def _merge_tool_call(self, message: JSON, call: Any) -> None:
        if not isinstance(call, dict):
            self.broken = True
            return
        calls = message.setdefault("tool_calls", {})
        into = calls.setdefault(
            call.get("index", 0), {"id": None, "type": "function", "function": {"name": ""}}
        )
        if call.get("id"):
            into["id"] = call["id"]
        function = call.get("function") or {}
        if function.get("name"):
            into["function"]["name"] += function["name"]
        if function.get("arguments") is not None:
            into["function"]["arguments"] = (
                into["function"].get("arguments", "") + function["arguments"]
            )

    def finish_choice(self, choice: JSON) -> JSON:
        message = dict(choice["message"])
        calls = message.pop("tool_calls", None)
        if calls:
            message["tool_calls"] = [
                {**calls[i], "function": {"arguments": "", **calls[i]["function"]}}
                for i in sorted(calls)
            ]
        message.setdefault("refusal", None)
        return {**choice, "message": message, "logprobs": None}


class CompletionCollector(_OpenAICollector):
    """Legacy `text_completion` chunks → one `text_completion`."""

    object_name = "text_completion"

    def new_choice(self, index: int) -> JSON:
        return {"index": index, "text": "", "logprobs": None}

    def merge(self, into: JSON, choice: JSON) -> None:
        if isinstance(choice.get("text"), str):
            into["text"] += choice["text"]


class MessageCollector:
    """Anthropic `message_start` … `message_stop` events → one `message`."""

    _BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})

    def __init__(self) -> None:
        self.message: JSON | None = None
        self.blocks: dict[int, JSON] = {}
        self.json_parts: dict[int, list[str]] = {}
        self.stopped = False
        self.broken = False

    def ended(self) -> None:
        return None  # complete only with its own `message_stop`, which the transport requires

    def feed(self, event: SSEEvent) -> None:
        if self.broken:
            return
        data = _load(event)
        if data is None:
            self.broken = True
            return
        kind = data.get("type")
        if kind == "message_start" and isinstance(data.get("message"), dict):
            self.message = dict(data["message"])
        elif kind == "content_block_start":
            self._start(data)
        elif kind == "content_block_delta":
            self._delta(data)
        elif kind == "message_delta" and self.message is not None:
            self.message.update(data.get("delta") or {})
            usage = data.get("usage")
            if isinstance(usage, dict):
                self.message["usage"] = {**(self.message.get("usage") or {}), **usage}
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            self.broken = True

    def _start(self, data: JSON) -> None:
        block = data.get("content_block")
        if not isinstance(block, dict) or block.get("type") not in self._BLOCKS:
            self.broken = True
            return
        index = data.get("index", len(self.blocks))
        self.blocks[index] = dict(block)
        if block.get("type") == "tool_use":
            self.json_parts[index] = []

    def _delta(self, data: JSON) -> None:
        block = self.blocks.get(data.get("index", -1))
        delta = data.get("delta")
        if block is None or not isinstance(delta, dict):
            self.broken = True
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self.json_parts[data["index"]].append(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        else:
            self.broken = True  # citations and later delta kinds: not rebuilt

    def result(self) -> JSON | None:
        if self.broken or not self.stopped or self.message is None:
            return None
        content = []
        for index in sorted(self.blocks):
            block = self.blocks[index]
            if index in self.json_parts:
                text = "".join(self.json_parts[index])
                try:
                    block["input"] = orjson.loads(text) if text else {}
                except orjson.JSONDecodeError:
                    return None
            content.append(block)
        return {**self.message, "content": content}
