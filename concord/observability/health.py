"""Passive provider health from real traffic (SPEC §5 `GET /_admin/providers`).

Every upstream call reports its outcome here. Per target, the last `WINDOW_SIZE` outcomes no
older than `WINDOW_SECONDS` give a success rate: at or above `HEALTHY_RATE` the target is
healthy, at or above `DEGRADED_RATE` degraded, below that unhealthy. An open circuit makes a
target unhealthy whatever its rate, a half-open one degraded. A target with no recent traffic is
healthy: there is no evidence against it.

Background probes (`concord.observability.probes`) feed the same windows, so a provider with a
probe is judged even without traffic; its last probe is kept for the admin report.

Outcomes the request caused (400, 404, 413, 422) say nothing about the target and are not
counted. Health is per process: with several workers each judges from its own share of traffic.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SIZE = 20
WINDOW_SECONDS = 300.0
HEALTHY_RATE = 0.9
DEGRADED_RATE = 0.5
STATES = ("healthy", "degraded", "unhealthy")


@dataclass(frozen=True, slots=True)
class TargetHealth:
    state: str
    samples: int
    success_rate: float | None  # None without recent samples
    latency_ms: float | None  # mean of the recent successful calls


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The last background probe of a provider (SPEC §5): when (epoch s), outcome, duration."""

    at: float
    ok: bool
    latency_ms: float
    target: str
    error: str | None = None  # a short reason, never a key or a header


class PassiveHealth:
    """Sliding windows of call outcomes, keyed by target id ("provider/model")."""

    def __init__(
        self,
        *,
        window_size: int = WINDOW_SIZE,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_size = window_size
        self.window_seconds = window_seconds
        self._clock = clock
        # (when, ok, latency_ms) per target; deque(maxlen) keeps appends O(1) on the hot path
        self._windows: dict[str, deque[tuple[float, bool, float]]] = {}
        self._probes: dict[str, ProbeResult] = {}  # by provider name

    def observe(self, target: str, ok: bool, latency_ms: float) -> None:
        window = self._windows.get(target)
        if window is None:
            window = self._windows[target] = deque(maxlen=self.window_size)
        window.append((self._clock(), ok, latency_ms))

    def probed(self, provider: str, result: ProbeResult, *, counts: bool = True) -> None:
        """A background probe's outcome: kept as the provider's last probe and, when it says
        something about the target (`counts`), added to the target's window like real traffic."""
        self._probes[provider] = result
        if counts:
            self.observe(result.target, result.ok, result.latency_ms)

    def last_probe(self, provider: str) -> ProbeResult | None:
        return self._probes.get(provider)

    def forget_probe(self, provider: str) -> None:
        """The provider's probe was removed by a reload: stop reporting its last result."""
        self._probes.pop(provider, None)

    def target(self, target: str, circuit: str = "closed") -> TargetHealth:
        """The health of `target`, given its circuit state (`closed`, `half_open`, `open`)."""
        horizon = self._clock() - self.window_seconds
        recent = [s for s in self._windows.get(target, ()) if s[0] >= horizon]
        if recent:
            successes = [latency for _, ok, latency in recent if ok]
            rate: float | None = len(successes) / len(recent)
            latency = sum(successes) / len(successes) if successes else None
        else:
            rate, latency = None, None
        return TargetHealth(_state(rate, circuit), len(recent), rate, latency)


def _state(rate: float | None, circuit: str) -> str:
    if circuit == "open":
        return "unhealthy"
    if rate is None:
        return "degraded" if circuit == "half_open" else "healthy"
    if rate >= HEALTHY_RATE:
        state = "healthy"
    elif rate >= DEGRADED_RATE:
        state = "degraded"
    else:
        state = "unhealthy"
    if circuit == "half_open" and state == "healthy":
        return "degraded"
    return state


def worst(states: list[str]) -> str:
    """The worst of several states (`healthy` for none)."""
    return max(states, key=STATES.index, default="healthy")
