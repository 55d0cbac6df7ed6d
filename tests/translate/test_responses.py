"""SPEC §3: responses, stop reasons, usage (cached tokens included), ids and error bodies."""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion

from concord.translate.anthropic_openai import (
    anthropic_error_to_openai,
    anthropic_response_to_openai,
    openai_error_to_anthropic,
    openai_response_to_anthropic,
)


def openai_completion(message, finish="stop", usage=None):
    return {
        "id": "chatcmpl-abc123",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": usage
        or {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }


def anthropic_message(content, stop="end_turn", usage=None):
    return {
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage
        or {
            "input_tokens": 40,
            "output_tokens": 20,
            "cache_read_input_tokens": 60,
            "cache_creation_input_tokens": 0,
        },
    }


def test_openai_text_response_as_anthropic_message():
    out = openai_response_to_anthropic(
        openai_completion({"role": "assistant", "content": "Hello!"}), model="gpt-4o"
    )
    message = Message.model_validate(out)
    assert message.id == "msg_abc123"
    assert message.model == "gpt-4o"
    assert message.content[0].type == "text" and message.content[0].text == "Hello!"
    assert message.stop_reason == "end_turn"
    # OpenAI's prompt_tokens include cached reads; Anthropic's input_tokens exclude them.
    assert message.usage.input_tokens == 40
    assert message.usage.cache_read_input_tokens == 60
    assert message.usage.output_tokens == 20


def test_openai_tool_calls_as_tool_use_blocks():
    body = openai_completion(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_9",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        finish="tool_calls",
    )
    message = Message.model_validate(openai_response_to_anthropic(body))
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.id, block.name, block.input) == ("call_9", "weather", {"city": "Paris"})


def test_anthropic_text_response_as_chat_completion():
    out = anthropic_response_to_openai(
        anthropic_message([{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}])
    )
    completion = ChatCompletion.model_validate(out)
    assert completion.id == "chatcmpl-01XYZ"
    assert completion.object == "chat.completion"
    assert completion.model == "claude-sonnet-4-5"
    assert completion.choices[0].message.content == "Hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 100
    assert completion.usage.completion_tokens == 20
    assert completion.usage.total_tokens == 120
    assert completion.usage.prompt_tokens_details.cached_tokens == 60


def test_anthropic_tool_use_as_tool_calls():
    out = anthropic_response_to_openai(
        anthropic_message(
            [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
            stop="tool_use",
        ),
        model="claude",
    )
    completion = ChatCompletion.model_validate(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    call = choice.message.tool_calls[0]
    assert call.id == "toolu_1" and call.function.name == "weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("anthropic_stop", "openai_finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(anthropic_stop, openai_finish):
    out = anthropic_response_to_openai(
        anthropic_message([{"type": "text", "text": "x"}], anthropic_stop)
    )
    assert out["choices"][0]["finish_reason"] == openai_finish
    back = openai_response_to_anthropic(out)
    expected = "end_turn" if anthropic_stop == "stop_sequence" else anthropic_stop
    assert back["stop_reason"] == expected


def test_usage_round_trip_keeps_cached_tokens():
    original = anthropic_message(
        [{"type": "text", "text": "x"}],
        usage={
            "input_tokens": 5,
            "output_tokens": 7,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 0,
        },
    )
    back = openai_response_to_anthropic(anthropic_response_to_openai(original))
    assert back["usage"]["input_tokens"] == 5
    assert back["usage"]["cache_read_input_tokens"] == 1000
    assert back["usage"]["output_tokens"] == 7


def test_anthropic_error_body_as_openai_error():
    body = {"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}
    out = anthropic_error_to_openai(body, 429)
    assert out == {
        "error": {
            "message": "Slow down",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert anthropic_error_to_openai(overloaded, 529)["error"]["type"] == "server_error"


def test_anthropic_context_error_gets_openai_context_code():
    body = {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "prompt is too long: 210000 tokens > 200000",
        },
    }
    assert anthropic_error_to_openai(body, 400)["error"]["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
    ],
)
def test_openai_error_body_as_anthropic_error(status, kind):
    body = {"error": {"message": "boom", "type": "x", "param": None, "code": None}}
    assert openai_error_to_anthropic(body, status) == {
        "type": "error",
        "error": {"type": kind, "message": "boom"},
    }


def test_error_bodies_that_are_not_json_keep_their_text():
    assert openai_error_to_anthropic("Bad Gateway", 502)["error"]["message"] == "Bad Gateway"
    assert anthropic_error_to_openai(None, 500)["error"]["type"] == "server_error"


def test_anthropic_tool_use_as_legacy_function_call():
    body = anthropic_message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Rome"}},
            {"type": "tool_use", "id": "toolu_2", "name": "clock", "input": {}},
        ],
        stop="tool_use",
    )
    out = anthropic_response_to_openai(body, model="m", legacy_functions=True)
    completion = ChatCompletion.model_validate(out)
    choice = completion.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None and "tool_calls" not in out["choices"][0]["message"]
    assert choice.message.function_call.name == "weather"  # only the first: one call, legacy
    assert json.loads(choice.message.function_call.arguments) == {"city": "Rome"}
    text = anthropic_message([{"type": "text", "text": "Sunny."}])
    plain = ChatCompletion.model_validate(
        anthropic_response_to_openai(text, legacy_functions=True)
    ).choices[0]
    assert (plain.finish_reason, plain.message.content) == ("stop", "Sunny.")
    assert plain.message.function_call is None
