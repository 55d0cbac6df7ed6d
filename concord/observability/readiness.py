"""Readiness checks behind `/readyz` (SPEC §3: config loaded, state and database reachable).

Subsystems register a named async check on `GatewayState.readiness_checks`, e.g.
`state.readiness_checks["database"] = engine.ping`; a check is ready when it returns anything but
False without raising within `CHECK_TIMEOUT`. Checks run concurrently on every probe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

ReadinessCheck = Callable[[], Awaitable[object]]
CHECK_TIMEOUT = 2.0


async def run_checks(
    checks: Mapping[str, ReadinessCheck], timeout: float = CHECK_TIMEOUT
) -> dict[str, str]:
    """`{name: "ok" | "failed" | "timeout"}` for every check."""
    names = list(checks)

    async def one(check: ReadinessCheck) -> str:
        try:
            async with asyncio.timeout(timeout):
                return "failed" if await check() is False else "ok"
        except TimeoutError:
            return "timeout"
        except Exception:
            return "failed"  # the reason belongs in the subsystem's log, not in a probe body

    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))
