"""Translated streams: calls without arguments, and usage breakdowns kept as the non-streamed
translation keeps them (checked with the SDKs' own accumulators and types)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from concord.providers.base import SSEEvent
from concord.translate.anthropic_openai import (
    anthropic_response_to_openai,
    openai_response_to_anthropic,
)
from concord.translate.completions import ChatToCompletionStream
from concord.translate.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from concord.translate.usage import Usage, usage_from_anthropic, usage_from_openai
from tests.fakes.sdk import accumulate_anthropic, accumulate_openai

JSON = dict[str, Any]


def event(payload: JSON) -> SSEEvent:
    return SSEEvent(data=json.dumps(payload), event=payload["type"])


def run(translator: Any, events: list[SSEEvent]) -> list[SSEEvent]:
    out: list[SSEEvent] = []
    for item in events:
        out += translator.feed(item)
    return out + translator.finish()


def message_start(usage: JSON) -> JSON:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return {"type": "message_start", "message": message}


def tool_stream(*json_parts: str, calls: int = 1) -> list[SSEEvent]:
    """A Messages stream of `calls` tool_use blocks, each with these `input_json_delta`s."""
    events = [message_start({"input_tokens": 5, "output_tokens": 1})]
    for index in range(calls):
        block = {"type": "tool_use", "id": f"toolu_{index}", "name": f"tool{index}", "input": {}}
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        for part in json_parts:
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append({"type": "content_block_delta", "index": index, "delta": delta})
        events.append({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": "tool_use", "stop_sequence": None}
    events.append({"type": "message_delta", "delta": stop, "usage": {"output_tokens": 3}})
    events.append({"type": "message_stop"})
    return [event(p) for p in events]


@pytest.mark.parametrize("parts", [(), ("",), ("", "")])
def test_a_tool_call_without_input_streams_empty_object_arguments(parts: tuple[str, ...]):
    out = run(AnthropicToOpenAIStream("m", include_usage=False), tool_stream(*parts, calls=2))
    calls = accumulate_openai(out).choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("tool0", "{}"),
        ("tool1", "{}"),
    ]


def test_a_tool_call_with_input_gets_no_extra_arguments():
    out = run(AnthropicToOpenAIStream("m", include_usage=False), tool_stream('{"a":', " 1}"))
    call = accumulate_openai(out).choices[0].message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"a": 1}


@pytest.mark.parametrize("parts", [(), ("",)])
def test_a_legacy_function_call_without_input_streams_empty_object_arguments(parts):
    translator = AnthropicToOpenAIStream("m", include_usage=False, legacy_functions=True)
    out = run(translator, tool_stream(*parts, calls=2))
    pieces = [
        json.loads(e.data)["choices"][0]["delta"]["function_call"].get("arguments", "")
        for e in out[:-1]
        if json.loads(e.data)["choices"][0]["delta"].get("function_call")
    ]
    assert "".join(pieces) == "{}"  # the second call has no legacy form and adds nothing


# -- usage breakdowns --------------------------------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "output_tokens": 9,
    "cache_read_input_tokens": 60,
    "cache_creation_input_tokens": 30,
    "output_tokens_details": {"thinking_tokens": 4},
}
OPENAI_USAGE = {
    "prompt_tokens": 100,
    "completion_tokens": 9,
    "total_tokens": 109,
    "prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
    "completion_tokens_details": {"reasoning_tokens": 4},
}
BOTH = Usage(100, 9, cached_tokens=60, cache_write_tokens=30, reasoning_tokens=4)


def test_both_usages_read_the_breakdowns():
    assert usage_from_anthropic(ANTHROPIC_USAGE) == BOTH
    assert usage_from_openai(OPENAI_USAGE) == BOTH


def test_anthropic_breakdowns_reach_openai_streamed_or_not():
    body = {
        **message_start({})["message"],
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": ANTHROPIC_USAGE,
    }
    whole = anthropic_response_to_openai(body, model="m")["usage"]
    start = {k: v for k, v in ANTHROPIC_USAGE.items() if k != "output_tokens_details"}
    events = [
        message_start({**start, "output_tokens": 1}),
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 9, "output_tokens_details": {"thinking_tokens": 4}},
        },
        {"type": "message_stop"},
    ]
    translator = AnthropicToOpenAIStream("m", include_usage=True)
    streamed = accumulate_openai(run(translator, [event(p) for p in events])).usage
    assert streamed is not None and streamed.model_dump(exclude_none=True) == whole
    assert streamed.prompt_tokens_details.cache_write_tokens == 30
    assert streamed.completion_tokens_details.reasoning_tokens == 4
    assert translator.usage == BOTH


def openai_stream(usage: JSON | None) -> list[SSEEvent]:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "g"}
    chunks = [
        {**head, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
        {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    if usage is not None:
        chunks.append({**head, "choices": [], "usage": usage})
    return [SSEEvent(json.dumps(c)) for c in chunks] + [SSEEvent("[DONE]")]


def test_openai_breakdowns_reach_anthropic_streamed_or_not():
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "g",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi"},
                "finish_reason": "stop",
            }
        ],
        "usage": OPENAI_USAGE,
    }
    whole = openai_response_to_anthropic(body, model="m")["usage"]
    translator = OpenAIToAnthropicStream("m", input_tokens_hint=7)
    streamed = accumulate_anthropic(run(translator, openai_stream(OPENAI_USAGE))).usage
    assert streamed.model_dump(exclude_none=True) == whole
    assert (streamed.input_tokens, streamed.cache_creation_input_tokens) == (10, 30)
    assert streamed.output_tokens_details is not None
    assert streamed.output_tokens_details.thinking_tokens == 4


def test_an_anthropic_stream_reports_cache_creation_as_anthropic_does():
    """0 from the first event on, before any usage arrives, and after it."""
    for usage in (None, {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}):
        out = run(OpenAIToAnthropicStream("m", input_tokens_hint=5), openai_stream(usage))
        first = json.loads(out[0].data)["message"]["usage"]
        assert (first["cache_creation_input_tokens"], first["cache_read_input_tokens"]) == (0, 0)
        message = accumulate_anthropic(out)
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.output_tokens_details is None


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "refusal"),
        (None, "refusal"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        ("tool_calls", "tool_use"),
        ("a_reason_of_tomorrow", "refusal"),
    ],
)
def test_a_refusal_has_one_stop_reason_streamed_or_not(finish: str | None, expected: str) -> None:
    """An Anthropic client reads the same `stop_reason` for the same refusal either way."""
    refusal = "I can't help with that."
    whole = openai_response_to_anthropic(
        {
            "id": "c",
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": None, "refusal": refusal},
                    "finish_reason": finish,
                }
            ],
        },
        model="m",
    )
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "refusal": refusal}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]},
    ]
    events = [SSEEvent(data=json.dumps({"id": "c", "model": "m", **c})) for c in chunks]
    streamed = accumulate_anthropic(run(OpenAIToAnthropicStream("m"), events))
    assert whole["stop_reason"] == streamed.stop_reason == expected


def test_a_streamed_refusal_ends_as_a_refusal_for_anthropic_clients() -> None:
    """As the answer that is not streamed: the model declined, so stop_reason is `refusal`."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "refusal": "I can't "}}]},
        {"choices": [{"index": 0, "delta": {"refusal": "help with that."}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    events = [SSEEvent(data=json.dumps({"id": "c", "model": "m", **c})) for c in chunks]
    out = run(OpenAIToAnthropicStream("m"), events)
    message = accumulate_anthropic(out)
    assert message.stop_reason == "refusal"
    assert message.content[0].text == "I can't help with that."


def test_a_null_error_field_on_every_chunk_is_no_error() -> None:
    """Some OpenAI-compatible servers send `"error": null` on every chunk: the stream is
    relayed whole, to an Anthropic client and to a legacy completions client alike."""
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
    ]
    events = [
        SSEEvent(data=json.dumps({"id": "c", "model": "m", "error": None, **c})) for c in chunks
    ]
    message = accumulate_anthropic(run(OpenAIToAnthropicStream("m"), events))
    assert message.content[0].text == "Hello" and message.stop_reason == "end_turn"
    completion = run(ChatToCompletionStream(), events)
    texts = [json.loads(e.data)["choices"][0]["text"] for e in completion if e.data != "[DONE]"]
    assert "".join(texts) == "Hello"


@pytest.mark.parametrize(
    ("error", "anthropic_type"),
    [
        (
            {"message": "slow down", "type": "requests", "code": "rate_limit_exceeded"},
            "rate_limit_error",
        ),
        ({"message": "busy", "type": "overloaded_error"}, "overloaded_error"),
        ({"message": "boom", "type": "server_error"}, "api_error"),
    ],
)
def test_an_error_event_keeps_its_kind_for_anthropic_clients(
    error: dict[str, str], anthropic_type: str
) -> None:
    first = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
    events = [SSEEvent(data=json.dumps({"id": "c", "model": "m", **first}))]
    events.append(SSEEvent(data=json.dumps({"error": error})))
    out = run(OpenAIToAnthropicStream("m"), events)
    last = json.loads(out[-1].data)
    assert last["type"] == "error" and last["error"]["type"] == anthropic_type


def test_interleaved_parallel_tool_calls_reach_anthropic_clients_block_after_block() -> None:
    """OpenAI may send the arguments of parallel calls interleaved; Anthropic's content blocks
    come one after another, every delta to the block open at the time."""

    def call(index: int, **fields: object) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}

    def named(index: int, name: str) -> dict[str, object]:
        return call(index, id=f"call_{index}", type="function", function={"name": name})

    chunks = [
        named(0, "weather"),
        named(1, "time"),
        call(0, function={"arguments": '{"city": '}),
        call(1, function={"arguments": '{"zone": "UTC"}'}),
        call(0, function={"arguments": '"Paris"}'}),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    ]
    events = [SSEEvent(data=json.dumps({"id": "c", "model": "m", **c})) for c in chunks]
    out = run(OpenAIToAnthropicStream("m"), events)
    open_block: int | None = None
    for event in out:
        payload = json.loads(event.data)
        if payload["type"] == "content_block_start":
            assert open_block is None
            open_block = payload["index"]
        elif payload["type"] == "content_block_delta":
            assert payload["index"] == open_block
        elif payload["type"] == "content_block_stop":
            assert payload["index"] == open_block
            open_block = None
    message = accumulate_anthropic(out)
    calls = [(block.name, block.input) for block in message.content]
    assert calls == [("weather", {"city": "Paris"}), ("time", {"zone": "UTC"})]
    assert message.stop_reason == "tool_use"
