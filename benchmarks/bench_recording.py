"""What usage recording into PostgreSQL costs the gateway (target: within 10% of recording off).

    python benchmarks/bench_recording.py [--url postgresql://postgres@127.0.0.1:5432/test]
        [--duration 5] [--writer-records 50000]

A tiny aiohttp upstream (bench_gateway.py's) answers a fixed chat completion on core 1, where the
PostgreSQL server is moved for the run too (it stands for a database on its own host). The gateway
runs alone on core 0, as `concord serve` would (uvloop, httptools, the full assembled app), on a
scratch PostgreSQL database, authenticating a database-issued key; once with every request's usage
record going to the batched writer, once with a NullRecorder in its place. wrk (core 1) drives each
at concurrency 8 and 64. Afterwards the usage table must hold a row for every request served
while recording. Then bench_usage_writer.py measures the writer's sustained records/s alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import asyncpg
import httpx
from bench_gateway import (  # type: ignore[import-not-found]
    UPSTREAM,
    free_port,
    pinned,
    servers_on_core,
    wait_readyz,
    wrk,
)

PYTHON = sys.executable
HERE = Path(__file__).resolve().parent
ADMIN_KEY = "adm-bench-" + "b" * 30
BODY = '{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":16}'
LUA = (
    'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    'wrk.headers["Authorization"] = "Bearer %s"\nwrk.body = [[%s]]\n'
)

# `concord serve` for one worker, with the recorder optionally swapped for a NullRecorder.
SERVER = textwrap.dedent(
    """
    import os, sys, uvicorn
    os.environ["CONCORD_LOG_LEVEL"] = "warning"  # as `concord serve --log-level warning`
    from concord.config.load import load_graph
    from concord.gateway.app import create_app_from_graph
    from concord.gateway.assemble import assemble
    from concord.gateway.record import NullRecorder
    config, port, recording = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "on"
    graph = load_graph(config)
    seams = assemble(graph, config, None)
    if not recording:
        seams["recorder"] = NullRecorder()
    app = create_app_from_graph(graph, config_path=config, **seams)
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False)
    """
)


def config_yaml(up_url: str, database: str) -> str:
    return textwrap.dedent(
        f"""
        version: 1
        storage: {{database: "{database}"}}
        auth: {{admin_key: "{ADMIN_KEY}"}}
        workspaces: {{bench: {{}}}}
        providers:
          up: {{type: openai, base_url: "{up_url}/v1", api_keys: [bench]}}
        models:
          gpt-4o: {{targets: [up/gpt-4o], price: {{input: 2.5, output: 10}}}}
        """
    )


async def usage_count(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM usage"))
    finally:
        await conn.close()


def run_gateway(work: Path, config: Path, recording: bool, duration: int) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [PYTHON, str(work / "server.py"), str(config), str(port), "on" if recording else "off"]
    log = (work / f"gateway-{'on' if recording else 'off'}.log").open("wb")
    proc = subprocess.Popen(pinned(0, argv), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_readyz(url, proc)
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}
        issued = httpx.post(
            url + "/_admin/keys", headers=admin, json={"workspace": "bench", "name": "wrk"}
        )
        issued.raise_for_status()
        script = work / f"chat-{'on' if recording else 'off'}.lua"
        script.write_text(LUA % (issued.json()["key"], BODY))
        result: dict[str, float] = {}
        for connections in (8, 64):
            wrk(url, connections, 1, script)  # warm up
            numbers = wrk(url, connections, duration, script)
            result.update({f"{key}@{connections}": value for key, value in numbers.items()})
        return result
    finally:
        proc.terminate()  # graceful: the writer flushes what is queued
        proc.wait(30)
        log.close()


async def scratch_database(url: str) -> str:
    name = f"concord_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{url.rpartition('/')[0]}/{name}"


async def drop_database(url: str, scratch: str) -> None:
    admin = await asyncpg.connect(url)
    try:
        name = scratch.rpartition("/")[2]
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--writer-records", type=int, default=50_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="concord-bench-recording-"))
    (work / "upstream.py").write_text(UPSTREAM)
    (work / "server.py").write_text(SERVER)
    scratch = asyncio.run(scratch_database(args.url))
    up_port = free_port()
    upstream = subprocess.Popen(pinned(1, [PYTHON, str(work / "upstream.py"), str(up_port)]))
    try:
        time.sleep(1.0)
        config = work / "concord.yaml"
        config.write_text(config_yaml(f"http://127.0.0.1:{up_port}", scratch))
        with servers_on_core(("postgres",), 1) as moved:
            if not moved:
                print("note: PostgreSQL could not be kept off core 0", file=sys.stderr)
            off = run_gateway(work, config, recording=False, duration=args.duration)
            before = asyncio.run(usage_count(scratch))
            on = run_gateway(work, config, recording=True, duration=args.duration)
            recorded = asyncio.run(usage_count(scratch)) - before
    finally:
        upstream.terminate()
        upstream.wait(10)
        asyncio.run(drop_database(args.url, scratch))
    print(f"{'metric':<12}{'recording off':>15}{'recording on':>14}{'ratio':>8}")
    for key in off:
        ratio = on[key] / off[key] if off[key] else float("nan")
        print(f"{key:<12}{off[key]:>15.2f}{on[key]:>14.2f}{ratio:>8.2f}")
    print(f"usage rows written while recording: {recorded}")
    writer = [PYTHON, str(HERE / "bench_usage_writer.py"), "--url", args.url]
    subprocess.run([*writer, "--records", str(args.writer_records)], check=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
