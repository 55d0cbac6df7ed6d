"""How translated and relayed streams end: tool calls with no arguments, and an upstream's own
error event mid-stream (docs/http.md: a failure arrives as a last event and the stream ends)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from aiohttp import web

from concord.providers.base import SSEEvent
from concord.providers.sse import SSEParser, is_error_event
from tests.fakes.upstream import FakeUpstream, Fault, encode_event
from tests.gateway.conftest import CLIENT_KEY, MakeGateway

Edit = Callable[[list[SSEEvent]], list[SSEEvent]]


class EditedUpstream(FakeUpstream):
    """The fake upstream, each stream's events passed through `edit` before they are sent."""

    def __init__(self) -> None:
        super().__init__()
        self.edit: Edit | None = None

    async def _stream(
        self, request: web.Request, events: list[SSEEvent], behaviour: Fault
    ) -> web.StreamResponse:
        if self.edit is not None:
            events = self.edit(events)
        return await super()._stream(request, events, behaviour)


@pytest.fixture
async def edited() -> AsyncIterator[EditedUpstream]:
    async with EditedUpstream() as fake:
        yield fake


def providers(up: FakeUpstream, defaults: str = "retry: {attempts: 1}") -> str:
    return f"""
    providers:
      oai: {{type: openai, base_url: "{up.openai_url}", api_keys: [sk-1]}}
      ant: {{type: anthropic, base_url: "{up.url}", api_keys: [sk-ant]}}
    models:
      gpt-4o: {{targets: [oai/gpt-4o-2024]}}
      claude: {{targets: [ant/claude-sonnet-4-5]}}
    defaults: {{{defaults}}}
    """


class NoArgs(pydantic.BaseModel):
    """A tool without parameters."""


def _json_delta(event: SSEEvent) -> bool:
    return event.event == "content_block_delta" and "input_json_delta" in event.data


def empty_json_deltas(events: list[SSEEvent]) -> list[SSEEvent]:
    """Anthropic's stream for a call without input: one `input_json_delta` with `""`."""
    delta = {"type": "input_json_delta", "partial_json": ""}
    empty = SSEEvent(json.dumps({"type": "content_block_delta", "index": 0, "delta": delta}))
    empty.event = "content_block_delta"
    return [empty if _json_delta(e) else e for e in events]


def no_json_deltas(events: list[SSEEvent]) -> list[SSEEvent]:
    """Anthropic's stream for a call without input, as it may also come: no delta at all."""
    return [e for e in events if not _json_delta(e)]


@pytest.mark.parametrize("edit", [empty_json_deltas, no_json_deltas])
async def test_a_streamed_call_without_arguments_reaches_openai_as_an_empty_object(
    make_gateway: MakeGateway, edited: EditedUpstream, edit: Edit
):
    gw = make_gateway(providers(edited))
    edited.edit = edit
    edited.script("claude-sonnet-4-5", [Fault(tool_call="NoArgs")])
    async with gw.openai().chat.completions.stream(
        model="claude",
        messages=[{"role": "user", "content": "call it"}],
        tools=[openai.pydantic_function_tool(NoArgs)],
    ) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.arguments == "{}"
    assert call.function.parsed_arguments == NoArgs()
    assert final.choices[0].finish_reason == "tool_calls"


async def test_a_legacy_function_call_without_arguments_streams_an_empty_object(
    make_gateway: MakeGateway, edited: EditedUpstream
):
    gw = make_gateway(providers(edited))
    edited.edit = no_json_deltas
    edited.script("claude-sonnet-4-5", [Fault(tool_call="ping")])
    stream = await gw.openai().chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "ping"}],
        functions=[{"name": "ping", "parameters": {"type": "object", "properties": {}}}],
        stream=True,
    )
    pieces = [
        c.choices[0].delta.function_call.arguments or ""
        async for c in stream
        if c.choices and c.choices[0].delta.function_call
    ]
    assert "".join(pieces) == "{}"


# -- an error event mid-stream ----------------------------------------------------------------

ANTHROPIC_ERROR = SSEEvent(
    json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    "error",
)
OPENAI_ERROR = SSEEvent(
    json.dumps(
        {"error": {"message": "Overloaded", "type": "server_error", "param": None, "code": None}}
    )
)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ANTHROPIC_ERROR, True),
        (OPENAI_ERROR, True),
        (SSEEvent('{"type": "error", "error": {"type": "api_error", "message": "x"}}'), True),
        (SSEEvent('{"choices": [{"delta": {"content": "an \\"error\\" here"}}]}'), False),
        (SSEEvent('{"id": "c", "error": null, "choices": []}'), False),
        (SSEEvent("[DONE]"), False),
        (SSEEvent('{"type": "message_stop"}', "message_stop"), False),
    ],
)
def test_what_counts_as_an_upstream_error_event(event: SSEEvent, expected: bool):
    assert is_error_event(event) is expected


def error_after(count: int) -> Edit:
    """The first `count` events, then the upstream's own error event, then a clean close."""

    def edit(events: list[SSEEvent]) -> list[SSEEvent]:
        error = ANTHROPIC_ERROR if events[0].event else OPENAI_ERROR
        return [*events[:count], error]

    return edit


