"""The guards' cost in a running gateway (SPEC §2.5-§2.7): rate limit + budget + cache vs none.

    python benchmarks/bench_guards_gateway.py [--duration 5] [--rounds 1] [--redis redis://...]

`concord serve` is pinned to core 0; the fast aiohttp upstream of bench_gateway.py and wrk share
core 1. Four gateways are measured with wrk at 64 connections, every request a unique prompt at
temperature 0 (so with the cache on, every request is a miss that is then stored):

    none     no rate limit, no budget, cache off                      (memory state)
    memory   per-key rpm+tpm limit, a per-key budget, cache on        (memory state)
    redis    the same on Redis                                         (skipped if unreachable)

A local Redis server is moved to core 1 for its run: it stands for a Redis on its own host.

Then, on each gateway with guards, cache hits vs misses at low concurrency: wrk with one
connection sends unique prompts (every request a miss, stored) and then one fixed prompt (after
the first, every request a hit) for `--duration` seconds each; the reported latency is wrk's
mean (1 / requests per second), so the Python client's own overhead is not in the numbers. The
upstream is the fast local one (well under a millisecond), the worst case for the cache: against
a real provider a miss takes hundreds of milliseconds and the speedup is that much larger.
Targets: guards within 15% of no-guards throughput; a hit at least 5x faster than a miss.

With `--rounds N` every gateway runs N times, interleaved, and each figure is the median of the
rounds (ratios are taken within a round). Last, the floor: a bare uvicorn app answering fixed
bytes, timed like a hit, is the least any hit can cost on this stack. Against this upstream the
floor bounds the speedup: a miss pays the HTTP work of a hit plus a second HTTP exchange, with
the upstream, that costs about as much again. So the speedup is also given on the time above the
floor: what the gateway itself spends on a hit against a miss.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (
    UPSTREAM,
    free_port,
    median_of,
    pinned,
    servers_on_core,
    wait_ready,
    wait_readyz,
    wrk,
)

PYTHON = sys.executable
KEY = "ck-" + "b" * 40
HEADERS = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}

# One unique prompt per request: a per-run random prefix and a counter (wrk -t1: one Lua state).
LUA = textwrap.dedent(
    f"""
    math.randomseed(os.time() + math.floor(os.clock() * 1000000))
    local run = tostring(math.random(1, 1000000000))
    local n = 0
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Authorization"] = "Bearer {KEY}"
    request = function()
      n = n + 1
      local body = '{{"model":"gpt-4o","temperature":0,"max_tokens":16,'
        .. '"messages":[{{"role":"user","content":"hello ' .. run .. '-' .. n .. '"}}]}}'
      return wrk.format(nil, nil, nil, body)
    end
    """
)

FIXED = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [[{body}]]
"""

GUARDS = """
rate_limits:
  - {name: per-key, per: key, rpm: 100000000, tpm: 1000000000}
budgets:
  - {name: per-key, scope: key, limit_usd: 1000000, period: day}
defaults:
  cache: {ttl: 10m}
"""
NO_GUARDS = """
defaults:
  cache: {enabled: false}
"""

# The least a hit can cost on this stack: uvicorn answering fixed bytes, with no gateway at all.
FLOOR_APP = textwrap.dedent(
    """
    import sys, uvicorn
    BODY = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'
    HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(BODY))]
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
    """
)


def config(up_url: str, state: str, guards: bool) -> str:
    sha = hashlib.sha256(KEY.encode()).hexdigest()
    return textwrap.dedent(
        f"""
        version: 1
        storage: {{state: "{state}"}}
        auth:
          keys: [{{name: bench, sha256: {sha}, workspace: bench}}]
        providers:
          up: {{type: openai, base_url: "{up_url}/v1", api_keys: [bench]}}
        models:
          gpt-4o: {{targets: [up/gpt-4o], price: {{input: 2.5, output: 10}}}}
        """
    ) + textwrap.dedent(GUARDS if guards else NO_GUARDS)


