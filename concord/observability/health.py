"""Passive provider health from real traffic (SPEC §5 `GET /_admin/providers`).

Every upstream call reports its outcome here. Per target, the last `WINDOW_SIZE` outcomes no
older than `WINDOW_SECONDS` give a success rate: at or above `HEALTHY_RATE` the target is
healthy, at or above `DEGRADED_RATE` degraded, below that unhealthy. An open circuit makes a
target unhealthy whatever its rate, a half-open one degraded. A target with no recent traffic is
healthy: there is no evidence against it.

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

    def observe(self, target: str, ok: bool, latency_ms: float) -> None:
        window = self._windows.get(target)
        if window is None:
            window = self._windows[target] = deque(maxlen=self.window_size)
        window.append((self._clock(), ok, latency_ms))

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
