"""Redis going away and coming back, seen through the whole gateway (lifespan, usage log,
metrics): budgets are rebuilt from the usage log when Redis returns empty, and `/readyz` and
`concord_state_backend_up` say when it is gone (SPEC §1, §2.6, §3, §7)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import openai
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from concord.gateway import records_component
from concord.gateway.app import create_app
from concord.gateway.records_component import Records
from tests.gateway.conftest import CLIENT_KEY
from tests.guards.conftest import guards_config
from tests.state.services import RedisProcess

pytestmark = pytest.mark.services

# $0.001 per token each way: a few requests spend the budget
BODY = """
providers:
  demo: {type: mock}
models:
  gpt-4o: {targets: [demo/gpt-4o], price: {input: 1000, output: 1000}}
budgets:
  - {name: small, scope: key, limit_usd: 0.05, on_exceed: block}
"""
HELLO = [{"role": "user", "content": "hello"}]


class Running:
    """The full app, as `concord serve` assembles it, with its lifespan running."""

    def __init__(self, path: Path) -> None:
        self.app = create_app(str(path), env={})
        self.state = self.app.state.gateway
        self.stack = AsyncExitStack()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gw"
        )

    async def __aenter__(self) -> Running:
        await self.stack.enter_async_context(self.app.router.lifespan_context(self.app))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        await self.stack.aclose()

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=CLIENT_KEY, base_url="http://gw/v1", http_client=self.http, max_retries=0
        )

    async def status(self) -> int:
        """The status of one chat completion (429: the budget blocked it)."""
        try:
            await self.openai().chat.completions.create(model="gpt-4o", messages=HELLO)
        except openai.RateLimitError as blocked:
            assert blocked.code == "budget_exceeded"
            return 429
        return 200

    async def records_written(self) -> None:
        """Every usage record so far in the database (the writer flushes every 0.2 s)."""
        records = next(r for r in self.state.recorder.recorders if isinstance(r, Records))
        await records.writer.flush()

    async def state_up(self) -> float:
        text = (await self.http.get("/metrics")).text
        families = text_string_to_metric_families(text)
        return next(s.value for f in families for s in f.samples if f.name.endswith("_up"))


Start = Callable[[str], Awaitable[Running]]


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[Start]:
    async with AsyncExitStack() as stack:

        async def run(state: str) -> Running:
            path = tmp_path / "concord.yaml"  # every run shares the usage log next to it
            path.write_text(guards_config(BODY, state), encoding="utf-8")
            return await stack.enter_async_context(Running(path))

        yield run


async def eventually(check: Callable[[], Awaitable[object]], expected: object) -> None:
    for _ in range(100):
        if await check() == expected:
            return
        await asyncio.sleep(0.05)
    assert await check() == expected


async def test_a_budget_survives_redis_restarting_empty(
    start: Start, redis_process: RedisProcess
) -> None:
    gw = await start(redis_process.url)
    served = 0
    while await gw.status() == 200:  # spend the budget, a few requests' worth
        served += 1
        assert served < 30
    assert served >= 3
    await gw.records_written()
    redis_process.stop()
    redis_process.start()  # no persistence: it comes back without the spend
    backend = gw.state.guards.backend
    for _ in range(100):  # until the gateway is back on Redis (a new connection)
        await gw.status()
        if backend.healthy and backend.primary.connections >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # the budgets are rebuilt from the usage log in the background
    assert [await gw.status() for _ in range(4)] == [429] * 4


async def test_a_gateway_starting_on_an_empty_redis_rebuilds_budgets_from_the_usage_log(
    start: Start, redis_url: str
) -> None:
    prefixes = [f"concord-test:{uuid.uuid4().hex}:" for _ in range(2)]
    try:
        first = await start(f"{redis_url}?key_prefix={prefixes[0]}")
        while await first.status() == 200:
            pass
        await first.records_written()
        # another gateway on the same usage log, whose Redis keys hold nothing yet
        second = await start(f"{redis_url}?key_prefix={prefixes[1]}")
        assert await second.status() == 429
    finally:
        client = aioredis.Redis.from_url(redis_url)
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)
        await client.aclose()


async def test_readyz_and_the_metric_say_when_redis_is_gone(
    start: Start, redis_process: RedisProcess
) -> None:
    gw = await start(redis_process.url)
    while await gw.status() == 200:
        pass
    ready = await gw.http.get("/readyz")
    assert (ready.status_code, ready.json()["status"], ready.json()["checks"]["state"]) == (
        200,
        "ready",
        "ok",
    )
    assert await gw.state_up() == 1
    redis_process.stop()
    assert await gw.status() == 429  # still served, on the local counters: still blocked
    degraded = await gw.http.get("/readyz")
    assert degraded.status_code == 200  # still serving: it stays in the load balancer...
    assert degraded.json()["status"] == "degraded"  # ...and says what is wrong
    assert degraded.json()["checks"]["state"] == "degraded"
    assert await gw.state_up() == 0
    redis_process.start()
    await eventually(lambda: _ready_status(gw), "ready")
    assert await gw.state_up() == 1


async def _ready_status(gw: Running) -> str:
    return str((await gw.http.get("/readyz")).json()["status"])


async def test_a_budget_survives_redis_being_flushed_while_the_gateway_runs(
    start: Start, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FLUSHDB (or an eviction) answers no error, so no outage is seen: the gateway notices the
    budget counters went, by the mark seeding left, and rebuilds them from the usage log."""
    monkeypatch.setattr(records_component, "WORKSPACES_REFRESH", 0.05)
    prefix = f"concord-test:{uuid.uuid4().hex}:"
    client = aioredis.Redis.from_url(redis_url)
    try:
        gw = await start(f"{redis_url}?key_prefix={prefix}")
        while await gw.status() == 200:
            pass
        await gw.records_written()
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        await client.delete(*keys)  # as FLUSHDB would, for this gateway's keys
        await asyncio.sleep(0.5)  # a few checks of the mark
        assert [await gw.status() for _ in range(4)] == [429] * 4
    finally:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
