"""Admin endpoints of SPEC §5 and V0's compatible forms (SPEC §3.1).

`admin_routes(ctx)` returns Starlette routes; the app mounts them next to its own. `ctx.admin_key`
is a callable so a config reload that changes the key takes effect on the next request.
`/_admin/config` and `/_admin/providers` belong to the gateway, not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from concord.admin.auth import admin_denied
from concord.admin.errors import AdminError, error_response
from concord.records.errors import (
    InvalidRecord,
    KeyNotFound,
    WorkspaceExists,
    WorkspaceNotFound,
)
from concord.records.keys import KeyStore
from concord.records.queries import UsageQueries, parse_group_by, parse_time, parse_window
from concord.records.usage import UsageWriter
from concord.records.workspaces import Budget, Workspaces

log = logging.getLogger("concord.admin")

Handler = Callable[[Request], Awaitable[Response]]
# A key may be issued for `default` without creating it: open mode and the quickstart use it.
IMPLICIT_WORKSPACES = frozenset({"default"})
_FLUSH_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What the admin API works on; the gateway builds one at start-up."""

    admin_key: Callable[[], str | None]
    keys: KeyStore
    workspaces: Workspaces
    usage: UsageQueries
    writer: UsageWriter | None = None  # flushed before reports so they include recent requests
    models: Callable[[], Collection[str]] | None = None  # the serving catalog (`downgrade_to`)


def admin_routes(ctx: AdminContext) -> list[Route]:
    api = _AdminAPI(ctx)
    guard = api.guard
    return [
        Route("/_admin/workspaces", guard(api.create_workspace), methods=["POST"]),
        Route("/_admin/workspaces", guard(api.list_workspaces), methods=["GET"]),
        Route("/_admin/keys", guard(api.create_key), methods=["POST"]),
        Route("/_admin/keys", guard(api.list_keys), methods=["GET"]),
        # before V0's path form, which would take `revoke` for a workspace name
        Route("/_admin/keys/revoke", guard(api.revoke_keys), methods=["POST"]),
        Route("/_admin/keys/{workspace}", guard(api.create_key_v0), methods=["POST"]),
        Route("/_admin/keys/{key_id}", guard(api.revoke_key), methods=["DELETE"]),
        Route("/_admin/usage", guard(api.usage), methods=["GET"]),
        Route("/_stats/today", guard(api.stats_today), methods=["GET"]),
    ]


