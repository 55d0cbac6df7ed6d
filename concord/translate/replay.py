"""A complete answer as the stream it stands for.

Two places hold a whole answer where a stream was asked for: the cache (SPEC §2.5: "A cached
response is replayed as a stream when the client asks for one"; it stores complete client-format
bodies) and an upstream that ignores `stream: true` and answers JSON (`providers.http`). These
pure functions turn one into the event stream an SDK expects, in one piece (the answer is already
complete, so there is nothing to gain from trickling it): OpenAI chat chunks, legacy completion
chunks (each with the usage chunk when `stream_options.include_usage` asked for it, then
`[DONE]`), or Anthropic's full event sequence from `message_start` to `message_stop`.
"""

from __future__ import annotations

from typing import Any

import orjson

from concord.engine.graph import Endpoint

JSON = dict[str, Any]
_DONE = b"data: [DONE]\n\n"


def with_model(body: bytes, model: str) -> tuple[bytes, JSON | None]:
    """The cached body naming the `model` this client asked for (two requested names may resolve
    to one cached entry), and the parsed body (None when it is not a JSON object)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body, None
    if not isinstance(parsed, dict):
        return body, None
    if "model" in parsed and parsed["model"] != model:
        parsed["model"] = model
        return orjson.dumps(parsed), parsed
    return body, parsed


def replay_stream(endpoint: Endpoint, body: JSON, *, include_usage: bool) -> bytes:
    """The SSE bytes of `body` (a complete response of `endpoint`) streamed to the client."""
    if endpoint == "messages":
        return b"".join(_anthropic(payload) for payload in anthropic_events(body))
    if endpoint == "completions":
        chunks = completion_chunks(body, include_usage=include_usage)
    else:
        chunks = chat_chunks(body, include_usage=include_usage)
    return b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks) + _DONE


# -- OpenAI chat --------------------------------------------------------------------------------


def chat_chunks(body: JSON, *, include_usage: bool) -> list[JSON]:
    """`chat.completion` → `chat.completion.chunk`s: per choice its role, content, tool calls (or
    legacy function call) and finish reason; then the usage-only chunk if asked for."""
    head = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body.get("model"),
        "system_fingerprint": body.get("system_fingerprint"),
    }

    def chunk(choices: list[JSON]) -> JSON:
        out = dict(head, choices=choices)
        if include_usage:
            out["usage"] = None  # OpenAI: null on every chunk but the last
        return out

    chunks: list[JSON] = []
    for position, choice in enumerate(_list(body.get("choices"))):
        index = choice.get("index", position)
        message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
        delta: JSON = {"role": message.get("role", "assistant"), "content": message.get("content")}
        if message.get("refusal") is not None:
            delta["refusal"] = message["refusal"]
        calls = [dict(call, index=i) for i, call in enumerate(_list(message.get("tool_calls")))]
        if calls:
            delta["tool_calls"] = calls
        if isinstance(message.get("function_call"), dict):  # a legacy `functions` answer
            delta["function_call"] = message["function_call"]
        entry = {"index": index, "delta": delta, "finish_reason": None, "logprobs": None}
        chunks.append(chunk([entry]))
        finish = {
            "index": index,
            "delta": {},
            "finish_reason": choice.get("finish_reason"),
            "logprobs": choice.get("logprobs"),
        }
        chunks.append(chunk([finish]))
    if include_usage:
        chunks.append(dict(head, choices=[], usage=body.get("usage")))
    return chunks


# -- OpenAI legacy completions ------------------------------------------------------------------


def completion_chunks(body: JSON, *, include_usage: bool) -> list[JSON]:
    """`text_completion` → its streamed chunks (same object type, text per choice)."""
    head = {
        "id": body.get("id"),
        "object": "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    chunks: list[JSON] = []
    for position, choice in enumerate(_list(body.get("choices"))):
        index = choice.get("index", position)
        text = {"index": index, "text": choice.get("text", ""), "logprobs": None}
        chunks.append(dict(head, choices=[dict(text, finish_reason=None)]))
        finish = {
            "index": index,
            "text": "",
            "logprobs": choice.get("logprobs"),
            "finish_reason": choice.get("finish_reason"),
        }
        chunks.append(dict(head, choices=[finish]))
    if include_usage:
        chunks.append(dict(head, choices=[], usage=body.get("usage")))
    return chunks


# -- Anthropic Messages -------------------------------------------------------------------------


def anthropic_events(body: JSON) -> list[JSON]:
    """A `message` → message_start, one start/delta/stop per content block, message_delta
    (stop reason, output tokens), message_stop: the sequence the Anthropic SDK assembles."""
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    start_usage = dict(usage, output_tokens=min(int(usage.get("output_tokens", 0) or 0), 1))
    message = dict(body, content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    events: list[JSON] = [{"type": "message_start", "message": message}]
    for index, block in enumerate(_list(body.get("content"))):
        start, delta = _split_block(block)
        events.append({"type": "content_block_start", "index": index, "content_block": start})
        if delta is not None:
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        if block.get("type") == "thinking" and block.get("signature"):
            signature = {"type": "signature_delta", "signature": block["signature"]}
            events.append({"type": "content_block_delta", "index": index, "delta": signature})
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": body.get("stop_reason"),
                "stop_sequence": body.get("stop_sequence"),
            },
            "usage": {"output_tokens": usage.get("output_tokens", 0)},
        }
    )
    events.append({"type": "message_stop"})
    return events


def _split_block(block: JSON) -> tuple[JSON, JSON | None]:
    """A content block as its empty `content_block_start` form and the delta that fills it."""
    kind = block.get("type")
    if kind == "text":
        return dict(block, text=""), {"type": "text_delta", "text": block.get("text", "")}
    if kind in ("tool_use", "server_tool_use"):
        arguments = orjson.dumps(block.get("input") or {}).decode()
        return dict(block, input={}), {"type": "input_json_delta", "partial_json": arguments}
    if kind == "thinking":
        start = dict(block, thinking="", signature="")
        return start, {"type": "thinking_delta", "thinking": block.get("thinking", "")}
    return block, None  # redacted thinking and other blocks arrive whole in their start event


def _anthropic(payload: JSON) -> bytes:
    return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _list(value: Any) -> list[JSON]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
