"""Which subsystems a config needs, built as keyword arguments for `create_app_from_graph`.

This is the one place that knows every subsystem: each contributes its seam (recorder, guards,
key store) or a `Component` (reload watcher, admin API, metrics). Keeping the wiring here keeps
`app.py` about HTTP and the subsystems unaware of each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from concord.engine.graph import Graph


def assemble(graph: Graph, config_path: str, env: Mapping[str, str] | None) -> dict[str, Any]:
    """Keyword arguments for `create_app_from_graph` serving `graph` loaded from `config_path`."""
    components: list[Any] = []
    return {"components": components}
