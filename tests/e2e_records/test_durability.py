"""SPEC §1 "usage recorded async, batched, never lost": every request answered 200 is in the usage
table, through a graceful shutdown under load, a database that is down when the gateway starts,
and a PostgreSQL restart under load."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import pytest

from tests.e2e_records.conftest import (
    DECLARED_KEY,
    Deployment,
    Load,
    PrivateCluster,
    usage_rows,
)
from tests.records.conftest import reset_postgres, run_sync

pytestmark = pytest.mark.slow
# uvicorn finishes its graceful shutdown, then re-raises the signal it caught
GRACEFUL_EXIT = (0, -signal.SIGTERM)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def recorded_ids(deployment: Deployment, url: str) -> set[str]:
    return {row["request_id"] for row in usage_rows(url, deployment.config.parent)}


def test_sigterm_under_load_loses_no_usage_record(
    deploy: Callable[..., Deployment], database_url: str
) -> None:
    deployment = deploy(database_url)
    gateway = deployment.start()
    with Load(gateway.url, threads=6) as load:
        load.wait_answers(200)
        exit_code = gateway.terminate()  # SIGTERM while requests keep arriving
        load.stop()
    assert exit_code in GRACEFUL_EXIT, gateway.log.read_text()
    answered = set(load.answered)
    assert len(answered) >= 200
    missing = answered - recorded_ids(deployment, database_url)
    assert not missing, f"{len(missing)} answered requests missing from the usage table"


def test_database_down_at_start_then_restarted_under_load_loses_nothing(
    deploy: Callable[..., Deployment], private_postgres: PrivateCluster
) -> None:
    """Uses a private PostgreSQL cluster, stopped and started for real (`pg_ctl`)."""
    url = private_postgres.url
    private_postgres.stop()
    deployment = deploy(url)
    gateway = deployment.start(wait="/healthz")  # starts and serves without its database
    readiness = gateway.readiness()
    assert readiness["status"] == "unready" and readiness["checks"]["database"] != "ok"
    down_at_start = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {DECLARED_KEY}"},
        json={"model": "gpt", "messages": [{"role": "user", "content": "anyone there?"}]},
    )
    assert down_at_start.status_code == 200  # declared keys work; usage goes to the journal

    with Load(gateway.url, threads=4) as load:
        load.wait_answers(50)
        private_postgres.start()
        wait_for(lambda: gateway.readiness()["status"] == "ready", 10, "recovery at start-up")
        load.wait_answers(100)
        private_postgres.stop()  # a restart in the middle of the load
        wait_for(lambda: gateway.readiness()["checks"]["database"] != "ok", 5, "outage seen")
        load.wait_answers(100)
        private_postgres.start()
        wait_for(lambda: gateway.readiness()["status"] == "ready", 10, "recovery")
        load.wait_answers(100)
    assert not load.failures, load.failures[:5]
    answered = {down_at_start.headers["x-request-id"], *load.answered}

    def all_recorded() -> bool:
        return answered <= recorded_ids(deployment, url)  # the journal is replayed

    wait_for(all_recorded, 10, "journalled records to be replayed")
    assert gateway.terminate() in GRACEFUL_EXIT
    rows = usage_rows(url, deployment.config.parent)
    assert len(rows) == len({r["request_id"] for r in rows})  # replays never double a record


def test_records_journalled_at_shutdown_are_replayed_by_the_next_process(
    deploy: Callable[..., Deployment], postgres_module_url: str
) -> None:
    """The database is unreachable for a whole run: the journal carries its usage to the next."""
    run_sync(reset_postgres(postgres_module_url))
    unreachable = "postgresql://postgres@127.0.0.1:1/nowhere"
    deployment = deploy(unreachable)
    gateway = deployment.start(wait="/healthz")
    with Load(gateway.url, threads=2) as load:
        load.wait_answers(30)
    assert gateway.terminate() in GRACEFUL_EXIT
    journal = deployment.config.parent / ".concord-journal"
    assert list(journal.glob("usage-*.jsonl"))
    text = deployment.config.read_text().replace(unreachable, postgres_module_url)
    deployment.config.write_text(text)
    deployment.start()  # same config folder, database reachable now
    answered = set(load.answered)
    wait_for(
        lambda: answered <= recorded_ids(deployment, postgres_module_url), 10, "journal replay"
    )
    assert not list(journal.glob("usage-*.jsonl*"))
