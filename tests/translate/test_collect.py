"""Streamed answers folded back into whole answers for the cache (SPEC §2.5): what is rebuilt, and
what is refused rather than cached wrong."""

from __future__ import annotations

import orjson

from concord.providers.base import SSEEvent
from concord.translate.collect import ChatCollector, CompletionCollector, MessageCollector


def events(*chunks: dict | str) -> list[SSEEvent]:
    return [SSEEvent(c if isinstance(c, str) else orjson.dumps(c).decode(), None) for c in chunks]


def chunk(delta: dict, finish: str | None = None, **extra: object) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 7,
        "model": "m",
        "choices": [choice],
    }


USAGE = {
    "id": "c1",
    "created": 7,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
}


def collect(
    collector: ChatCollector | CompletionCollector | MessageCollector, feed: list[SSEEvent]
) -> dict | None:
    for event in feed:
        collector.feed(event)
    return collector.result()


def test_chat_text_and_usage_are_rebuilt() -> None:
    body = collect(
        ChatCollector(),
        events(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}, "stop"),
            USAGE,
            "[DONE]",
        ),
    )
    assert body == {
        "id": "c1",
        "created": 7,
        "model": "m",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
            }
        ],
        "usage": USAGE["usage"],
    }


def test_chat_tool_call_arguments_are_joined() -> None:
    call = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "f", "arguments": ""},
    }
    body = collect(
        ChatCollector(),
        events(
            chunk({"role": "assistant", "tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls"),
            "[DONE]",
        ),
    )
    assert body is not None
    message = body["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


def test_what_cannot_be_rebuilt_is_not_cached() -> None:
    unfinished = events(chunk({"content": "Hel"}), "[DONE]")
    with_logprobs = events(chunk({"content": "x"}, "stop", logprobs={"content": []}), "[DONE]")
    audio = events(chunk({"audio": {"id": "a"}}, "stop"), "[DONE]")
    cut_off = events(chunk({"content": "x"}, "stop"))  # no [DONE]: the stream broke
    for feed in (unfinished, with_logprobs, audio, cut_off):
        assert collect(ChatCollector(), feed) is None


def test_legacy_completions_are_rebuilt() -> None:
    text = {"id": "t", "object": "text_completion", "created": 1, "model": "m"}
    body = collect(
        CompletionCollector(),
        events(
            {
                **text,
                "choices": [{"index": 0, "text": "a", "finish_reason": None, "logprobs": None}],
            },
            {
                **text,
                "choices": [{"index": 0, "text": "b", "finish_reason": "length", "logprobs": None}],
            },
            "[DONE]",
        ),
    )
    assert body is not None and body["object"] == "text_completion"
    assert body["choices"] == [
        {"index": 0, "text": "ab", "logprobs": None, "finish_reason": "length"}
    ]


def anthropic_stream(*middle: dict) -> list[SSEEvent]:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 9, "output_tokens": 1},
        },
    }
    end = [
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    ]
    return events(start, *middle, *end)


def test_anthropic_text_and_tool_use_are_rebuilt() -> None:
    body = collect(
        MessageCollector(),
        anthropic_stream(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Let me look."},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "tu_1", "name": "f", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"q": '},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '"x"}'},
            },
            {"type": "content_block_stop", "index": 1},
        ),
    )
    assert body is not None
    assert body["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "tu_1", "name": "f", "input": {"q": "x"}},
    ]
    assert body["stop_reason"] == "tool_use"
    assert body["usage"] == {"input_tokens": 9, "output_tokens": 12}


def test_an_anthropic_stream_that_errors_or_stops_early_is_not_cached() -> None:
    text = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    errored = anthropic_stream(text, {"type": "error", "error": {"type": "overloaded_error"}})
    early = anthropic_stream(text)[:-1]  # no message_stop
    unknown = anthropic_stream(
        text, {"type": "content_block_delta", "index": 0, "delta": {"type": "citations_delta"}}
    )
    for feed in (errored, early, unknown):
        assert collect(MessageCollector(), feed) is None
