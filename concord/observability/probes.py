"""Optional background health probes, one per provider with a `probe` (SPEC §5 providers row).

Passive health only knows what real traffic told it, so an idle provider looks healthy whatever
its state. A provider with `probe: {interval, model, timeout}` gets one background task that sends
the smallest request its API accepts (one user word, `max_tokens: 1`) through the provider's own
adapter every `interval`, and reports the outcome into the same `PassiveHealth` windows as real
traffic (target id `provider/model`), plus the provider's last probe for `GET /_admin/providers`.

Probes follow hot reloads (SPEC §4): the graph serving now is checked every `WATCH_SECONDS`, and
tasks start, stop or restart for added, removed or changed providers. Health is per process, so
with several workers each probes for itself. Nothing here logs or reports an API key: failures
are described by their kind and HTTP status only, never by the upstream's message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from concord.engine.decision import ProbeSettings, ProviderSpec
from concord.observability.health import PassiveHealth, ProbeResult
from concord.observability.metrics import upstream_result
from concord.providers.base import UpstreamEndpoint, UpstreamError, UpstreamRequest

if TYPE_CHECKING:
    from concord.engine.graph import Graph
    from concord.gateway.app import GatewayState

log = logging.getLogger("concord.observability.probes")

WATCH_SECONDS = 0.5  # how often the serving graph is compared with the one probes follow
PROBE_WORD = "ping"


def probe_request(spec: ProviderSpec, probe: ProbeSettings) -> UpstreamRequest:
    """The minimal request for `spec`'s API: Messages for anthropic, chat for the others."""
    endpoint: UpstreamEndpoint = "messages" if spec.type == "anthropic" else "chat"
    body: dict[str, Any] = {
        "model": probe.model,
        "max_tokens": 1,
        "messages": [{"role": "user", "content": PROBE_WORD}],
    }
    return UpstreamRequest(endpoint=endpoint, body=body, timeout=probe.timeout)


def describe(error: BaseException) -> str:
    """A failure in words safe to log and report: kind and status, never the upstream's text."""
    if isinstance(error, UpstreamError):
        return f"{error.kind} {error.status}" if error.status is not None else error.kind
    if isinstance(error, TimeoutError):
        return "timeout"
    return type(error).__name__


class Prober:
    """Background probe tasks for the providers of the serving graph; see the module docstring."""

    def __init__(self, state: GatewayState, health: PassiveHealth) -> None:
        self._state = state
        self._health = health
        self._graph: Graph | None = None
        self._tasks: dict[str, tuple[ProviderSpec, asyncio.Task[None]]] = {}
        self._watcher: asyncio.Task[None] | None = None

    @property
    def probing(self) -> frozenset[str]:
        """Names of the providers being probed now."""
        return frozenset(self._tasks)

    def start(self) -> None:
        self.sync()
        self._watcher = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        """Cancel the watcher and every probe, and wait for them (server shutdown)."""
        tasks = [task for _, task in self._tasks.values()]
        if self._watcher is not None:
            tasks.append(self._watcher)
            self._watcher = None
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def sync(self) -> None:
        """Match the probe tasks to the serving graph's providers (called on every new graph)."""
        graph = self._graph = self._state.graph
        wanted = {name: spec for name, spec in graph.providers.items() if spec.probe is not None}
        for name, (spec, task) in list(self._tasks.items()):
            if wanted.get(name) != spec:  # removed, probe dropped, or definition changed
                task.cancel()
                del self._tasks[name]
                if name not in wanted:
                    self._health.forget_probe(name)
        for name, spec in wanted.items():
            if name not in self._tasks:
                task = asyncio.create_task(self._run(spec), name=f"concord-probe-{name}")
                self._tasks[name] = (spec, task)

    async def probe_once(self, spec: ProviderSpec) -> ProbeResult:
        """Send one probe to `spec`'s provider and report it to health; returns the result."""
        probe = spec.probe
        assert probe is not None
        target = f"{spec.name}/{probe.model}"
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            adapter = self._state.pool.get(spec.name)
            async with asyncio.timeout(probe.timeout):  # adapters without a timer of their own
                await adapter.send(probe_request(spec, probe))
        except asyncio.CancelledError:
            raise
        except Exception as caught:
            error = caught
        latency_ms = (time.perf_counter() - started) * 1000
        result = ProbeResult(
            at=time.time(),
            ok=error is None,
            latency_ms=latency_ms,
            target=target,
            error=describe(error) if error is not None else None,
        )
        # A 400/404/422 says the probe itself is wrong (e.g. an unknown model), not the target:
        # it is shown as the last probe but, as with real traffic, not counted against health.
        counts = not (isinstance(error, UpstreamError) and upstream_result(error) == "client_error")
        previous = self._health.last_probe(spec.name)
        self._health.probed(spec.name, result, counts=counts)
        if previous is None or previous.ok != result.ok:
            if result.ok:
                log.info("probe of provider %s succeeded", spec.name)
            else:
                log.warning("probe of provider %s failed: %s", spec.name, result.error)
        return result

    async def _run(self, spec: ProviderSpec) -> None:
        probe = spec.probe
        assert probe is not None
        while True:
            await self.probe_once(spec)
            await asyncio.sleep(probe.interval)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            if self._state.graph is not self._graph:
                self.sync()
