"""SPEC §5 providers row: optional background health probes judge an idle provider."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from concord.engine.decision import ProbeSettings, ProviderSpec
from concord.gateway.app import create_app
from concord.observability.probes import probe_request
from tests.fakes.upstream import FakeUpstream, Fault
from tests.observability.conftest import ADMIN_KEY, UPSTREAM_KEY, Running

QUIET_KEY = "sk-quiet-" + "V" * 30
PROBE = "probe: {interval: 50ms, model: gpt-4o, timeout: 1s}"


def config(url: str, probe: str = PROBE) -> str:
    return f"""\
version: 1
auth:
  admin_key: {ADMIN_KEY}
providers:
  up: {{type: openai, base_url: "{url}", api_keys: ["{UPSTREAM_KEY}"], {probe}}}
  quiet: {{type: openai, base_url: "{url}", api_keys: ["{QUIET_KEY}"]}}
models:
  gpt-4o: {{targets: [up/gpt-4o]}}
  other: {{targets: [quiet/gpt-4o-mini]}}
"""


Launch = Callable[[str], Awaitable[Running]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    async with AsyncExitStack() as stack:

        async def run(text: str) -> Running:
            path = tmp_path / "concord.yaml"
            path.write_text(text, encoding="utf-8")
            app = create_app(str(path), env={})
            await stack.enter_async_context(app.router.lifespan_context(app))
            http = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
            )
            return Running(app, app.state.gateway, http, path, stack)

        yield run


async def report(gw: Running, name: str = "up") -> dict[str, Any]:
    response = await gw.admin("GET", "/_admin/providers")
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text and QUIET_KEY not in response.text
    (found,) = [p for p in response.json()["data"] if p["name"] == name]
    return found


async def until(gw: Running, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll the provider's admin report until `check` holds (fails after 3 s)."""
    deadline = time.monotonic() + 3.0
    while True:
        entry = await report(gw)
        if check(entry):
            return entry
        assert time.monotonic() < deadline, entry
        await asyncio.sleep(0.02)


def probes_of(upstream: FakeUpstream, key: str = UPSTREAM_KEY) -> list[Any]:
    return [r for r in upstream.requests if r.headers.get("authorization") == f"Bearer {key}"]


async def test_idle_provider_turns_unhealthy_and_recovers_from_probes_alone(
    launch: Launch, upstream: FakeUpstream
) -> None:
    upstream.script("gpt-4o", [Fault(status=500)] * 1000)
    gw = await launch(config(upstream.openai_url))

    down = await until(gw, lambda e: e["state"] == "unhealthy")
    assert [t["state"] for t in down["targets"] if t["target"] == "up/gpt-4o"] == ["unhealthy"]
    assert down["last_probe"]["ok"] is False
    assert down["last_probe"]["error"] == "status 500"
    assert down["last_probe"]["target"] == "up/gpt-4o"
    assert down["last_probe"]["at"] == pytest.approx(time.time(), abs=5)

    sent = probes_of(upstream)
    assert sent and all(r.path == "/v1/chat/completions" for r in sent)
    assert sent[0].json == {
        "model": "gpt-4o",
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "ping"}],
    }

    upstream.reset()  # the upstream recovers
    healthy = await until(gw, lambda e: e["state"] == "healthy")
    assert healthy["last_probe"]["ok"] is True
    assert healthy["last_probe"]["error"] is None
    assert healthy["last_probe"]["latency_ms"] >= 0


async def test_provider_without_probe_gets_no_probe_traffic(
    launch: Launch, upstream: FakeUpstream
) -> None:
    gw = await launch(config(upstream.openai_url))
    await until(gw, lambda e: e["last_probe"] is not None)
    while len(probes_of(upstream)) < 4:
        await asyncio.sleep(0.02)
    assert probes_of(upstream, QUIET_KEY) == []
    assert (await report(gw, "quiet"))["last_probe"] is None


async def test_probe_timeout_counts_as_a_failure(launch: Launch, upstream: FakeUpstream) -> None:
    upstream.script("gpt-4o", [Fault(delay=2.0)] * 10)
    slow = PROBE.replace("timeout: 1s", "timeout: 100ms")
    gw = await launch(config(upstream.openai_url, slow))
    entry = await until(gw, lambda e: e["last_probe"] is not None)
    assert entry["last_probe"]["ok"] is False
    assert entry["last_probe"]["error"] == "timeout"
    assert entry["last_probe"]["latency_ms"] < 1000


async def test_reload_that_removes_the_probe_stops_it(
    launch: Launch, upstream: FakeUpstream
) -> None:
    gw = await launch(config(upstream.openai_url))
    await until(gw, lambda e: e["last_probe"] is not None)

    gw.path.write_text(config(upstream.openai_url, probe="max_connections: 10"), encoding="utf-8")
    response = await gw.admin("POST", "/_admin/config/reload")
    assert response.status_code == 200, response.text
    await until(gw, lambda e: e["last_probe"] is None)
    await asyncio.sleep(0.1)  # a probe cancelled while in flight may still land

    count = len(probes_of(upstream))
    await asyncio.sleep(0.3)  # six probe intervals
    assert len(probes_of(upstream)) == count

    gw.path.write_text(config(upstream.openai_url), encoding="utf-8")  # and a reload adds it back
    assert (await gw.admin("POST", "/_admin/config/reload")).status_code == 200
    await until(gw, lambda e: e["last_probe"] is not None)
    assert len(probes_of(upstream)) > count


def test_anthropic_probe_uses_the_messages_api() -> None:
    probe = ProbeSettings(interval=30.0, model="claude-haiku", timeout=5.0)
    spec = ProviderSpec(name="claude", type="anthropic", api_keys=("k",), probe=probe)
    request = probe_request(spec, probe)
    assert request.endpoint == "messages"
    assert request.body["max_tokens"] == 1 and request.body["model"] == "claude-haiku"
    assert request.timeout == 5.0
    assert request.api_key is None  # the adapter's own key rotation applies