class _AdminAPI:
    def __init__(self, ctx: AdminContext) -> None:
        self.ctx = ctx

    def guard(self, handler: Handler) -> Handler:
        """Admin auth first, then map records errors to JSON answers."""

        async def endpoint(request: Request) -> Response:
            denied = admin_denied(request, self.ctx.admin_key())
            if denied is not None:
                return denied
            try:
                return await handler(request)
            except AdminError as exc:
                return exc.response()
            except InvalidRecord as exc:
                return error_response(400, str(exc), "invalid_request")
            except WorkspaceNotFound as exc:
                return error_response(404, str(exc), "workspace_not_found")
            except KeyNotFound as exc:
                return error_response(404, str(exc), "key_not_found")
            except WorkspaceExists as exc:
                return error_response(409, str(exc), "workspace_exists")
            except (SQLAlchemyError, OSError) as exc:
                log.warning("admin request failed: database error %s", type(exc).__name__)
                return error_response(503, "The database is unavailable.", "database_unavailable")

        endpoint.__name__ = handler.__name__
        return endpoint

    # -- workspaces --------------------------------------------------------------------------

    async def create_workspace(self, request: Request) -> Response:
        body = await _json_object(request)
        budget = _budget_from_body(body)
        tags = _string_list(body.get("tags"), "tags")
        models = self.ctx.models() if self.ctx.models is not None else None
        record = await self.ctx.workspaces.create(
            _string(body, "name"), budget, tags, models=models
        )
        # as GET lists it: spend in the current period (usage logged under the name before)
        record = await self.ctx.workspaces.with_spend(record)
        # `id` keeps V0 scripts working: they pass it to POST /_admin/keys/{id}.
        return JSONResponse({"id": record.name, **record.to_json()}, status_code=201)

    async def list_workspaces(self, request: Request) -> Response:
        await self._flush()
        records = await self.ctx.workspaces.list()
        return JSONResponse({"data": [r.to_json() for r in records]})

    # -- keys --------------------------------------------------------------------------------

    async def create_key(self, request: Request) -> Response:
        body = await _json_object(request)
        return await self._issue(_string(body, "workspace"), body, v0=False)

    async def create_key_v0(self, request: Request) -> Response:
        body = await _json_object(request, allow_empty=True)
        return await self._issue(request.path_params["workspace"], body, v0=True)

    async def _issue(self, workspace: str, body: dict[str, Any], *, v0: bool) -> Response:
        name = body.get("name", "default" if v0 else None)
        if not isinstance(name, str) or not name.strip():
            raise AdminError(400, "name is required and must be a string", "invalid_request")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise AdminError(400, "user must be a string", "invalid_request")
        expires_at = None
        if body.get("expires_at") is not None:
            if not isinstance(body["expires_at"], str):
                raise AdminError(400, "expires_at must be an ISO 8601 string", "invalid_request")
            expires_at = parse_time(body["expires_at"], "expires_at")
            if expires_at <= datetime.now(UTC):
                raise AdminError(400, "expires_at must be in the future", "invalid_request")
        if workspace not in IMPLICIT_WORKSPACES:
            await self.ctx.workspaces.get(workspace)  # 404 for an unknown workspace
        record, plaintext = await self.ctx.keys.create(
            workspace,
            name,
            user=user,
            tags=_string_list(body.get("tags"), "tags"),
            expires_at=expires_at,
        )
        payload = {**record.to_json(), "key": plaintext}  # SPEC §2.8: shown once, here
        if v0:
            payload["api_key"] = plaintext
        return JSONResponse(payload, status_code=201)

    async def list_keys(self, request: Request) -> Response:
        query = request.query_params
        records = await self.ctx.keys.list(
            query.get("workspace") or None, user=query.get("user") or None
        )
        return JSONResponse({"data": [r.to_json() for r in records]})

    async def revoke_key(self, request: Request) -> Response:
        record = await self.ctx.keys.revoke(request.path_params["key_id"])
        return JSONResponse(record.to_json())

    async def revoke_keys(self, request: Request) -> Response:
        """`{"user", "workspace"?}`: every active key of a user; `{"key"}`: the key with that
        value, found by its hash. The value is never echoed, logged or stored."""
        body = await _json_object(request)
        user, key = body.get("user"), body.get("key")
        if (user is None) == (key is None):
            raise AdminError(400, "give either user or key", "invalid_request")
        if key is not None:
            if not isinstance(key, str) or not key.strip():
                raise AdminError(400, "key must be a non-empty string", "invalid_request")
            if body.get("workspace") is not None:
                raise AdminError(
                    400, "workspace narrows a revocation by user only", "invalid_request"
                )
            records = [await self.ctx.keys.revoke_value(key)]
        else:
            if not isinstance(user, str) or not user.strip():
                raise AdminError(400, "user must be a non-empty string", "invalid_request")
            workspace = body.get("workspace")
            if workspace is not None and not isinstance(workspace, str):
                raise AdminError(400, "workspace must be a string", "invalid_request")
            records = await self.ctx.keys.revoke_user(user, workspace=workspace or None)
        return JSONResponse({"data": [r.to_json() for r in records]})

    # -- usage -------------------------------------------------------------------------------

    async def usage(self, request: Request) -> Response:
        query = request.query_params
        start, end = parse_window(
            query.get("start") or None, query.get("end") or None, query.get("last_hours") or None
        )
        group_by = parse_group_by(query.getlist("group_by") and ",".join(query.getlist("group_by")))
        await self._flush()
        rows = await self.ctx.usage.usage_report(start, end, group_by)
        return JSONResponse(
            {"data": rows, "start": _iso(start), "end": _iso(end), "group_by": group_by}
        )

    async def stats_today(self, request: Request) -> Response:
        await self._flush()
        return JSONResponse(await self.ctx.usage.today_stats())

    async def _flush(self) -> None:
        """Best effort: let reports include requests still queued in this process."""
        if self.ctx.writer is None:
            return
        try:
            await asyncio.wait_for(self.ctx.writer.flush(), _FLUSH_TIMEOUT)
        except (TimeoutError, SQLAlchemyError, OSError):
            pass


async def _json_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise AdminError(400, "request body must be a JSON object", "invalid_request")
    try:
        body = json.loads(raw)
    except ValueError:
        raise AdminError(400, "request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise AdminError(400, "request body must be a JSON object", "invalid_request")
    return body


def _string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise AdminError(400, f"{field} is required and must be a string", "invalid_request")
    return value.strip()


def _string_list(value: Any, field: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AdminError(400, f"{field} must be a list of strings", "invalid_request")
    return value


def _budget_from_body(body: dict[str, Any]) -> Budget | None:
    """SPEC §5 `budget: {limit_usd, period, on_exceed, downgrade_to}`, or V0's
    `monthly_budget_usd` + `action_on_exceed` (SPEC §3.1)."""
    if body.get("budget") is not None:
        if not isinstance(body["budget"], dict):
            raise AdminError(400, "budget must be an object", "invalid_request")
        return Budget.of(body["budget"])
    if body.get("monthly_budget_usd") is not None:
        return Budget.of(
            {
                "limit_usd": body["monthly_budget_usd"],
                "period": "month",
                "on_exceed": body.get("action_on_exceed") or "block",
                "downgrade_to": body.get("downgrade_to"),
            }
        )
    return None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
