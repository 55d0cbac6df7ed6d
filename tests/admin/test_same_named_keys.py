"""Keys are told apart by who they are, not by their names (SPEC §2.6 `scope: key`, §2.7
`per: key`): two database keys both named `ci` (or `default`, what an unnamed key gets) in
different workspaces each have their own rate limit and budget, across a restart too."""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest

from concord.gateway.app import create_app

ADMIN_KEY = "adm-" + "s" * 40
CONFIG = """\
version: 1
storage: {{database: "{database}"}}
auth: {{mode: keys, admin_key: "{admin}"}}
workspaces: {{acme: {{}}, globex: {{}}}}
providers:
  demo: {{type: mock}}
models:
  echo: {{targets: [demo/echo], price: {{input: 1000, output: 1000}}}}
rate_limits:
  - {{name: per-key, per: key, rpm: {rpm}}}
budgets:
  - {{name: per-key-spend, scope: key, limit_usd: 0.01, period: day, on_exceed: block}}
"""

Start = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def start(migrated_url: str, tmp_path: Path) -> AsyncIterator[Start]:
    """`await start(rpm=...)`: the whole app, lifespan running, on the test database; a second
    call stops the first (its usage rows written) and starts again: a restart."""
    running: list[AsyncExitStack] = []

    async def run(rpm: int = 1000) -> httpx.AsyncClient:
        while running:
            await running.pop().aclose()
        config = tmp_path / "concord.yaml"
        text = CONFIG.format(database=migrated_url, admin=ADMIN_KEY, rpm=rpm)
        config.write_text(textwrap.dedent(text), encoding="utf-8")
        app = create_app(str(config), env={})
        stack = AsyncExitStack()
        running.append(stack)
        await stack.enter_async_context(app.router.lifespan_context(app))
        return await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        )

    yield run
    while running:
        await running.pop().aclose()


async def issue(http: httpx.AsyncClient, workspace: str, name: str) -> str:
    response = await http.post(
        "/_admin/keys",
        json={"workspace": workspace, "name": name},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["key"])


async def chat(http: httpx.AsyncClient, key: str) -> int:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
    headers = {"authorization": f"Bearer {key}"}
    response = await http.post("/v1/chat/completions", json=body, headers=headers)
    return response.status_code


async def test_keys_with_one_name_each_have_their_own_rate_limit(start: Start) -> None:
    http = await start(rpm=2)
    acme, globex = await issue(http, "acme", "ci"), await issue(http, "globex", "ci")
    assert [await chat(http, acme) for _ in range(3)] == [200, 200, 429]
    assert [await chat(http, globex) for _ in range(3)] == [200, 200, 429]


async def test_keys_with_one_name_each_have_their_own_budget_across_a_restart(
    start: Start,
) -> None:
    http = await start()
    acme, globex = await issue(http, "acme", "ci"), await issue(http, "globex", "ci")
    statuses = [await chat(http, acme) for _ in range(6)]
    assert statuses[-1] == 429 and statuses[0] == 200  # the acme key spent its budget
    assert await chat(http, globex) == 200  # the other `ci` key has its own
    restarted = await start()  # the spend of each key is rebuilt from the usage log
    assert await chat(restarted, acme) == 429
    assert await chat(restarted, globex) == 200


async def test_usage_by_key_keeps_keys_of_one_name_apart(start: Start) -> None:
    http = await start()
    acme, globex = await issue(http, "acme", "ci"), await issue(http, "globex", "ci")
    for key, times in ((acme, 2), (globex, 1)):
        for _ in range(times):
            assert await chat(http, key) == 200
    response = await http.get(
        "/_admin/usage",
        params={"group_by": "key", "last_hours": 1},
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    rows = response.json()["data"]
    assert sorted((r["key"], r["requests"]) for r in rows) == [("ci", 1), ("ci", 2)]
    assert len({r["key_id"] for r in rows}) == 2
