"""Rate limits (SPEC §2.7): requests and tokens per minute, per key, workspace, user or globally.

The guards step calls `RateLimiter.acquire` after `graph.decide` with the decision's rules and
the request's estimated tokens; every bucket is checked and charged in one atomic backend call,
so a refused request costs nothing. After the response, `settle` corrects the token buckets from
the estimate to the upstream's actual usage.

    RateLimited      a rule has no room: HTTP 429 rate_limit_error / rate_limit_exceeded,
                     with Retry-After = `retry_after_header`
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from concord.engine.graph import RateLimitRule
from concord.state.backend import Bucket, RateReservation, StateBackend, StateUnavailable
from concord.state.principal import PrincipalIds, scope_id, state_key

WINDOW = 60.0  # SPEC §2.7: rpm and tpm are per minute


class RateLimited(Exception):
    """A rate limit refused the request; `retry_after` is in seconds."""

    def __init__(self, rule: str, kind: Literal["requests", "tokens"], retry_after: float) -> None:
        super().__init__(f"rate limit '{rule}' exceeded ({kind} per minute)")
        self.rule = rule
        self.kind = kind
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """Whole seconds for the `Retry-After` header, never 0 (a 0 invites a hot retry loop)."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass(slots=True, unsafe_hash=True)
class RateGrant:
    """A granted request's hold on its buckets, settled once with the actual token count."""

    reservation: RateReservation | None
    tokens_estimate: int

    @property
    def empty(self) -> bool:
        return self.reservation is None


NO_GRANT = RateGrant(None, 0)


RateOrigin = tuple[RateLimitRule, Literal["requests", "tokens"]]


@dataclass(frozen=True, slots=True)
class RatePlan:
    """A decision's buckets for one principal, built once and reused by every request of that
    principal: only a token bucket's cost (the request's estimate) differs between requests."""

    buckets: tuple[Bucket, ...]  # token buckets hold cost 0 here
    origins: tuple[RateOrigin, ...]
    by_estimate: bool  # some bucket's cost is the token estimate

    def buckets_at(self, tokens_estimate: int) -> tuple[Bucket, ...]:
        """The buckets one request touches; shared as is when no cost depends on its tokens."""
        if not self.by_estimate:
            return self.buckets
        cost = max(tokens_estimate, 0)
        return tuple(
            Bucket(b.key, b.limit, cost, b.window, True) if b.settles else b for b in self.buckets
        )


def rate_plan(rules: Sequence[RateLimitRule], ids: PrincipalIds) -> RatePlan:
    """The estimate-independent part of `buckets_for` (pure)."""
    buckets, origins = buckets_for(rules, ids, 0)
    return RatePlan(tuple(buckets), tuple(origins), any(b.settles for b in buckets))


def buckets_for(
    rules: Sequence[RateLimitRule], ids: PrincipalIds, tokens_estimate: int
) -> tuple[list[Bucket], list[tuple[RateLimitRule, Literal["requests", "tokens"]]]]:
    """The buckets a request touches, and for each the rule and kind it enforces (pure)."""
    buckets: list[Bucket] = []
    origins: list[tuple[RateLimitRule, Literal["requests", "tokens"]]] = []
    for rule in rules:
        ident = scope_id(rule.per, ids)
        if ident is None:
            continue
        if rule.rpm is not None:
            buckets.append(Bucket(state_key("r", rule.name, rule.per, ident), rule.rpm, 1, WINDOW))
            origins.append((rule, "requests"))
        if rule.tpm is not None:
            key = state_key("t", rule.name, rule.per, ident)
            buckets.append(Bucket(key, rule.tpm, max(tokens_estimate, 0), WINDOW, settles=True))
            origins.append((rule, "tokens"))
    return buckets, origins


class RateLimiter:
    """Checks and charges the rate limits a decision carries."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend

    async def acquire(
        self,
        rules: Sequence[RateLimitRule],
        principal_ids: PrincipalIds,
        tokens_estimate: int,
        *,
        now: float | None = None,
    ) -> RateGrant:
        """Charge one request and `tokens_estimate` tokens to every applicable rule, or raise
        `RateLimited` naming the rule that would wait longest (and charge nothing).

        `StateUnavailable` propagates when the backend is down with `failure: closed`.
        """
        buckets, origins = buckets_for(rules, principal_ids, tokens_estimate)
        if not buckets:
            return NO_GRANT
        verdict = await self.backend.rate_check_and_reserve(buckets, now)
        if not verdict.allowed:
            rule, kind = origins[verdict.denied or 0]
            raise RateLimited(rule.name, kind, verdict.retry_after)
        return RateGrant(verdict.reservation, tokens_estimate)

    async def settle(
        self, grant: RateGrant, actual_tokens: int, *, now: float | None = None
    ) -> None:
        """Correct token buckets to `actual_tokens` (input + output from the usage block; 0 when
        no upstream call consumed tokens). Never raises for an unreachable backend."""
        if grant.reservation is None or actual_tokens == grant.tokens_estimate:
            return
        try:
            await self.backend.rate_settle(grant.reservation, max(actual_tokens, 0), now)
        except StateUnavailable:
            pass  # the buckets refill on their own; a lost correction only errs for one window
