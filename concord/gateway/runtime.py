"""Per-process runtime state that routing reads: circuit breakers, round-robin, latency (SPEC §2.5).

`RuntimeState.view()` hands `graph.decide` a `RuntimeView` snapshot; the attempt loop reports every
outcome back through `success()` / `failure()`. State is keyed by target id ("provider/model"), so
it survives config reloads (SPEC §4).

Breaker: `failures` failed attempts in a row open the circuit for `cooldown`; after it, the circuit
is half-open and exactly one request may probe the target; its success closes the circuit, its
failure opens it again for another cooldown.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from concord.engine.graph import BreakerPolicy, RuntimeView

EWMA_ALPHA = 0.2
_NOTHING: frozenset[str] = frozenset()


@dataclass(slots=True)
class Breaker:
    failures: int = 0
    open_until: float = 0.0  # 0: closed
    probing: bool = False  # half-open and a probe is in flight


class CircuitBreakers:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._breakers: dict[str, Breaker] = {}
        self._open: set[str] = set()  # ids whose breaker is open or half-open

    def blocked(self) -> frozenset[str]:
        """Targets routing must skip: open and cooling down, or half-open with a probe out."""
        if not self._open:
            return frozenset()
        now = self._clock()
        return frozenset(
            target
            for target in self._open
            if (b := self._breakers[target]).probing or now < b.open_until
        )

    def admit(self, target: str) -> bool:
        """Claim the right to call `target`; False when its circuit is open (or being probed)."""
        breaker = self._breakers.get(target)
        if breaker is None or breaker.open_until == 0.0:
            return True
        if breaker.probing or self._clock() < breaker.open_until:
            return False
        breaker.probing = True  # SPEC §2.5: one half-open probe after the cooldown
        return True

    def success(self, target: str) -> None:
        breaker = self._breakers.get(target)
        if breaker is None:
            return
        breaker.failures = 0
        breaker.open_until = 0.0
        breaker.probing = False
        self._open.discard(target)

    def failure(self, target: str, policy: BreakerPolicy) -> None:
        breaker = self._breakers.get(target)
        if breaker is None:
            breaker = self._breakers[target] = Breaker()
        breaker.failures += 1
        if breaker.probing or breaker.failures >= policy.failures:
            breaker.open_until = self._clock() + policy.cooldown
            breaker.probing = False
            self._open.add(target)

    def release(self, target: str) -> None:
        """A probe that ended without a verdict (cancelled): let another request probe."""
        breaker = self._breakers.get(target)
        if breaker is not None:
            breaker.probing = False

    def state(self, target: str) -> str:
        """`closed`, `open` or `half_open`, for the admin API and tests."""
        breaker = self._breakers.get(target)
        if breaker is None or breaker.open_until == 0.0:
            return "closed"
        if breaker.probing or self._clock() >= breaker.open_until:
            return "half_open"
        return "open"


class RoundRobinDraw(Mapping[str, int]):
    """`RuntimeView.rr_position` for one request: a model's counter advances when first read."""

    __slots__ = ("_counters", "_drawn")

    def __init__(self, counters: dict[str, int]) -> None:
        self._counters = counters
        self._drawn: dict[str, int] = {}

    def __getitem__(self, model: str) -> int:
        drawn = self._drawn.get(model)
        if drawn is None:
            drawn = self._drawn[model] = self._counters.get(model, 0)
            self._counters[model] = drawn + 1
        return drawn

    def get(self, model: str, default: int | None = None) -> int:  # type: ignore[override]
        return self[model]

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self._drawn)

    def __len__(self) -> int:
        return len(self._drawn)


class RuntimeState:
    """Everything `RuntimeView` is built from, shared by the requests of one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.breakers = CircuitBreakers(clock)
        self.latency_ms: dict[str, float] = {}
        self._rr: dict[str, int] = {}
        self._random = random.random

    def view(
        self, unavailable: frozenset[str] = _NOTHING, cooling: frozenset[str] = _NOTHING
    ) -> RuntimeView:
        """This request's view: the providers with no usable key and the targets every key is
        cooling down for (`ProviderPool.unavailable()` and its `targets`)."""
        return RuntimeView(
            open_circuits=self.breakers.blocked(),
            unavailable_providers=unavailable,
            cooling_targets=cooling,
            rr_position=RoundRobinDraw(self._rr),
            latency_ms=self.latency_ms,
            draw=self._random(),
        )

    def observe_latency(self, target: str, ms: float) -> None:
        previous = self.latency_ms.get(target)
        self.latency_ms[target] = (
            ms if previous is None else previous + EWMA_ALPHA * (ms - previous)
        )
