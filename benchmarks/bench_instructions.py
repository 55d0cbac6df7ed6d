"""Instructions per request: Concord against the pass-through floor, counted by callgrind.

    python benchmarks/bench_instructions.py [--requests 2000] [--warmup 300]

A shared machine moves wall-clock figures by 10% and more from one minute to the next; the number
of instructions a server executes per request does not. Each server (the pass-through of
`passthrough.py`, then `concord serve` set up as in `bench_gateway.py`: declared-key auth, a route,
metrics, the access log, SQLite usage records, memory state) runs under `valgrind
--tool=callgrind` against the same fast local upstream. After `--warmup` requests the counters
are zeroed, `--requests` more are sent (8 at a time), and the counters dumped: every thread of the
server is counted, the usage writer and the access-log writer included.

Instructions are not time (cache misses and branch mispredictions do not show), but a change that
removes work shows here at once, to a fraction of a percent, which no wall-clock benchmark on this
machine can resolve. What still moves between runs (about +-3,000 in a million, more on a slow
day): work on a wall-clock schedule. Under valgrind a request takes some 40 times longer, so the
usage writer's 0.2 s flushes carry a few rows each instead of hundreds, and their per-batch cost
weighs more than it does in production.

The ratio pass-through / Concord is the instruction-count analogue of `bench_gateway.py`'s
throughput ratio. Needs `valgrind` (`apt-get install -y valgrind`); a run takes a few minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import (  # the same servers, config and upstream
    AUTH,
    BODY,
    PYTHON,
    ROOT,
    concord_argv,
    free_port,
    pinned,
    start_upstream,
    write_config,
)


async def send(url: str, count: int, concurrency: int = 8) -> None:
    """`count` chat completions, `concurrency` at a time; every one must be a 200."""
    async with aiohttp.ClientSession() as session:

        async def worker(share: int) -> None:
            for _ in range(share):
                async with session.post(url, data=BODY, headers=AUTH) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url} answered {response.status}")

        shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
        await asyncio.gather(*(worker(share) for share in shares))


def wait_answering(url: str, proc: subprocess.Popen[bytes], seconds: float = 300) -> None:
    """Until one request succeeds: start-up under valgrind takes a minute or more."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited")
        try:
            asyncio.run(send(url, 1, 1))
            return
        except (aiohttp.ClientError, RuntimeError, OSError):
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds:g}s")


def counted(argv: list[str], port: int, work: Path, name: str, args: argparse.Namespace) -> int:
    """Instructions the server executed for `args.requests` requests, all threads."""
    out = work / f"callgrind.{name}"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv]
    with (work / f"{name}.log").open("wb") as log:  # the access log, and valgrind's notes
        proc = subprocess.Popen(pinned(0, command), stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        wait_answering(url, proc)
        asyncio.run(send(url, args.warmup))
        control("--zero", proc.pid)
        asyncio.run(send(url, args.requests))
        control("--dump", proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    dumps = sorted(work.glob(f"callgrind.{name}.*"))  # the --dump file(s): name.1, ...
    if not dumps:
        raise RuntimeError(f"{name}: callgrind wrote no dump")
    return sum(_total(path) for path in dumps)


def control(action: str, pid: int) -> None:
    subprocess.run(["callgrind_control", action, str(pid)], check=True, capture_output=True)


def _total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        match = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if match:
            return int(match.group(1))
    raise RuntimeError(f"{path}: no totals line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--only", choices=["passthrough", "concord"], help="count one server")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="concord-bench-instructions-"))
    upstream, up_url = start_upstream(work)
    try:
        config = write_config(work, up_url)
        counts: dict[str, float] = {}
        if args.only != "concord":
            port = free_port()
            argv = [PYTHON, str(ROOT / "benchmarks" / "passthrough.py"), up_url, str(port)]
            counts["passthrough"] = counted(argv, port, work, "passthrough", args) / args.requests
        if args.only != "passthrough":
            port = free_port()
            argv = concord_argv(config, port, False)
            counts["concord"] = counted(argv, port, work, "concord", args) / args.requests
    finally:
        upstream.terminate()
        upstream.wait(10)
    print(f"{'server':<14}{'instructions/request':>22}")
    for name, count in counts.items():
        print(f"{name:<14}{count:>22,.0f}")
    if len(counts) == 2:
        ratio = counts["passthrough"] / counts["concord"]
        print(f"ratio passthrough / concord: {ratio:.3f} (throughput target >= 0.70)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
