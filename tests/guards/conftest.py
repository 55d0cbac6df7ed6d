"""Guards fixtures: gateways whose state backend is memory or a real Redis (SPEC §1, §2.5-§2.7).

Every behaviour test takes `state_url` and so runs on both backends. Redis tests use the server
at CONCORD_TEST_REDIS_URL (default redis://127.0.0.1:6379/0) under a key prefix unique to the
test (the `key_prefix` query parameter of `storage.state`), deleted afterwards; they skip when
Redis is unreachable unless CONCORD_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import hashlib
import textwrap
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from concord.gateway.app import GatewayState, create_app
from concord.gateway.guards import StateGuards
from concord.gateway.record import MemoryRecorder
from tests.fakes.upstream import FakeUpstream
from tests.gateway.conftest import CLIENT_KEY, Gateway
from tests.state.conftest import (  # noqa: F401 - fixtures shared with tests/state
    redis_process,
    redis_url,
)

OTHER_KEY = "ck-" + "b" * 40  # a key of the workspace `globex`


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


AUTH = f"""
auth:
  mode: keys
  keys:
    - {{name: test-key, sha256: {_sha(CLIENT_KEY)}, workspace: acme}}
    - {{name: other-key, sha256: {_sha(OTHER_KEY)}, workspace: globex}}
"""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
async def state_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """`storage.state` for this test: `memory`, or Redis under a prefix of its own."""
    if request.param == "memory":
        yield "memory"
        return
    base: str = request.getfixturevalue("redis_url")
    prefix = f"concord-test:{uuid.uuid4().hex}:"
    yield f"{base}?key_prefix={prefix}"
    client = aioredis.Redis.from_url(base)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def guards_config(body: str, state: str, *, failure: str = "open") -> str:
    """A full config: the two test keys, `storage.state`, and `body` (providers, models...)."""
    storage = f'storage: {{state: "{state}", state_failure: {failure}}}\n'
    return "version: 1\n" + storage + textwrap.dedent(AUTH) + textwrap.dedent(body)


MakeGateway = Callable[..., Gateway]


@pytest.fixture
async def make_gateway(tmp_path: Path) -> AsyncIterator[MakeGateway]:
    """`make_gateway(body, state_url)`: an in-process app (no lifespan) whose state backend is
    closed at the end of the test."""
    made: list[tuple[httpx.AsyncClient, GatewayState]] = []

    def make(body: str, state: str, *, failure: str = "open") -> Gateway:
        path = tmp_path / f"concord-{len(made)}.yaml"
        path.write_text(guards_config(body, state, failure=failure), encoding="utf-8")
        app = create_app(str(path))
        gateway: GatewayState = app.state.gateway
        gateway.recorder = recorder = MemoryRecorder()
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        made.append((http, gateway))
        return Gateway(app, gateway, recorder, http)

    yield make
    for http, gateway in made:
        await http.aclose()
        await gateway.pool.close()
        if isinstance(gateway.guards, StateGuards):
            await gateway.guards.backend.close()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake
