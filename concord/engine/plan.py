"""Attempt plans: the static plan a route precomputes per model, and target ordering by balance."""

from __future__ import annotations

from dataclasses import dataclass

from concord.engine.decision import (
    Attempt,
    CatalogModel,
    RuntimeView,
    Skip,
    Target,
)


@dataclass(frozen=True, slots=True)
class StaticPlan:
    """A route's plan for one model with no runtime state: reused while the runtime allows.

    `chain` is the model, its fallbacks depth first, then the route's fallbacks (SPEC §2.5).
    """

    chain: tuple[CatalogModel, ...]
    attempts: tuple[Attempt, ...]
    skipped: tuple[Skip, ...]
    fallbacks: tuple[str, ...]
    balanced: bool
    target_ids: frozenset[str]
    providers: frozenset[str]
    min_window: int | None

    def holds(self, runtime: RuntimeView, need: int, check_window: bool) -> bool:
        """Whether this request under `runtime` gets exactly the static plan."""
        if self.balanced or (runtime.assume_providers_available and self.skipped):
            return False
        if runtime.open_circuits and not self.target_ids.isdisjoint(runtime.open_circuits):
            return False
        unavailable = runtime.unavailable_providers
        if unavailable and not self.providers.isdisjoint(unavailable):
            return False
        cooling = runtime.cooling_targets
        if cooling and not self.target_ids.isdisjoint(cooling):
            return False
        return not (check_window and self.min_window is not None and need > self.min_window)


def order_targets(
    catalog: CatalogModel, usable: list[Target], runtime: RuntimeView
) -> list[Target]:
    """Targets in the order to try them, by the model's `balance` (SPEC §2.3)."""
    if len(usable) < 2 or catalog.balance == "priority":
        return usable
    if catalog.balance == "weighted":
        total = sum(t.weight for t in usable)
        point = runtime.draw * total
        first = len(usable) - 1
        for i, target in enumerate(usable):
            point -= target.weight
            if point < 0:
                first = i
                break
        rest = sorted(usable[:first] + usable[first + 1 :], key=lambda t: -t.weight)
        return [usable[first], *rest]
    if catalog.balance == "round_robin":
        shift = runtime.rr_position.get(catalog.name, 0) % len(usable)
        return usable[shift:] + usable[:shift]
    if catalog.balance == "least_latency":
        latency = runtime.latency_ms
        return sorted(usable, key=lambda t: (t.id in latency, latency.get(t.id, 0.0)))
    return usable
