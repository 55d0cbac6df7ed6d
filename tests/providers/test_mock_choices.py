"""The mock through the gateway as an `openai` SDK user sees it: `n`, several prompts, several
embedding inputs, streamed choices, and the Messages wire left whole (SPEC §2.2.1)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from tests.gateway import conftest as gateway_conftest
from tests.gateway.conftest import MakeGateway

make_gateway = gateway_conftest.make_gateway  # the in-process gateway and its SDK clients

CONFIG = """
providers:
  demo: {type: mock}
models:
  gpt-4o: {targets: [demo/gpt-4o]}
  instruct: {targets: [demo/instruct]}
  text-embedding-3-small: {targets: [demo/te3s]}
  claude-sonnet: {targets: [demo/claude-sonnet]}
"""
CACHED = CONFIG + "defaults:\n  cache: {ttl: 10m}\n"
ASK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "name three colours"},
]
ECHO = "Echo: name three colours"  # 4 words; the input is 2 + 3 = 5 words
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def per_index(chunks: list[ChatCompletionChunk]) -> dict[int, list[Any]]:
    """Each choice's deltas in arrival order, after checking every chunk carries one choice."""
    choices: dict[int, list[Any]] = defaultdict(list)
    for chunk in chunks:
        assert len(chunk.choices) <= 1, "OpenAI streams one choice per chunk"
        for choice in chunk.choices:
            choices[choice.index].append(choice)
    return dict(choices)


def finishes_last(choices: list[Any]) -> str | None:
    """The choice's finish_reason, after checking it comes once, on its last chunk."""
    reasons = [c.finish_reason for c in choices if c.finish_reason is not None]
    assert len(reasons) == 1 and choices[-1].finish_reason == reasons[0]
    return reasons[0]


# ---- chat ---------------------------------------------------------------------------------------


async def test_chat_returns_n_choices_with_usage_summed(make_gateway: MakeGateway):
    gw = make_gateway(CONFIG)
    completion = await gw.openai().chat.completions.create(model="gpt-4o", messages=ASK, n=3)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert {c.message.content for c in completion.choices} == {ECHO}
    assert {c.finish_reason for c in completion.choices} == {"stop"}
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (5, 12, 17)
    assert gw.recorder.records[-1].output_tokens == 12


