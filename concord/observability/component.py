"""The observability component: `/metrics`, `/_admin/providers`, access log, passive health.

Plugged in by `gateway.assemble`. At start it joins the gateway's recorder (every finished request
reaches metrics and the access log), installs itself as the attempt loop's observer (every
upstream call reaches metrics and passive health), and refreshes the gauges that mirror runtime
state (circuits, health, config version, the state backend's reachability) every
`REFRESH_SECONDS` and on every scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from concord.admin.providers import providers_route, targets_by_provider
from concord.engine.graph import Attempt
from concord.gateway.record import UsageRecord
from concord.observability.health import PassiveHealth
from concord.observability.logs import AccessLog
from concord.observability.metrics import Metrics, upstream_result
from concord.observability.probes import Prober
from concord.observability.recorders import join
from concord.providers.base import UpstreamError

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState

REFRESH_SECONDS = 5.0


class Observability:
    """A `Component`, a `Recorder` and an `AttemptObserver` in one object."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
        health: PassiveHealth | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.access_log = access_log or AccessLog()
        self.health = health or PassiveHealth()
        self._state: GatewayState | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._prober: Prober | None = None  # background probes (SPEC §5), when configured

    # -- Component -----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/metrics", self._scrape, methods=["GET"]),
            providers_route(self.health),
        ]

    async def start(self, state: GatewayState) -> None:
        self._state = state
        state.recorder = join(state.recorder, self)
        state.attempts.observer = self
        self.access_log.start()
        self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever())
        self._prober = Prober(state, self.health)
        self._prober.start()

    async def stop(self, state: GatewayState) -> None:
        if self._prober is not None:
            await self._prober.stop()
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        self.access_log.stop()
        self.metrics.process_exited()

    # -- Recorder ------------------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        self.metrics.record(record)
        self.access_log.record(record)

    # -- AttemptObserver -----------------------------------------------------------------------

    def called(self, attempt: Attempt, seconds: float, error: UpstreamError | None) -> None:
        target = attempt.target
        result = upstream_result(error)
        self.metrics.attempt(target.provider, target.id, seconds, result)
        if result != "client_error":  # the request's fault says nothing about the target
            self.health.observe(target.id, result == "ok", seconds * 1000)

    def retried(self, attempt: Attempt) -> None:
        self.metrics.retried(attempt.target.id)

    def fell_back(self, from_model: str, to_model: str) -> None:
        self.metrics.fell_back(from_model, to_model)

    # -- reload listener -----------------------------------------------------------------------

    def reloaded(self, outcome: object) -> None:
        """Listener for the reloader: counts `concord_config_reload_total{result}` (SPEC §4).

        Accepts an outcome with an `ok` attribute, a `result` of "ok"/"error", or a bool.
        """
        ok = getattr(outcome, "ok", None)
        if ok is None:
            result = getattr(outcome, "result", outcome)
            ok = result in ("ok", "success", True)
        self.metrics.reloaded(bool(ok))
        self.refresh()
        if self._prober is not None:
            self._prober.sync()  # probes follow the new graph at once

    # -- gauges --------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Mirror this process's circuits, health and config version into the gauges."""
        state = self._state
        if state is None:
            return
        graph = state.graph
        self.metrics.set_version(graph.version)
        circuits = []
        health = []
        for provider, targets in targets_by_provider(graph).items():
            for target in targets:
                circuit = state.runtime.breakers.state(target)
                circuits.append((target, circuit))
                health.append((provider, target, self.health.target(target, circuit).state))
        self.metrics.set_circuits(circuits)
        self.metrics.set_health(health)
        self.metrics.set_state_up(getattr(state.guards, "state_healthy", True))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            self.refresh()

    async def _scrape(self, request: Request) -> Response:
        self.refresh()
        body, content_type = self.metrics.render()
        return Response(body, 200, headers={"content-type": content_type})
