"""The response cache through the running gateway (SPEC §2.5), on memory and on Redis."""

from __future__ import annotations

import asyncio

import anthropic
import openai

from tests.fakes.upstream import FakeUpstream, Fault
from tests.guards.conftest import OTHER_KEY, MakeGateway


def config(up: FakeUpstream) -> str:
    return f"""
    providers:
      up: {{type: openai, base_url: "{up.openai_url}", api_keys: [sk-up]}}
    models:
      gpt-4o: {{targets: [up/gpt-4o], price: {{input: 1000, output: 1000}}}}
    defaults:
      cache: {{ttl: 10m, scope: workspace}}
    """


HELLO = [{"role": "user", "content": "hello cache"}]


async def ask(client: openai.AsyncOpenAI, **extra: object) -> tuple[str, str | None]:
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, temperature=0, **extra
    )
    completion = raw.parse()
    return raw.headers["x-concord-cache"], completion.choices[0].message.content


async def test_a_hit_is_served_without_calling_the_upstream(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    gw = make_gateway(config(upstream), state_url)
    client = gw.openai()
    assert await ask(client) == ("miss", "Echo: hello cache")
    calls = len(upstream.requests)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, temperature=0
    )
    assert raw.headers["x-concord-cache"] == "hit"
    assert raw.headers["x-concord-model"] == "gpt-4o"
    assert raw.headers["x-concord-provider"] == "up"
    assert raw.parse().choices[0].message.content == "Echo: hello cache"
    assert len(upstream.requests) == calls
    first, hit = gw.recorder.records
    assert (first.cache_hit, hit.cache_hit) == (False, True)
    assert first.cost_usd > 0 and hit.cost_usd == 0  # a hit costs nothing
    assert (hit.status, hit.input_tokens, hit.model) == (200, first.input_tokens, "gpt-4o")


async def test_a_request_outside_the_cache_when_is_not_cached(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, temperature=0.7
        )
        assert raw.headers["x-concord-cache"] == "bypass"
    assert len(upstream.requests) == 2


