"""Backends for the state suite: every behaviour test runs on memory and on Redis.

Redis tests use the server at CONCORD_TEST_REDIS_URL (default redis://127.0.0.1:6379/0) under a
key prefix unique to the test, deleted afterwards. They skip when it is unreachable, unless
CONCORD_TEST_REQUIRE_SERVICES=1, which turns the skip into a failure (CI).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
import redis.asyncio as aioredis

from concord.state import MemoryState, StateBackend
from concord.state.redis import RedisState

from .services import RedisProcess, free_port

REDIS_URL = os.environ.get("CONCORD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("CONCORD_TEST_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CONCORD_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(f"{reason}; set CONCORD_TEST_REQUIRE_SERVICES=1 to fail instead of skipping")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5).ping()
    except (redis.RedisError, OSError) as exc:
        where = urlsplit(REDIS_URL)  # host and port only: the URL may carry a password
        _unavailable(f"Redis not reachable at {where.hostname}:{where.port}: {type(exc).__name__}")
    return REDIS_URL


RedisFactory = Callable[[], RedisState]


@pytest.fixture
async def make_redis_state(redis_url: str) -> AsyncIterator[RedisFactory]:
    """Build RedisState instances (separate pools, like separate processes) sharing one prefix."""
    prefix = f"concord-test:{uuid.uuid4().hex}:"
    made: list[RedisState] = []

    def make() -> RedisState:
        state = RedisState.from_url(redis_url, key_prefix=prefix, timeout=2.0)
        made.append(state)
        return state

    yield make
    for state in made:
        await state.close()
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.services)])
def backend(request: pytest.FixtureRequest) -> StateBackend:
    if request.param == "memory":
        return MemoryState(cache_max_entries=100)
    make: RedisFactory = request.getfixturevalue("make_redis_state")
    return make()


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server binary not found")
    proc = RedisProcess(free_port())
    proc.start()
    yield proc
    proc.stop()
