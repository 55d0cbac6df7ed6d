"""Compiled nodes of a graph: routes, limits, budgets and the route index (built by compile).

Only `Graph` reads these; the route index narrows a request to the routes that can match its
endpoint, model and workspace while keeping first-match order exact (SPEC §2.4).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from concord.engine.decision import (
    BudgetRule,
    CachePolicy,
    ParamOverrides,
    RateLimitRule,
    Rejection,
    RequestContext,
    RetryPolicy,
)

# -- compiled nodes (built by engine.compile, read only by Graph) ----------------------------------

Check = Callable[[RequestContext], bool]
WhyNot = Callable[[RequestContext], "str | None"]
REQUESTED = "$requested"


@dataclass(frozen=True, slots=True)
class LimitNode:
    """A rate limit as a route sees it: the rule and its compiled `when` (None = always)."""

    rule: RateLimitRule
    test: Check | None = None


@dataclass(frozen=True, slots=True)
class BudgetNode:
    """A `budgets[]` entry: the rule and its compiled `when` (None = always)."""

    rule: BudgetRule
    test: Check | None = None


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A route with every constant part of its decision precomputed (SPEC §2.4.2).

    `test` checks what the route index did not (None = nothing left to check); `why_not`
    explains a miss against the whole `when`. `static_limits` is set when no applicable rate
    limit has a `when`, so decide needs no per-request filtering.
    """

    index: int
    name: str | None
    test: Check | None = None
    why_not: WhyNot | None = None
    use: str | None = REQUESTED
    rejection: Rejection | None = None
    fallbacks: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    timeout: float = 60.0
    cache: CachePolicy | None = None
    cache_test: Check | None = None
    limits: tuple[LimitNode, ...] = ()
    static_limits: tuple[RateLimitRule, ...] | None = ()
    params: ParamOverrides = ParamOverrides()
    context_overflow: Literal["fallback", "truncate", "summarize"] = "fallback"


INDEXED_FIELDS = ("endpoint", "model", "workspace")


@dataclass(frozen=True, slots=True)
class RouteIndex:
    """Which routes can match a given (endpoint, model, workspace).

    Routes whose `when` pins an indexed field to strings sit in per-value buckets (literals) or
    glob lists; the others are wildcards for that field. The candidates of a request are the
    intersection of sets of route positions (C-speed set operations), sorted back into file
    order so first-match-wins is preserved, and memoised per key. For a field without globs,
    values no route pins share one entry, so the tables are bounded by the config; the rest is
    bounded by `_MEMO_LIMIT`.
    """

    routes: tuple[RouteNode, ...]
    buckets: tuple[Mapping[str, frozenset[int]], ...]
    wildcards: tuple[frozenset[int], ...]
    globs: tuple[tuple[tuple[Callable[[str], Any], frozenset[int]], ...], ...] = ((), (), ())
    memo: dict[tuple[Any, ...], tuple[tuple[Check, RouteNode], ...]] = field(default_factory=dict)
    allowed: dict[tuple[Any, ...], frozenset[int]] = field(default_factory=dict)
    checks: tuple[tuple[Check, RouteNode], ...] = field(init=False)

    def __post_init__(self) -> None:
        # (test, route) pairs, a test always present: the hot loop does one unpack and one call.
        pairs = tuple((node.test or _always, node) for node in self.routes)
        object.__setattr__(self, "checks", pairs)

    def candidates(self, key: tuple[Any, ...]) -> tuple[tuple[Check, RouteNode], ...]:
        """(residual test, route) for the routes that may match `key`, in file order."""
        found = self.memo.get(key)
        if found is not None:
            return found
        known = tuple(
            value if value in bucket or globs else None
            for value, bucket, globs in zip(key, self.buckets, self.globs, strict=True)
        )
        found = self.memo.get(known)
        if found is None:
            # (endpoint, model) pairs are few: intersect those once, then with the workspace's.
            pair = self._allowed((0, 1), known[:2])
            positions = pair & self._allowed((2,), known[2:])
            found = tuple(map(self.checks.__getitem__, sorted(positions)))
            _remember(self.memo, known, found)
        _remember(self.memo, key, found)
        return found

    def _allowed(self, fields: tuple[int, ...], values: tuple[Any, ...]) -> frozenset[int]:
        """Routes that accept `values` for the indexed `fields`: buckets, globs, wildcards."""
        found = self.allowed.get((fields, values))
        if found is None:
            sets = []
            for f, value in zip(fields, values, strict=True):
                accepted = set(self.wildcards[f])
                if isinstance(value, str):
                    accepted.update(self.buckets[f].get(value, ()))
                    for match, positions in self.globs[f]:
                        if match(value):
                            accepted.update(positions)
                sets.append(accepted)
            found = frozenset(sets[0].intersection(*sets[1:]))
            _remember(self.allowed, (fields, values), found)
        return found


_MEMO_LIMIT = 65536


def _always(ctx: RequestContext) -> bool:
    return True


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """Memoise within a bound: keys can be client-chosen strings."""
    if len(memo) < _MEMO_LIMIT:
        memo[key] = value
