"""Through the real SDKs: structured outputs and effort cross formats, and what cannot cross is
refused in the client's format before any upstream call (docs/translation.md)."""

from __future__ import annotations

import anthropic
import openai
import pytest
from pydantic import BaseModel

from tests.fakes.upstream import Fault
from tests.gateway.conftest import MakeGateway
from tests.gateway.test_translation import WEATHER_TOOL, providers

REPLY = '{"city": "Oslo", "celsius": 3}'


class Weather(BaseModel):
    city: str
    celsius: int


async def test_openai_parse_reaches_an_anthropic_model(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    upstream.script("claude-sonnet-4-5", [Fault(reply=REPLY)])
    completion = await gw.openai().chat.completions.parse(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        response_format=Weather,
        reasoning_effort="minimal",
    )
    assert completion.choices[0].message.parsed == Weather(city="Oslo", celsius=3)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/messages"
    config = sent.json["output_config"]
    assert config["effort"] == "low"
    assert config["format"]["type"] == "json_schema"
    assert config["format"]["schema"]["required"] == ["city", "celsius"]


async def test_anthropic_parse_reaches_an_openai_model(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    upstream.script("gpt-4o-2024", [Fault(reply=REPLY)])
    message = await gw.anthropic().messages.parse(
        model="gpt-4o",
        max_tokens=100,
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        output_format=Weather,
        output_config={"effort": "high"},
    )
    assert message.parsed_output == Weather(city="Oslo", celsius=3)
    sent = upstream.requests[-1].json
    assert sent["reasoning_effort"] == "high"
    spec = sent["response_format"]["json_schema"]
    assert sent["response_format"]["type"] == "json_schema"
    assert (spec["name"], spec["strict"]) == ("response", True)
    assert spec["schema"]["properties"].keys() == {"city", "celsius"}


async def test_openai_file_id_to_an_anthropic_model_is_a_400(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    content = [
        {"type": "text", "text": "Summarise"},
        {"type": "file", "file": {"file_id": "file-abc"}},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        await gw.openai().chat.completions.create(
            model="claude", messages=[{"role": "user", "content": content}]
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "messages[0].content[1]"
    assert error["type"] == "invalid_request_error"
    assert "file_id" in error["message"]
    assert upstream.requests == []


async def test_a_target_that_can_carry_the_request_serves_it_instead(
    make_gateway: MakeGateway, upstream
):
    """The Anthropic target cannot carry a `file_id` part; the route's OpenAI target can."""
    body = providers(upstream).replace(
        "claude: {targets: [ant/claude-sonnet-4-5]}",
        "claude: {targets: [ant/claude-sonnet-4-5, oai/gpt-4o-2024]}",
    )
    gw = make_gateway(body)
    content = [{"type": "text", "text": "Summarise"}, {"type": "file", "file": {"file_id": "f-1"}}]
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="claude", messages=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-concord-provider"] == "oai"
    assert [r.model for r in upstream.requests] == ["gpt-4o-2024"]
    assert upstream.requests[0].json["messages"][0]["content"][1]["file"]["file_id"] == "f-1"


async def test_openai_allowed_tools_reach_an_anthropic_model(make_gateway: MakeGateway, upstream):
    gw = make_gateway(providers(upstream))
    clock = {"type": "function", "function": {"name": "clock", "parameters": {"type": "object"}}}
    allowed = {"mode": "required", "tools": [{"type": "function", "function": {"name": "clock"}}]}
    completion = await gw.openai().chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Time?"}],
        tools=[WEATHER_TOOL, clock],
        tool_choice={"type": "allowed_tools", "allowed_tools": allowed},
    )
    assert completion.choices[0].message.tool_calls[0].function.name == "clock"
    sent = upstream.requests[-1].json
    assert [tool["name"] for tool in sent["tools"]] == ["clock"]
    assert sent["tool_choice"] == {"type": "any"}


async def test_anthropic_forced_server_tool_to_an_openai_model_is_a_400(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    with pytest.raises(anthropic.BadRequestError) as caught:
        await gw.anthropic().messages.create(
            model="gpt-4o",
            max_tokens=100,
            messages=[{"role": "user", "content": "News today?"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
            tool_choice={"type": "tool", "name": "web_search"},
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"]["type"] == "invalid_request_error"
    assert "tool_choice" in body["error"]["message"] and "web_search" in body["error"]["message"]
    assert upstream.requests == []


async def test_anthropic_url_document_to_an_openai_model_is_a_400(
    make_gateway: MakeGateway, upstream
):
    gw = make_gateway(providers(upstream))
    document = {"type": "document", "source": {"type": "url", "url": "https://x/report.pdf"}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await gw.anthropic().messages.create(
            model="gpt-4o",
            max_tokens=100,
            messages=[{"role": "user", "content": [{"type": "text", "text": "Sum up"}, document]}],
        )
    assert "messages.0.content.1" in caught.value.message
    assert upstream.requests == []
