"""Usage breakdowns survive translation, streamed or not, in the fields the SDKs define:
Anthropic's cache writes as OpenAI's `prompt_tokens_details.cache_write_tokens`, OpenAI's
reasoning tokens as Anthropic's `output_tokens_details.thinking_tokens`, and the reverse."""

from __future__ import annotations

import anthropic

from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import Gateway, MakeGateway
from tests.gateway.test_stream_endings import providers

ASK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}
# 100 prompt tokens: 60 read from the cache, 30 written to it, 10 fresh; 9 output, 4 thinking
DETAILED = Usage(100, 9, cached_tokens=60, cache_write_tokens=30, reasoning_tokens=4)


async def answered_both_ways(
    gw: Gateway, upstream: FakeUpstream, usage: Usage
) -> tuple[anthropic.types.Message, anthropic.types.Message]:
    """An Anthropic client's answer from gpt-4o reporting `usage`, whole and then streamed."""
    upstream.script("gpt-4o-2024", [Fault(usage=usage), Fault(usage=usage)])
    client = gw.anthropic()
    answer = await client.messages.create(model="gpt-4o", **ASK)
    async with client.messages.stream(model="gpt-4o", **ASK) as stream:
        return answer, await stream.get_final_message()


async def test_an_openai_client_sees_anthropic_cache_writes_and_thinking(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("claude-sonnet-4-5", [Fault(usage=DETAILED), Fault(usage=DETAILED)])
    client = gw.openai()
    answer = await client.chat.completions.create(model="claude", **ASK)
    stream = await client.chat.completions.create(
        model="claude", stream=True, stream_options={"include_usage": True}, **ASK
    )
    streamed = [chunk.usage async for chunk in stream if chunk.usage is not None][-1]
    for usage in (answer.usage, streamed):
        assert (usage.prompt_tokens, usage.completion_tokens) == (100, 9)
        assert usage.prompt_tokens_details.cached_tokens == 60
        assert usage.prompt_tokens_details.cache_write_tokens == 30
        assert usage.completion_tokens_details.reasoning_tokens == 4
    record = gw.recorder.records[-1]
    assert (record.input_tokens, record.cached_tokens, record.output_tokens) == (100, 60, 9)


async def test_an_anthropic_client_sees_openai_cache_writes_and_reasoning(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    for message in await answered_both_ways(gw, upstream, DETAILED):
        usage = message.usage
        assert (usage.input_tokens, usage.output_tokens) == (10, 9)
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (60, 30)
        assert usage.output_tokens_details is not None
        assert usage.output_tokens_details.thinking_tokens == 4


async def test_anthropic_clients_get_cache_creation_zero_streamed_or_not(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    """Anthropic always reports `cache_creation_input_tokens`, 0 when nothing was written; a
    translated answer does the same whether it streamed or not."""
    gw = make_gateway(providers(upstream))
    for message in await answered_both_ways(gw, upstream, Usage(12, 3, 4)):
        usage = message.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens) == (8, 4)
        assert usage.cache_creation_input_tokens == 0
        assert usage.output_tokens_details is None  # no reasoning reported: none invented
