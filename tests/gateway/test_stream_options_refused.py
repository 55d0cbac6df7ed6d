"""Servers that do not know `stream_options` (Azure api-versions before 2024-10-21, older
OpenAI-compatible servers) still stream: the field the gateway adds for usage is dropped after
their 400, and left out of that provider's later streams (docs/http.md, streams)."""

from __future__ import annotations

import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import Gateway, MakeGateway

ASK = [{"role": "user", "content": "one two three"}]
REFUSE = Fault(reject_stream_options=True)


def providers(up: FakeUpstream) -> str:
    return f"""
    providers:
      azure-old: {{type: azure, base_url: "{up.url}", api_version: "2024-02-01",
                   api_keys: [az-key]}}
      local: {{type: openai, base_url: "{up.openai_url}"}}
    models:
      gpt-4o: {{targets: [azure-old/gpt-4o-deployment]}}
      llama: {{targets: [local/llama-3]}}
    defaults: {{retry: {{attempts: 1}}}}
    """


async def _stream_text(gw: Gateway, model: str, **options: object) -> tuple[str, list[object]]:
    """The streamed text, and the usage of every chunk that carried one."""
    stream = await gw.openai().chat.completions.create(
        model=model, messages=ASK, stream=True, **options
    )
    text, usages = "", []
    async for chunk in stream:
        if chunk.usage is not None:
            usages.append(chunk.usage)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    return text, usages


async def test_an_old_azure_api_version_streams_and_is_not_asked_twice(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("gpt-4o-deployment", [REFUSE] * 3)
    first = await _stream_text(gw, "gpt-4o")
    assert first == ("Echo: one two three", [])  # no usage chunk the client did not ask for
    sent = upstream.requests
    assert [r.json.get("stream_options") for r in sent] == [{"include_usage": True}, None]
    assert {r.query["api-version"] for r in sent} == {"2024-02-01"}
    assert gw.recorder.records[-1].status == 200 and gw.recorder.records[-1].error_type is None

    second = await _stream_text(gw, "gpt-4o")
    assert second == first
    assert len(upstream.requests) == 3, "the refusal is remembered: no second 400 round trip"
    assert "stream_options" not in upstream.requests[-1].json
    assert gw.recorder.records[-1].status == 200


async def test_an_anthropic_client_streams_from_a_server_that_refuses_the_field(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("llama-3", [REFUSE, REFUSE])
    async with gw.anthropic().messages.stream(model="llama", max_tokens=50, messages=ASK) as s:
        message = await s.get_final_message()
    assert message.content[0].text == "Echo: one two three"
    assert message.stop_reason == "end_turn"
    assert len(upstream.requests) == 2 and "stream_options" not in upstream.requests[-1].json
    assert gw.recorder.records[-1].status == 200


async def test_stream_options_the_client_sent_itself_get_the_servers_400(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("llama-3", [REFUSE])
    with pytest.raises(openai.BadRequestError, match="stream_options"):
        await _stream_text(gw, "llama", stream_options={"include_usage": True})
    assert len(upstream.requests) == 1
    assert gw.recorder.records[-1].status == 400


async def test_another_400_is_passed_on_without_a_second_call(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    upstream.script("llama-3", [Fault(status=400, message="temperature must be at most 2")])
    with pytest.raises(openai.BadRequestError, match="temperature"):
        await _stream_text(gw, "llama")
    assert len(upstream.requests) == 1
    upstream.reset()
    assert (await _stream_text(gw, "llama"))[0] == "Echo: one two three"
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}


async def test_a_server_that_knows_the_field_still_reports_usage(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(providers(upstream))
    text, usages = await _stream_text(gw, "llama", stream_options={"include_usage": True})
    assert text == "Echo: one two three" and len(usages) == 1
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    record = gw.recorder.records[-1]
    assert (record.input_tokens, record.output_tokens) == (3, 4)
