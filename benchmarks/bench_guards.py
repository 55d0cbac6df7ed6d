"""Benchmark the guards step: rate limit + budget + cache per request (SPEC §2.5-§2.7).

One "request" = `RateLimiter.acquire` (rpm + tpm, two rules) + `BudgetKeeper.reserve` (two
budgets) + `cache_key` + `ResponseCache.get`, then both settlements. Reported: sequential latency
percentiles, and throughput with `--concurrency` requests in flight. Against Redis each request
costs five round trips (acquire, two reserves, cache get; settles run after the response).

Then the gateway's own path: one `admit` (the same rules, budgets and cache read in one
`Ticket`) and one `settle` per request, reported as process CPU time per admit+settle,
sequentially and with `--concurrency` in flight (best of `--rounds`). CPU time, unlike wall
time, holds still on a busy machine; it counts this process only (not the Redis server).

    python benchmarks/bench_guards.py [--state memory|redis://127.0.0.1:6379/0]
        [--requests 5000] [--concurrency 64] [--rounds 5]
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
    Settlement,
    StateBackend,
    Ticket,
    cache_key,
    open_state,
    worst_case_cost,
)
from concord.state.budgets import BudgetPlan, budget_plan
from concord.state.ratelimit import RatePlan, rate_plan

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


Plans = list[tuple[RatePlan, BudgetPlan]]


def plans() -> Plans:
    """One rate and budget plan per principal, as the guards step keeps them."""
    principals = ({"key": f"k{i}", "workspace": "acme", "user": None} for i in range(50))
    return [(rate_plan(RULES, ids), budget_plan(BUDGETS, ids)) for ids in principals]


async def admit_and_settle(state: StateBackend, todo: Plans, read: str, i: int) -> None:
    """What the guards step asks of the state for one request: one admit, one settle."""
    rates, spend = todo[i % len(todo)]
    now = time.time()
    ticket = Ticket(rates.buckets_at(1200), spend.lines_at(now), 0.0046, read)
    admitted = await state.admit(ticket, now)
    budget = admitted.budget.reservation if admitted.budget is not None else None
    state.settle(Settlement(admitted.rate.reservation, 1100, budget, 0.004))


async def cpu_per_request(state: StateBackend, requests: int, concurrency: int) -> float:
    """Process CPU µs per admit+settle, `concurrency` requests in flight (1: sequential)."""
    todo, read = plans(), cache_key("gpt-4o", "chat", BODY, "acme")

    async def worker(first: int) -> None:  # a worker per request in flight: no queue to run
        for i in range(first, requests, concurrency):
            await admit_and_settle(state, todo, read, i)

    cpu = time.process_time()
    await asyncio.gather(*(worker(first) for first in range(concurrency)))
    await state.flush()
    return (time.process_time() - cpu) / requests * 1e6


async def run_admit(state: StateBackend, requests: int, concurrency: int, rounds: int) -> None:
    await cpu_per_request(state, 200, 1)  # warm up
    for label, n in (("sequential", 1), (f"concurrency {concurrency}", concurrency)):
        best = min([await cpu_per_request(state, requests, n) for _ in range(rounds)])
        print(f"admit+settle, {label}: {best:.1f} µs CPU per request (best of {rounds})")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default="memory")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    prefix = f"concord-bench:{uuid.uuid4().hex}:"
    state = open_state(args.state, key_prefix=prefix, timeout=2.0)
    try:
        await run(state, args.requests, args.concurrency)
        await run_admit(state, args.requests, args.concurrency, args.rounds)
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
