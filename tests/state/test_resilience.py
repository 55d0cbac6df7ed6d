"""SPEC §1: if Redis becomes unreachable, requests keep being served (failure: open) or are
refused cleanly (failure: closed), and the gateway recovers by itself when Redis returns."""

from __future__ import annotations

import asyncio
import time

import pytest

from concord.engine.graph import BudgetRule, RateLimitRule
from concord.state import (
    BudgetKeeper,
    BudgetLine,
    CachedResponse,
    MemoryState,
    RateLimited,
    RateLimiter,
    ResilientState,
    ResponseCache,
    Settlement,
    StateUnavailable,
    Ticket,
    open_state,
)
from concord.state.redis import RedisState

from .services import RedisProcess, free_port

IDS = {"key": "k1", "workspace": "acme"}
RPM2 = [RateLimitRule("per-key", "key", rpm=2)]
BUDGET = [BudgetRule("workspace:acme", "workspace", 1.0)]


def dead_redis(failure: str = "open", retry_interval: float = 1.0) -> ResilientState:
    primary = RedisState.from_url(f"redis://127.0.0.1:{free_port()}/0", key_prefix="t:")
    return ResilientState(primary, MemoryState(), failure=failure, retry_interval=retry_interval)


def test_open_state_picks_the_backend_from_the_url() -> None:
    assert isinstance(open_state("memory"), MemoryState)
    assert isinstance(open_state("redis://127.0.0.1:1/0"), ResilientState)
    assert isinstance(open_state("unix:///tmp/redis.sock", failure="closed"), ResilientState)


def test_a_bad_state_url_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        open_state("postgres://user:s3cret@db/x")
    assert "s3cret" not in str(err.value)


async def test_failure_open_keeps_serving_with_local_limits() -> None:
    state = dead_redis("open")
    limiter = RateLimiter(state)
    await limiter.acquire(RPM2, IDS, 1)
    assert not state.healthy
    await limiter.acquire(RPM2, IDS, 1)
    with pytest.raises(RateLimited):  # limits still hold, per process
        await limiter.acquire(RPM2, IDS, 1)
    grant = await BudgetKeeper(state).reserve(BUDGET, IDS, 0.1)
    assert grant.outcome == "ok"
    await BudgetKeeper(state).settle(grant, 0.1)
    cache = ResponseCache(state)
    await cache.put("k", CachedResponse(b"{}"), ttl=60)
    assert await cache.get("k") is None  # the cache is skipped, not moved into memory
    await state.close()


async def test_failure_closed_refuses_guarded_requests_but_not_the_cache() -> None:
    state = dead_redis("closed")
    with pytest.raises(StateUnavailable):
        await RateLimiter(state).acquire(RPM2, IDS, 1)
    with pytest.raises(StateUnavailable):
        await BudgetKeeper(state).reserve(BUDGET, IDS, 0.1)
    with pytest.raises(StateUnavailable):
        await BudgetKeeper(state).used(BUDGET, IDS)
    assert await ResponseCache(state).get("k") is None
    assert state.failures >= 1
    await state.close()


async def test_a_dead_redis_is_probed_once_per_interval_not_once_per_request() -> None:
    state = dead_redis("open", retry_interval=60)
    limiter = RateLimiter(state)
    started = time.monotonic()
    for _ in range(50):
        await limiter.acquire([RateLimitRule("big", "key", rpm=1000)], IDS, 1)
    assert time.monotonic() - started < 1.0
    assert state.failures == 1
    assert not await state.ping()
    await state.close()


@pytest.mark.services
async def test_recovers_when_redis_returns_and_replays_outage_spend(
    redis_process: RedisProcess,
) -> None:
    primary = RedisState.from_url(redis_process.url, key_prefix="t:", timeout=0.5)
    state = ResilientState(primary, failure="open", retry_interval=0.05)
    keeper, cache = BudgetKeeper(state), ResponseCache(state)
    await keeper.settle(await keeper.reserve(BUDGET, IDS, 0.3), 0.25)
    await cache.put("k", CachedResponse(b"{}"), ttl=60)
    assert state.healthy and await cache.get("k") is not None

    redis_process.stop()
    grant = await keeper.reserve(BUDGET, IDS, 0.3)
    assert not state.healthy
    assert await keeper.used(BUDGET, IDS) == pytest.approx(0.25)  # fallback knew the spend
    await keeper.settle(grant, 0.5)
    assert await cache.get("k") is None

    redis_process.start()  # an empty Redis again: the cache is gone, the spend is replayed
    await asyncio.sleep(0.06)
    # A restarted Redis that lost its data is rebuilt from the usage log, as at start-up.
    await keeper.seed(BUDGET[0], "acme", 0.25)
    assert state.healthy
    for _ in range(50):  # the replay runs in the background
        if await keeper.used(BUDGET, IDS) == pytest.approx(0.75):
            break
        await asyncio.sleep(0.01)
    assert await keeper.used(BUDGET, IDS) == pytest.approx(0.75)
    await state.close()


async def test_the_one_call_path_hands_its_spend_to_the_fallback_when_redis_is_lost(
    redis_process: RedisProcess,
) -> None:
    """Spend admitted and settled through `admit`/`settle` (the guards' path) while Redis was up
    is where the fallback starts when it goes down: an outage does not reset a budget."""
    primary = RedisState.from_url(redis_process.url, key_prefix="t1:", timeout=0.5)
    state = ResilientState(primary, failure="open", retry_interval=5)
    line = BudgetLine("b:acme", "2027-01", 1.0)
    admitted = await state.admit(Ticket((), (line,), 0.5))
    assert admitted.budget is not None and admitted.budget.reservation is not None
    state.settle(Settlement(budget=admitted.budget.reservation, cost=0.75))
    again = await state.admit(Ticket((), (line,), 0.1))  # reports the settled $0.75
    assert again.budget is not None and again.budget.spent == (pytest.approx(0.75),)

    redis_process.stop()
    local = await state.admit(Ticket((), (line,), 0.5))
    assert not state.healthy
    assert local.budget is not None and local.budget.spent == (pytest.approx(0.75),)
    refused = await state.admit(Ticket((), (line,), 0.1))  # $0.75 spent + $0.5 in flight
    assert refused.budget is not None and refused.budget.blocked_by == 0
    await state.close()
