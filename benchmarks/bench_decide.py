"""Benchmark the policy engine: `Graph.decide` latency and `compile_graph` time (SPEC §1).

Targets: p99 decide <= 20 µs on a 1,000-route config; compile of a 10,000-route config <= 2 s.
Configs are built programmatically: routes match on model, workspace, headers and input_tokens in
a mix, most pinning a model or workspace (as real configs do) and some matching on anything.
Requests are drawn at random over 4 endpoints x 55 models x 100 workspaces. "first sight" is a
fresh graph, where most requests are the first of their (endpoint, model, workspace) and fill the
graph's memo tables; "steady state" is measured after `--warmup` requests, as in a running server.
Each figure is the median over `--rounds` rounds, each on a freshly compiled graph, because a
shared machine's noise moves a single p99 by several microseconds.

    python benchmarks/bench_decide.py [--requests 20000] [--seed 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from concord.config.load import load
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
        },
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


def bench_decide(
    n_routes: int, n_requests: int, seed: int, warmup: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50, p99) in µs on a fresh graph (memo tables empty), then after `warmup` requests."""
    graph = compile_graph(Config.model_validate(build_config(n_routes)))
    runtime = RuntimeView(open_circuits=frozenset({"a/model-3"}))  # one circuit open
    cold = _measure(graph, random_requests(n_requests, 50, 100, seed), runtime)
    for ctx in random_requests(warmup, 50, 100, seed + 1):
        graph.decide(ctx, runtime)
    warm = _measure(graph, random_requests(n_requests, 50, 100, seed + 2), runtime)
    return cold, warm


def _measure(
    graph: Any, requests: list[RequestContext], runtime: RuntimeView
) -> tuple[float, float]:
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
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def bench_compile(n_routes: int) -> tuple[float, float]:
    raw = build_config(n_routes)
    start = time.perf_counter()
    config = Config.model_validate(raw)
    validated = time.perf_counter()
    compile_graph(config)
    done = time.perf_counter()
    return validated - start, done - validated


def bench_load(n_routes: int) -> float:
    """Seconds for `load()` (what `concord validate` and a reload run): parse the file, check
    it against the schema, the semantic checks, compile. The config is written as JSON (YAML's
    flow style), one line per value."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "concord.yaml"
        path.write_text(json.dumps(build_config(n_routes), indent=1), encoding="utf-8")
        start = time.perf_counter()
        loaded = load(path)
        elapsed = time.perf_counter() - start
    if not loaded.ok:
        raise SystemExit(f"the {n_routes}-route config does not load: {loaded.errors[:3]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3, help="report the median round")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    print(f"{'benchmark':<44} {'result':>24}   target")
    for n_routes in (10, 1_000):
        rounds = [
            bench_decide(n_routes, args.requests, args.seed + 10 * r, args.warmup)
            for r in range(args.rounds)
        ]
        for label, which in (("first sight", 0), ("steady state", 1)):
            p50 = statistics.median(r[which][0] for r in rounds)
            p99 = statistics.median(r[which][1] for r in rounds)
            name = f"decide, {n_routes:,} routes, {label}"
            print(f"{name:<44} {f'p50 {p50:5.1f} / p99 {p99:5.1f} µs':>24}   p99 <= 20 µs")
    for n_routes in (1_000, 10_000):
        validate_s, compile_s = bench_compile(n_routes)
        print(f"{f'compile, {n_routes:,} routes':<44} {f'{compile_s:.3f} s':>24}   <= 2 s")
        print(f"{'  pydantic validation before it':<44} {f'{validate_s:.3f} s':>24}")
    for n_routes in (1_000, 10_000):
        load_s = bench_load(n_routes)
        print(f"{f'load from the file, {n_routes:,} routes':<44} {f'{load_s:.3f} s':>24}")


if __name__ == "__main__":
    main()
