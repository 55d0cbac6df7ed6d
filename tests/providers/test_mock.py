"""SPEC §2.2.1: the mock provider answers every endpoint in the right wire format, offline."""

from __future__ import annotations

import base64
import json
import struct
import time

import pytest
from anthropic.types import Message
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion

from concord.engine.graph import ProviderSpec
from concord.providers.base import UpstreamRequest
from concord.providers.mock import MockProvider
from tests.fakes.sdk import accumulate_anthropic, accumulate_openai

MOCK = MockProvider(ProviderSpec(name="demo", type="mock"))
CHAT = {
    "model": "demo-model",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


async def collect(stream):
    return [event async for event in stream]


def test_mock_is_always_available_and_has_no_keys():
    assert MOCK.available
    assert MOCK.key_status() == []
    assert MOCK.native == {"chat", "completions", "embeddings", "messages"}


async def test_chat_echoes_the_last_user_message_with_word_counted_usage():
    completion = ChatCompletion.model_validate(
        (await MOCK.send(UpstreamRequest("chat", CHAT, 5))).body
    )
    assert completion.choices[0].message.content == "Echo: What is the capital of France?"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "demo-model"
    # 3 system words + 6 user words in; "Echo:" + 6 words out.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 7)


async def test_configured_reply_and_max_tokens_cut():
    mock = MockProvider(ProviderSpec(name="m", type="mock", reply="one two three four"))
    response = await mock.send(UpstreamRequest("chat", {**CHAT, "max_tokens": 2}, 5))
    completion = ChatCompletion.model_validate(response.body)
    assert completion.choices[0].message.content == "one two"
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


async def test_chat_stream_honours_include_usage():
    with_usage = await MOCK.stream(
        UpstreamRequest(
            "chat", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}, 5
        )
    )
    completion = accumulate_openai(await collect(with_usage))
    assert completion.choices[0].message.content == "Echo: What is the capital of France?"
    assert completion.usage.total_tokens == 16
    without = await collect(await MOCK.stream(UpstreamRequest("chat", {**CHAT, "stream": True}, 5)))
    assert all("usage" not in json.loads(e.data) for e in without if e.data != "[DONE]")
    assert accumulate_openai(without).usage is None


async def test_forced_tool_choice_answers_with_a_tool_call():
    body = {
        **CHAT,
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}}],
        "tool_choice": "required",
    }
    completion = ChatCompletion.model_validate(
        (await MOCK.send(UpstreamRequest("chat", body, 5))).body
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.choices[0].message.tool_calls[0].function.name == "weather"
    streamed = accumulate_openai(
        await collect(await MOCK.stream(UpstreamRequest("chat", {**body, "stream": True}, 5)))
    )
    assert streamed.choices[0].message.tool_calls[0].function.name == "weather"


async def test_auto_tool_choice_answers_with_text():
    body = {**CHAT, "tools": [{"type": "function", "function": {"name": "weather"}}]}
    completion = ChatCompletion.model_validate(
        (await MOCK.send(UpstreamRequest("chat", body, 5))).body
    )
    assert completion.choices[0].message.tool_calls is None


ANTHROPIC = {
    "model": "demo-claude",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be kind."}],
    "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello friend"}]}],
}


async def test_messages_answer_in_anthropic_format():
    message = Message.model_validate(
        (await MOCK.send(UpstreamRequest("messages", ANTHROPIC, 5))).body
    )
    assert message.id.startswith("msg_")
    assert message.content[0].text == "Echo: Hello friend"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 3)


async def test_messages_stream_full_sequence():
    events = await collect(
        await MOCK.stream(UpstreamRequest("messages", {**ANTHROPIC, "stream": True}, 5))
    )
    assert [e.event for e in events][:3] == ["message_start", "content_block_start", "ping"]
    message = accumulate_anthropic(events)
    assert message.content[0].text == "Echo: Hello friend"
    assert message.usage.output_tokens == 3


