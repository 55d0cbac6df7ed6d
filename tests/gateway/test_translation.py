"""Any client format reaches any provider, translated both ways (SPEC §3)."""

from __future__ import annotations

import json

import openai

from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import MakeGateway


def providers(up: FakeUpstream) -> str:
    return f"""
    providers:
      oai: {{type: openai, base_url: "{up.openai_url}", api_keys: [sk-secret-1]}}
      ant: {{type: anthropic, base_url: "{up.url}", api_keys: [sk-ant-secret]}}
    models:
      gpt-4o: {{targets: [oai/gpt-4o-2024], price: {{input: 2, output: 8, cached_input: 1}}}}
      claude: {{targets: [ant/claude-sonnet-4-5]}}
    """


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_anthropic_sdk_reaches_an_openai_upstream(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    upstream.script("gpt-4o-2024", [Fault(reply="Bonjour", usage=Usage(12, 3, 4))])
    message = await gw.anthropic().messages.create(
        model="gpt-4o",
        max_tokens=100,
        system="Answer in French.",
        messages=[{"role": "user", "content": "Hello"}],
    )
    assert message.content[0].text == "Bonjour"
    assert message.model == "gpt-4o"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (8, 4)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/chat/completions" and sent.model == "gpt-4o-2024"
    assert sent.json["messages"][0] == {"role": "system", "content": "Answer in French."}
    record = gw.recorder.records[-1]
    assert (record.input_tokens, record.cached_tokens, record.output_tokens) == (12, 4, 3)
    assert abs(record.cost_usd - (8 * 2 + 4 * 1 + 3 * 8) / 1e6) < 1e-12


async def test_anthropic_sdk_tool_use_through_an_openai_upstream(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    upstream.script(
        "gpt-4o-2024", [Fault(tool_call="get_weather", tool_arguments='{"city": "Paris"}')]
    )
    tool = {"name": "get_weather", "input_schema": {"type": "object"}}
    message = await gw.anthropic().messages.create(
        model="gpt-4o",
        max_tokens=100,
        tools=[tool],
        messages=[{"role": "user", "content": "Paris?"}],
    )
    assert message.stop_reason == "tool_use"
    block = message.content[-1]
    assert (block.type, block.name, block.input) == ("tool_use", "get_weather", {"city": "Paris"})


async def test_openai_sdk_reaches_an_anthropic_upstream_with_tools(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    upstream.script(
        "claude-sonnet-4-5", [Fault(tool_call="get_weather", tool_arguments='{"city":"Oslo"}')]
    )
    client = gw.openai()
    first = await client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Oslo?"},
        ],
        tools=[WEATHER_TOOL],
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages" and sent.json["system"] == "Be brief."
    assert sent.headers["x-api-key"] == "sk-ant-secret"

    upstream.script("claude-sonnet-4-5", [Fault(reply="It is sunny.", usage=Usage(30, 4, 10))])
    second = await client.chat.completions.create(
        model="claude",
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
    )
    assert second.choices[0].message.content == "It is sunny."
    assert second.choices[0].finish_reason == "stop"
    assert second.usage.prompt_tokens == 30
    assert second.usage.prompt_tokens_details.cached_tokens == 10
    turns = upstream.requests[-1].json["messages"]
    assert turns[-1]["content"][0]["type"] == "tool_result"


async def test_openai_stream_from_an_anthropic_upstream(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    stream = await gw.openai().chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=50,
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream me"
    assert chunks[-1].usage.completion_tokens == 3


async def test_anthropic_stream_from_an_openai_upstream(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    async with gw.anthropic().messages.stream(
        model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "stream me"}]
    ) as stream:
        message = await stream.get_final_message()
    assert message.content[0].text == "Echo: stream me"
    assert message.model == "gpt-4o"
    assert message.usage.output_tokens == 3
    assert gw.recorder.records[-1].output_tokens == 3


async def test_legacy_completions_served_by_an_anthropic_model(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    completion = await gw.openai().completions.create(
        model="claude", prompt="finish me", max_tokens=20
    )
    assert completion.choices[0].text == "Echo: finish me"
    assert upstream.requests[-1].path == "/v1/messages"


async def test_embeddings_on_a_provider_without_them_is_400(make_gateway: MakeGateway, upstream):
    import openai
    import pytest

    gw = make_gateway(providers(upstream))
    with pytest.raises(openai.BadRequestError):
        await gw.openai().embeddings.create(model="claude", input="x")
    assert upstream.requests == []


async def test_native_passthrough_keeps_unknown_fields(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    await gw.openai().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"vendor_flag": {"deep": True}},
    )
    assert upstream.requests[-1].json["vendor_flag"] == {"deep": True}
    assert upstream.requests[-1].headers["authorization"] == "Bearer sk-secret-1"


async def test_anthropic_beta_features_reach_an_anthropic_upstream(
    make_gateway: MakeGateway, upstream
):
    """The SDK's `betas=` travel as the `anthropic-beta` header: an Anthropic upstream must see
    it, or the beta is silently off; an OpenAI upstream has no use for it."""
    gw = make_gateway(providers(upstream))
    client = gw.anthropic()
    hello = [{"role": "user", "content": "hi"}]
    betas = ["context-1m-2025-08-07", "token-efficient-tools-2025-02-19"]
    await client.beta.messages.create(model="claude", max_tokens=5, messages=hello, betas=betas)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-beta"] == ",".join(betas)
    assert sent.headers["anthropic-version"] == "2023-06-01"
    await client.beta.messages.create(model="gpt-4o", max_tokens=5, messages=hello, betas=betas)
    assert "anthropic-beta" not in upstream.requests[-1].headers
    await client.messages.create(model="claude", max_tokens=5, messages=hello)
    assert "anthropic-beta" not in upstream.requests[-1].headers  # only when asked


async def test_an_upstream_client_error_keeps_its_param_and_code(
    make_gateway: MakeGateway, upstream
):
    """An OpenAI-format upstream's 400 reaches an OpenAI client as OpenAI sent it; an Anthropic
    upstream's 404 is OpenAI's model_not_found."""
    gw = make_gateway(providers(upstream))
    refused = Fault(status=400, message="Invalid value for 'temperature'", code="invalid_value")
    upstream.script("gpt-4o-2024", [refused])
    client = gw.openai()
    hello = [{"role": "user", "content": "hi"}]
    try:
        await client.chat.completions.create(model="gpt-4o", messages=hello, temperature=0.5)
    except openai.BadRequestError as error:
        assert (error.type, error.code) == ("invalid_request_error", "invalid_value")
        assert "temperature" in error.message
    else:
        raise AssertionError("the upstream's 400 was not passed on")
    upstream.script("claude-sonnet-4-5", [Fault(status=404, message="model: claude-x")])
    try:
        await client.chat.completions.create(model="claude", messages=hello)
    except openai.NotFoundError as error:
        assert error.code == "model_not_found"
    else:
        raise AssertionError("the upstream's 404 was not passed on")
    assert gw.recorder.records[-1].error_type == "model_not_found"


async def test_the_anthropic_sdk_reads_the_request_id(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    message = await gw.anthropic().messages.create(
        model="claude", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message._request_id is not None and message._request_id.startswith("req_")
    assert message._request_id == gw.recorder.records[-1].request_id
