"""Against real servers: incremental streams, disconnects, `concord serve` (SPEC §2.5, §6)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import anthropic
import openai
from aiohttp import web

import concord
from tests.gateway.conftest import CLIENT_KEY, MakeGateway, config_text, free_port, wait_ready


class SlowStreamUpstream:
    """An OpenAI-style upstream that streams forever, one chunk every 50 ms, and notices when
    its client (the gateway) drops the connection."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> SlowStreamUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = (
            b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"m",'
            b'"choices":[{"index":0,"delta":{"content":"tick "},"finish_reason":null}]}\n\n'
        )
        try:
            for _ in range(400):
                await response.write(chunk)
                await asyncio.sleep(0.05)
                if request.transport is None or request.transport.is_closing():
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        self.closed.set()
        return response


async def test_client_disconnect_closes_the_upstream_stream(make_gateway: MakeGateway, live):
    async with SlowStreamUpstream() as up:
        gw = make_gateway(
            f"""
            providers:
              slow: {{type: openai, base_url: "http://127.0.0.1:{up.port}/v1", api_keys: [k]}}
            models:
              ticker: {{targets: [slow/m]}}
            """
        )
        server = live(gw.app)
        client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=server.url + "/v1", max_retries=0)
        stream = await client.chat.completions.create(
            model="ticker", messages=[{"role": "user", "content": "x"}], stream=True
        )
        received = []
        async for chunk in stream:  # chunks arrive one by one, long before the stream ends
            received.append(chunk.choices[0].delta.content)
            if len(received) == 3:
                break
        await stream.close()
        await client.close()
        await asyncio.wait_for(up.closed.wait(), 5)
        assert received == ["tick "] * 3
        for _ in range(100):
            if gw.recorder.records:
                break
            await asyncio.sleep(0.02)
        assert gw.recorder.records[-1].error_type == "client_disconnected"


def test_concord_serve_subprocess_answers_both_sdks(tmp_path: Path):
    port = free_port()
    config = tmp_path / "concord.yaml"
    config.write_text(
        config_text(
            """
            providers:
              demo: {type: mock}
            models:
              gpt-4o: {targets: [demo/gpt-4o]}
            """
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "CONCORD_CONFIG": str(config)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "concord.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base)
        oai = openai.OpenAI(api_key=CLIENT_KEY, base_url=base + "/v1", max_retries=0)
        reply = oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "ping"}]
        )
        assert reply.choices[0].message.content == "Echo: ping"
        chunks = list(
            oai.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "ping"}], stream=True
            )
        )
        assert (
            "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Echo: ping"
        )
        ant = anthropic.Anthropic(api_key=CLIENT_KEY, base_url=base, max_retries=0)
        message = ant.messages.create(
            model="gpt-4o", max_tokens=10, messages=[{"role": "user", "content": "pong"}]
        )
        assert message.content[0].text == "Echo: pong"
    finally:
        process.terminate()
        process.wait(15)
    assert process.returncode in (0, -15)  # uvicorn re-raises the SIGTERM it handled


def test_concord_serve_rejects_an_invalid_config(tmp_path: Path):
    config = tmp_path / "bad.yaml"
    config.write_text("version: 1\nproviders: {}\nmodels: {m: {targets: [nope/x]}}\n")
    result = subprocess.run(
        [sys.executable, "-m", "concord.cli", "serve", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr


class SlowAnswerUpstream:
    """An OpenAI-style upstream that takes 10 s to answer a chat request and notices when the
    gateway gives up on it."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.abandoned = asyncio.Event()
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> SlowAnswerUpstream:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(
            app, handle_signals=False, access_log=None, handler_cancellation=True
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def chat(self, request: web.Request) -> web.Response:
        self.started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # aiohttp cancels the handler when the peer hangs up
            self.abandoned.set()
            raise
        return web.json_response({})


async def test_client_disconnect_cancels_a_non_streamed_upstream_call(
    make_gateway: MakeGateway, live
):
    async with SlowAnswerUpstream() as up:
        gw = make_gateway(
            f"""
            providers:
              slow: {{type: openai, base_url: "http://127.0.0.1:{up.port}/v1", api_keys: [k]}}
            models:
              thinker: {{targets: [slow/m]}}
            """
        )
        server = live(gw.app)
        client = openai.AsyncOpenAI(api_key=CLIENT_KEY, base_url=server.url + "/v1", max_retries=0)
        call = asyncio.ensure_future(
            client.chat.completions.create(
                model="thinker", messages=[{"role": "user", "content": "x"}]
            )
        )
        await asyncio.wait_for(up.started.wait(), 5)
        call.cancel()  # the client gives up and closes its connection
        await client.close()
        await asyncio.wait_for(up.abandoned.wait(), 5)
        for _ in range(100):
            if gw.recorder.records:
                break
            await asyncio.sleep(0.02)
        record = gw.recorder.records[-1]
        assert (record.status, record.error_type) == (499, "client_disconnected")


def test_concord_serve_reload_serves_and_watches_its_own_code(tmp_path: Path):
    """`--reload` (seed CLIs had it): one process, restarted when Concord's code changes; it
    serves like any other, its config hot-reloaded as always."""
    port = free_port()
    config = tmp_path / "concord.yaml"
    body = "providers:\n  demo: {type: mock}\nmodels:\n  gpt-4o: {targets: [demo/gpt-4o]}\n"
    config.write_text(config_text(body), encoding="utf-8")
    argv = [sys.executable, "-m", "concord.cli", "serve", "-c", str(config), "--port", str(port)]
    process = subprocess.Popen(
        [*argv, "--reload", "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(process, base)
        oai = openai.OpenAI(api_key=CLIENT_KEY, base_url=base + "/v1", max_retries=0)
        reply = oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "ping"}]
        )
        assert reply.choices[0].message.content == "Echo: ping"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    package = str(Path(concord.__file__).parent)
    assert "Will watch for changes" in output and package in output
