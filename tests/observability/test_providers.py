"""SPEC §5 GET /_admin/providers: passive health from real traffic, circuits, key cooldowns."""

from __future__ import annotations

from typing import Any

import pytest

from concord.observability.health import PassiveHealth
from tests.fakes.upstream import FakeUpstream, Fault
from tests.observability.conftest import UPSTREAM_KEY, Running, Start

CATALOG = """\
defaults:
  retry: {attempts: 1}
  circuit_breaker: {failures: 100}
models:
  gpt-4o: {targets: [up/gpt-4o]}
  mini: {targets: [up/gpt-4o-mini]}
"""


async def provider(gw: Running, name: str = "up") -> dict[str, Any]:
    response = await gw.admin("GET", "/_admin/providers")
    assert response.status_code == 200
    assert UPSTREAM_KEY not in response.text
    (found,) = [p for p in response.json()["data"] if p["name"] == name]
    return found


def target(entry: dict[str, Any], target_id: str) -> dict[str, Any]:
    (found,) = [t for t in entry["targets"] if t["target"] == target_id]
    return found


async def test_failing_target_turns_unhealthy_then_recovers(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG)
    before = await provider(gw)
    assert before["type"] == "openai" and before["state"] == "healthy"
    assert before["keys"] == [{"key": "key#1", "cooldown_until": None}]

    upstream.script("gpt-4o", [Fault(status=500)] * 6)
    for _ in range(6):
        assert (await gw.chat()).status_code == 502
    down = await provider(gw)
    assert down["state"] == "unhealthy"
    assert target(down, "up/gpt-4o")["state"] == "unhealthy"
    assert target(down, "up/gpt-4o")["success_rate"] == 0.0
    assert target(down, "up/gpt-4o-mini")["state"] == "healthy"  # no evidence against it

    for _ in range(14):  # 14 of the last 20 calls succeeded
        assert (await gw.chat()).status_code == 200
    recovering = target(await provider(gw), "up/gpt-4o")
    assert recovering["state"] == "degraded"
    assert recovering["success_rate"] == pytest.approx(0.7)
    assert recovering["latency_ms"] is not None

    for _ in range(6):
        assert (await gw.chat()).status_code == 200
    healthy = await provider(gw)
    assert healthy["state"] == "healthy"
    assert target(healthy, "up/gpt-4o")["success_rate"] == 1.0


async def test_open_circuit_and_cooling_key_are_reported(
    start: Start, upstream: FakeUpstream
) -> None:
    gw = await start(CATALOG.replace("failures: 100", "failures: 1"))
    upstream.script("gpt-4o", [Fault(status=503)])
    assert (await gw.chat()).status_code == 502
    entry = await provider(gw)
    assert target(entry, "up/gpt-4o")["circuit"] == "open"
    assert target(entry, "up/gpt-4o")["state"] == "unhealthy"

    upstream.script("gpt-4o-mini", [Fault(status=429, retry_after=60)])
    assert (await gw.chat(model="mini")).status_code >= 400
    entry = await provider(gw)
    assert entry["keys"][0]["key"] == "key#1"
    # SPEC §2.2: a 429 benches the key for that model only; the provider serves its others
    assert entry["keys"][0]["cooldown_until"] is None
    assert entry["keys"][0]["models"]["gpt-4o-mini"] is not None
    assert target(entry, "up/gpt-4o-mini")["keys_cooling_until"] is not None
    assert entry["available"] is True and entry["state"] == "unhealthy"


async def test_providers_endpoint_needs_the_admin_key(start: Start) -> None:
    gw = await start(CATALOG)
    assert (await gw.http.get("/_admin/providers")).status_code == 401
    assert (await gw.admin("GET", "/_admin/providers", key="nope")).status_code == 401


@pytest.mark.parametrize(
    ("outcomes", "circuit", "state"),
    [
        ([], "closed", "healthy"),
        ([True] * 9 + [False], "closed", "healthy"),
        ([True] * 8 + [False] * 2, "closed", "degraded"),
        ([True] * 4 + [False] * 6, "closed", "unhealthy"),
        ([True] * 10, "half_open", "degraded"),
        ([True] * 10, "open", "unhealthy"),
        ([], "half_open", "degraded"),
    ],
)
def test_health_thresholds(outcomes: list[bool], circuit: str, state: str) -> None:
    health = PassiveHealth()
    for ok in outcomes:
        health.observe("p/m", ok, 10.0)
    assert health.target("p/m", circuit).state == state


def test_old_outcomes_leave_the_window() -> None:
    now = [0.0]
    health = PassiveHealth(window_seconds=60, clock=lambda: now[0])
    for _ in range(5):
        health.observe("p/m", False, 10.0)
    assert health.target("p/m").state == "unhealthy"
    now[0] = 61.0
    verdict = health.target("p/m")
    assert (verdict.state, verdict.samples, verdict.success_rate) == ("healthy", 0, None)
