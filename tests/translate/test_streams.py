"""SPEC §3: streaming events translated both ways, checked by the SDKs' own accumulators."""

from __future__ import annotations

import json

from concord.providers.base import SSEEvent
from concord.translate.streams import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from concord.translate.usage import Usage
from tests.fakes.sdk import accumulate_anthropic, accumulate_openai


def chunk(delta=None, finish=None, usage=None, choices=True):
    body = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [],
    }
    if choices:
        body["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return SSEEvent(data=json.dumps(body))


def event(payload):
    return SSEEvent(data=json.dumps(payload), event=payload["type"])


def run(translator, events):
    out = []
    for item in events:
        out += translator.feed(item)
    return out + translator.finish()


OPENAI_USAGE = {
    "prompt_tokens": 30,
    "completion_tokens": 4,
    "total_tokens": 34,
    "prompt_tokens_details": {"cached_tokens": 10},
}


def test_openai_text_stream_as_anthropic_events():
    translator = OpenAIToAnthropicStream("claude-alias", input_tokens_hint=25)
    out = run(
        translator,
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, finish="stop"),
            chunk(choices=False, usage=OPENAI_USAGE),
            SSEEvent(data="[DONE]"),
        ],
    )
    assert [e.event for e in out] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message = accumulate_anthropic(out)
    assert message.id == "msg_s1"
    assert message.model == "claude-alias"
    assert message.content[0].text == "Hello"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 10)
    assert message.usage.output_tokens == 4
    assert translator.usage == Usage(input_tokens=30, output_tokens=4, cached_tokens=10)
    assert json.loads(out[0].data)["message"]["usage"]["input_tokens"] == 25


def test_openai_tool_call_stream_as_tool_use_blocks():
    out = run(
        OpenAIToAnthropicStream("m"),
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"content": "Let me check."}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ]
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "Paris"}'}}]}),
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "time", "arguments": "{}"},
                        }
                    ]
                }
            ),
            chunk({}, finish="tool_calls"),
            SSEEvent(data="[DONE]"),
        ],
    )
    message = accumulate_anthropic(out)
    assert message.stop_reason == "tool_use"
    text, first, second = message.content
    assert text.text == "Let me check."
    assert (first.id, first.name, first.input) == ("call_a", "weather", {"city": "Paris"})
    assert (second.id, second.name, second.input) == ("call_b", "time", {})
    deltas = [json.loads(e.data)["delta"] for e in out if e.event == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta", "input_json_delta"}


def test_openai_stream_without_done_is_closed_by_finish():
    translator = OpenAIToAnthropicStream("m")
    out = translator.feed(chunk({"content": "cut"}))
    out += translator.feed(chunk({}, finish="length"))
    out += translator.finish()
    message = accumulate_anthropic(out)
    assert message.stop_reason == "max_tokens"
    assert translator.finish() == []


def test_openai_error_in_stream_becomes_anthropic_error_event():
    translator = OpenAIToAnthropicStream("m")
    out = translator.feed(SSEEvent(data=json.dumps({"error": {"message": "overloaded"}})))
    assert out[0].event == "error"
    assert json.loads(out[0].data)["error"]["message"] == "overloaded"
    assert translator.finish() == []


ANTHROPIC_TEXT = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_77",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": 12,
                "output_tokens": 1,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 0,
            },
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Bon"}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "jour"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 6},
    },
    {"type": "message_stop"},
]


def test_anthropic_text_stream_as_openai_chunks_with_usage():
    translator = AnthropicToOpenAIStream("gpt-alias", include_usage=True)
    out = run(translator, [event(p) for p in ANTHROPIC_TEXT])
    first = json.loads(out[0].data)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    usage_chunk = json.loads(out[-2].data)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["prompt_tokens"] == 112
    assert out[-1].data == "[DONE]"
    completion = accumulate_openai(out)
    assert completion.id == "chatcmpl-77"
    assert completion.model == "gpt-alias"
    assert completion.choices[0].message.content == "Bonjour"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 112
    assert completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    assert translator.usage == Usage(input_tokens=112, output_tokens=6, cached_tokens=100)


def test_anthropic_stream_without_include_usage_has_no_usage_chunk():
    out = run(AnthropicToOpenAIStream("m", include_usage=False), [event(p) for p in ANTHROPIC_TEXT])
    bodies = [json.loads(e.data) for e in out[:-1]]
    assert all("usage" not in b and b["choices"] for b in bodies)
    assert bodies[-1]["choices"][0]["finish_reason"] == "stop"
    assert out[-1].data == "[DONE]"


# Two tool_use blocks streamed by Anthropic, arguments in pieces (before message_delta)
TWO_TOOL_USES = [
    ANTHROPIC_TEXT[0],
    {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
    },
    {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "input_json_delta", "partial_json": '"Rome"}'},
    },
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {}},
    },
    {
        "type": "content_block_delta",
        "index": 1,
        "delta": {"type": "input_json_delta", "partial_json": "{}"},
    },
    {"type": "content_block_stop", "index": 1},
]


def test_anthropic_tool_use_stream_as_tool_call_deltas():
    events = [
        *TWO_TOOL_USES,
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 30},
        },
        {"type": "message_stop"},
    ]
    out = run(AnthropicToOpenAIStream("m", include_usage=False), [event(p) for p in events])
    completion = accumulate_openai(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert [(c.id, c.function.name) for c in calls] == [
        ("toolu_1", "weather"),
        ("toolu_2", "clock"),
    ]
    assert json.loads(calls[0].function.arguments) == {"city": "Rome"}
    indexes = [
        json.loads(e.data)["choices"][0]["delta"]["tool_calls"][0]["index"]
        for e in out
        if e.data != "[DONE]" and "tool_calls" in json.loads(e.data)["choices"][0]["delta"]
    ]
    assert indexes == [0, 0, 0, 1, 1]


def test_anthropic_error_event_becomes_openai_error_data():
    translator = AnthropicToOpenAIStream("m", include_usage=True)
    translator.feed(event(ANTHROPIC_TEXT[0]))
    out = translator.feed(
        event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    )
    assert json.loads(out[0].data)["error"]["message"] == "Overloaded"
    assert translator.finish() == []


def test_stream_round_trip_anthropic_to_openai_and_back():
    to_openai = run(
        AnthropicToOpenAIStream("m", include_usage=True), [event(p) for p in ANTHROPIC_TEXT]
    )
    back = run(OpenAIToAnthropicStream("claude"), to_openai)
    message = accumulate_anthropic(back)
    assert message.content[0].text == "Bonjour"
    assert message.usage.input_tokens == 12
    assert message.usage.cache_read_input_tokens == 100
    assert message.usage.output_tokens == 6


def test_anthropic_tool_use_stream_as_legacy_function_call_deltas():
    events = [
        *TWO_TOOL_USES,
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}},
        {"type": "message_stop"},
    ]
    translator = AnthropicToOpenAIStream("m", include_usage=False, legacy_functions=True)
    out = run(translator, [event(p) for p in events])
    completion = accumulate_openai(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert not choice.message.tool_calls
    assert choice.message.function_call.name == "weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Rome"}
    deltas = [json.loads(e.data)["choices"][0]["delta"] for e in out if e.data != "[DONE]"]
    calls = [d["function_call"] for d in deltas if "function_call" in d]
    assert calls == [
        {"name": "weather", "arguments": ""},
        {"arguments": '{"city": '},
        {"arguments": '"Rome"}'},
    ]
    assert not any("tool_calls" in d for d in deltas)
