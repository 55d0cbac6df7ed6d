"""Benchmark the policy engine: `Graph.decide` latency and `compile_graph` time (SPEC §1).

Targets: p99 decide <= 20 µs on a 1,000-route config; compile of a 10,000-route config <= 2 s.
Configs are built programmatically: routes match on model, workspace, headers and input_tokens in
a mix, most pinning a model or workspace (as real configs do) and some matching on anything.

    /work/venv/bin/python benchmarks/bench_decide.py [--requests 20000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from typing import Any

from concord.config.model import Config
from concord.engine.compile import compile_graph
from concord.engine.graph import RequestContext, RuntimeView

ENDPOINTS = ("chat", "chat", "chat", "messages", "embeddings", "completions")
TIERS = ("gold", "silver", "bronze")


def build_config(n_routes: int, n_models: int = 50, n_workspaces: int = 100) -> dict[str, Any]:
    rnd = random.Random(n_routes)
    models = [f"model-{i}" for i in range(n_models)]
    workspaces = [f"ws-{i}" for i in range(n_workspaces)]
    routes: list[dict[str, Any]] = []
    for i in range(n_routes - 1):
        kind = rnd.random()
        m, ws = rnd.choice(models), rnd.choice(workspaces)
        if kind < 0.35:
            when: dict[str, Any] = {
                "model": m,
                "input_tokens": {"gt": rnd.randrange(1000, 100_000)},
            }
        elif kind < 0.55:
            when = {"workspace": ws, "model": [m, rnd.choice(models)]}
        elif kind < 0.75:
            when = {"model": m, "header.x-tier": rnd.choice(TIERS)}
        elif kind < 0.85:
            when = {"endpoint": "embeddings", "workspace": f"ws-{rnd.randrange(10)}*"}
        elif kind < 0.97:
            when = {"workspace": ws, "any": [{"header.x-tier": "gold"}, {"stream": True}]}
        else:  # matches on anything: evaluated for every request
            when = {"header.x-tier": rnd.choice(TIERS), "input_tokens": {"gt": 50_000}}
        route: dict[str, Any] = {"name": f"route-{i}", "when": when, "use": rnd.choice(models)}
        if rnd.random() < 0.3:
            route["fallbacks"] = [rnd.choice(models)]
        routes.append(route)
    routes.append({"name": "default", "use": "$requested", "fallbacks": [models[0]]})
    return {
        "version": 1,
        "providers": {"a": {"type": "openai", "api_keys": ["k"]}, "b": {"type": "mock"}},
        "models": {
            m: {
                "targets": [f"a/{m}", f"b/{m}"],
                "context_window": 128_000,
                "price": {"input": 1, "output": 2},
            }
            for m in models
        },  # fmt: skip
        "workspaces": {ws: {"budget": {"limit_usd": 100}} for ws in workspaces[:20]},
        "rate_limits": [{"name": "per-key", "per": "key", "rpm": 600}],
        "routes": routes,
    }


def random_requests(n: int, n_models: int, n_workspaces: int, seed: int) -> list[RequestContext]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        headers = {"x-tier": rnd.choice(TIERS)} if rnd.random() < 0.5 else {}
        out.append(
            RequestContext(
                endpoint=rnd.choice(ENDPOINTS),  # type: ignore[arg-type]
                model=f"model-{rnd.randrange(n_models + 5)}",  # a few are not in the catalog
                workspace=f"ws-{rnd.randrange(n_workspaces)}",
                key="key-1",
                headers=headers,
                input_tokens=rnd.randrange(0, 120_000),
                temperature=rnd.choice((None, 0.0, 0.7)),
                stream=rnd.random() < 0.3,
            )
        )
    return out


def bench_decide(n_routes: int, n_requests: int, seed: int) -> tuple[float, float, float]:
    graph = compile_graph(Config.model_validate(build_config(n_routes)))
    requests = random_requests(n_requests, 50, 100, seed)
    runtime = RuntimeView(open_circuits=frozenset({"a/model-3"}))
    samples = []
    clock = time.perf_counter_ns
    gc.disable()
    try:
        for ctx in requests:
            start = clock()
            graph.decide(ctx, runtime)
            samples.append(clock() - start)
    finally:
        gc.enable()
    samples.sort()
    p50 = samples[len(samples) // 2] / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    return p50, p99, statistics.fmean(samples) / 1000


def bench_compile(n_routes: int) -> tuple[float, float]:
    raw = build_config(n_routes)
    start = time.perf_counter()
    config = Config.model_validate(raw)
    validated = time.perf_counter()
    compile_graph(config)
    done = time.perf_counter()
    return validated - start, done - validated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print(f"{'benchmark':<36} {'result':>22} {'target':>12}")
    for n_routes in (10, 1_000):
        p50, p99, mean = bench_decide(n_routes, args.requests, args.seed)
        label = f"decide, {n_routes:,} routes ({args.requests:,} req)"
        print(f"{label:<36} {f'p50 {p50:.1f} / p99 {p99:.1f} µs':>22} {'p99 <= 20 µs':>12}")
    for n_routes in (1_000, 10_000):
        validate_s, compile_s = bench_compile(n_routes)
        label = f"compile, {n_routes:,} routes"
        print(f"{label:<36} {f'{compile_s:.3f} s':>22} {'<= 2 s':>12}")
        print(f"{'  (pydantic validation, not compile)':<36} {f'{validate_s:.3f} s':>22}")


if __name__ == "__main__":
    main()
