"""SPEC §3 /readyz: ready once the config is loaded and every registered check passes."""

from __future__ import annotations

import asyncio

from concord.observability.readiness import run_checks
from tests.observability.conftest import Start

CATALOG = "models:\n  gpt-4o: {targets: [up/gpt-4o]}\n"


async def test_readyz_reports_each_check(start: Start) -> None:
    gw = await start(CATALOG)
    ready = await gw.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["config"] == gw.state.graph.version

    async def database_down() -> bool:
        raise ConnectionError("password=hunter2 refused")

    async def state_ok() -> bool:
        return True

    gw.state.readiness_checks["database"] = database_down
    gw.state.readiness_checks["state"] = state_ok
    unready = await gw.http.get("/readyz")
    assert unready.status_code == 503
    assert unready.json()["checks"] == {"database": "failed", "state": "ok"}
    assert "hunter2" not in unready.text
    assert (await gw.http.get("/healthz")).status_code == 200  # liveness is unaffected


async def test_a_hanging_check_times_out() -> None:
    async def hangs() -> None:
        await asyncio.sleep(10)

    async def says_no() -> bool:
        return False

    assert await run_checks({"slow": hangs, "no": says_no}, timeout=0.05) == {
        "slow": "timeout",
        "no": "failed",
    }
