"""End-to-end fixtures for durable records: real `concord serve` processes on free ports, a fake
upstream speaking OpenAI and Anthropic, and one database per test on SQLite and on PostgreSQL.

PostgreSQL tests use a fresh database per test module (`concord_e2e_<random>`) on the server at
$CONCORD_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test), emptied before each
test; when that server is unreachable they are skipped with the reason, unless
CONCORD_TEST_REQUIRE_SERVICES=1, in which case they fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from concord.records.db import open_database
from tests.fakes.upstream import FakeUpstream
from tests.gateway.conftest import free_port
from tests.records.conftest import (
    fresh_postgres_database,
    reset_postgres,
    run_sync,
    unavailable,
)

CONCORD = str(Path(sys.executable).with_name("concord"))
ADMIN_KEY = "adm-" + "e" * 40
DECLARED_KEY = "ck-declared-" + "d" * 29  # declared in the config by its hash (SPEC §2.8)
UPSTREAM_KEY = "up-" + "u" * 20

# Catalog prices, USD per 1M tokens (SPEC §2.3)
GPT_PRICE = {"input": 2.0, "output": 10.0, "cached_input": 1.0}
CLAUDE_PRICE = {"input": 3.0, "output": 15.0, "cached_input": 0.3}


def cost(price: dict[str, float], input_tokens: int, output_tokens: int, cached: int) -> float:
    """What the usage log must charge: fresh input, cached input and output at catalog prices."""
    fresh = input_tokens - cached
    total = (
        fresh * price["input"] + cached * price["cached_input"] + output_tokens * price["output"]
    )
    return total / 1e6


# -- databases -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_module_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test module, dropped afterwards."""
    with fresh_postgres_database("concord_e2e") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database as a `storage.database` URL; the gateway migrates it at start."""
    if request.param == "sqlite":
        return "sqlite:///records/concord.db"  # relative: resolved against the config's folder
    url: str = request.getfixturevalue("postgres_module_url")
    run_sync(reset_postgres(url))
    return url


def usage_rows(url: str, base_dir: Path) -> list[dict[str, Any]]:
    """Every row of the usage table, read straight from the database."""
    rows: list[dict[str, Any]] = []

    async def read() -> None:
        from sqlalchemy import select

        from concord.records.tables import usage

        database = await open_database(url, base_dir=base_dir, migrate=False)
        try:
            async with database.connect() as conn:
                result = await conn.execute(select(usage))
                rows.extend(dict(row) for row in result.mappings())
        finally:
            await database.close()

    run_sync(read())
    return rows


# -- the fake upstream ---------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream.start_in_thread()
    try:
        yield up
    finally:
        up.stop()


# -- gateway processes ---------------------------------------------------------------------------


def gateway_yaml(
    port: int, database: str, up: FakeUpstream, extra: str = "", acme: str = "{tags: [paid]}"
) -> str:
    """Two providers on the fake upstream (OpenAI-type and Anthropic-type) with priced models,
    the admin key, the declared workspace `acme` (spec `acme`) with one declared key, and
    `extra` top-level YAML."""
    declared = hashlib.sha256(DECLARED_KEY.encode()).hexdigest()
    return textwrap.dedent(
        f"""\
        version: 1
        server: {{host: 127.0.0.1, port: {port}}}
        storage: {{database: "{database}"}}
        auth:
          admin_key: "{ADMIN_KEY}"
          keys:
            - {{name: declared, sha256: {declared}, workspace: acme}}
        workspaces:
          acme: {acme}
        providers:
          oai: {{type: openai, base_url: "{up.openai_url}", api_keys: ["{UPSTREAM_KEY}"]}}
          ant: {{type: anthropic, base_url: "{up.url}", api_keys: ["{UPSTREAM_KEY}"]}}
        models:
          gpt: {{targets: [oai/gpt-up], price: {json.dumps(GPT_PRICE)}}}
          claude: {{targets: [ant/claude-up], price: {json.dumps(CLAUDE_PRICE)}}}
        defaults: {{retry: {{attempts: 1}}}}
        """
    ) + textwrap.dedent(extra)


class Gateway:
    """`concord serve` in a subprocess; `terminate()` sends SIGTERM and waits for the exit."""

    def __init__(self, config: Path, port: int, name: str = "gw") -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = config.with_name(f"{name}-{port}.log")
        self._log_file = self.log.open("wb")
        args = [CONCORD, "serve", "-c", str(config), "--port", str(port), "--log-level", "warning"]
        # a metrics directory another test left in this process's environment is not ours
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        self.process = subprocess.Popen(
            args, cwd=config.parent, env=env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self.admin = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )

    def wait_serving(self, path: str = "/readyz", timeout: float = 60.0) -> None:
        """Until `path` answers 200 (`/healthz` for a gateway whose database is down)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"concord serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"concord serve did not answer {path}:\n{self.log.read_text()}")

    def readiness(self) -> dict[str, Any]:
        return httpx.get(self.url + "/readyz", timeout=5).json()  # type: ignore[no-any-return]

    def create_key(self, workspace: str, name: str, **extra: Any) -> dict[str, Any]:
        response = self.admin.post(
            "/_admin/keys", json={"workspace": workspace, "name": name, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def usage(self, **params: Any) -> list[dict[str, Any]]:
        response = self.admin.get("/_admin/usage", params=params)
        assert response.status_code == 200, response.text
        return response.json()["data"]  # type: ignore[no-any-return]

    def terminate(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        self.admin.close()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._log_file.close()


StartGateway = Callable[..., Gateway]


@dataclass
class Deployment:
    """One config file on disk; `start()` runs another `concord serve` on it."""

    config: Path
    gateways: list[Gateway] = field(default_factory=list)

    def start(self, *, wait: str = "/readyz") -> Gateway:
        gateway = Gateway(self.config, free_port(), name=f"gw{len(self.gateways)}")
        self.gateways.append(gateway)
        gateway.wait_serving(wait)
        return gateway


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Callable[..., Deployment]]:
    """`deploy(database_url, extra_yaml, acme=...)` writes concord.yaml in tmp_path (each
    process gets its own `--port`)."""
    deployments: list[Deployment] = []

    def make(database: str, extra: str = "", **acme: str) -> Deployment:
        config = tmp_path / "concord.yaml"
        text = gateway_yaml(free_port(), database, upstream, extra, **acme)
        config.write_text(text, encoding="utf-8")
        deployment = Deployment(config)
        deployments.append(deployment)
        return deployment

    yield make
    for deployment in deployments:
        for gateway in deployment.gateways:
            if gateway.process.poll() is None:
                gateway.terminate(10)


# -- load ----------------------------------------------------------------------------------------


@dataclass
class Load:
    """Threads sending chat requests back-to-back; remembers the request id of every 200."""

    url: str
    key: str = DECLARED_KEY
    threads: int = 4
    answered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.threads):
            worker = threading.Thread(target=self._run, daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def wait_answers(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.answered)
        while len(self.answered) - start < count:
            assert time.monotonic() < deadline, f"no progress: {self.failures[-3:]}"
            time.sleep(0.01)

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}"}
        body = {"model": "gpt", "messages": [{"role": "user", "content": "count me"}]}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/chat/completions", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(type(exc).__name__)
                    time.sleep(0.01)
                    continue
                if response.status_code == 200:
                    self.answered.append(response.headers["x-request-id"])
                else:
                    self.failures.append(f"{response.status_code}: {response.text[:120]}")


# -- a private PostgreSQL cluster ----------------------------------------------------------------


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


class PrivateCluster:
    """A throw-away PostgreSQL server owned by the `postgres` OS user (root cannot run initdb),
    on a free port, that tests can stop and start under load."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = ["runuser", "-u", "postgres", "--", *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "--no-sync", "-E", "UTF8",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "pg.log"),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivateCluster]:
    bindir = _postgres_bin()
    if bindir is None or os.geteuid() != 0:
        unavailable("a private PostgreSQL cluster needs /usr/lib/postgresql/*/bin and root")
    root = Path(f"/tmp/concord-pg-{secrets.token_hex(4)}")
    root.mkdir(mode=0o700)
    subprocess.run(["chown", "postgres:postgres", str(root)], check=True)
    cluster = PrivateCluster(bindir, root)  # type: ignore[arg-type]
    try:
        cluster.init()
        cluster.start()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        subprocess.run(["rm", "-rf", str(root)], check=False)
        unavailable(f"cannot run a private PostgreSQL cluster: {exc}")
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        subprocess.run(["rm", "-rf", str(root)], check=False)
