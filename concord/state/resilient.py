"""Keep serving when the shared state is unreachable (SPEC §1: "If Redis becomes unreachable,
requests keep being served").

`ResilientState` fronts a primary backend (Redis) with a per-process `MemoryState`:

- cache: skipped while the primary is down (get → None, set → nothing);
- rate limits and budgets: `failure="open"` serves them from the local fallback (limits then hold
  per process, not across replicas); `failure="closed"` raises `StateUnavailable`;
- budget spend settled while the primary was down is replayed into it when it returns, and the
  fallback starts each period from the last spend the primary reported, so an outage neither
  loses spend nor hands out a fresh budget;
- after a failure the primary is left alone for `retry_interval` seconds, then one call probes
  it; a dead Redis costs one short socket timeout per interval, not one per request;
- once it answers again and the outage's spend is replayed into it, the `recovered` listeners
  run: a Redis that restarted empty gets its budgets rebuilt from the usage log by them. A new
  connection counts as a return too, since Redis may have restarted between two calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from concord.state.backend import (
    Admitted,
    Bucket,
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    FailureMode,
    RateReservation,
    RateVerdict,
    SettleCallback,
    Settlement,
    StateBackend,
    StateUnavailable,
    Ticket,
)
from concord.state.memory import MemoryState

log = logging.getLogger("concord.state")

# Spend settled during an outage, waiting to be added to the primary; bounded so that a long
# outage cannot grow memory without limit (the usage log still has every request).
_MAX_PENDING = 100_000
# Budget periods whose latest spend is noted before they are all handed to the fallback at once
_MAX_SEEN = 10_000


class ResilientState:
    """`StateBackend` that degrades to a local fallback instead of failing requests."""

    def __init__(
        self,
        primary: StateBackend,
        fallback: MemoryState | None = None,
        *,
        failure: FailureMode = "open",
        retry_interval: float = 1.0,
    ) -> None:
        self.primary = primary
        self.fallback = fallback if fallback is not None else MemoryState()
        self.failure = failure
        self.retry_interval = retry_interval
        self._down = False
        self._retry_at = 0.0
        self._failures = 0
        self._pending: deque[tuple[BudgetReservation, float]] = deque(maxlen=_MAX_PENDING)
        # The primary's latest spend per budget period, (spent, ttl), for the fallback to start
        # from when the primary is lost (`_seed_fallback`)
        self._seen: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._flush_task: asyncio.Task[None] | None = None
        self._recovering = False  # back after an outage; listeners not yet told
        self._connections = 0  # the primary's connection count when last seen answering
        # Called once the primary answers again after an outage and the spend settled meanwhile
        # is in it (replayed first, so a listener that rebuilds spend counts nothing twice)
        self.recovered: list[Callable[[], object]] = []

    @property
    def healthy(self) -> bool:
        return not self._down

    @property
    def failures(self) -> int:
        return self._failures

    # -- health bookkeeping ---------------------------------------------------------------------

    def _should_try(self) -> bool:
        if not self._down:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + self.retry_interval  # one probe per interval
        return True

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            self._recovering = True
            log.warning("state backend reachable again")
        connections = getattr(self.primary, "connections", 0)  # only Redis counts them
        if connections != self._connections:
            # a new connection: Redis may have restarted between two calls, empty, with no
            # failed call to show for it; recovering costs a few queries if it did not
            self._recovering = self._recovering or self._connections > 0
            self._connections = connections
        if (self._pending or self._recovering) and (
            self._flush_task is None or self._flush_task.done()
        ):
            self._flush_task = asyncio.get_running_loop().create_task(self._flush())

    def _mark_down(self, exc: StateUnavailable) -> None:
        self._failures += 1
        self._retry_at = time.monotonic() + self.retry_interval
        if not self._down:
            self._down = True
            self._seed_fallback()
            log.warning("%s; serving with failure=%s", exc, self.failure)

    def _refuse_if_closed(self) -> None:
        if self.failure == "closed":
            raise StateUnavailable("state backend unreachable")

    async def _flush(self) -> None:
        """Replay spend settled during the outage into the primary."""
        while self._pending:
            reservation, actual = self._pending[0]
            try:
                await self.primary.budget_settle(reservation, actual)
            except StateUnavailable as exc:
                self._mark_down(exc)
                return
            self._pending.popleft()
        if self._recovering and not self._down:
            self._recovering = False
            for listener in self.recovered:
                try:
                    listener()
                except Exception:
                    log.exception("state backend recovery listener failed")

    # -- rate limits ----------------------------------------------------------------------------

    async def rate_check_and_reserve(
        self, buckets: Sequence[Bucket], now: float | None = None
    ) -> RateVerdict:
        if self._should_try():
            try:
                verdict = await self.primary.rate_check_and_reserve(buckets, now)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return verdict
        self._refuse_if_closed()
        verdict = await self.fallback.rate_check_and_reserve(buckets, now)
        if verdict.reservation is None:
            return verdict
        return replace(verdict, reservation=replace(verdict.reservation, local=True))

    async def rate_settle(
        self, reservation: RateReservation, actual_tokens: int, now: float | None = None
    ) -> None:
        if reservation.local:
            await self.fallback.rate_settle(reservation, actual_tokens, now)
            return
        if not self._should_try():
            return  # the primary's buckets refill by themselves; nothing worth queueing
        try:
            await self.primary.rate_settle(reservation, actual_tokens, now)
        except StateUnavailable as exc:
            self._mark_down(exc)
        else:
            self._mark_up()

    # -- budgets --------------------------------------------------------------------------------

    async def budget_reserve(
        self, lines: Sequence[BudgetLine], amount: float, now: float | None = None
    ) -> BudgetVerdict:
        if self._should_try():
            try:
                verdict = await self.primary.budget_reserve(lines, amount, now)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                self._remember_now(lines, verdict.spent)
                return verdict
        self._refuse_if_closed()
        verdict = await self.fallback.budget_reserve(lines, amount, now)
        if verdict.reservation is None:
            return verdict
        return replace(verdict, reservation=replace(verdict.reservation, local=True))

    async def budget_settle(
        self, reservation: BudgetReservation, actual: float
    ) -> tuple[float, ...]:
        if reservation.local:
            spent = await self.fallback.budget_settle(reservation, actual)
            # An id the primary never issued: settling it there only adds the spend.
            replay = replace(reservation, id="replay-" + secrets.token_hex(8), local=False)
            self._pending.append((replay, actual))
            return spent
        if self._should_try():
            try:
                spent = await self.primary.budget_settle(reservation, actual)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                self._remember_now(reservation.lines, spent)
                return spent
        # The primary's lease on the reservation expires by itself; keep the spend for replay.
        self._pending.append((reservation, actual))
        return await self.fallback.budget_settle(reservation, actual)

    async def budget_spent(self, periods: Sequence[tuple[str, str]]) -> list[float]:
        if self._should_try():
            try:
                spent = await self.primary.budget_spent(periods)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                self._seen.update(zip(periods, ((value, None) for value in spent), strict=True))
                if len(self._seen) > _MAX_SEEN:  # as `_remember_now` notes spend
                    self._seed_fallback()
                return spent
        self._refuse_if_closed()
        return await self.fallback.budget_spent(periods)

    async def budget_seed(
        self, key: str, period_id: str, spent: float, *, ttl: float | None = None
    ) -> None:
        await self.fallback.budget_seed(key, period_id, spent, ttl=ttl)
        if self._should_try():
            try:
                await self.primary.budget_seed(key, period_id, spent, ttl=ttl)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                return
        self._refuse_if_closed()

    # -- cache ----------------------------------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        if not self._should_try():
            return None
        try:
            value = await self.primary.cache_get(key)
        except StateUnavailable as exc:
            self._mark_down(exc)
            return None
        self._mark_up()
        return value

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        if not self._should_try():
            return
        try:
            await self.primary.cache_set(key, value, ttl)
        except StateUnavailable as exc:
            self._mark_down(exc)
        else:
            self._mark_up()

    # -- one call per request (the guards step) --------------------------------------------------

    async def admit(self, ticket: Ticket, now: float | None = None) -> Admitted:
        if self._should_try():
            try:
                admitted = await self.primary.admit(ticket, now)
            except StateUnavailable as exc:
                self._mark_down(exc)
            else:
                self._mark_up()
                if admitted.budget is not None:
                    self._remember_now(ticket.lines, admitted.budget.spent)
                return admitted
        if ticket.buckets or ticket.lines:  # a cache-only request is served without state
            self._refuse_if_closed()
        local = replace(ticket, cache_key=None)  # the cache is skipped, not moved into memory
        admitted = self.fallback.admit_now(local, time.time() if now is None else now)
        rate, budget = admitted.rate, admitted.budget
        if rate.reservation is not None:
            rate = replace(rate, reservation=replace(rate.reservation, local=True))
        if budget is not None and budget.reservation is not None:
            budget = replace(budget, reservation=replace(budget.reservation, local=True))
        return Admitted(rate, budget)

    def settle(self, settlement: Settlement, done: SettleCallback | None = None) -> None:
        """Local reservations settle locally; the rest goes to the primary in the background,
        and budget spend it could not take is kept for replay (as in `budget_settle`)."""
        rate, budget = settlement.rate, settlement.budget
        if rate is not None and rate.local:
            self.fallback.settle(Settlement(rate, settlement.tokens))
            rate = None
        if budget is not None and budget.local:
            self.fallback.settle(Settlement(budget=budget, cost=settlement.cost))
            replay = replace(budget, id="replay-" + secrets.token_hex(8), local=False)
            self._pending.append((replay, settlement.cost))
            budget = None
        if rate is settlement.rate and budget is settlement.budget:
            remote = settlement  # the usual case: nothing was local, no copy to build
        else:
            remote = replace(settlement, rate=rate, budget=budget)
        if remote.empty:
            if done is not None:
                done(())
            return
        if not self._should_try():
            self._settle_lost(remote)  # a settlement is never refused, even with failure=closed
            if done is not None:
                done(())
            return

        def answered(result: tuple[float, ...] | BaseException) -> None:
            if isinstance(result, BaseException):
                known = isinstance(result, StateUnavailable)
                self._mark_down(result if known else StateUnavailable(type(result).__name__))
                self._settle_lost(remote)
            else:
                self._mark_up()
                if remote.budget is not None:
                    self._remember_now(remote.budget.lines, result)
            if done is not None:
                done(result)

        self.primary.settle(remote, answered)

    def _settle_lost(self, settlement: Settlement) -> None:
        """The primary did not take a settlement: its buckets refill and its lease expires by
        themselves; the budget spend is kept for replay and counted locally meanwhile."""
        budget = settlement.budget
        if budget is not None:
            self._pending.append((budget, settlement.cost))
            self.fallback.settle(Settlement(budget=budget, cost=settlement.cost))

    async def flush(self) -> None:
        try:
            await self.primary.flush()
        except StateUnavailable as exc:
            self._mark_down(exc)

    def _remember_now(self, lines: Sequence[BudgetLine], spent: Sequence[float]) -> None:
        """Note each line's spend as the primary reported it: one dict write per line on every
        request, where seeding the fallback each time cost several times as much. The fallback
        gets them when the primary is lost, so an outage does not start budgets from zero."""
        seen = self._seen
        for line, value in zip(lines, spent, strict=True):
            seen[line.key, line.period_id] = (value, line.ttl)
        if len(seen) > _MAX_SEEN:
            self._seed_fallback()

    def _seed_fallback(self) -> None:
        seen, self._seen = self._seen, {}
        for (key, period_id), (value, ttl) in seen.items():
            self.fallback.seed_now(key, period_id, value, ttl=ttl)

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """Probe the primary now (readiness), whatever the retry interval says."""
        if await self.primary.ping():
            self._mark_up()
            return True
        self._mark_down(StateUnavailable("state backend did not answer a ping"))
        return False

    async def seeded(self) -> bool:
        """The primary's answer; True while it is down (its recovery reseeds the budgets)."""
        if not self.healthy:
            return True
        try:
            return await self.primary.seeded()
        except StateUnavailable as exc:
            self._mark_down(exc)
            return True

    async def mark_seeded(self) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.primary.mark_seeded()

    async def close(self) -> None:
        if self._flush_task is not None and not self._flush_task.done():
            self._flush_task.cancel()
        await self.primary.close()
        await self.fallback.close()