async def test_a_hit_replays_as_an_openai_stream(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    await ask(client)
    calls = len(upstream.requests)
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=HELLO,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-concord-cache"] == "hit"
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = [chunk async for chunk in raw.parse()]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello cache"
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert len(upstream.requests) == calls


async def test_a_hit_replays_as_an_anthropic_stream(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).anthropic()
    zero = {"temperature": 0}  # cacheable (SPEC §2.5 default `when`); not an SDK argument here
    first = await client.messages.create(
        model="gpt-4o", max_tokens=50, messages=HELLO, extra_body=zero
    )
    calls = len(upstream.requests)
    async with client.messages.stream(
        model="gpt-4o", max_tokens=50, messages=HELLO, extra_body=zero
    ) as stream:
        assert stream.response.headers["x-concord-cache"] == "hit"
        final = await stream.get_final_message()
    assert final.content[0].text == first.content[0].text == "Echo: hello cache"  # type: ignore[union-attr]
    assert final.stop_reason == first.stop_reason
    assert final.usage.output_tokens == first.usage.output_tokens
    assert len(upstream.requests) == calls


async def test_another_workspace_cannot_read_the_entry(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    gw = make_gateway(config(upstream), state_url)
    assert (await ask(gw.openai()))[0] == "miss"
    assert (await ask(gw.openai(OTHER_KEY)))[0] == "miss"  # workspace globex
    assert len(upstream.requests) == 2
    assert (await ask(gw.openai(OTHER_KEY)))[0] == "hit"
    assert (await ask(gw.openai()))[0] == "hit"
    assert len(upstream.requests) == 2


async def test_cache_control_no_cache_bypasses_the_lookup(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    await ask(client)
    status, text = await ask(client, extra_headers={"Cache-Control": "no-cache"})
    assert (status, text) == ("bypass", "Echo: hello cache")
    assert len(upstream.requests) == 2  # went upstream although an entry exists
    assert (await ask(client, extra_headers={"Cache-Control": "no-store"}))[0] == "bypass"
    assert len(upstream.requests) == 3
    assert (await ask(client))[0] == "hit"


async def test_no_store_answers_are_never_saved(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    assert (await ask(client, extra_headers={"Cache-Control": "no-store"}))[0] == "bypass"
    assert (await ask(client))[0] == "miss"


async def test_failed_answers_are_not_cached(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    from tests.fakes.upstream import Fault

    client = make_gateway(config(upstream), state_url).openai()
    upstream.script("gpt-4o", [Fault(status=400, message="bad request")])
    try:
        await ask(client)
    except openai.BadRequestError:
        pass
    assert (await ask(client))[0] == "miss"
    assert (await ask(client))[0] == "hit"


async def test_anthropic_client_hits_in_its_own_wire_format(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).anthropic()
    kwargs = {
        "model": "gpt-4o",
        "max_tokens": 50,
        "messages": HELLO,
        "extra_body": {"temperature": 0},
    }
    await client.messages.create(**kwargs)  # type: ignore[call-overload]
    raw = await client.messages.with_raw_response.create(**kwargs)  # type: ignore[call-overload]
    assert raw.headers["x-concord-cache"] == "hit"
    message = await raw.parse()
    assert isinstance(message, anthropic.types.Message)
    assert message.content[0].text == "Echo: hello cache"  # type: ignore[union-attr]


async def test_a_tool_call_hit_replays_as_a_stream(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    kwargs = {"model": "gpt-4o", "messages": HELLO, "temperature": 0, "tools": tools}
    first = await client.chat.completions.create(tool_choice="required", **kwargs)  # type: ignore[call-overload]
    call = first.choices[0].message.tool_calls[0]
    stream = await client.chat.completions.create(tool_choice="required", stream=True, **kwargs)  # type: ignore[call-overload]
    deltas = [c.choices[0].delta async for c in stream if c.choices]
    replayed = [tc for d in deltas for tc in d.tool_calls or ()]
    assert [(tc.id, tc.function.name, tc.function.arguments) for tc in replayed] == [
        (call.id, "lookup", call.function.arguments)
    ]
    assert len(upstream.requests) == 1


async def test_a_completions_hit_replays_as_a_stream(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    client = make_gateway(config(upstream), state_url).openai()
    first = await client.completions.create(model="gpt-4o", prompt="say it", temperature=0)
    stream = await client.completions.create(
        model="gpt-4o", prompt="say it", temperature=0, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == first.choices[0].text
    assert chunks[-1].choices[0].finish_reason == first.choices[0].finish_reason
    assert len(upstream.requests) == 1


def two_providers(up: FakeUpstream) -> str:
    """An OpenAI-type and an Anthropic-type provider on the fake upstream, both cached."""
    return f"""
    providers:
      oai: {{type: openai, base_url: "{up.openai_url}", api_keys: [sk-up]}}
      ant: {{type: anthropic, base_url: "{up.url}", api_keys: [sk-up]}}
    models:
      gpt-4o: {{targets: [oai/gpt-4o], price: {{input: 1000, output: 1000}}}}
      claude: {{targets: [ant/claude-up], price: {{input: 1000, output: 1000}}}}
    defaults:
      cache: {{ttl: 10m, scope: workspace}}
    """


async def test_a_streamed_answer_is_stored_and_served_either_way(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    gw = make_gateway(config(upstream), state_url)
    client = gw.openai()
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, temperature=0, stream=True
    )
    assert raw.headers["x-concord-cache"] == "miss"
    streamed = "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices])
    assert streamed == "Echo: hello cache"
    for _ in range(20):  # the entry is written when the stream's record is settled
        if len(gw.recorder.records) == 1:
            break
        await asyncio.sleep(0.01)
    assert await ask(client) == ("hit", "Echo: hello cache")
    again = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, temperature=0, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in again if c.choices]) == (
        "Echo: hello cache"
    )
    assert len(upstream.requests) == 1
    stream_record, hit, streamed_hit = gw.recorder.records
    assert stream_record.output_tokens == hit.output_tokens == streamed_hit.output_tokens == 3
    assert (hit.cache_hit, streamed_hit.cache_hit) == (True, True)


async def test_a_stream_complete_without_done_is_stored_too(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    """An OpenAI-compatible server that closes after the finished choice, without `[DONE]`,
    ended its answer properly: it is cached like any other."""
    gw = make_gateway(config(upstream), state_url)
    upstream.script("gpt-4o", [Fault(omit_done=True)])
    client = gw.openai()
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=HELLO, temperature=0, stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
        "Echo: hello cache"
    )
    for _ in range(20):  # the entry is written when the stream's record is settled
        if len(gw.recorder.records) == 1:
            break
        await asyncio.sleep(0.01)
    assert await ask(client) == ("hit", "Echo: hello cache")
    assert len(upstream.requests) == 1


async def test_a_streamed_tool_call_is_stored_whole(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    upstream.script("gpt-4o", [Fault(tool_call="lookup", tool_arguments='{"city": "Paris"}')])
    client = make_gateway(config(upstream), state_url).openai()
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    kwargs = {"model": "gpt-4o", "messages": HELLO, "temperature": 0, "tools": tools}
    stream = await client.chat.completions.create(stream=True, **kwargs)  # type: ignore[call-overload]
    deltas = [c.choices[0].delta async for c in stream if c.choices]
    streamed_id = next(tc.id for d in deltas for tc in d.tool_calls or () if tc.id)
    raw = await client.chat.completions.with_raw_response.create(**kwargs)  # type: ignore[call-overload]
    assert raw.headers["x-concord-cache"] == "hit"
    choice = raw.parse().choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or ()
    assert (call.id, call.function.name, call.function.arguments) == (
        streamed_id,
        "lookup",
        '{"city": "Paris"}',
    )
    assert len(upstream.requests) == 1


async def test_an_anthropic_upstream_stream_is_stored_for_both_wire_formats(
    make_gateway: MakeGateway, state_url: str, upstream: FakeUpstream
):
    gw = make_gateway(two_providers(upstream), state_url)
    zero = {"temperature": 0}
    async with gw.anthropic().messages.stream(
        model="claude", max_tokens=50, messages=HELLO, extra_body=zero
    ) as stream:
        assert stream.response.headers["x-concord-cache"] == "miss"
        streamed = await stream.get_final_message()
    for _ in range(20):
        if gw.recorder.records:
            break
        await asyncio.sleep(0.01)
    message = await gw.anthropic().messages.create(
        model="claude", max_tokens=50, messages=HELLO, extra_body=zero
    )
    assert message.content[0].text == streamed.content[0].text == "Echo: hello cache"  # type: ignore[union-attr]
    assert (message.id, message.stop_reason) == (streamed.id, streamed.stop_reason)
    assert message.usage.output_tokens == streamed.usage.output_tokens
    assert len(upstream.requests) == 1
    # an OpenAI client streaming from the same Anthropic model: translated, stored, hit
    client = gw.openai()
    first = await client.chat.completions.create(
        model="claude", messages=HELLO, temperature=0, max_tokens=50, stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in first if c.choices])
    for _ in range(20):
        if len(gw.recorder.records) == 3:
            break
        await asyncio.sleep(0.01)
    raw = await client.chat.completions.with_raw_response.create(
        model="claude", messages=HELLO, temperature=0, max_tokens=50
    )
    assert raw.headers["x-concord-cache"] == "hit"
    assert raw.parse().choices[0].message.content == text == "Echo: hello cache"
    assert len(upstream.requests) == 2
