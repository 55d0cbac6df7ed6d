"""Benchmark the guards step: rate limit + budget + cache per request (SPEC §2.5-§2.7).

One "request" = `RateLimiter.acquire` (rpm + tpm, two rules) + `BudgetKeeper.reserve` (two
budgets) + `cache_key` + `ResponseCache.get`, then both settlements. Reported: sequential latency
percentiles, and throughput with `--concurrency` requests in flight. Against Redis each request
costs five round trips (acquire, two reserves, cache get; settles run after the response).

    python benchmarks/bench_guards.py [--state memory|redis://127.0.0.1:6379/0]
        [--requests 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

from concord.engine.graph import BudgetRule, Price, RateLimitRule
from concord.state import (
    BudgetKeeper,
    RateLimiter,
    ResponseCache,
    StateBackend,
    cache_key,
    open_state,
    worst_case_cost,
)

RULES = (
    RateLimitRule("per-key", "key", rpm=10**9, tpm=10**12),
    RateLimitRule("per-workspace", "workspace", rpm=10**9),
)
BUDGETS = (
    BudgetRule("workspace:acme", "workspace", 10**9),
    BudgetRule("per-key-daily", "key", 10**9, period="day"),
)
PRICE = Price(input=2.5, output=10.0)
BODY = {
    "model": "gpt-4o",
    "messages": [{"role": "system", "content": "Be brief."}]
    + [{"role": "user", "content": "word " * 200}] * 4,
    "temperature": 0,
    "max_tokens": 256,
}


async def one_request(limiter: RateLimiter, keeper: BudgetKeeper, cache: ResponseCache, i: int):
    ids = {"key": f"k{i % 50}", "workspace": "acme", "user": None}
    grant = await limiter.acquire(RULES, ids, 1200)
    budget = await keeper.reserve(BUDGETS, ids, worst_case_cost(PRICE, 1000, 256))
    await cache.get(cache_key("gpt-4o", "chat", BODY, "acme"))
    await limiter.settle(grant, 1100)
    await keeper.settle(budget, 0.004)


async def run(state: StateBackend, requests: int, concurrency: int) -> None:
    limiter, keeper, cache = RateLimiter(state), BudgetKeeper(state), ResponseCache(state)
    for i in range(200):  # warm up: connections, script loading
        await one_request(limiter, keeper, cache, i)

    latencies = []
    for i in range(requests):
        started = time.perf_counter()
        await one_request(limiter, keeper, cache, i)
        latencies.append((time.perf_counter() - started) * 1e6)
    latencies.sort()
    p50 = statistics.median(latencies)
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"sequential: p50 {p50:.0f} µs, p99 {p99:.0f} µs per request (acquire..settle)")

    sem = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> None:
        async with sem:
            await one_request(limiter, keeper, cache, i)

    started = time.perf_counter()
    await asyncio.gather(*(bounded(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    print(f"concurrency {concurrency}: {requests / elapsed:,.0f} guarded requests/s")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="memory")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    prefix = f"concord-bench:{uuid.uuid4().hex}:"
    state = open_state(args.state, key_prefix=prefix, timeout=2.0)
    try:
        await run(state, args.requests, args.concurrency)
    finally:
        if args.state != "memory":
            import redis.asyncio as aioredis

            client = aioredis.Redis.from_url(args.state)
            keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        await state.close()


if __name__ == "__main__":
    asyncio.run(main())