def _events(text: str) -> list[SSEEvent]:
    parser = SSEParser()
    return parser.feed(text.encode()) + parser.finish()


def _is_error(event: SSEEvent) -> bool:
    if event.event == "error":
        return True
    if event.data == "[DONE]":
        return False
    return "error" in json.loads(event.data)


CASES = [
    ("/v1/chat/completions", "claude"),  # OpenAI client, Anthropic upstream
    ("/v1/messages", "gpt-4o"),  # Anthropic client, OpenAI upstream
    ("/v1/messages", "claude"),  # Anthropic pass-through
    ("/v1/chat/completions", "gpt-4o"),  # OpenAI pass-through
    ("/v1/completions", "claude"),  # legacy completions, Anthropic upstream
]


def _request(path: str, model: str) -> dict[str, Any]:
    if path == "/v1/completions":
        return {"model": model, "prompt": "one two three", "max_tokens": 20, "stream": True}
    turns = [{"role": "user", "content": "one two three"}]
    return {"model": model, "messages": turns, "max_tokens": 20, "stream": True}


@pytest.mark.parametrize(("path", "model"), CASES)
async def test_an_upstream_error_event_mid_stream_is_the_streams_one_error(
    make_gateway: MakeGateway, edited: EditedUpstream, path: str, model: str
):
    gw = make_gateway(providers(edited))
    edited.edit = error_after(3)
    answer = await gw.http.post(
        path, json=_request(path, model), headers={"authorization": f"Bearer {CLIENT_KEY}"}
    )
    assert answer.status_code == 200
    events = _events(answer.text)
    errors = [e for e in events if _is_error(e)]
    assert len(errors) == 1 and errors[0] is events[-1], [e.data for e in events]
    assert "Overloaded" in errors[0].data and "stream failed" not in errors[0].data
    if path == "/v1/messages":
        assert errors[0].event == "error"
        if model == "claude":  # passed through as Anthropic sent it
            assert json.loads(errors[0].data)["error"]["type"] == "overloaded_error"
    else:
        assert errors[0].event is None and "error" in json.loads(errors[0].data)
    record = gw.recorder.records[-1]
    assert (record.status, record.error_type) == (502, "connection")


async def test_the_sdks_raise_the_upstreams_error(
    make_gateway: MakeGateway, edited: EditedUpstream
):
    gw = make_gateway(providers(edited))
    edited.edit = error_after(3)
    stream = await gw.openai().chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two"}], stream=True
    )
    with pytest.raises(openai.APIError, match="Overloaded"):
        async for _ in stream:
            pass
    with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
        async with gw.anthropic().messages.stream(
            model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "one two"}]
        ) as translated:
            await translated.get_final_message()


async def test_an_error_after_a_finished_choice_still_ends_the_stream_failed(
    make_gateway: MakeGateway, edited: EditedUpstream
):
    """An OpenAI-compatible stream without `[DONE]` is complete after a finished choice; one
    that then sends an error event is not: no `[DONE]` after the error, not cached, 502."""
    gw = make_gateway(providers(edited, "cache: {ttl: 10m}"))

    def finish_then_error(events: list[SSEEvent]) -> list[SSEEvent]:
        return [e for e in events if e.data != "[DONE]"] + [OPENAI_ERROR]

    edited.edit = finish_then_error
    body = _request("/v1/chat/completions", "gpt-4o") | {"temperature": 0}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    answer = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    events = _events(answer.text)
    assert _is_error(events[-1]) and sum(map(_is_error, events)) == 1
    assert all(e.data != "[DONE]" for e in events)
    assert gw.recorder.records[-1].status == 502
    edited.edit = None
    again = await gw.http.post("/v1/chat/completions", json=body, headers=headers)
    assert again.headers["x-concord-cache"] == "miss"


class HeldOpenUpstream(EditedUpstream):
    """Sends each stream's (edited) events, then keeps the connection open without a word, as
    a proxy in front of a failed upstream may."""

    async def _stream(
        self, request: web.Request, events: list[SSEEvent], behaviour: Fault
    ) -> web.StreamResponse:
        if self.edit is not None:
            events = self.edit(events)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in events:
            await response.write(encode_event(event))
        await asyncio.sleep(30)
        return response


@pytest.mark.parametrize(("path", "model"), CASES)
async def test_an_error_event_ends_the_stream_even_when_the_upstream_keeps_it_open(
    make_gateway: MakeGateway, path: str, model: str
):
    """The client's stream ends at the upstream's error event, with nothing after it relayed;
    it does not wait for the upstream to close (or for the read timeout)."""
    async with HeldOpenUpstream() as held:
        gw = make_gateway(providers(held))

        def error_then_more(events: list[SSEEvent]) -> list[SSEEvent]:
            return [*error_after(2)(events), *events[2:]]

        held.edit = error_then_more
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        started = time.monotonic()
        answer = await asyncio.wait_for(
            gw.http.post(path, json=_request(path, model), headers=headers), timeout=10
        )
        assert time.monotonic() - started < 5
        events = _events(answer.text)
        errors = [e for e in events if _is_error(e)]
        assert len(errors) == 1 and errors[0] is events[-1], [e.data for e in events]
        assert "Overloaded" in errors[0].data
        assert gw.recorder.records[-1].status == 502