async def test_messages_forced_tool():
    body = {
        **ANTHROPIC,
        "tools": [
            {"name": "weather", "input_schema": WEATHER},
            {"name": "clock", "input_schema": {}},
        ],
        "tool_choice": {"type": "tool", "name": "clock"},
    }
    message = Message.model_validate((await MOCK.send(UpstreamRequest("messages", body, 5))).body)
    assert message.stop_reason == "tool_use"
    assert (message.content[0].type, message.content[0].name) == ("tool_use", "clock")
    streamed = accumulate_anthropic(
        await collect(await MOCK.stream(UpstreamRequest("messages", {**body, "stream": True}, 5)))
    )
    assert streamed.content[0].name == "clock" and streamed.content[0].input == {}


async def test_completions():
    body = {"model": "m", "prompt": "Once upon"}
    completion = Completion.model_validate(
        (await MOCK.send(UpstreamRequest("completions", body, 5))).body
    )
    assert completion.choices[0].text == "Echo: Once upon"
    events = await collect(
        await MOCK.stream(UpstreamRequest("completions", {**body, "stream": True}, 5))
    )
    texts = [c["text"] for e in events[:-1] for c in json.loads(e.data)["choices"]]
    assert "".join(texts) == "Echo: Once upon"
    assert events[-1].data == "[DONE]"


async def test_embeddings_are_deterministic_unit_vectors_with_requested_dimensions():
    body = {"model": "e", "input": ["alpha", "beta", "alpha"]}
    response = CreateEmbeddingResponse.model_validate(
        (await MOCK.send(UpstreamRequest("embeddings", body, 5))).body
    )
    vectors = [d.embedding for d in response.data]
    assert [len(v) for v in vectors] == [1536] * 3
    assert vectors[0] == vectors[2] != vectors[1]
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0)
    assert response.usage.prompt_tokens == 3
    small = {"model": "e", "input": "alpha", "dimensions": 16}
    first = (await MOCK.send(UpstreamRequest("embeddings", small, 5))).body["data"][0]["embedding"]
    again = (await MOCK.send(UpstreamRequest("embeddings", small, 5))).body["data"][0]["embedding"]
    assert len(first) == 16 and first == again


@pytest.mark.parametrize(
    ("value", "count", "tokens"),
    [("alpha beta", 1, 2), (["a", "b c"], 2, 3), ([1, 2, 3], 1, 3), ([[1, 2], [3]], 2, 3)],
)
async def test_embeddings_take_every_input_shape_openai_takes(
    value: object, count: int, tokens: int
):
    body = {"model": "e", "input": value, "dimensions": 4}
    response = CreateEmbeddingResponse.model_validate(
        (await MOCK.send(UpstreamRequest("embeddings", body, 5))).body
    )
    assert [d.index for d in response.data] == list(range(count))
    assert response.usage.prompt_tokens == tokens


async def test_embeddings_base64_encoding():
    body = {"model": "e", "input": "alpha", "dimensions": 4, "encoding_format": "base64"}
    plain = {"model": "e", "input": "alpha", "dimensions": 4}
    encoded = (await MOCK.send(UpstreamRequest("embeddings", body, 5))).body["data"][0]["embedding"]
    floats = struct.unpack("<4f", base64.b64decode(encoded))
    expected = (await MOCK.send(UpstreamRequest("embeddings", plain, 5))).body["data"][0][
        "embedding"
    ]
    assert list(floats) == pytest.approx(expected, abs=1e-6)


async def test_latency_is_applied():
    slow = MockProvider(ProviderSpec(name="slow", type="mock", latency=0.1))
    started = time.monotonic()
    await slow.send(UpstreamRequest("chat", CHAT, 5))
    assert time.monotonic() - started >= 0.1


@pytest.mark.parametrize(("prompt", "tokens"), [("a b c", 3), ([1, 2, 3], 3), ([[1, 2], [3]], 3)])
async def test_completions_count_a_prompt_of_token_ids(prompt: object, tokens: int):
    body = {"model": "m", "prompt": prompt}
    answer = (await MOCK.send(UpstreamRequest("completions", body, 5))).body
    assert answer["usage"]["prompt_tokens"] == tokens
