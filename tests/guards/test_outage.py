"""The state backend going away (SPEC §1): `state_failure: open` keeps serving, `closed` refuses
what needs limits or budgets; `/readyz` reports the backend."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from concord.gateway.guards import StateGuards
from tests.gateway.conftest import CLIENT_KEY, LiveServer, free_port
from tests.guards.conftest import MakeGateway
from tests.state.services import RedisProcess

BODY = """
providers:
  demo: {type: mock}
models:
  limited: {targets: [demo/limited], price: {input: 1, output: 1}}
  free: {targets: [demo/free]}
rate_limits:
  - {name: per-key, per: key, when: {model: limited}, rpm: 10000, tpm: 10000000}
budgets:
  - {name: team, scope: workspace, when: {model: limited}, limit_usd: 1000, period: day}
"""

HELLO = [{"role": "user", "content": "hello"}]


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.mark.services
async def test_closed_refuses_what_needs_limits_and_serves_the_rest(make_gateway: MakeGateway):
    client = make_gateway(BODY, dead_redis(), failure="closed").openai()
    with pytest.raises(openai.InternalServerError) as refused:
        await client.chat.completions.create(model="limited", messages=HELLO)
    assert refused.value.status_code == 503
    assert (refused.value.type, refused.value.code) == ("server_error", "overloaded")
    reply = await client.chat.completions.create(model="free", messages=HELLO)
    assert reply.choices[0].message.content == "Echo: hello"


@pytest.mark.services
async def test_open_serves_everything_on_local_counters(make_gateway: MakeGateway):
    client = make_gateway(BODY, dead_redis(), failure="open").openai()
    for model in ("limited", "free", "limited"):
        reply = await client.chat.completions.create(model=model, messages=HELLO)
        assert reply.choices[0].message.content == "Echo: hello"


@pytest.mark.parametrize(("failure", "status"), [("open", 200), ("closed", 503)])
async def test_readyz_reports_the_state_backend(
    make_gateway: MakeGateway, failure: str, status: int
):
    gw = make_gateway(BODY, dead_redis(), failure=failure)
    assert isinstance(gw.state.guards, StateGuards)
    await gw.state.guards.start(gw.state)  # what lifespan does
    gw.state.ready = True
    answer = await gw.http.get("/readyz")
    assert answer.status_code == status
    # open: still serving on local counters, so still ready, but it says so
    expected = ("degraded", "degraded") if failure == "open" else ("unready", "failed")
    assert (answer.json()["status"], answer.json()["checks"]["state"]) == expected


async def test_readyz_is_ready_on_memory(make_gateway: MakeGateway):
    gw = make_gateway(BODY, "memory")
    assert isinstance(gw.state.guards, StateGuards)
    await gw.state.guards.start(gw.state)
    gw.state.ready = True
    answer = await gw.http.get("/readyz")
    assert (answer.status_code, answer.json()["checks"]["state"]) == (200, "ok")


@pytest.mark.services
async def test_a_redis_restart_mid_load_loses_no_request(
    make_gateway: MakeGateway, redis_process: RedisProcess
):
    """A client loop against a live server; Redis is stopped for ~1.5 s and started again:
    every request is answered 200, and the gateway goes back to Redis afterwards."""
    gw = make_gateway(BODY, redis_process.url, failure="open")
    guards = gw.state.guards
    assert isinstance(guards, StateGuards)
    statuses: list[int] = []
    with LiveServer(gw.app) as server:
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=10) as http:
            for i in range(60):
                if i == 10:
                    redis_process.stop()
                if i == 40:
                    redis_process.start()
                body = {
                    "model": "limited",
                    "messages": [{"role": "user", "content": f"hello {i % 7}"}],
                    "temperature": 0,  # cacheable: hits, misses and stores all cross the outage
                }
                answer = await http.post("/v1/chat/completions", json=body)
                statuses.append(answer.status_code)
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.1)  # past the retry interval: the next call probes Redis
            answer = await http.post(
                "/v1/chat/completions", json={"model": "limited", "messages": HELLO}
            )
            statuses.append(answer.status_code)
    assert statuses == [200] * 61
    assert guards.backend.failures > 0  # the outage was seen...
    assert guards.backend.healthy  # ...and Redis is in use again
