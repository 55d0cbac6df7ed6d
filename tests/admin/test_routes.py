"""SPEC §5 admin API and the V0 forms of SPEC §3.1, through the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from starlette.applications import Starlette

from concord.admin.routes import AdminContext, admin_routes
from concord.records.db import Database, open_database
from concord.records.keys import KeyStore, hash_key
from concord.records.queries import UsageQueries
from concord.records.usage import UsageRecord, UsageWriter
from concord.records.workspaces import Workspaces

ADMIN_KEY = "admin-secret-123"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Harness:
    def __init__(self, database: Database, tmp_path: Path) -> None:
        self.admin_key: str | None = ADMIN_KEY
        self.keys = KeyStore(database)
        self.writer = UsageWriter(database, tmp_path / "journal", flush_interval=60)
        ctx = AdminContext(
            admin_key=lambda: self.admin_key,
            keys=self.keys,
            workspaces=Workspaces(database),
            usage=UsageQueries(database),
            writer=self.writer,
        )
        app = Starlette(routes=admin_routes(ctx))
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://concord"
        )


@pytest.fixture
async def harness(database: Database, tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(database, tmp_path)
    async with h.client:
        yield h
    await h.writer.aclose()


@pytest.fixture
async def auth_harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """Auth is decided before any query: one in-memory database serves these tests."""
    db = await open_database("sqlite:///:memory:", base_dir=tmp_path)
    h = Harness(db, tmp_path)
    async with db, h.client:
        yield h


ADMIN_PATHS = [
    ("GET", "/_admin/workspaces"),
    ("POST", "/_admin/workspaces"),
    ("GET", "/_admin/keys"),
    ("POST", "/_admin/keys"),
    ("POST", "/_admin/keys/acme"),
    ("DELETE", "/_admin/keys/key_1"),
    ("POST", "/_admin/keys/revoke"),
    ("GET", "/_admin/usage"),
    ("GET", "/_stats/today"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_without_an_admin_key_configured_the_admin_api_is_not_there(
    auth_harness: Harness, method: str, path: str
) -> None:
    auth_harness.admin_key = ""
    response = await auth_harness.client.request(method, path, headers=AUTH)
    assert response.status_code == 404


BAD_AUTH = [{}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_KEY},
            {"X-API-Key": ADMIN_KEY}]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), ADMIN_PATHS)
async def test_wrong_or_missing_admin_key_is_401(
    auth_harness: Harness, method: str, path: str
) -> None:
    for headers in BAD_AUTH:
        response = await auth_harness.client.request(method, path, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["type"] == "authentication_error"
        assert ADMIN_KEY not in response.text


async def test_reloaded_admin_key_applies_to_the_next_request(auth_harness: Harness) -> None:
    harness = auth_harness
    harness.admin_key = "rotated"
    assert (await harness.client.get("/_admin/keys", headers=AUTH)).status_code == 401
    ok = await harness.client.get("/_admin/keys", headers={"Authorization": "Bearer rotated"})
    assert ok.status_code == 200


async def test_create_workspace_then_conflict(harness: Harness) -> None:
    body = {"name": "acme", "budget": {"limit_usd": 50, "period": "day", "on_exceed": "block"}}
    created = await harness.client.post("/_admin/workspaces", json=body, headers=AUTH)
    again = await harness.client.post("/_admin/workspaces", json=body, headers=AUTH)

    assert created.status_code == 201
    assert created.json()["budget"]["limit_usd"] == 50
    listed = await harness.client.get("/_admin/workspaces", headers=AUTH)
    (acme,) = [w for w in listed.json()["data"] if w["name"] == "acme"]
    assert created.json()["spend_usd"] == acme["spend_usd"] == 0.0  # the same record both ways
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "workspace_exists"


async def test_v0_workspace_body_is_accepted(harness: Harness) -> None:
    body = {"name": "demo", "monthly_budget_usd": 200, "action_on_exceed": "downgrade"}
    response = await harness.client.post("/_admin/workspaces", json=body, headers=AUTH)
    assert response.status_code == 201
    assert response.json()["id"] == "demo"
    assert response.json()["budget"] == {
        "limit_usd": 200,
        "period": "month",
        "on_exceed": "downgrade",
        "downgrade_to": None,
    }


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"budget": {"limit_usd": 5}}',
        b'{"name": "x", "budget": {"limit_usd": -5}}',
        b'{"name": "x", "budget": {"limit_usd": 5, "period": "year"}}',
        b'{"name": "bad name"}',
    ],
)
async def test_bad_workspace_bodies_are_400(harness: Harness, body: bytes) -> None:
    response = await harness.client.post("/_admin/workspaces", content=body, headers=AUTH)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "code"}


async def test_key_lifecycle(harness: Harness) -> None:
    client = harness.client
    await client.post("/_admin/workspaces", json={"name": "acme"}, headers=AUTH)
    created = await client.post(
        "/_admin/keys",
        json={"workspace": "acme", "name": "ci", "user": "alice", "tags": ["batch"]},
        headers=AUTH,
    )
    assert created.status_code == 201
    payload = created.json()
    key = payload["key"]
    assert key.startswith("ck-") and len(key) == 43
    assert {payload["name"], payload["workspace"]} == {"ci", "acme"}
    assert await harness.keys.lookup(hash_key(key)) is not None

    listed = await client.get("/_admin/keys", params={"workspace": "acme"}, headers=AUTH)
    assert [k["id"] for k in listed.json()["data"]] == [payload["id"]]
    assert key not in listed.text and hash_key(key) not in listed.text

    revoked = await client.delete(f"/_admin/keys/{payload['id']}", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert await harness.keys.lookup(hash_key(key)) is None
    missing = await client.delete("/_admin/keys/key_unknown", headers=AUTH)
    assert missing.status_code == 404


async def test_v0_path_form_issues_a_key(harness: Harness) -> None:
    await harness.client.post("/_admin/workspaces", json={"name": "demo"}, headers=AUTH)
    response = await harness.client.post("/_admin/keys/demo", headers=AUTH)
    assert response.status_code == 201
    assert response.json()["api_key"] == response.json()["key"]
    assert (await harness.keys.lookup(hash_key(response.json()["key"]))).workspace == "demo"


async def test_key_for_an_unknown_workspace_is_404(harness: Harness) -> None:
    response = await harness.client.post(
        "/_admin/keys", json={"workspace": "ghost", "name": "ci"}, headers=AUTH
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "workspace_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"workspace": "default"},
        {"workspace": "default", "name": "ci", "expires_at": "2001-01-01T00:00:00Z"},
        {"workspace": "default", "name": "ci", "expires_at": "soon"},
        {"workspace": "default", "name": "ci", "tags": "batch"},
    ],
)
async def test_bad_key_bodies_are_400(harness: Harness, body: dict[str, object]) -> None:
    response = await harness.client.post("/_admin/keys", json=body, headers=AUTH)
    assert response.status_code == 400


async def _issue(harness: Harness, workspace: str, name: str, user: str) -> dict[str, str]:
    body = {"workspace": workspace, "name": name, "user": user}
    response = await harness.client.post("/_admin/keys", json=body, headers=AUTH)
    assert response.status_code == 201
    return response.json()  # type: ignore[no-any-return]


async def test_key_list_filters_by_user_and_workspace(harness: Harness) -> None:
    a1 = await _issue(harness, "default", "a1", "alice")
    b1 = await _issue(harness, "default", "b1", "bob")

    async def ids(**params: str) -> list[str]:
        response = await harness.client.get("/_admin/keys", params=params, headers=AUTH)
        assert response.status_code == 200
        return [k["id"] for k in response.json()["data"]]

    assert await ids(user="alice") == [a1["id"]]
    assert await ids(user="bob", workspace="default") == [b1["id"]]
    assert await ids(user="alice", workspace="acme") == []
    assert await ids(user="") == [b1["id"], a1["id"]]  # blank: no filter, as ?workspace=
    assert await ids(owner="alice") == [b1["id"], a1["id"]]  # unknown parameters are ignored


async def test_revoke_by_user_answers_the_revoked_records(harness: Harness) -> None:
    a1 = await _issue(harness, "default", "a1", "alice")
    a2 = await _issue(harness, "default", "a2", "alice")
    bob = await _issue(harness, "default", "b1", "bob")

    response = await harness.client.post(
        "/_admin/keys/revoke", json={"user": "alice"}, headers=AUTH
    )

    assert response.status_code == 200
    data = response.json()["data"]
    assert [k["id"] for k in data] == [a2["id"], a1["id"]]  # newest first, as the list
    assert {k["status"] for k in data} == {"revoked"}
    for key in (a1["key"], a2["key"]):
        assert await harness.keys.lookup(hash_key(key)) is None
        assert key not in response.text and hash_key(key) not in response.text
    assert await harness.keys.lookup(hash_key(bob["key"])) is not None
    again = await harness.client.post("/_admin/keys/revoke", json={"user": "alice"}, headers=AUTH)
    assert again.status_code == 404 and again.json()["error"]["code"] == "key_not_found"


async def test_revoke_by_key_value(harness: Harness) -> None:
    issued = await _issue(harness, "default", "a1", "alice")
    other = await _issue(harness, "default", "a2", "alice")

    response = await harness.client.post(
        "/_admin/keys/revoke", json={"key": issued["key"]}, headers=AUTH
    )

    assert response.status_code == 200
    assert [(k["id"], k["status"]) for k in response.json()["data"]] == [(issued["id"], "revoked")]
    assert issued["key"] not in response.text
    assert await harness.keys.lookup(hash_key(issued["key"])) is None
    assert await harness.keys.lookup(hash_key(other["key"])) is not None
    unknown = "ck-" + "q" * 40
    missing = await harness.client.post("/_admin/keys/revoke", json={"key": unknown}, headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
    assert unknown not in missing.text


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"user": "alice", "key": "ck-abc"}',
        b'{"user": ""}',
        b'{"user": 7}',
        b'{"key": ["ck-abc"]}',
        b'{"key": "ck-abc", "workspace": "default"}',
        b'{"user": "alice", "workspace": 3}',
        b'{"username": "alice"}',
    ],
)
async def test_bad_revoke_bodies_are_400(harness: Harness, body: bytes) -> None:
    response = await harness.client.post("/_admin/keys/revoke", content=body, headers=AUTH)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "code"}
    assert "ck-abc" not in response.text


async def test_usage_report_includes_requests_still_queued(harness: Harness) -> None:
    for i, (ws, model, cost) in enumerate([("a", "m1", 1.0), ("a", "m2", 2.0), ("b", "m1", 4.0)]):
        harness.writer.record(
            UsageRecord(request_id=str(i), workspace=ws, status=200, served_model=model,
                        input_tokens=10, output_tokens=1, cost_usd=cost)
        )  # fmt: skip
    response = await harness.client.get(
        "/_admin/usage", params={"last_hours": "1", "group_by": "workspace"}, headers=AUTH
    )
    assert response.status_code == 200
    rows = {r["workspace"]: (r["requests"], r["cost_usd"]) for r in response.json()["data"]}
    assert rows == {"b": (1, 4.0), "a": (2, 3.0)}

    stats = await harness.client.get("/_stats/today", headers=AUTH)
    assert stats.json() == {"requests": 3, "cost_usd": 7.0, "input_tokens": 30, "output_tokens": 3}


@pytest.mark.parametrize(
    "params", [{"group_by": "provider"}, {"last_hours": "x"}, {"start": "nope"}]
)
async def test_bad_usage_queries_are_400(harness: Harness, params: dict[str, str]) -> None:
    response = await harness.client.get("/_admin/usage", params=params, headers=AUTH)
    assert response.status_code == 400


async def test_database_outage_is_503_without_details(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: object, **__: object) -> None:
        raise OperationalError("SELECT secret_sql", {}, OSError("connection refused"))

    monkeypatch.setattr(harness.keys, "list", unreachable)
    response = await harness.client.get("/_admin/keys", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert "secret_sql" not in response.text
