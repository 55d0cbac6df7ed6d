"""Hot-reload fixtures: a real `concord serve` subprocess, a client loop that never stops sending
requests while the config changes under it, and config files written the ways editors, GitOps and
Kubernetes write them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.gateway.conftest import free_port

__all__ = ["free_port"]

ADMIN_KEY = "adm-" + "r" * 32
CONCORD = str(Path(sys.executable).with_name("concord"))


async def until(check: object, timeout: float = 3.0) -> bool:
    """Whether `check()` came true within `timeout` seconds (polled every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return bool(check())  # type: ignore[operator]


def gateway_yaml(port: int, body: str, *, use: str = "alpha") -> str:
    """A config serving on `port` with two mock models `alpha` ("from A") and `beta` ("from B")
    and one route whose `use:` picks between them; `body` adds top-level keys."""
    return textwrap.dedent(
        f"""\
            version: 1
            server: {{host: 127.0.0.1, port: {port}}}
            auth: {{mode: open, admin_key: "{ADMIN_KEY}"}}
            providers:
              a: {{type: mock, reply: "from A"}}
              b: {{type: mock, reply: "from B"}}
            models:
              alpha: {{targets: [a/m]}}
              beta: {{targets: [b/m]}}
            routes:
              - {{name: main, use: {use}}}
            """
    ) + textwrap.dedent(body)


def write_atomic(path: Path, text: str) -> None:
    """Save the way editors and GitOps tools do: write a temp file, rename it over the old one."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


def chat(model: str = "alpha", text: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def reply_of(response: httpx.Response) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


class Server:
    """`concord serve` in a subprocess on a free port; stopped with SIGTERM."""

    def __init__(
        self, config: Path, port: int, workers: int = 1, log_level: str = "warning"
    ) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        args = [CONCORD, "serve", "-c", str(config), "--port", str(port), "--log-level", log_level]
        if workers > 1:
            args += ["--workers", str(workers)]
        self.log = config.with_suffix(".log")
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            args, cwd=config.parent, stdout=self._log_file, stderr=subprocess.STDOUT
        )
        self.admin = httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=5
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"concord serve exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"concord serve did not become ready:\n{self.log.read_text()}")

    def status(self) -> dict[str, object]:
        response = self.admin.get("/_admin/config")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def workers_started(self) -> int:
        """Worker processes that finished starting (uvicorn's own line; `log_level="info"`),
        replacements included. Sampling connections cannot count them: the kernel may hand
        every new connection to one worker for seconds on end."""
        return self.log.read_text().count("Application startup complete.")

    def workers_serving(self) -> int:
        """Workers answering 20 fresh connections, told apart by when they loaded the config."""
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: any worker may answer
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=self.url, limits=fresh, headers=headers, timeout=5) as client:
            return len({client.get("/_admin/config").json()["loaded_at"] for _ in range(20)})

    def version(self) -> str:
        return httpx.get(self.url + "/healthz", timeout=5).headers["x-concord-config"]

    def signal(self, sig: int = signal.SIGHUP) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        self.admin.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log_file.close()


StartServer = Callable[..., Server]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[StartServer]:
    """`serve(body, use=..., workers=1)` writes a config and starts `concord serve` on it;
    `serve(config=path, port=p)` serves a file the test wrote. Edit `server.config`."""
    servers: list[Server] = []

    def start(
        body: str = "",
        *,
        use: str = "alpha",
        workers: int = 1,
        config: Path | None = None,
        port: int | None = None,
        log_level: str = "warning",
    ) -> Server:
        port = port or free_port()
        if config is None:
            config = tmp_path / "concord.yaml"
            config.write_text(gateway_yaml(port, body, use=use), encoding="utf-8")
        server = Server(config, port, workers, log_level)
        servers.append(server)
        server.wait_ready()
        return server

    yield start
    for server in servers:
        server.stop()


@dataclass
class ClientLoop:
    """Requests back-to-back from a thread; every non-200 or transport error is a failure."""

    url: str
    body: dict[str, object] = field(default_factory=chat)
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    last_reply: str = ""
    replies: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ClientLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.post("/v1/chat/completions", json=self.body)
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                self.ok += 1
                self.last_reply = reply_of(response)
                self.replies.append((time.monotonic(), self.last_reply))

    def wait_reply(self, text: str, timeout: float = 3.0) -> float:
        """Seconds until a response carried `text` (raises after `timeout`)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.last_reply == text:
                return time.monotonic() - started
            time.sleep(0.005)
        raise AssertionError(f"no reply {text!r} within {timeout}s (last: {self.last_reply!r})")


def eventually(check: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()
