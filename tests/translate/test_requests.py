"""SPEC §3: requests translated both ways keep system prompts, turns, images, tools, params."""

from __future__ import annotations

import json

import pytest

from concord.translate.anthropic_openai import (
    anthropic_request_to_openai,
    openai_request_to_anthropic,
)
from tests.fakes.sdk import validate_anthropic_request, validate_openai_request

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
PNG = "iVBORw0KGgo="


def test_anthropic_system_string_becomes_leading_system_message():
    out = anthropic_request_to_openai(
        {
            "model": "gpt-4o",
            "max_tokens": 100,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    validate_openai_request(out)
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert out["max_completion_tokens"] == 100


def test_anthropic_system_blocks_are_joined():
    out = anthropic_request_to_openai(
        {
            "model": "m",
            "max_tokens": 10,
            "system": [
                {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "Two."},
            ],
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    assert out["messages"][0] == {"role": "system", "content": "One.\n\nTwo."}


def test_anthropic_parameters_map_to_openai_names():
    out = anthropic_request_to_openai(
        {
            "model": "m",
            "max_tokens": 50,
            "temperature": 0.3,
            "top_p": 0.9,
            "top_k": 5,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"},
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        }
    )
    assert out["temperature"] == 0.3 and out["top_p"] == 0.9
    assert out["stop"] == ["END"]
    assert out["user"] == "u-42"
    assert out["stream"] is True
    assert out["stream_options"] == {"include_usage": True}
    assert "top_k" not in out
    validate_openai_request(out)


def test_older_servers_can_get_max_tokens():
    body = {"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "x"}]}
    out = anthropic_request_to_openai(body, max_tokens_field="max_tokens")
    assert out["max_tokens"] == 7 and "max_completion_tokens" not in out


def test_anthropic_images_become_image_url_parts():
    out = anthropic_request_to_openai(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x/cat.jpg"}},
                    ],
                }
            ],
        }
    )
    validate_openai_request(out)
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x/cat.jpg"}},
    ]


def test_anthropic_tool_round_trip_becomes_tool_calls_and_tool_messages():
    out = anthropic_request_to_openai(
        {
            "model": "m",
            "max_tokens": 10,
            "tools": [
                {"name": "weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}
            ],
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "toolu_2",
                            "name": "weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_2",
                            "content": [{"type": "text", "text": "25C"}],
                        },
                        {"type": "text", "text": "Which is warmer?"},
                    ],
                },
            ],
        }
    )
    validate_openai_request(out)
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": WEATHER_SCHEMA,
                "description": "Weather now",
            },
        }
    ]
    assistant, tool1, tool2, user = out["messages"][1:]
    assert assistant["content"] == "Checking."
    assert [c["id"] for c in assistant["tool_calls"]] == ["toolu_1", "toolu_2"]
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"city": "Rome"}
    assert tool1 == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
    assert tool2 == {"role": "tool", "tool_call_id": "toolu_2", "content": "25C"}
    assert user == {"role": "user", "content": "Which is warmer?"}


@pytest.mark.parametrize(
    ("anthropic_choice", "openai_choice"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice_both_ways(anthropic_choice, openai_choice):
    tools_a = [{"name": "weather", "input_schema": WEATHER_SCHEMA}]
    tools_o = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER_SCHEMA}}]
    messages = [{"role": "user", "content": "Hi"}]
    to_openai = anthropic_request_to_openai(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": messages,
            "tools": tools_a,
            "tool_choice": anthropic_choice,
        }
    )
    assert to_openai["tool_choice"] == openai_choice
    to_anthropic = openai_request_to_anthropic(
        {"model": "m", "messages": messages, "tools": tools_o, "tool_choice": openai_choice}
    )
    assert to_anthropic["tool_choice"] == anthropic_choice
    validate_anthropic_request(to_anthropic)


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "parallel_tool_calls": False,
        }
    )
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert out["tools"] == [{"name": "f", "input_schema": {"type": "object", "properties": {}}}]
    back = anthropic_request_to_openai(out)
    assert back["parallel_tool_calls"] is False


