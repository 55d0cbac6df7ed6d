"""SPEC §7 with `--workers N`: a scrape on any worker sums every worker's counts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from concord.observability.metrics import (
    MULTIPROC_ENV,
    prepare_multiprocess_dir,
    remove_own_multiprocess_dir,
)

WORKER = """
import sys
from concord.gateway.record import UsageRecord
from concord.observability.metrics import Metrics
metrics = Metrics()
for _ in range(int(sys.argv[1])):
    metrics.record(UsageRecord(
        request_id="r", time=0.0, workspace="acme", key=None, user=None,
        requested_model="gpt-4o", model="gpt-4o", provider="up", target="up/gpt-4o",
        route="default", endpoint="chat", status=200, input_tokens=10))
metrics.set_version("abc123def456")
if len(sys.argv) > 2:
    sys.stdout.write(metrics.render()[0].decode())
"""


def run_worker(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", WORKER, *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_workers_share_one_fresh_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_999.db").write_bytes(b"stale")  # left over from a previous run
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    assert prepare_multiprocess_dir() == str(directory)
    assert list(directory.iterdir()) == []

    env = {**os.environ, MULTIPROC_ENV: str(directory)}
    run_worker(env, "2")
    text = run_worker(env, "3", "render")
    requests = [line for line in text.splitlines() if line.startswith("concord_requests_total")]
    assert requests == [
        'concord_requests_total{model="gpt-4o",provider="up",route="default",status="200"} 5.0'
    ]
    assert 'concord_tokens_total{kind="input",model="gpt-4o",workspace="acme"} 50.0' in text
    assert 'concord_config_info{version="abc123def456"}' in text


def test_without_a_directory_a_fresh_one_is_created(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(MULTIPROC_ENV, "")  # recorded, so teardown removes what prepare sets
    monkeypatch.delenv(MULTIPROC_ENV)
    directory = prepare_multiprocess_dir()
    assert os.environ[MULTIPROC_ENV] == directory and os.listdir(directory) == []
    os.rmdir(directory)


def test_only_the_directory_concord_made_is_removed_after_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, "")
    monkeypatch.delenv(MULTIPROC_ENV)
    made = prepare_multiprocess_dir()
    remove_own_multiprocess_dir(made)
    assert not os.path.exists(made)
    chosen = tmp_path / "concord-metrics-mine"  # an operator's, whatever its name
    chosen.mkdir()
    remove_own_multiprocess_dir(str(chosen))
    assert chosen.is_dir()
