"""Concord against the bare pass-through floor (benchmarks/passthrough.py) on one core.

    python benchmarks/bench_gateway.py [--duration 5] [--tokenizer both|with|without]
        [--access-log both|on|off] [--rounds 1]

A tiny aiohttp upstream answers a fixed chat completion (and a short stream) on core 1; each proxy
runs alone, pinned to core 0 with taskset; wrk (pinned to core 1) drives it at concurrency 8 and
64. Reported: requests/s, p50 and p99 latency, streaming time to first byte (median of sequential
requests) and peak RSS (VmHWM), plus Concord / pass-through ratios. Traffic stays on 127.0.0.1.

Concord runs as `concord serve` with everything a production request pays for: `auth.mode: keys`
with a declared client key, a matching route, the memory state backend, the usage log (SQLite in
the temporary directory, through the records component), and observability (Prometheus metrics and
the access log at `--log-level info`, written to a file). It is measured with and without the
optional `tokenizers` extra (quicktok); "without" blocks the import, as in the default install.
It is also measured without the access log (`concord-log`, served at `--log-level warning`): the
features the throughput targets name are auth, routing, usage recording, metrics and the memory
state backend, and the access log's own cost is then the difference between the two columns.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent
BODY = '{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
STREAM_BODY = BODY[:-1] + ',"stream":true}'
CLIENT_KEY = "sk-bench-0123456789abcdef"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
# `concord serve` in a process where `import quicktok` fails, as in the default install
NO_TOKENIZER = (
    "import sys; sys.modules['quicktok'] = None; from concord.cli import main; "
    "sys.exit(main(sys.argv[1:]))"
)

UPSTREAM = textwrap.dedent(
    """
    import asyncio, sys
    from aiohttp import web
    ANSWER = (b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},'
              b'"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,'
              b'"total_tokens":7}}')
    CHUNK = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
             b'"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}\\n\\n')
    USAGE = (b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
             b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":8,"total_tokens":13}}\\n\\n')
    async def chat(request):
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=ANSWER, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for _ in range(8):
            await response.write(CHUNK)
        await response.write(USAGE + b"data: [DONE]\\n\\n")
        await response.write_eof()
        return response
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)
LUA = (
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    f'wrk.headers["Authorization"] = "Bearer {CLIENT_KEY}"\nwrk.body = [[%s]]\n'
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited")
        try:
            response = httpx.post(
                url + "/v1/chat/completions", content=BODY, headers=AUTH, timeout=2
            )
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def wait_readyz(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Until `url`'s /readyz answers 200, or the process exits (RuntimeError)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: concord serve exited")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def servers_on_core(names: tuple[str, ...], core: int) -> Iterator[list[int]]:
    """Move local server processes (PostgreSQL, Redis) onto `core` for the measurement, and back
    afterwards: they stand for servers on their own hosts, and must not take the gateway's core.
    PostgreSQL's new backends inherit the postmaster's affinity. Yields the pids moved (none when
    the processes are not there or may not be moved)."""
    moved: dict[int, set[int]] = {}
    for pid in _pids_named(names):
        try:
            before = os.sched_getaffinity(pid)
            os.sched_setaffinity(pid, {core})
        except OSError:
            continue
        moved[pid] = before
    try:
        yield list(moved)
    finally:
        for pid, before in moved.items():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, before)


def _pids_named(names: tuple[str, ...]) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() in names:
                    pids.append(int(entry.name))
    return pids


def pinned(core: int, argv: list[str]) -> list[str]:
    return ["taskset", "-c", str(core), *argv] if shutil.which("taskset") else argv


def wrk(url: str, connections: int, duration: int, script: Path) -> dict[str, float]:
    argv = pinned(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"])
    out = subprocess.run(
        [*argv, "-s", str(script), url + "/v1/chat/completions"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50": _latency(out, "50%"), "p99": _latency(out, "99%")}


def _latency(out: str, label: str) -> float:
    match = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def ttft(url: str, samples: int = 50) -> float:
    times = []
    with httpx.Client(timeout=10) as client:
        for _ in range(samples):
            started = time.perf_counter()
            with client.stream(
                "POST",
                url + "/v1/chat/completions",
                content=STREAM_BODY,
                headers=AUTH,
            ) as response:
                first = None
                for _chunk in response.iter_raw():
                    if first is None:
                        first = (time.perf_counter() - started) * 1000
                times.append(first if first is not None else float("nan"))
    return statistics.median(times)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextlib.contextmanager
def serving(argv: list[str], port: int, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One proxy running alone on core 0, answering; its stderr (the access log) goes to `log`.
    Yields the process and its base URL; stops it afterwards."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen(pinned(0, argv), stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(15)


def measure(argv: list[str], port: int, duration: int, scripts: dict, log: Path) -> dict:
    with serving(argv, port, log) as (proc, url):
        result: dict[str, float] = {}
        for connections in (8, 64):
            wrk(url, connections, 1, scripts["plain"])  # warm up
            numbers = wrk(url, connections, duration, scripts["plain"])
            result.update({f"{key}@{connections}": value for key, value in numbers.items()})
        result["ttft_ms"] = ttft(url)
        result["rss_mib"] = peak_rss_mib(_child_pid(proc))
        return result


def _child_pid(proc: subprocess.Popen[bytes]) -> int:
    """The python process under taskset (taskset execs, so it is the same pid)."""
    return proc.pid


CONFIG = """
version: 1
storage: {{state: memory, database: "sqlite:///{database}"}}
auth:
  mode: keys
  keys: [{{name: bench, sha256: "{digest}", workspace: team-a}}]
workspaces: {{team-a: {{}}}}
providers:
  up: {{type: openai, base_url: "{upstream}/v1", api_keys: [bench]}}
models:
  gpt-4o: {{targets: [up/gpt-4o], price: {{input: 2.5, output: 10}}}}
routes:
  - {{name: chat, when: {{endpoint: chat, model: gpt-4o}}, use: $requested}}
"""


def concord_argv(config: Path, port: int, tokenizer: bool, access_log: bool = True) -> list[str]:
    level = "info" if access_log else "warning"  # the access log is written at info
    serve = ["serve", "-c", str(config), "--port", str(port), "--log-level", level]
    if tokenizer:
        return [PYTHON, "-m", "concord.cli", *serve]
    return [PYTHON, "-c", NO_TOKENIZER, *serve]


def start_upstream(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The fast local upstream, pinned to core 1; returns the process and its base URL."""
    (work / "upstream.py").write_text(UPSTREAM)
    port = free_port()
    upstream = subprocess.Popen(pinned(1, [PYTHON, str(work / "upstream.py"), str(port)]))
    time.sleep(1.0)
    return upstream, f"http://127.0.0.1:{port}"


def write_config(work: Path, up_url: str) -> Path:
    """Concord's benchmark config (CONFIG) in `work`, its usage log beside it."""
    config = work / "concord.yaml"
    digest = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    config.write_text(CONFIG.format(database=work / "usage.db", digest=digest, upstream=up_url))
    return config


def table(floor: dict[str, float], runs: dict[str, dict[str, float]]) -> str:
    names = list(runs)
    lines = [f"{'metric':<12}{'passthrough':>12}" + "".join(f"{n:>16}{'ratio':>7}" for n in names)]
    for key in floor:
        row = f"{key:<12}{floor[key]:>12.2f}"
        for name in names:
            value = runs[name][key]
            ratio = value / floor[key] if floor[key] else float("nan")
            row += f"{value:>16.2f}{ratio:>7.2f}"
        lines.append(row)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--tokenizer", choices=["both", "with", "without"], default="both")
    parser.add_argument("--access-log", choices=["both", "on", "off"], default="both")
    parser.add_argument("--rounds", type=int, default=1, help="report the median of N rounds")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="concord-bench-"))
    scripts = {"plain": work / "plain.lua"}
    scripts["plain"].write_text(LUA % BODY)
    upstream, up_url = start_upstream(work)
    try:
        config = write_config(work, up_url)
        modes = {"both": (False, True), "with": (True,), "without": (False,)}[args.tokenizer]
        logging = {"both": (True, False), "on": (True,), "off": (False,)}[args.access_log]
        samples: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):  # interleaved, so a busy moment hits every proxy alike
            port = free_port()
            argv = [PYTHON, str(ROOT / "benchmarks" / "passthrough.py"), up_url, str(port)]
            log = work / "passthrough.log"
            samples.setdefault("passthrough", []).append(
                measure(argv, port, args.duration, scripts, log)
            )
            for tokenizer in modes:
                for access_log in logging:
                    name = "concord+tok" if tokenizer else "concord"
                    name += "" if access_log else "-log"
                    port = free_port()
                    log = work / f"{name}.log"
                    argv = concord_argv(config, port, tokenizer, access_log)
                    samples.setdefault(name, []).append(
                        measure(argv, port, args.duration, scripts, log)
                    )
                    lines = log.read_text().count('"request_id"')
                    print(f"{name}: {lines} access-log lines", file=sys.stderr)
    finally:
        upstream.terminate()
        upstream.wait(10)
    results = {name: median_of(runs) for name, runs in samples.items()}
    floor = results.pop("passthrough")
    print(table(floor, results))
    return 0


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