def test_openai_system_and_developer_messages_become_top_level_system():
    out = openai_request_to_anthropic(
        {
            "model": "claude",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Salut"},
                {"role": "user", "content": "Again"},
            ],
        },
        default_max_tokens=321,
    )
    validate_anthropic_request(out)
    assert out["system"] == [
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Use French."},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["max_tokens"] == 321


@pytest.mark.parametrize(
    ("sampling", "sent"),
    [
        ({"top_p": 0.5}, {"top_p": 0.5}),
        ({"temperature": 0.2}, {"temperature": 0.2}),
        # Claude models since Opus 4.1 refuse both: the one that changes nothing goes
        ({"temperature": 0.2, "top_p": 1}, {"temperature": 0.2}),
        ({"temperature": 1, "top_p": 0.3}, {"top_p": 0.3}),
        ({"temperature": 1.7, "top_p": 0.3}, {"top_p": 0.3}),  # 1.7 is Anthropic's 1
        ({"temperature": 1, "top_p": 1}, {"temperature": 1.0}),
        # both narrow the sampling: temperature, the one Anthropic advises altering
        ({"temperature": 0.5, "top_p": 0.9}, {"temperature": 0.5}),
        ({"temperature": 0, "top_p": 0.1}, {"temperature": 0.0}),
    ],
)
def test_openai_sampling_reaches_anthropic_as_one_parameter(
    sampling: dict[str, float], sent: dict[str, float]
):
    turns = [{"role": "user", "content": "Hi"}]
    out = openai_request_to_anthropic({"model": "claude", "messages": turns, **sampling})
    validate_anthropic_request(out)
    assert {name: out[name] for name in ("temperature", "top_p") if name in out} == sent


def test_openai_parameters_map_to_anthropic_names():
    out = openai_request_to_anthropic(
        {
            "model": "claude",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_completion_tokens": 64,
            "max_tokens": 1000,
            "temperature": 1.7,
            "stop": "STOP",
            "user": "u-1",
            "stream": True,
            "n": 1,
        }
    )
    validate_anthropic_request(out)
    assert out["max_tokens"] == 64
    assert out["temperature"] == 1.0  # Anthropic's range ends at 1
    assert out["stop_sequences"] == ["STOP"]
    assert out["metadata"] == {"user_id": "u-1"}
    assert out["stream"] is True
    assert "n" not in out


def test_openai_images_become_base64_and_url_sources():
    out = openai_request_to_anthropic(
        {
            "model": "claude",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is it?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/jpeg;base64,{PNG}"},
                        },
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://x/y.png", "detail": "low"},
                        },
                    ],
                }
            ],
        }
    )
    validate_anthropic_request(out)
    assert out["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
    ]


def test_openai_tool_results_merge_into_one_user_turn():
    out = openai_request_to_anthropic(
        {
            "model": "claude",
            "messages": [
                {"role": "user", "content": "Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "25C"}],
                },
                {"role": "user", "content": "Warmer?"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "weather", "parameters": WEATHER_SCHEMA}}
            ],
        }
    )
    validate_anthropic_request(out)
    _user, assistant, results = out["messages"]
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
            {"type": "text", "text": "Warmer?"},
        ],
    }


def test_request_round_trip_keeps_the_conversation():
    original = {
        "model": "m",
        "max_tokens": 99,
        "system": "Sys",
        "temperature": 0.2,
        "stop_sequences": ["X"],
        "metadata": {"user_id": "u"},
        "tools": [{"name": "weather", "description": "d", "input_schema": WEATHER_SCHEMA}],
        "tool_choice": {"type": "any"},
        "messages": [
            {"role": "user", "content": "Hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "cold"}],
            },
        ],
    }
    back = openai_request_to_anthropic(anthropic_request_to_openai(original))
    assert back == original


def test_legacy_functions_become_tools_with_one_call_per_turn():
    function = {"name": "get_weather", "parameters": WEATHER_SCHEMA}
    hello = [{"role": "user", "content": "Weather in Oslo?"}]
    forced = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": hello,
            "functions": [function],
            "function_call": {"name": "get_weather"},
        }
    )
    assert forced["tools"] == [{"name": "get_weather", "input_schema": WEATHER_SCHEMA}]
    assert forced["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }
    validate_anthropic_request(forced)
    auto = openai_request_to_anthropic({"model": "m", "messages": hello, "functions": [function]})
    assert auto["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    off = {"model": "m", "messages": hello, "functions": [function], "function_call": "none"}
    assert openai_request_to_anthropic(off)["tool_choice"] == {"type": "none"}


def test_legacy_function_message_answers_the_function_call_before_it():
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {"role": "function", "name": "get_weather", "content": "sunny"},
                {"role": "user", "content": "Thanks"},
            ],
            "functions": [{"name": "get_weather", "parameters": WEATHER_SCHEMA}],
        }
    )
    assistant, user = out["messages"][1], out["messages"][2]
    tool_use = assistant["content"][0]
    assert (tool_use["type"], tool_use["name"], tool_use["input"]) == (
        "tool_use",
        "get_weather",
        {"city": "Oslo"},
    )
    assert user["content"] == [
        {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny"},
        {"type": "text", "text": "Thanks"},
    ]
    validate_anthropic_request(out)
