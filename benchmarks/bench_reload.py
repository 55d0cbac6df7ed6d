"""Hot reload under load (SPEC §4): how fast an edit is served, and what reloading costs.

    python benchmarks/bench_reload.py [--edits 60] [--reloads 100] [--clients 2]

Starts `concord serve` on a mock-provider config and keeps `--clients` threads sending chat
requests back-to-back. Then:

1. `--edits` times: rewrite the file (temp + rename, as editors and GitOps do) with a new mock
   `reply` and time the write to the first response carrying it: p50, p99, max.
2. `--reloads` more edits, one every 50 ms without waiting, then one final edit that must be
   served; every non-200 or transport error during the whole run counts as a failed request.
3. RSS, open file descriptors and sockets of the server process, from /proc, before phase 1,
   before phase 2 and 65 s later (after the pool's 60 s grace for retired adapters).

Targets: p99 <= 500 ms, zero failed requests, no growth in memory or open connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

CONCORD = str(Path(sys.executable).with_name("concord"))
BODY = {"model": "alpha", "messages": [{"role": "user", "content": "hello"}]}

CONFIG = """\
version: 1
server: {{host: 127.0.0.1, port: {port}}}
auth: {{mode: open}}
providers:
  a: {{type: mock, reply: "{reply}"}}
models:
  alpha: {{targets: [a/m]}}
routes:
  - {{name: main, use: alpha}}
"""


class Load:
    """Client threads; `first_seen[reply]` is when a response first carried `reply`."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.ok = 0
        self.failures: list[str] = []
        self.first_seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/chat/completions", json=BODY)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                now = time.monotonic()
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:120]}")
                    continue
                reply = response.json()["choices"][0]["message"]["content"]
                with self._lock:
                    self.ok += 1
                    self.first_seen.setdefault(reply, now)

    def wait_for(self, reply: str, timeout: float = 5.0) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.first_seen.get(reply)
            if seen is not None:
                return seen
            time.sleep(0.001)
        return None


def write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def process_stats(pid: int) -> dict[str, int]:
    """RSS (KiB), open fds and sockets of `pid` and its children, from /proc."""
    pids = [pid, *_children(pid)]
    rss = fds = sockets = 0
    for p in pids:
        with open(f"/proc/{p}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        for fd in os.listdir(f"/proc/{p}/fd"):
            fds += 1
            try:
                if os.readlink(f"/proc/{p}/fd/{fd}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
    return {"rss_kib": rss, "fds": fds, "sockets": sockets}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit("concord serve exited")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("concord serve did not become ready")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--reloads", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--settle", type=float, default=65.0, help="wait before the last /proc")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="concord-bench-reload-"))
    config = workdir / "concord.yaml"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config.write_text(CONFIG.format(port=port, reply="r-start"), encoding="utf-8")
    log = (workdir / "serve.log").open("wb")
    process = subprocess.Popen(
        [CONCORD, "serve", "-c", str(config), "--log-level", "warning"],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(url, process)
        with Load(url, args.clients) as load:
            if load.wait_for("r-start") is None:
                raise SystemExit("no response from the gateway")
            time.sleep(0.5)
            start_stats = process_stats(process.pid)
            latencies: list[float] = []
            missed = 0
            for i in range(args.edits):
                reply = f"r-edit-{i}"
                write_atomic(config, CONFIG.format(port=port, reply=reply))
                written = time.monotonic()
                seen = load.wait_for(reply)
                if seen is None:
                    missed += 1
                else:
                    latencies.append((seen - written) * 1000)
                time.sleep(0.05)
            mid_stats = process_stats(process.pid)
            requests_phase1 = load.ok
            for i in range(args.reloads):
                write_atomic(config, CONFIG.format(port=port, reply=f"r-burst-{i}"))
                time.sleep(0.05)
            write_atomic(config, CONFIG.format(port=port, reply="r-final"))
            final_seen = load.wait_for("r-final") is not None
            time.sleep(0.5)
            total_ok, failures = load.ok, list(load.failures)
        admin_stats = process_stats(process.pid)
        time.sleep(args.settle)
        settled_stats = process_stats(process.pid)
    finally:
        process.terminate()
        process.wait(30)
        log.close()

    print(f"edit -> first new response, {len(latencies)} edits under load ({args.clients} clients)")
    if latencies:
        p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
        print(
            f"  p50 {p50:.0f} ms   p99 {p99:.0f} ms   max {max(latencies):.0f} ms"
            f"   min {min(latencies):.0f} ms   missed {missed}"
        )
    print(f"{args.reloads} reloads 50 ms apart, then a final edit served: {final_seen}")
    print(
        f"requests: {total_ok} ok ({requests_phase1} during phase 1), "
        f"{len(failures)} failed {failures[:3]}"
    )
    for label, stats in (
        ("before edits", start_stats),
        (f"after {args.edits} edits", mid_stats),
        (f"after {args.reloads} reloads", admin_stats),
        (f"{args.settle:.0f} s later", settled_stats),
    ):
        print(
            f"  {label:<18} RSS {stats['rss_kib'] / 1024:.1f} MiB   fds {stats['fds']}"
            f"   sockets {stats['sockets']}"
        )
    return 0 if not failures and final_seen and not missed else 1


if __name__ == "__main__":
    sys.exit(main())