async def test_chat_without_n_still_has_one_choice(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    completion = await client.chat.completions.create(model="gpt-4o", messages=ASK)
    assert [c.index for c in completion.choices] == [0]
    assert completion.usage.completion_tokens == 4


async def test_max_tokens_cuts_every_choice(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=ASK, n=2, max_tokens=2
    )
    assert [(c.message.content, c.finish_reason) for c in completion.choices] == [
        ("Echo: name", "length")
    ] * 2
    assert completion.usage.completion_tokens == 4


async def test_forced_tool_gives_every_choice_its_own_call(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    completion = await client.chat.completions.create(
        model="gpt-4o", messages=ASK, n=2, tools=[WEATHER], tool_choice="required"
    )
    calls = [c.message.tool_calls[0] for c in completion.choices]
    assert [c.function.name for c in calls] == ["weather", "weather"]
    assert calls[0].id != calls[1].id
    assert {c.finish_reason for c in completion.choices} == {"tool_calls"}
    assert completion.usage.completion_tokens == 4  # 1 + the one word of `{}`, twice


async def test_chat_stream_interleaves_choices_then_sends_usage(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=ASK, n=3, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    *answer, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 12)
    assert all(chunk.usage is None for chunk in answer)
    choices = per_index(answer)
    assert sorted(choices) == [0, 1, 2]
    for deltas in choices.values():
        assert deltas[0].delta.role == "assistant"
        assert "".join(d.delta.content or "" for d in deltas) == ECHO
        assert finishes_last(deltas) == "stop"


async def test_chat_stream_without_usage_has_no_usage_chunk(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    stream = await client.chat.completions.create(model="gpt-4o", messages=ASK, n=2, stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    assert sorted(per_index(chunks)) == [0, 1]


async def test_sdk_stream_helper_rebuilds_every_choice(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    async with client.chat.completions.stream(
        model="gpt-4o",
        messages=ASK,
        n=2,
        tools=[WEATHER],
        tool_choice="required",
        stream_options={"include_usage": True},
    ) as stream:
        completion = await stream.get_final_completion()
    assert [c.index for c in completion.choices] == [0, 1]
    assert [c.finish_reason for c in completion.choices] == ["tool_calls"] * 2
    calls = [c.message.tool_calls[0] for c in completion.choices]
    assert [(c.function.name, c.function.arguments) for c in calls] == [("weather", "{}")] * 2
    assert calls[0].id != calls[1].id
    assert completion.usage.completion_tokens == 4


async def test_a_cached_multi_choice_answer_replays_whole(make_gateway: MakeGateway):
    client = make_gateway(CACHED).openai()
    ask: dict[str, Any] = {"model": "gpt-4o", "messages": ASK, "n": 2, "temperature": 0}
    stream = await client.chat.completions.create(**ask, stream=True)
    streamed = per_index([chunk async for chunk in stream])
    raw = await client.chat.completions.with_raw_response.create(**ask)
    assert raw.headers["x-concord-cache"] == "hit"
    replayed = raw.parse()
    assert [(c.index, c.message.content) for c in replayed.choices] == [(0, ECHO), (1, ECHO)]
    assert sorted(streamed) == [0, 1]
    assert replayed.usage.completion_tokens == 8
    again = await client.chat.completions.create(**ask, stream=True)
    replayed_stream = per_index([chunk async for chunk in again])
    assert sorted(replayed_stream) == [0, 1]
    for deltas in replayed_stream.values():
        assert "".join(d.delta.content or "" for d in deltas) == ECHO
        assert finishes_last(deltas) == "stop"


@pytest.mark.parametrize(("n", "problem"), [(0, "minimum"), (129, "maximum")])
@pytest.mark.parametrize("stream", [False, True])
async def test_n_out_of_range_is_refused_as_openai_refuses_it(
    make_gateway: MakeGateway, n: int, problem: str, stream: bool
):
    client = make_gateway(CONFIG).openai()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="gpt-4o", messages=ASK, n=n, stream=stream)
    assert caught.value.param == "n"
    assert problem in caught.value.message


# ---- legacy completions --------------------------------------------------------------------------


async def test_several_prompts_give_n_choices_each_in_prompt_order(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    completion = await client.completions.create(
        model="instruct", prompt=["red green", "blue"], n=2
    )
    assert [(c.index, c.text) for c in completion.choices] == [
        (0, "Echo: red green"),
        (1, "Echo: red green"),
        (2, "Echo: blue"),
        (3, "Echo: blue"),
    ]
    assert {c.finish_reason for c in completion.choices} == {"stop"}
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 10, 13)


@pytest.mark.parametrize(
    ("prompt", "choices", "prompt_tokens"),
    [("one", 1, 1), (["one"], 1, 1), ([1, 2, 3], 1, 3), ([[1, 2], [3]], 2, 3)],
)
async def test_every_prompt_shape_gives_one_choice_per_prompt(
    make_gateway: MakeGateway, prompt: Any, choices: int, prompt_tokens: int
):
    client = make_gateway(CONFIG).openai()
    completion = await client.completions.create(model="instruct", prompt=prompt)
    assert [c.index for c in completion.choices] == list(range(choices))
    assert completion.usage.prompt_tokens == prompt_tokens


async def test_several_prompts_stream_each_choice_to_its_own_finish(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    stream = await client.completions.create(
        model="instruct",
        prompt=["red green", "blue"],
        n=2,
        max_tokens=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks: list[Completion] = [chunk async for chunk in stream]
    *answer, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 8)
    texts: dict[int, list[Any]] = defaultdict(list)
    for chunk in answer:
        assert len(chunk.choices) == 1
        texts[chunk.choices[0].index].append(chunk.choices[0])
    rebuilt = {i: ("".join(c.text for c in cs), finishes_last(cs)) for i, cs in texts.items()}
    assert rebuilt == {
        0: ("Echo: red", "length"),
        1: ("Echo: red", "length"),
        2: ("Echo: blue", "stop"),
        3: ("Echo: blue", "stop"),
    }


# ---- embeddings ---------------------------------------------------------------------------------


async def test_embeddings_one_per_input_in_order(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    many = await client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta gamma", "alpha"], dimensions=8
    )
    assert [d.index for d in many.data] == [0, 1, 2]
    alone = await client.embeddings.create(
        model="text-embedding-3-small", input="beta gamma", dimensions=8
    )
    assert many.data[1].embedding == pytest.approx(alone.data[0].embedding)
    assert many.data[0].embedding == many.data[2].embedding != many.data[1].embedding
    assert (many.usage.prompt_tokens, many.usage.total_tokens) == (4, 4)


@pytest.mark.parametrize(("value", "count", "tokens"), [([1, 2, 3], 1, 3), ([[1, 2], [3]], 2, 3)])
async def test_embeddings_of_token_arrays(
    make_gateway: MakeGateway, value: Any, count: int, tokens: int
):
    client = make_gateway(CONFIG).openai()
    response = await client.embeddings.create(
        model="text-embedding-3-small", input=value, dimensions=4, encoding_format="float"
    )
    assert [d.index for d in response.data] == list(range(count))
    assert all(len(d.embedding) == 4 for d in response.data)
    assert response.usage.prompt_tokens == tokens


async def test_sdk_default_base64_decodes_to_the_float_vectors(make_gateway: MakeGateway):
    client = make_gateway(CONFIG).openai()
    ask: dict[str, Any] = {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 4}
    packed = await client.embeddings.create(**ask)  # the SDK asks for base64 and decodes it
    floats = await client.embeddings.create(**ask, encoding_format="float")
    for decoded, plain in zip(packed.data, floats.data, strict=True):
        assert decoded.index == plain.index
        assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-6)


# ---- the Anthropic wire -------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_answer_once_whatever_else_the_body_holds(
    make_gateway: MakeGateway, stream: bool
):
    client = make_gateway(CONFIG).anthropic()
    ask: dict[str, Any] = {
        "model": "claude-sonnet",
        "max_tokens": 50,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "name three colours"}],
        "extra_body": {"n": 3},
    }
    if stream:
        async with client.messages.stream(**ask) as events:
            message = await events.get_final_message()
    else:
        message = await client.messages.create(**ask)
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == ECHO
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (5, 4)
