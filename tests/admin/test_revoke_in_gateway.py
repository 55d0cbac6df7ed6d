"""Revoking by user or by key value through the running gateway (SPEC §2.8, §5): the keys stop
working at once on /v1/chat/completions, the others keep working, and no key value is ever
answered or logged."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from concord.gateway.app import create_app

ADMIN_KEY = "adm-" + "r" * 40


class Running:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.answers: list[str] = []  # every admin answer, to look for key values in

    async def admin(self, method: str, path: str, **options: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {ADMIN_KEY}"}
        response = await self.http.request(method, path, headers=headers, **options)
        self.answers.append(response.text)
        return response

    async def issue(self, workspace: str, name: str, user: str) -> dict[str, Any]:
        body = {"workspace": workspace, "name": name, "user": user}
        response = await self.admin("POST", "/_admin/keys", json=body)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    async def chat(self, key: str) -> int:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hello"}]}
        response = await self.http.post(
            "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
        )
        return response.status_code


@pytest.fixture
async def gateway(migrated_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    """The whole app, lifespan running, on a database of each backend and the mock provider."""
    config = tmp_path / "concord.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            storage: {{database: "{migrated_url}"}}
            auth: {{mode: keys, admin_key: "{ADMIN_KEY}"}}
            workspaces:
              acme: {{}}
              globex: {{}}
            providers:
              demo: {{type: mock}}
            models:
              echo: {{targets: [demo/echo]}}
            """
        ),
        encoding="utf-8",
    )
    app = create_app(str(config), env={})
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        http = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        )
        yield Running(http)


async def test_revoking_a_users_keys_stops_them_at_once_and_spares_the_others(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = [
        await gateway.issue("acme", "laptop", "alice"),
        await gateway.issue("globex", "ci", "alice"),
    ]
    bob = await gateway.issue("acme", "laptop", "bob")
    for issued in (*alice, bob):
        assert await gateway.chat(issued["key"]) == 200

    revoked = await gateway.admin("POST", "/_admin/keys/revoke", json={"user": "alice"})

    assert revoked.status_code == 200, revoked.text
    assert sorted(k["id"] for k in revoked.json()["data"]) == sorted(k["id"] for k in alice)
    assert {k["status"] for k in revoked.json()["data"]} == {"revoked"}
    for issued in alice:  # no waiting for the poller: this process forgets them at once
        assert await gateway.chat(issued["key"]) == 401
    assert await gateway.chat(bob["key"]) == 200

    again = await gateway.admin("POST", "/_admin/keys/revoke", json={"user": "alice"})
    assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"
    _assert_no_key_value_shown(gateway, caplog, [*alice, bob])


async def test_revoking_by_workspace_narrows_a_users_revocation(gateway: Running) -> None:
    in_acme = await gateway.issue("acme", "laptop", "alice")
    in_globex = await gateway.issue("globex", "ci", "alice")

    body = {"user": "alice", "workspace": "globex"}
    revoked = await gateway.admin("POST", "/_admin/keys/revoke", json=body)

    assert [k["id"] for k in revoked.json()["data"]] == [in_globex["id"]]
    assert await gateway.chat(in_globex["key"]) == 401
    assert await gateway.chat(in_acme["key"]) == 200


async def test_revoking_by_key_value_stops_that_key_only(
    gateway: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    first = await gateway.issue("acme", "laptop", "alice")
    second = await gateway.issue("acme", "phone", "alice")
    bob = await gateway.issue("acme", "laptop", "bob")

    revoked = await gateway.admin("POST", "/_admin/keys/revoke", json={"key": first["key"]})

    assert revoked.status_code == 200, revoked.text
    assert [(k["id"], k["status"]) for k in revoked.json()["data"]] == [(first["id"], "revoked")]
    assert await gateway.chat(first["key"]) == 401
    assert await gateway.chat(second["key"]) == 200
    assert await gateway.chat(bob["key"]) == 200
    unknown = await gateway.admin("POST", "/_admin/keys/revoke", json={"key": "ck-" + "x" * 40})
    assert unknown.status_code == 404
    _assert_no_key_value_shown(gateway, caplog, [first, second, bob])


async def test_the_key_list_filters_by_user_and_workspace(gateway: Running) -> None:
    a1 = await gateway.issue("acme", "laptop", "alice")
    a2 = await gateway.issue("globex", "ci", "alice")
    b1 = await gateway.issue("acme", "laptop", "bob")

    async def ids(**params: str) -> set[str]:
        response = await gateway.admin("GET", "/_admin/keys", params=params)
        assert response.status_code == 200
        return {k["id"] for k in response.json()["data"]}

    assert await ids(user="alice") == {a1["id"], a2["id"]}
    assert await ids(user="bob") == {b1["id"]}
    assert await ids(workspace="acme") == {a1["id"], b1["id"]}
    assert await ids(user="alice", workspace="acme") == {a1["id"]}
    assert await ids(user="carol") == set()
    assert await ids(user="alice", sort="name") == {a1["id"], a2["id"]}  # others are ignored


def _assert_no_key_value_shown(
    gateway: Running, caplog: pytest.LogCaptureFixture, issued: list[dict[str, Any]]
) -> None:
    creations = [a for a in gateway.answers if '"key":"ck-' in a.replace(" ", "")]
    others = [a for a in gateway.answers if a not in creations]
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    for key in (k["key"] for k in issued):
        assert not any(key in answer for answer in others)
        assert key not in logged