def serve(path: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [PYTHON, "-m", "concord.cli", "serve", "-c", str(path), "--port", str(port)]
    argv += ["--log-level", "warning"]
    return subprocess.Popen(pinned(0, argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def body(prompt: str) -> str:
    return (
        '{"model":"gpt-4o","temperature":0,"max_tokens":16,'
        f'"messages":[{{"role":"user","content":"{prompt}"}}]}}'
    )


def hit_vs_miss(url: str, work: Path, duration: int) -> tuple[float, float]:
    """Mean ms per request with one connection: all misses (unique prompts), then all hits."""
    fixed = body(f"latency {uuid.uuid4().hex}")
    with httpx.Client(base_url=url, headers=HEADERS, timeout=10) as client:
        for expected in ("miss", "hit"):  # store the entry, and check the gateway serves it
            answer = client.post("/v1/chat/completions", content=fixed)
            assert answer.headers["x-concord-cache"] == expected, answer.headers
    script = work / "fixed.lua"
    script.write_text(FIXED.format(key=KEY, body=fixed))
    miss = wrk(url, 1, duration, work / "unique.lua")["rps"]
    hit = wrk(url, 1, duration, script)["rps"]
    return 1000 / miss, 1000 / hit


def run(work: Path, name: str, text: str, duration: int, latency: bool) -> dict[str, float]:
    path = work / f"{name}.yaml"
    path.write_text(text)
    port = free_port()
    proc = serve(path, port)
    url = f"http://127.0.0.1:{port}"
    script = work / "unique.lua"
    try:
        wait_readyz(url, proc)
        wrk(url, 64, 1, script)  # warm up
        result = wrk(url, 64, duration, script)
        if latency:
            result["miss_ms"], result["hit_ms"] = hit_vs_miss(url, work, duration)
        return result
    finally:
        proc.terminate()
        proc.wait(15)


def redis_available(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def floor_ms(work: Path, duration: int) -> float:
    """Mean ms per request, one connection, of `FLOOR_APP` pinned like the gateway."""
    (work / "floor.py").write_text(FLOOR_APP)
    port = free_port()
    proc = subprocess.Popen(pinned(0, [PYTHON, str(work / "floor.py"), str(port)]))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        script = work / "fixed.lua"
        script.write_text(FIXED.format(key=KEY, body=body("floor")))
        return 1000 / wrk(url, 1, duration, script)["rps"]
    finally:
        proc.terminate()
        proc.wait(15)


def one_round(work: Path, up: str, args: argparse.Namespace, prefix: str) -> dict[str, dict]:
    """Every gateway once, in a fixed order; ratios are taken against this round's `none`."""
    found = {"none": run(work, "none", config(up, "memory", False), args.duration, False)}
    found["memory"] = run(work, "memory", config(up, "memory", True), args.duration, True)
    if redis_available(args.redis):
        state = f"{args.redis}?key_prefix={prefix}"
        with servers_on_core(("redis-server",), 1):  # a Redis of its own, not on core 0
            found["redis"] = run(work, "redis", config(up, state, True), args.duration, True)
    else:
        print("Redis unreachable: the redis row is skipped", file=sys.stderr)
    for numbers in found.values():
        numbers["ratio"] = numbers["rps"] / found["none"]["rps"]
        if "hit_ms" in numbers:
            numbers["speedup"] = numbers["miss_ms"] / numbers["hit_ms"]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=1, help="report the median of N rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="concord-bench-guards-"))
    (work / "unique.lua").write_text(LUA)
    (work / "upstream.py").write_text(UPSTREAM)
    up_port = free_port()
    upstream = subprocess.Popen(pinned(1, [PYTHON, str(work / "upstream.py"), str(up_port)]))
    prefix = f"concord-bench:{uuid.uuid4().hex}:"
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        time.sleep(1.0)
        up = f"http://127.0.0.1:{up_port}"
        for _ in range(args.rounds):
            for name, numbers in one_round(work, up, args, prefix).items():
                samples.setdefault(name, []).append(numbers)
        floor = floor_ms(work, args.duration)
    finally:
        upstream.terminate()
        upstream.wait(10)
        if redis_available(args.redis):
            client = redis.Redis.from_url(args.redis)
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.delete(*keys)
    results = {name: median_of(runs) for name, runs in samples.items()}
    print(f"{'gateway':<10}{'req/s':>10}{'vs none':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, numbers in results.items():
        print(
            f"{name:<10}{numbers['rps']:>10.0f}{numbers['ratio']:>10.2f}"
            f"{numbers['p50']:>10.2f}{numbers['p99']:>10.2f}"
        )
    print(f"floor: bare uvicorn answering fixed bytes, one connection: {floor:.3f} ms per request")
    for name, numbers in results.items():
        if "hit_ms" in numbers:
            beyond = (numbers["miss_ms"] - floor) / (numbers["hit_ms"] - floor)
            print(
                f"cache on {name}: miss {numbers['miss_ms']:.2f} ms, "
                f"hit {numbers['hit_ms']:.2f} ms ({numbers['speedup']:.1f}x; "
                f"{beyond:.1f}x on the time above the floor)"
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
