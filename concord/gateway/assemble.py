"""Which subsystems a config needs, built as keyword arguments for `create_app_from_graph`.

This is the one place that knows every subsystem: each contributes its seam (recorder, guards,
key store) or a `Component` (reload watcher, admin API, metrics). Keeping the wiring here keeps
`app.py` about HTTP and the subsystems unaware of each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.admin.config import ConfigAdmin
from concord.engine.graph import Graph
from concord.engine.reload import Reloader
from concord.gateway.guards import StateGuards
from concord.gateway.records_component import Records
from concord.observability.component import Observability


def assemble(
    graph: Graph,
    config_path: str,
    env: Mapping[str, str] | None,
    warnings: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Keyword arguments for `create_app_from_graph` serving `graph` loaded from `config_path`
    (`warnings`: what loading it found, logged as the server starts)."""
    # SPEC §1: one state backend per process, kept across reloads; first in, last out
    guards = StateGuards.open(graph.storage)
    components: list[Any] = [guards]
    # SPEC §1, §2.8, §5: workspaces, keys, usage log, admin API; the recorder from the start, so
    # observability's fan-out wraps it; stopped after the reloader, flushing every record
    records = Records(graph, config_path, keeper=guards.keeper)
    components.append(records)
    guards.workspace_budget = records.directory.budget  # SPEC §2.6: API-created workspaces too
    recovered = getattr(guards.backend, "recovered", None)  # Redis: back after an outage
    if recovered is not None:
        recovered.append(records.state_recovered)  # SPEC §2.6: its budgets rebuilt if lost
    reloader = Reloader(config_path, env, startup_warnings=warnings)  # SPEC §4: watcher, SIGHUP
    reloader.add_listener(records.reloaded)  # SPEC §2.6: re-sync declared workspaces
    components += [reloader, ConfigAdmin(reloader)]
    observability = Observability()  # SPEC §7: /metrics, access log, /_admin/providers
    reloader.add_listener(observability.reloaded)
    components.append(observability)
    return {"components": components, "guards": guards, "recorder": records, "key_store": records}
