"""An upstream that reports no usage (or only zeros) is charged by estimate, never as free: the
usage record, budgets and token rate limits see the prompt as estimated for routing and the
answer's text (SPEC §2.6 spend from usage)."""

from __future__ import annotations

from concord.gateway.tokens import count_text, estimate_answer
from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_translation import providers

SILENT = Usage(0, 0)
REPLY = "one two three four five six seven eight nine ten"
PROMPT = "please count to ten for me slowly " * 5


async def test_an_answer_without_usage_is_recorded_by_estimate(
    make_gateway: MakeGateway, upstream: FakeUpstream
) -> None:
    gw = make_gateway(providers(upstream))
    upstream.script("gpt-4o-2024", [Fault(reply=REPLY, usage=SILENT)])
    await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}]
    )
    record = gw.recorder.records[-1]
    assert record.input_tokens > 20  # the prompt as estimated for routing
    assert 5 <= record.output_tokens <= 20
    assert record.cost_usd > 0  # gpt-4o has a price: the call is not free


async def test_a_stream_without_usage_is_recorded_by_estimate(
    make_gateway: MakeGateway, upstream: FakeUpstream
) -> None:
    gw = make_gateway(providers(upstream) + "defaults: {cache: {ttl: 60s}}\n")
    upstream.script("gpt-4o-2024", [Fault(reply=REPLY, usage=SILENT)])
    stream = await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": PROMPT}], stream=True, temperature=0
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == REPLY
    record = gw.recorder.records[-1]
    assert record.input_tokens > 20 and 5 <= record.output_tokens <= 20


def test_an_anthropic_answer_is_estimated_from_its_text_and_tool_input_only() -> None:
    """Thinking blocks carry no `text` or `input`: they add nothing, not a stray `null`."""
    text = {"type": "text", "text": REPLY}
    tool = {"type": "tool_use", "id": "t1", "name": "count", "input": {"to": 10}}
    thinking = {"type": "thinking", "thinking": "", "signature": "sig"}
    expected = count_text(REPLY + '\n{"to":10}')
    assert estimate_answer({"content": [thinking, text, tool]}) == expected
