"""Any client format reaches any provider, translated both ways (SPEC §3)."""

from __future__ import annotations

import json

import openai
import pytest

from concord.translate.usage import Usage
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import CLIENT_KEY, MakeGateway


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


WEATHER_FUNCTION = WEATHER_TOOL["function"]


async def test_legacy_functions_client_gets_function_call_from_an_anthropic_upstream(
    make_gateway: MakeGateway, upstream
):
    """Client code written for the deprecated `functions` reads `message.function_call`, as
    OpenAI answers it, and sends the result back as a `function` message."""
    gw = make_gateway(providers(upstream))
    upstream.script(
        "claude-sonnet-4-5", [Fault(tool_call="get_weather", tool_arguments='{"city":"Oslo"}')]
    )
    client = gw.openai()
    asked = [{"role": "user", "content": "Weather in Oslo?"}]
    first = await client.chat.completions.create(
        model="claude",
        messages=asked,
        functions=[WEATHER_FUNCTION],
        function_call={"name": "get_weather"},
    )
    choice = first.choices[0]
    assert choice.finish_reason == "function_call"
    assert choice.message.tool_calls is None
    call = choice.message.function_call
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo"}
    sent = upstream.requests[-1].json
    assert [tool["name"] for tool in sent["tools"]] == ["get_weather"]
    assert sent["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }

    upstream.script("claude-sonnet-4-5", [Fault(reply="It is sunny.")])
    second = await client.chat.completions.create(
        model="claude",
        messages=[
            *asked,
            {"role": "assistant", "content": None, "function_call": call.model_dump()},
            {"role": "function", "name": "get_weather", "content": "sunny"},
        ],
        functions=[WEATHER_FUNCTION],
    )
    assert second.choices[0].message.content == "It is sunny."
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.function_call is None
    turns = upstream.requests[-1].json["messages"]
    tool_use, tool_result = turns[1]["content"][0], turns[2]["content"][0]
    assert (tool_use["type"], tool_use["input"]) == ("tool_use", {"city": "Oslo"})
    assert tool_result == {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny"}


async def test_legacy_functions_stream_from_an_anthropic_upstream(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    upstream.script(
        "claude-sonnet-4-5", [Fault(tool_call="get_weather", tool_arguments='{"city":"Oslo"}')]
    )
    async with gw.openai().chat.completions.stream(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        functions=[WEATHER_FUNCTION],
        function_call="auto",
    ) as stream:
        chunks = [event.chunk async for event in stream if event.type == "chunk"]
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "function_call"
    assert not choice.message.tool_calls
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Oslo"}
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [d.function_call for d in deltas if d.function_call is not None]
    assert calls[0].name == "get_weather" and all(c.name is None for c in calls[1:])
    assert all(d.tool_calls is None for d in deltas)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "function_call"


async def test_legacy_functions_to_an_openai_upstream_pass_through(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    await gw.openai().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        functions=[WEATHER_FUNCTION],
        function_call="auto",
    )
    sent = upstream.requests[-1].json
    assert sent["functions"] == [WEATHER_FUNCTION] and sent["function_call"] == "auto"
    assert "tools" not in sent


async def test_openai_stream_without_done_after_finish_reason_is_complete(
    make_gateway: MakeGateway, upstream
):
    """Some OpenAI-compatible servers end a stream without `data: [DONE]`: after a finished
    choice (and the usage chunk) a clean close is the end of the answer, not an error."""
    gw = make_gateway(providers(upstream))
    upstream.script("gpt-4o-2024", [Fault(reply="All done here", omit_done=True)])
    stream = await gw.openai().chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "All done here"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    record = gw.recorder.records[-1]
    assert (record.status, record.error_type, record.output_tokens) == (200, None, 3)

    upstream.script("gpt-4o-2024", [Fault(reply="All done here", omit_done=True)])
    raw = await gw.http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers={"authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert raw.text.endswith("data: [DONE]\n\n")  # the client's stream ends as OpenAI's does
    assert '"error"' not in raw.text

    upstream.script("gpt-4o-2024", [Fault(reply="Bonjour", omit_done=True)])
    async with gw.anthropic().messages.stream(
        model="gpt-4o", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as translated:
        message = await translated.get_final_message()
    assert message.content[0].text == "Bonjour" and message.stop_reason == "end_turn"


async def test_openai_stream_closed_before_finish_reason_still_fails(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    # the role chunk and the first word, then a clean close: no choice finished
    upstream.script("gpt-4o-2024", [Fault(reply="All done here", end_after=2)])
    stream = await gw.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in stream:
            pass
    assert gw.recorder.records[-1].status == 502


async def test_a_cached_legacy_function_call_replays_as_a_stream(
    make_gateway: MakeGateway, upstream
):
    cached = providers(upstream).rstrip() + "\n    defaults: {cache: {ttl: 10m}}\n"
    gw = make_gateway(cached)
    upstream.script(
        "claude-sonnet-4-5", [Fault(tool_call="get_weather", tool_arguments='{"city":"Oslo"}')]
    )
    ask = {
        "model": "claude",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "functions": [WEATHER_FUNCTION],
        "temperature": 0,
    }
    first = await gw.openai().chat.completions.create(**ask)  # type: ignore[call-overload]
    assert first.choices[0].message.function_call.name == "get_weather"
    async with gw.openai().chat.completions.stream(**ask) as stream:  # a hit, replayed
        final = await stream.get_final_completion()
    choice = final.choices[0]
    assert (choice.finish_reason, choice.message.function_call.name) == (
        "function_call",
        "get_weather",
    )
    assert json.loads(choice.message.function_call.arguments) == {"city": "Oslo"}
    assert len(upstream.requests) == 1


async def test_an_openai_format_upstream_error_reaches_an_openai_client_whole(
    make_gateway: MakeGateway, upstream
):
    """Azure's content-filter refusal carries its verdicts beside the usual fields: an OpenAI
    client gets the error object as the upstream sent it."""
    gw = make_gateway(providers(upstream))
    verdicts = {"hate": {"filtered": True, "severity": "high"}}
    extra = {"status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation", "r": verdicts}}
    refusal = Fault(status=400, message="filtered", code="content_filter", error_extra=extra)
    upstream.script("gpt-4o-2024", [refusal])
    try:
        await gw.openai().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.BadRequestError as error:
        assert error.code == "content_filter"
        assert isinstance(error.body, dict)
        assert error.body["innererror"] == extra["innererror"]
    else:
        raise AssertionError("the upstream's 400 was not passed on")


async def test_an_openai_client_sending_temperature_and_top_p_reaches_claude_with_one(
    make_gateway: MakeGateway, upstream
):
    """Claude models since Opus 4.1 answer 400 to a request with both; OpenAI clients and
    frameworks often send `top_p: 1` beside their temperature."""
    gw = make_gateway(providers(upstream))
    hello = [{"role": "user", "content": "Hello"}]
    client = gw.openai()
    answer = await client.chat.completions.create(
        model="claude", messages=hello, temperature=0.2, top_p=1
    )
    assert answer.choices[0].message.content
    sent = upstream.requests[-1].json
    assert sent["temperature"] == 0.2 and "top_p" not in sent
    await client.chat.completions.create(model="claude", messages=hello, temperature=1, top_p=0.3)
    sent = upstream.requests[-1].json
    assert sent["top_p"] == 0.3 and "temperature" not in sent


async def test_an_openai_request_without_a_limit_gets_the_catalogs_for_claude(
    make_gateway: MakeGateway, upstream: FakeUpstream
) -> None:
    """Anthropic requires `max_tokens`: an OpenAI client that sets none gets the catalog's
    `max_output_tokens` for the model (the figure budgets reserve too), else 4096."""
    gw = make_gateway(
        providers(upstream)
        + "  claude-capped: {targets: [ant/claude-x], max_output_tokens: 1234}\n"
    )
    messages = [{"role": "user", "content": "Hi"}]
    for model in ("claude-capped", "claude"):
        await gw.openai().chat.completions.create(model=model, messages=messages)
    await gw.openai().chat.completions.create(model="claude", messages=messages, max_tokens=7)
    sent = [request.json["max_tokens"] for request in upstream.requests_to("/v1/messages")]
    assert sent == [1234, 4096, 7]
