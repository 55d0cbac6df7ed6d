"""Concord's own CPU per request, in process: no HTTP server, no upstream, no wrk.

    python benchmarks/bench_request_path.py [--requests 20000] [--rounds 5] [--state redis://...]

The app is built as `concord serve` builds it (declared-key auth, a route, metrics, the access log
to stderr's stand-in, usage recording into SQLite in a temporary directory, memory state) and
driven through ASGI directly; the provider's upstream call is replaced by a canned chat completion
after one pass of the event loop (its body is still encoded and the answer decoded, as a real call
would). What is left is exactly the gateway's own path: auth, parse, decide, guards, attempts,
translate, respond and record. Reported: CPU microseconds per request (process time, every thread),
the median and the best of the rounds, for each scenario (`--state` puts the guards on Redis;
its server then shares the machine, so its own CPU is not counted):

    plain    no guards (no rate limit, no budget, cache off)
    guards   a per-key rate limit, a budget and the cache, every request a miss (unique prompts)
    hit      the same guards, every request a cache hit

Much steadier than the wrk benchmarks on a shared machine, so it is the one to compare changes to
the request path with; the wrk benchmarks say what those changes are worth end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from concord.config.load import load_graph
from concord.gateway.app import create_app_from_graph
from concord.gateway.assemble import assemble
from concord.providers import http as provider_http
from concord.providers.base import UpstreamRequest, UpstreamResponse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gateway import CLIENT_KEY as KEY
from bench_gateway import CONFIG
from bench_guards_gateway import GUARDS, NO_GUARDS

ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
)
ANSWER_HEADERS = CIMultiDictProxy(CIMultiDict({"content-type": "application/json"}))
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"authorization", f"Bearer {KEY}".encode()),
    (b"content-type", b"application/json"),
]


async def canned_call(self: Any, request: UpstreamRequest, key: str | None) -> UpstreamResponse:
    """The provider's HTTP call, less the network: encode, one loop pass, decode."""
    provider_http._encode_body(request.body)
    self._headers(request, key)
    self._url(request)
    await asyncio.sleep(0)
    return UpstreamResponse(200, provider_http._decode_body(ANSWER), ANSWER_HEADERS)


def bodies(kind: str) -> Callable[[int], bytes]:
    def body(n: int) -> bytes:
        if kind == "plain":
            content = "hello"
        elif kind == "hit":
            content = "the same question"
        else:
            content = f"question {n}"
        request = {
            "model": "gpt-4o",
            "temperature": 0,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": content}],
        }
        return orjson.dumps(request)

    return body


async def one(app: Any, body: bytes) -> None:
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": headers,
        "state": {},
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(reply: dict[str, Any]) -> None:
        sent.append(reply)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        raise RuntimeError(f"answered {sent[0]['status']}: {sent[-1].get('body', b'')[:200]!r}")


async def measure(kind: str, work: Path, args: argparse.Namespace) -> list[float]:
    path = work / f"{kind}.yaml"
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    text = CONFIG.format(database=work / f"{kind}.db", digest=digest, upstream="http://127.0.0.1:9")
    if args.state != "memory":  # guards on Redis, under a key prefix of this run
        prefix = f"concord-bench-path:{os.getpid()}:{kind}:"
        text = text.replace("state: memory", f'state: "{args.state}?key_prefix={prefix}"')
    path.write_text(text + textwrap.dedent(NO_GUARDS if kind == "plain" else GUARDS))
    graph = load_graph(str(path))
    app = create_app_from_graph(graph, config_path=str(path), **assemble(graph, str(path), None))
    lifespan: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = asyncio.create_task(app(scope, lifespan.get, events.put))
    started = await events.get()
    if started["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"start-up failed: {started}")
    body = bodies(kind)
    batches = max(1, args.requests // args.concurrency)
    count = 0
    rounds = []
    for round_number in range(args.rounds + 1):  # the first round warms up
        began = time.process_time()
        for _ in range(batches):
            await asyncio.gather(*(one(app, body(count + i)) for i in range(args.concurrency)))
            count += args.concurrency
        if round_number:
            rounds.append((time.process_time() - began) / (batches * args.concurrency) * 1e6)
    await lifespan.put({"type": "lifespan.shutdown"})
    await events.get()
    await running
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="per round")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["plain", "guards", "hit"])
    parser.add_argument("--state", default="memory", help="memory, or a redis:// URL")
    args = parser.parse_args()
    provider_http.HTTPProvider._send_once = canned_call  # type: ignore[method-assign]
    os.environ.setdefault("CONCORD_LOG_LEVEL", "info")
    work = Path(tempfile.mkdtemp(prefix="concord-bench-path-"))
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    print(f"{'scenario':<10}{'median µs':>12}{'best µs':>10}   per request, CPU of every thread")
    console = sys.stderr
    for kind in [args.only] if args.only else ["plain", "guards", "hit"]:
        with open(os.devnull, "w") as devnull:
            sys.stderr = devnull  # where the access log writes, while the gateway runs
            try:
                rounds = run(measure(kind, work, args))
            finally:
                sys.stderr = console
        print(f"{kind:<10}{statistics.median(rounds):>12.1f}{min(rounds):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
