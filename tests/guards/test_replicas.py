"""Two real `concord serve` processes sharing one Redis enforce one limit (SPEC §2.7: "With Redis
the limits hold across all workers and replicas")."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis

from tests.gateway.conftest import CLIENT_KEY, free_port, wait_ready
from tests.guards.conftest import guards_config

BODY = """
providers:
  demo: {type: mock}
models:
  gpt-4o: {targets: [demo/gpt-4o]}
rate_limits:
  - {name: per-key, per: key, rpm: 6}
"""


def serve(config: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "concord.cli", "serve", "-c", str(config)]
    command += ["--port", str(port), "--log-level", "warning"]
    return subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.fixture
def shared_state(redis_url: str) -> Iterator[str]:
    prefix = f"concord-test:{uuid.uuid4().hex}:"
    yield f"{redis_url}?key_prefix={prefix}"
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.mark.slow
@pytest.mark.services
def test_two_serve_processes_share_one_rpm_limit(tmp_path: Path, shared_state: str):
    config = tmp_path / "concord.yaml"
    config.write_text(guards_config(BODY, shared_state), encoding="utf-8")
    ports = [free_port(), free_port()]
    processes = [serve(config, port) for port in ports]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for process, base in zip(processes, bases, strict=True):
            wait_ready(process, base)
        clients = [
            openai.OpenAI(api_key=CLIENT_KEY, base_url=base + "/v1", max_retries=0)
            for base in bases
        ]
        served = {0: 0, 1: 0}
        refused = 0
        for i in range(10):  # alternate replicas: 5 requests each, 10 in all
            try:
                clients[i % 2].chat.completions.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
                )
                served[i % 2] += 1
            except openai.RateLimitError as exc:
                assert exc.response.headers["retry-after"]
                refused += 1
        assert sum(served.values()) == 6  # one limit of 6 rpm, not 6 per process
        assert served[0] > 0 and served[1] > 0
        assert refused == 4
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(15)
