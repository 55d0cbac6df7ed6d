"""Readiness checks behind `/readyz` (SPEC §3: config loaded, state and database reachable).

Subsystems register a named async check on `GatewayState.readiness_checks`, e.g.
`state.readiness_checks["database"] = engine.ping`; a check is ready when it returns anything but
False without raising within `CHECK_TIMEOUT`. One that returns "degraded" is still ready, and says
so: the state backend is down but requests are served without it (`state_failure: open`).
Checks run concurrently on every probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

ReadinessCheck = Callable[[], Awaitable[object]]
CHECK_TIMEOUT = 2.0
DEGRADED = "degraded"
SERVING = frozenset({"ok", DEGRADED})  # the results a ready gateway may report


async def run_checks(
    checks: Mapping[str, ReadinessCheck], timeout: float = CHECK_TIMEOUT
) -> dict[str, str]:
    """`{name: "ok" | "degraded" | "failed" | "timeout"}` for every check."""
    names = list(checks)

    async def one(check: ReadinessCheck) -> str:
        try:
            async with asyncio.timeout(timeout):
                result = await check()
                return "failed" if result is False else DEGRADED if result == DEGRADED else "ok"
        except TimeoutError:
            return "timeout"
        except Exception:
            return "failed"  # the reason belongs in the subsystem's log, not in a probe body

    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))
