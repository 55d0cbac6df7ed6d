"""A streamed request answered 200 with a whole JSON answer (a server that ignores `stream: true`)
reaches the client as the stream it asked for, in its own format, and its usage is recorded; a 200
that is neither events nor an answer fails over, since nothing reached the client (SPEC §2.5)."""

from __future__ import annotations

import openai
import pytest

from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import CLIENT_KEY, MakeGateway

ASK = [{"role": "user", "content": "one two three"}]
WHOLE = Fault(ignore_stream=True, usage=Usage(12, 4))


def providers(up: FakeUpstream) -> str:
    return f"""
    providers:
      oai: {{type: openai, base_url: "{up.openai_url}", api_keys: [sk-1]}}
      ant: {{type: anthropic, base_url: "{up.url}", api_keys: [sk-ant]}}
    models:
      gpt-4o: {{targets: [oai/gpt-first, oai/gpt-second]}}
      claude: {{targets: [ant/claude-first, ant/claude-second]}}
    defaults: {{retry: {{attempts: 1}}, cache: {{ttl: 10m}}}}
    """


def _tokens(gw) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    record = gw.recorder.records[-1]
    return record.status, record.input_tokens, record.output_tokens


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
@pytest.mark.parametrize("include_usage", [True, False])
async def test_an_openai_client_gets_a_stream(
    make_gateway: MakeGateway, upstream: FakeUpstream, model: str, include_usage: bool
):
    gw = make_gateway(providers(upstream))
    upstream.script("*", [WHOLE])
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    stream = await gw.openai().chat.completions.create(
        model=model, messages=ASK, stream=True, **options
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usages = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert [(u.prompt_tokens, u.completion_tokens) for u in usages] == [(12, 4)]
    else:
        assert usages == []
    assert all(c.model == model for c in chunks)
    assert _tokens(gw) == (200, 12, 4)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("model", ["claude", "gpt-4o"])
async def test_an_anthropic_client_gets_a_stream(
    make_gateway: MakeGateway, upstream: FakeUpstream, model: str
):
    gw = make_gateway(providers(upstream))
    upstream.script("*", [WHOLE])
    client = gw.anthropic()
    async with client.messages.stream(model=model, max_tokens=50, messages=ASK) as stream:
        message = await stream.get_final_message()
    assert message.content[0].text == "Echo: one two three"
    assert (message.stop_reason, message.model) == ("end_turn", model)
    assert message.usage.output_tokens == 4
    assert _tokens(gw) == (200, 12, 4)


@pytest.mark.parametrize("model", ["gpt-4o", "claude"])
async def test_a_legacy_completions_client_gets_a_stream(
    make_gateway: MakeGateway, upstream: FakeUpstream, model: str
):
    gw = make_gateway(providers(upstream))
    upstream.script("*", [WHOLE])
    stream = await gw.openai().completions.create(
        model=model, prompt="one two three", max_tokens=20, stream=True
    )
    text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == "Echo: one two three"
    assert _tokens(gw) == (200, 12, 4)


async def test_a_whole_tool_call_streams_as_one(make_gateway: MakeGateway, upstream: FakeUpstream):
    gw = make_gateway(providers(upstream))
    upstream.script("*", [Fault(ignore_stream=True, tool_call="lookup", tool_arguments='{"q": 1}')])
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    async with gw.openai().chat.completions.stream(
        model="gpt-4o", messages=ASK, tools=[tool]
    ) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert (call.function.name, call.function.arguments) == ("lookup", '{"q": 1}')
    assert final.choices[0].finish_reason == "tool_calls"


async def test_the_answer_is_cached_as_a_streamed_one_would_be(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("*", [WHOLE])
    body = {"model": "gpt-4o", "messages": ASK, "stream": True, "temperature": 0}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    first = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    again = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    assert first.headers["x-concord-cache"] == "miss" and "Echo: one two three" in first.text
    assert again.headers["x-concord-cache"] == "hit" and "Echo: one two three" in again.text
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("body", ["<html><body>502 Bad Gateway</body></html>", ""])
@pytest.mark.parametrize(("model", "first"), [("gpt-4o", "gpt-first"), ("claude", "claude-first")])
async def test_a_200_that_is_neither_events_nor_an_answer_fails_over(
    make_gateway: MakeGateway, upstream: FakeUpstream, body: str, model: str, first: str
):
    gw = make_gateway(providers(upstream))
    upstream.script(first, [Fault(raw_body=body)])
    if model == "gpt-4o":
        stream = await gw.openai().chat.completions.create(model=model, messages=ASK, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    else:
        async with gw.anthropic().messages.stream(model=model, max_tokens=50, messages=ASK) as s:
            text = (await s.get_final_message()).content[0].text
    assert text == "Echo: one two three"
    assert [r.model for r in upstream.requests] == [first, first.replace("first", "second")]
    record = gw.recorder.records[-1]
    assert (record.status, record.attempts) == (200, 2)


async def test_a_200_error_object_is_the_error_it_names(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    error = '{"error": {"message": "Overloaded", "type": "server_error", "code": null}}'
    upstream.script("gpt-first", [Fault(raw_body=error)])
    stream = await gw.openai().chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
    assert [c async for c in stream if c.choices]
    assert [r.model for r in upstream.requests] == ["gpt-first", "gpt-second"]
    upstream.reset()
    upstream.script("*", [Fault(raw_body=error)] * 2)
    with pytest.raises(openai.APIStatusError) as caught:
        await gw.openai().chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
    assert caught.value.status_code == 502  # the object named a server error: 500 each
    assert "gpt-first: 500; oai/gpt-second: 500" in caught.value.message
