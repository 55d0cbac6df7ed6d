"""`GET /_admin/providers` (SPEC §5): health per provider and per target, circuits, key cooldowns.

The admin key is read from the graph serving now, so rotating it is a reload. Keys appear only
as masked labels (`key#1`...), as the adapters report them; nothing here can print a key.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from concord.admin.auth import admin_denied
from concord.engine.graph import Graph
from concord.gateway.runtime import RuntimeState
from concord.observability.health import PassiveHealth, ProbeResult, worst
from concord.providers.base import Provider
from concord.providers.keys import key_ring
from concord.providers.registry import ProviderPool

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState


def targets_by_provider(graph: Graph) -> dict[str, list[str]]:
    """Target ids of the catalog, grouped by provider, in catalog order without repeats."""
    grouped: dict[str, list[str]] = {name: [] for name in graph.providers}
    for model in graph.models.values():
        for target in model.targets:
            ids = grouped.setdefault(target.provider, [])
            if target.id not in ids:
                ids.append(target.id)
    for name, spec in graph.providers.items():  # a probed model outside the catalog too
        if spec.probe is not None and f"{name}/{spec.probe.model}" not in grouped[name]:
            grouped[name].append(f"{name}/{spec.probe.model}")
    return grouped


def providers_report(
    graph: Graph, pool: ProviderPool, runtime: RuntimeState, health: PassiveHealth
) -> dict[str, Any]:
    """The body: `{"data": [{name, type, state, available, keys, targets, last_probe}]}`."""
    data = []
    for name, target_ids in targets_by_provider(graph).items():
        spec = graph.providers.get(name)
        adapter = pool.providers.get(name)
        available = adapter.available if adapter is not None else False
        keys = adapter.key_status() if adapter is not None else []
        targets = []
        for target_id in target_ids:
            circuit = runtime.breakers.state(target_id)
            verdict = health.target(target_id, circuit)
            cooling_until = _keys_cooling_until(adapter, target_id)
            targets.append(
                {
                    "target": target_id,
                    # every key rate limited for this model: skipped until one is back
                    "state": worst([verdict.state, "degraded" if cooling_until else "healthy"]),
                    "keys_cooling_until": cooling_until,
                    "circuit": circuit,
                    "success_rate": (
                        round(verdict.success_rate, 4) if verdict.success_rate is not None else None
                    ),
                    "samples": verdict.samples,
                    "latency_ms": (
                        round(verdict.latency_ms, 1) if verdict.latency_ms is not None else None
                    ),
                }
            )
        state = worst([t["state"] for t in targets])
        if not available:
            state = "unhealthy"  # SPEC §2.2: no usable key, routes fall through to fallbacks
        elif any(key.get("cooldown_until") or key.get("models") for key in keys):
            state = worst([state, "degraded"])
        data.append(
            {
                "name": name,
                "type": spec.type if spec is not None else None,
                "state": state,
                "available": available,
                "keys": keys,
                "targets": targets,
                "last_probe": _probe_report(health.last_probe(name)),
            }
        )
    return {"data": data}


def _keys_cooling_until(adapter: Provider | None, target_id: str) -> float | None:
    """When every key of the target's provider is cooling down for its upstream model (SPEC
    §2.2: a 429 benches a key for that model only): the epoch second the first is back."""
    ring = key_ring(adapter)
    if ring is None:
        return None
    wait = ring.wait(target_id.partition("/")[2])
    return round(time.time() + wait, 3) if wait > 0 else None


def _probe_report(result: ProbeResult | None) -> dict[str, Any] | None:
    """SPEC §5: the provider's last background probe, or None when it has none."""
    if result is None:
        return None
    return {
        "at": round(result.at, 3),
        "target": result.target,
        "ok": result.ok,
        "latency_ms": round(result.latency_ms, 1),
        "error": result.error,
    }


def providers_route(health: PassiveHealth) -> Route:
    async def list_providers(request: Request) -> Response:
        state: GatewayState = request.app.state.gateway
        graph = state.graph
        denied = admin_denied(request, graph.auth.admin_key)
        if denied is not None:
            return denied
        body = providers_report(graph, state.pool, state.runtime, health)
        return Response(orjson.dumps(body), 200, media_type="application/json")

    return Route("/_admin/providers", list_providers, methods=["GET"])
