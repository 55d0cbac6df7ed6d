"""Shared state for the guards step: rate limits, budgets, response cache (SPEC §1, §2.5-§2.7).

The gateway builds one backend at start-up with `open_state(config.storage.state)` and keeps it
across config reloads (SPEC §4: limits, spend and cache survive reloads); the policy layers
`RateLimiter`, `BudgetKeeper` and `ResponseCache` are cheap wrappers around it.
"""

from __future__ import annotations

from concord.state.backend import (
    Admitted,
    Bucket,
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    FailureMode,
    RateReservation,
    RateVerdict,
    Settlement,
    StateBackend,
    StateError,
    StateUnavailable,
    Ticket,
    open_state,
)
from concord.state.budgets import (
    BudgetGrant,
    BudgetKeeper,
    period_end,
    period_id,
    period_start,
    worst_case_cost,
)
from concord.state.cache import (
    CacheDirectives,
    CachedResponse,
    ResponseCache,
    cache_directives,
    cache_key,
    should_bypass,
)
from concord.state.memory import MemoryState
from concord.state.ratelimit import RateGrant, RateLimited, RateLimiter
from concord.state.resilient import ResilientState

__all__ = [
    "Admitted",
    "Bucket",
    "BudgetGrant",
    "BudgetKeeper",
    "BudgetLine",
    "BudgetReservation",
    "BudgetVerdict",
    "CacheDirectives",
    "CachedResponse",
    "FailureMode",
    "MemoryState",
    "RateGrant",
    "RateLimited",
    "RateLimiter",
    "RateReservation",
    "RateVerdict",
    "ResilientState",
    "ResponseCache",
    "Settlement",
    "StateBackend",
    "StateError",
    "StateUnavailable",
    "Ticket",
    "cache_directives",
    "cache_key",
    "open_state",
    "period_end",
    "period_id",
    "period_start",
    "should_bypass",
    "worst_case_cost",
]
