"""SPEC §2.6 through the running app: declaring the name of an admin-created workspace overrides
it while declared; removing the declaration brings it back, budget enforced and keys working."""

from __future__ import annotations

import asyncio
import textwrap
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from concord.gateway.app import create_app
from tests.records.conftest import (  # noqa: F401  (fixtures)
    backend,
    migrated_url,
    postgres_url,
)

ADMIN_KEY = "adm-" + "w" * 40
BUDGET = {"limit_usd": 0.0001, "period": "day", "on_exceed": "block", "downgrade_to": None}
DECLARATION = "  ws-y: {tags: [cfg]}\n"


def config_text(database: str, declared: str = "") -> str:
    """A priced mock model (about $0.001 a request) so a tiny budget runs out at once."""
    return (
        textwrap.dedent(
            f"""\
        version: 1
        storage: {{database: "{database}"}}
        auth: {{mode: keys, admin_key: "{ADMIN_KEY}"}}
        providers:
          demo: {{type: mock}}
        models:
          echo: {{targets: [demo/echo], price: {{input: 100, output: 100}}}}
        workspaces:
          acme: {{}}
        """
        )
        + declared
    )


@dataclass
class Running:
    http: httpx.AsyncClient
    config: Path
    database: str

    async def admin(self, method: str, path: str, **options: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        return await self.http.request(method, path, headers=headers, **options)

    async def chat(self, key: str) -> httpx.Response:
        body = {"model": "echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"authorization": f"Bearer {key}"}
        return await self.http.post("/v1/chat/completions", json=body, headers=headers)

    async def issue(self, workspace: str) -> httpx.Response:
        return await self.admin("POST", "/_admin/keys", json={"workspace": workspace, "name": "k"})

    async def reload(self, declared: str) -> None:
        """Rewrite the config and reload it, as an operator editing concord.yaml would."""
        self.config.write_text(config_text(self.database, declared), encoding="utf-8")
        response = await self.admin("POST", "/_admin/config/reload")
        assert response.status_code == 200, response.text

    async def workspace(self, name: str) -> dict[str, Any] | None:
        data = (await self.admin("GET", "/_admin/workspaces")).json()["data"]
        return next((w for w in data if w["name"] == name), None)

    async def wait_source(self, name: str, source: str) -> dict[str, Any] | None:
        """The listing once the sync that follows a reload (off the request) has run."""
        deadline = time.monotonic() + 5
        found = await self.workspace(name)
        while (found or {}).get("source") != source and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            found = await self.workspace(name)
        return found


@pytest.fixture
async def gateway(migrated_url: str, tmp_path: Path) -> AsyncIterator[Running]:  # noqa: F811
    """The whole app, lifespan running, on a database of each backend."""
    config = tmp_path / "concord.yaml"
    config.write_text(config_text(migrated_url), encoding="utf-8")
    app = create_app(str(config), env={})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        )
        yield Running(http, config, migrated_url)


async def spend_budget(gateway: Running, key: str) -> None:
    """Requests until the workspace budget blocks (the first one is served)."""
    codes = [(await gateway.chat(key)).status_code for _ in range(3)]
    assert codes[0] == 200 and codes[-1] == 429, codes


async def assert_blocked_by_budget(gateway: Running, key: str) -> None:
    response = await gateway.chat(key)
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "budget_exceeded"


async def test_an_api_workspace_survives_a_declaration_of_its_name(gateway: Running) -> None:
    body = {"name": "ws-y", "budget": BUDGET}
    assert (await gateway.admin("POST", "/_admin/workspaces", json=body)).status_code == 201
    key = (await gateway.issue("ws-y")).json()["key"]
    await spend_budget(gateway, key)

    await gateway.reload(DECLARATION)
    declared = await gateway.wait_source("ws-y", "config")
    assert declared is not None and (declared["budget"], declared["tags"]) == (None, ["cfg"])
    assert (await gateway.chat(key)).status_code == 200  # the declaration has no budget

    await gateway.reload("")
    restored = await gateway.wait_source("ws-y", "api")
    assert restored is not None and (restored["budget"], restored["tags"]) == (BUDGET, [])
    await assert_blocked_by_budget(gateway, key)  # the key still authenticates, budget back
    issued = await gateway.issue("ws-y")
    assert issued.status_code == 201, issued.text
    await assert_blocked_by_budget(gateway, issued.json()["key"])


async def test_a_config_only_workspace_still_goes_with_its_declaration(gateway: Running) -> None:
    await gateway.reload("  cfg-only: {tags: [cfg]}\n")
    assert await gateway.wait_source("cfg-only", "config") is not None

    await gateway.reload("")
    deadline = time.monotonic() + 5
    while await gateway.workspace("cfg-only") is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await gateway.workspace("cfg-only") is None
    assert (await gateway.issue("cfg-only")).status_code == 404
