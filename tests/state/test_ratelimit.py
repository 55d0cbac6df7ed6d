"""SPEC §2.7 rate limits, on every backend."""

from __future__ import annotations

import asyncio

import pytest

from concord.engine.graph import RateLimitRule
from concord.state import RateLimited, RateLimiter, StateBackend

NOW = 1_800_000_000.0
IDS = {"key": "k1", "workspace": "acme", "user": None}


async def _outcomes(
    limiter: RateLimiter, rules: list[RateLimitRule], n: int, tokens: int = 1
) -> list[RateLimited | None]:
    async def one() -> RateLimited | None:
        try:
            await limiter.acquire(rules, IDS, tokens, now=NOW)
        except RateLimited as exc:
            return exc
        return None

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_rpm_is_exact_under_concurrency(backend: StateBackend) -> None:
    outcomes = await _outcomes(RateLimiter(backend), [RateLimitRule("per-key", "key", rpm=10)], 30)
    assert outcomes.count(None) == 10
    refused = [o for o in outcomes if o is not None]
    assert all(o.rule == "per-key" and o.kind == "requests" for o in refused)


async def test_retry_after_is_when_capacity_returns(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-key", "key", rpm=10)]
    await _outcomes(limiter, rules, 10)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(rules, IDS, 1, now=NOW)
    # One request's worth refills in 60 s / 10 = 6 s.
    assert refused.value.retry_after == pytest.approx(6.0)
    assert refused.value.retry_after_header == "6"
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, IDS, 1, now=NOW + 5.9)
    await limiter.acquire(rules, IDS, 1, now=NOW + 6.0)


async def test_tpm_reserves_the_estimate_and_settles_to_actual(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-key", "key", tpm=1000)]
    first = await limiter.acquire(rules, IDS, 600, now=NOW)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(rules, IDS, 600, now=NOW)
    assert refused.value.kind == "tokens"
    assert refused.value.retry_after == pytest.approx(12.0)  # 200 tokens at 1000/60 per second
    await limiter.settle(first, 100, now=NOW)  # the call used far less than estimated
    await limiter.acquire(rules, IDS, 600, now=NOW)


async def test_usage_above_the_estimate_is_charged(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-key", "key", tpm=1000)]
    grant = await limiter.acquire(rules, IDS, 100, now=NOW)
    await limiter.settle(grant, 1500, now=NOW)  # 500 tokens into debt
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(rules, IDS, 1, now=NOW)
    assert refused.value.retry_after == pytest.approx(501 * 60 / 1000)


async def test_a_request_bigger_than_the_whole_tpm_passes_only_on_a_full_bucket(
    backend: StateBackend,
) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-key", "key", tpm=1000)]
    await limiter.acquire(rules, IDS, 5000, now=NOW)
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, IDS, 5000, now=NOW + 60)


async def test_a_refused_request_charges_no_other_rule(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-key", "key", rpm=2), RateLimitRule("per-ws", "workspace", rpm=1)]
    await limiter.acquire(rules, {"key": "k", "workspace": "a"}, 1, now=NOW)
    with pytest.raises(RateLimited) as refused:
        await limiter.acquire(rules, {"key": "k", "workspace": "a"}, 1, now=NOW)
    assert refused.value.rule == "per-ws"
    # Had the refused request been charged to per-key, this third one would exceed rpm 2.
    await limiter.acquire(rules, {"key": "k", "workspace": "b"}, 1, now=NOW)


async def test_scopes_count_separately_and_global_counts_everyone(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    per_ws = [RateLimitRule("per-ws", "workspace", rpm=1)]
    await limiter.acquire(per_ws, {"workspace": "a"}, 1, now=NOW)
    await limiter.acquire(per_ws, {"workspace": "b"}, 1, now=NOW)
    everyone = [RateLimitRule("all", "global", rpm=1)]
    await limiter.acquire(everyone, {"workspace": "a"}, 1, now=NOW)
    with pytest.raises(RateLimited):
        await limiter.acquire(everyone, {"workspace": "b"}, 1, now=NOW)


async def test_per_user_limits_skip_requests_without_a_user(backend: StateBackend) -> None:
    limiter = RateLimiter(backend)
    rules = [RateLimitRule("per-user", "user", rpm=1)]
    for _ in range(3):
        grant = await limiter.acquire(rules, {"workspace": "a", "user": None}, 1, now=NOW)
        assert grant.empty
    await limiter.acquire(rules, {"workspace": "a", "user": "u1"}, 1, now=NOW)
    with pytest.raises(RateLimited):
        await limiter.acquire(rules, {"workspace": "a", "user": "u1"}, 1, now=NOW)
    await limiter.acquire(rules, {"workspace": "a", "user": "u2"}, 1, now=NOW)


async def test_limits_follow_the_rule_name_not_the_numbers(backend: StateBackend) -> None:
    """SPEC §4: counters survive a reload that changes a limit, and the new limit applies to what
    was used: five requests at rpm 5, then rpm 6 admits exactly one more, then rpm 4 none."""
    limiter = RateLimiter(backend)
    await _outcomes(limiter, [RateLimitRule("per-key", "key", rpm=5)], 5)
    await limiter.acquire([RateLimitRule("per-key", "key", rpm=6)], IDS, 1, now=NOW)
    with pytest.raises(RateLimited):
        await limiter.acquire([RateLimitRule("per-key", "key", rpm=6)], IDS, 1, now=NOW)
    with pytest.raises(RateLimited):
        await limiter.acquire([RateLimitRule("per-key", "key", rpm=4)], IDS, 1, now=NOW)


@pytest.mark.services
async def test_two_processes_share_one_limit_through_redis(make_redis_state) -> None:
    first, second = RateLimiter(make_redis_state()), RateLimiter(make_redis_state())
    rules = [RateLimitRule("per-ws", "workspace", rpm=10, tpm=100_000)]

    async def one(limiter: RateLimiter) -> bool:
        try:
            await limiter.acquire(rules, IDS, 10, now=NOW)
        except RateLimited:
            return False
        return True

    results = await asyncio.gather(*(one(first if i % 2 else second) for i in range(30)))
    assert results.count(True) == 10
