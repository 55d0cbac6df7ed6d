"""`GET /_admin/config` and `POST /_admin/config/reload` (SPEC §5): the reload status and a
manual reload, the same as SIGHUP.

The admin key is read from the graph serving now, so a reload that rotates it takes effect on the
next admin request. Errors are shown as `file:line:col: path: message`, never with a secret (the
loader already withholds secret values from its diagnostics).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from concord.admin.auth import admin_denied
from concord.engine.reload import Reloader

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState


class ConfigAdmin:
    """A `Component` (gateway/app.py) mounting the two routes over a `Reloader`."""

    def __init__(self, reloader: Reloader) -> None:
        self.reloader = reloader
        self._state: GatewayState | None = None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/_admin/config", self.show, methods=["GET"]),
            Route("/_admin/config/reload", self.reload, methods=["POST"]),
        ]

    async def start(self, state: GatewayState) -> None:
        self._state = state

    async def stop(self, state: GatewayState) -> None:
        return None

    async def show(self, request: Request) -> Response:
        denied = self._denied(request)
        if denied is not None:
            return denied
        return self._json(self.reloader.status(), 200)

    async def reload(self, request: Request) -> Response:
        """200 with the outcome when the new config serves; 422 with its errors when it does not."""
        denied = self._denied(request)
        if denied is not None:
            return denied
        outcome = await self.reloader.reload("admin")
        return self._json(outcome.as_dict(), 200 if outcome.ok else 422)

    def _denied(self, request: Request) -> Response | None:
        state = self._state or request.app.state.gateway
        return admin_denied(request, state.graph.auth.admin_key)

    def _json(self, body: object, status: int) -> Response:
        state = self._state
        headers = {"x-concord-config": state.graph.version} if state is not None else {}
        return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")
