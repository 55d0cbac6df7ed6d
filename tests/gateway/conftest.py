"""Gateway fixtures: apps built from YAML in tmp_path, the real SDKs wired to them in-process,
a fake upstream, and a real uvicorn server in a thread for streaming and disconnect tests."""

from __future__ import annotations

import asyncio
import hashlib
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import uvicorn
from starlette.applications import Starlette

from concord.gateway.app import GatewayState, create_app
from concord.gateway.record import MemoryRecorder
from tests.fakes.upstream import FakeUpstream

CLIENT_KEY = "ck-" + "a" * 40
CLIENT_KEY_SHA = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()


@dataclass
class Gateway:
    """An app under test and the SDK clients that talk to it in-process."""

    app: Starlette
    state: GatewayState
    recorder: MemoryRecorder
    http: httpx.AsyncClient

    def openai(self, key: str = CLIENT_KEY, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=key, base_url="http://gw/v1", http_client=self.http, max_retries=0, **options
        )

    def anthropic(self, key: str = CLIENT_KEY, **options: Any) -> anthropic.AsyncAnthropic:
        client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=self.app))
        return anthropic.AsyncAnthropic(
            api_key=key, base_url="http://gw", http_client=client, max_retries=0, **options
        )


MakeGateway = Callable[..., Gateway]


def config_text(body: str, *, auth: str | None = None) -> str:
    """A config with `body` (providers, models, ...) and, by default, the test client key."""
    auth = auth or (
        "auth:\n  mode: keys\n  keys:\n"
        f"    - {{name: test-key, sha256: {CLIENT_KEY_SHA}, workspace: acme, tags: [k]}}\n"
    )
    return "version: 1\n" + auth + textwrap.dedent(body)


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[MakeGateway]:
    clients: list[httpx.AsyncClient] = []
    states: list[GatewayState] = []

    def make(body: str, *, auth: str | None = None) -> Gateway:
        path = tmp_path / f"concord-{len(states)}.yaml"
        path.write_text(config_text(body, auth=auth), encoding="utf-8")
        app = create_app(str(path))
        state: GatewayState = app.state.gateway
        recorder = MemoryRecorder()
        state.recorder = recorder
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        clients.append(http)
        states.append(state)
        return Gateway(app, state, recorder, http)

    yield make
    for client in clients:
        await client.aclose()
    for state in states:
        await state.pool.close()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


def wait_ready(process: subprocess.Popen[Any], base: str, seconds: float = 60.0) -> None:
    """Until `concord serve` at `base` answers /readyz with 200; fails with its output if it
    exits or takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(base + "/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            output = process.stderr.read() if process.stderr else ""
            text = output.decode() if isinstance(output, bytes) else output
            raise AssertionError(f"concord serve did not become ready:\n{text}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread: streams arrive incrementally, disconnects are real."""

    def __init__(self, app: Starlette, **options: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", **options
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live() -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: Starlette, **options: Any) -> LiveServer:
        server = LiveServer(app, **options).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


async def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()
