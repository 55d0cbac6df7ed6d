"""The shutdown grace running out (SPEC §1: graceful shutdown): what is still unanswered gets an
error in the client's format, a 503 `shutdown` usage record, and no crash in the server's log.

A real uvicorn server in a thread, with a half-second grace, is told to stop while a stream (or
a slow call) is in flight."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable

import anthropic
import openai
import pytest

from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import CLIENT_KEY, Gateway, LiveServer, MakeGateway
from tests.gateway.test_live import SlowStreamUpstream

GRACE = 0.5


def catalog(upstream_url: str) -> str:
    return f"""
        providers:
          up: {{type: openai, base_url: "{upstream_url}", api_keys: [k]}}
        models:
          gpt-4o: {{targets: [up/gpt-4o]}}
        """


def stop_soon(server: LiveServer) -> None:
    """Tell the server to stop, as SIGTERM does, without waiting for it here."""
    threading.Timer(0.05, lambda: setattr(server.server, "should_exit", True)).start()


async def recorded(gw: Gateway) -> list[tuple[int, str | None]]:
    for _ in range(200):
        if gw.recorder.records:
            break
        await asyncio.sleep(0.02)
    return [(r.status, r.error_type) for r in gw.recorder.records]


def crashes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Exception in ASGI" in r.getMessage()]


@pytest.fixture
async def streaming(
    make_gateway: MakeGateway, live: Callable[..., LiveServer]
) -> AsyncIterator[tuple[Gateway, LiveServer]]:
    """A gateway on a real uvicorn with a half-second grace, before an upstream that streams
    on and on (so every stream through it is still running when the grace runs out)."""
    async with SlowStreamUpstream() as up:
        gw = make_gateway(catalog(f"http://127.0.0.1:{up.port}/v1"))
        yield gw, live(gw.app, timeout_graceful_shutdown=GRACE)


async def test_an_openai_stream_cut_at_shutdown_ends_with_an_error_the_sdk_raises(
    streaming: tuple[Gateway, LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    gw, server = streaming
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=server.url + "/v1", max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received: list[str | None] = []
    started = time.monotonic()
    with pytest.raises(openai.APIError, match="shutting down"):
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content)
            if len(received) == 2:
                stop_soon(server)
    await client.close()
    assert received[:2] == ["tick ", "tick "]  # what came before the cut was relayed
    assert time.monotonic() - started < GRACE + 3
    assert await recorded(gw) == [(503, "shutdown")]
    assert crashes(caplog) == []


async def test_an_anthropic_stream_cut_at_shutdown_ends_with_an_overloaded_error(
    streaming: tuple[Gateway, LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    gw, server = streaming
    client = anthropic.AsyncAnthropic(api_key=CLIENT_KEY, base_url=server.url, max_retries=0)
    texts = 0
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with client.messages.stream(
            model="gpt-4o", max_tokens=100, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            async for _ in stream.text_stream:
                texts += 1
                if texts == 2:
                    stop_soon(server)
    await client.close()
    assert texts >= 2
    assert raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert await recorded(gw) == [(503, "shutdown")]
    assert crashes(caplog) == []


async def test_a_call_still_waiting_at_shutdown_gets_a_503_in_the_clients_format(
    make_gateway: MakeGateway,
    live: Callable[..., LiveServer],
    upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    upstream.script("gpt-4o", [Fault(delay=5)])
    gw = make_gateway(catalog(upstream.url + "/v1"))
    server = live(gw.app, timeout_graceful_shutdown=GRACE)
    client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=server.url + "/v1", max_retries=0)
    call = asyncio.ensure_future(
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    )
    await asyncio.sleep(0.3)  # the call is with the upstream
    stop_soon(server)
    with pytest.raises(openai.InternalServerError) as raised:
        await call
    await client.close()
    assert raised.value.status_code == 503
    assert raised.value.code == "shutdown"
    assert await recorded(gw) == [(503, "shutdown")]
    assert crashes(caplog) == []
