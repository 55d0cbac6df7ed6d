"""Where a proxied request's CPU goes in a running gateway: Concord's stack, path and recording.

    python benchmarks/bench_breakdown.py [--duration 5] [--rounds 3]

`bench_gateway.py` says how Concord compares with the bare pass-through; this script says which
part of Concord the difference is in, measured the same way (one core, wrk at concurrency 8, the
fast local upstream, `concord serve` set up as in `bench_gateway.py`). Four servers, interleaved
round by round; each figure is the median over the rounds:

    passthrough   benchmarks/passthrough.py: Starlette's full stack + aiohttp
    stack         `concord serve` (same config, components, threads), every request answered by
                  a bare forward through the provider adapter: read the body, parse it, call
                  the upstream with `HTTPProvider.send`, encode the answer; no auth, routing,
                  guards, translation, headers or record
    unrecorded    the whole request path, but no `_finish`: no usage row, metrics, access-log
                  line or guard settlement
    concord       everything, as in production

The three variants change `concord.gateway` functions from a `-c` preamble in the server
process, after import and before it serves; nothing else differs. Reported per server: requests
per second, and CPU microseconds per request (user + system of every thread of the process, from
/proc, over the measured window), which shifts less than throughput when the machine is busy.
The differences between rows are the cost of each part, as it is paid in a busy server (about
twice what `bench_request_path.py` measures in process, where everything stays in cache).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import (  # the same servers, config and upstream
    BODY,
    LUA,
    NO_TOKENIZER,
    PYTHON,
    ROOT,
    free_port,
    serving,
    start_upstream,
    write_config,
    wrk,
)

# `handle` replaced by the least a gateway on this stack does: the provider adapter's call.
STACK = textwrap.dedent(
    """
    import orjson
    import concord.gateway.app as app
    from concord.gateway.respond import JSONAnswer
    from concord.providers.base import UpstreamRequest

    async def forward(state, request, kind):
        body = orjson.loads(await request.body())
        provider = state.pool.get("up")
        answer = await provider.send(UpstreamRequest(endpoint="chat", body=body, timeout=30.0))
        return JSONAnswer.raw(orjson.dumps(answer.body), 200, [])

    app.handle = forward
    """
)
# The request path without its ending: no record, no metrics or access log, no settlement.
UNRECORDED = textwrap.dedent(
    """
    import concord.gateway.handlers as handlers

    def finish(state, call, record):
        return None

    handlers._finish = finish
    """
)
VARIANTS = {"stack": STACK, "unrecorded": UNRECORDED, "concord": ""}
CONNECTIONS = 8


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that ended meanwhile
        total += int(fields[11]) + int(fields[12])
    return total


def measure(argv: list[str], port: int, duration: int, script: Path, log: Path) -> dict:
    with serving(argv, port, log) as (proc, url):
        wrk(url, CONNECTIONS, 1, script)  # warm up
        before = cpu_ticks(proc.pid)
        result = wrk(url, CONNECTIONS, duration, script)
        ticks = cpu_ticks(proc.pid) - before
        requests = result["rps"] * duration
        result["cpu_us"] = ticks / os.sysconf("SC_CLK_TCK") / requests * 1e6
        return result


def concord_variant(config: Path, port: int, preamble: str) -> list[str]:
    serve = ["serve", "-c", str(config), "--port", str(port), "--log-level", "info"]
    return [PYTHON, "-c", preamble + "\n" + NO_TOKENIZER, *serve]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="concord-bench-breakdown-"))
    script = work / "plain.lua"
    script.write_text(LUA % BODY)
    upstream, up_url = start_upstream(work)
    samples: dict[str, list[dict]] = {}
    try:
        config = write_config(work, up_url)
        for _ in range(args.rounds):
            port = free_port()
            argv = [PYTHON, str(ROOT / "benchmarks" / "passthrough.py"), up_url, str(port)]
            run = measure(argv, port, args.duration, script, work / "passthrough.log")
            samples.setdefault("passthrough", []).append(run)
            for name, preamble in VARIANTS.items():
                port = free_port()
                argv = concord_variant(config, port, preamble)
                run = measure(argv, port, args.duration, script, work / f"{name}.log")
                samples.setdefault(name, []).append(run)
    finally:
        upstream.terminate()
        upstream.wait(10)
    print(report(samples))
    return 0


def report(samples: dict[str, list[dict]]) -> str:
    floor = samples["passthrough"]
    lines = [f"{'server':<13}{'req/s':>9}{'vs pass':>9}{'CPU µs/req':>12}{'step':>8}"]
    previous = None
    for name, runs in samples.items():
        rps = statistics.median(run["rps"] for run in runs)
        pairs = zip(runs, floor, strict=True)
        ratio = statistics.median(run["rps"] / base["rps"] for run, base in pairs)
        cpu = statistics.median(run["cpu_us"] for run in runs)
        step = f"{cpu - previous:+8.1f}" if previous is not None else ""
        lines.append(f"{name:<13}{rps:>9.0f}{ratio:>9.2f}{cpu:>12.1f}{step}")
        previous = cpu
    lines.append(
        "step: CPU µs per request added by each row over the one above it "
        "(stack: Concord's server with a bare forward, against the pass-through)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
