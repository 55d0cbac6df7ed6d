"""Observability fixtures: the full app (as `concord serve` assembles it) with its lifespan
running, so components start, against a fake upstream."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from concord.gateway.app import GatewayState, create_app
from tests.fakes.upstream import FakeUpstream

CLIENT_KEY = "ck-" + "Q" * 40
ADMIN_KEY = "admin-" + "Z" * 32
UPSTREAM_KEY = "sk-upstream-" + "U" * 30
SECRETS = (CLIENT_KEY, ADMIN_KEY, UPSTREAM_KEY)


def config_text(upstream_url: str, body: str) -> str:
    sha = hashlib.sha256(CLIENT_KEY.encode()).hexdigest()
    head = f"""\
        version: 1
        auth:
          admin_key: {ADMIN_KEY}
          keys:
            - {{name: team-key, sha256: {sha}, workspace: acme}}
        providers:
          up: {{type: openai, base_url: "{upstream_url}", api_keys: ["{UPSTREAM_KEY}"]}}
        """
    return textwrap.dedent(head) + textwrap.dedent(body)


@dataclass
class Running:
    app: Starlette
    state: GatewayState
    http: httpx.AsyncClient
    path: Path
    stack: AsyncExitStack

    async def stop(self) -> None:
        """End the lifespan now (components stop, the access log is flushed)."""
        await self.stack.aclose()

    async def chat(
        self, model: str = "gpt-4o", key: str = CLIENT_KEY, content: str = "hello", **body: object
    ) -> httpx.Response:
        payload = {"model": model, "messages": [{"role": "user", "content": content}], **body}
        return await self.http.post(
            "/v1/chat/completions", json=payload, headers={"authorization": f"Bearer {key}"}
        )

    async def admin(self, method: str, path: str, key: str = ADMIN_KEY) -> httpx.Response:
        return await self.http.request(method, path, headers={"authorization": f"Bearer {key}"})

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics by (name, sorted labels)."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }


Start = Callable[[str], Awaitable[Running]]


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        yield fake


@pytest.fixture
async def start(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Start]:
    running: list[Running] = []

    async def run(body: str) -> Running:
        path = tmp_path / "concord.yaml"
        path.write_text(config_text(upstream.openai_url, body), encoding="utf-8")
        app = create_app(str(path), env={})
        stack = AsyncExitStack()
        await stack.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=app)
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://gw")
        )
        running.append(Running(app, app.state.gateway, http, path, stack))
        return running[-1]

    yield run
    for gw in running:
        await gw.stop()


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """The value of one sample (0.0 when the series does not exist)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
