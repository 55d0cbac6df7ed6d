"""In-process state: the default backend, and the fallback while Redis is unreachable (SPEC §1).

Everything is plain dicts. No method awaits in the middle of an update, so each operation is
atomic on the event loop, matching the one-Lua-script-per-operation guarantee of `RedisState`.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from concord.state.backend import (
    NANO,
    Admitted,
    Bucket,
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    RateReservation,
    RateVerdict,
    SettleCallback,
    Settlement,
    Ticket,
    units_to_usd,
    usd_to_units,
)
from concord.state.tokenbucket import shortfall_wait

# Stale rate buckets and budget periods are dropped by a sweep once this many have accumulated.
_SWEEP_THRESHOLD = 10_000
_DEFAULT_PERIOD_LIFETIME = 33 * 86400.0
_NOTHING_TAKEN = RateVerdict(True)  # admitted by the rate limits without charging a bucket


@dataclass(slots=True)
class _Usage:
    used: float  # units taken and not yet drained, as of `ts` (tokenbucket.level_at)
    ts: float
    full_at: float


@dataclass(slots=True)
class _Period:
    spent: int = 0
    reserved: int = 0
    leases: dict[str, tuple[int, float]] = field(default_factory=dict)  # id -> (units, expiry)
    expires_at: float = math.inf
    next_expiry: float = math.inf  # no lease expires before this: most checks scan nothing

    def lease(self, rid: str, units: int, expiry: float) -> None:
        self.leases[rid] = (units, expiry)
        self.reserved += units
        if expiry < self.next_expiry:
            self.next_expiry = expiry

    def expire_leases(self, now: float) -> None:
        """Drop reservations whose holder never settled (it crashed or lost its connection)."""
        if now < self.next_expiry:
            return
        for rid in [rid for rid, (_, exp) in self.leases.items() if exp <= now]:
            self.reserved -= self.leases.pop(rid)[0]
        self.next_expiry = min((exp for _, exp in self.leases.values()), default=math.inf)


class MemoryState:
    """Rate buckets, budget periods and an LRU response cache held in this process.

    The cache holds at most `cache_max_entries` entries and `cache_max_bytes` bytes of values.
    """

    def __init__(
        self,
        *,
        cache_max_entries: int = 10_000,
        cache_max_bytes: int = 256 * 1024 * 1024,
        budget_lease: float = 900.0,
    ) -> None:
        self.cache_max_entries = cache_max_entries
        self.cache_max_bytes = cache_max_bytes
        self.budget_lease = budget_lease
        self._cache_bytes = 0
        self._levels: dict[str, _Usage] = {}
        self._periods: dict[tuple[str, str], _Period] = {}
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._sweep_at = _SWEEP_THRESHOLD
        self._lease_ids = itertools.count(1)  # reservation ids: unique within this state

    @property
    def healthy(self) -> bool:
        return True

    @property
    def failures(self) -> int:
        return 0

    # -- rate limits (SPEC §2.7) --------------------------------------------------------------

    async def rate_check_and_reserve(
        self, buckets: Sequence[Bucket], now: float | None = None
    ) -> RateVerdict:
        now = time.time() if now is None else now
        self._maybe_sweep(now)  # first, as in `budget_reserve` and `admit_now`
        levels, refusal = self._rate_check(buckets, now)
        if refusal is not None:
            return refusal
        return self._rate_take(tuple(buckets), levels, now)

    def _rate_check(
        self, buckets: Sequence[Bucket], now: float
    ) -> tuple[list[float], RateVerdict | None]:
        """Every bucket's level now, and the refusal if one lacks room (nothing written)."""
        levels = [self._level_at(b, now) for b in buckets]
        wait, denied = 0.0, None
        for i, b in enumerate(buckets):
            level, limit = levels[i], b.limit
            if limit > 0 and (level >= b.cost or level >= limit):
                continue  # room enough: the usual case, without `shortfall_wait`'s call
            need = shortfall_wait(level, b.cost, limit, b.window)
            if need > 0 and (denied is None or need > wait):
                wait, denied = need, i
        if denied is not None:
            return levels, RateVerdict(False, retry_after=wait, denied=denied)
        return levels, None

    def _rate_take(
        self, buckets: tuple[Bucket, ...], levels: list[float], now: float
    ) -> RateVerdict:
        for b, level in zip(buckets, levels, strict=True):
            self._put_level(b, level - b.cost, now)
        return RateVerdict(True, reservation=RateReservation(buckets))

    async def rate_settle(
        self, reservation: RateReservation, actual_tokens: int, now: float | None = None
    ) -> None:
        self._rate_settle(reservation, actual_tokens, time.time() if now is None else now)

    def _rate_settle(self, reservation: RateReservation, actual_tokens: int, now: float) -> None:
        for b in reservation.buckets:
            if not b.settles or b.cost == actual_tokens:
                continue
            level = self._level_at(b, now)
            self._put_level(b, min(float(b.limit), level + b.cost - actual_tokens), now)

    def _level_at(self, b: Bucket, now: float) -> float:
        """`tokenbucket.level_at` for the stored bucket, its arithmetic written out: a request
        reads each of its buckets once or twice."""
        state = self._levels.get(b.key)
        limit = b.limit
        if limit <= 0:
            return 0.0
        if state is None:
            return float(limit)
        used = state.used
        if now > state.ts:
            used -= (now - state.ts) * limit / b.window
            if used < 0.0:
                return float(limit)
        return limit - used

    def _put_level(self, b: Bucket, level: float, now: float) -> None:
        limit = b.limit
        used = limit - level
        # `tokenbucket.time_to_full`, written out
        full_in = used * b.window / limit if limit > 0 and used > 0.0 else 0.0
        prev = self._levels.get(b.key)
        if prev is None:
            self._levels[b.key] = _Usage(used, now, now + full_in)
            return
        ts = now if now > prev.ts else prev.ts
        prev.used, prev.ts, prev.full_at = used, ts, ts + full_in

    # -- budgets (SPEC §2.6) ------------------------------------------------------------------

    async def budget_reserve(
        self, lines: Sequence[BudgetLine], amount: float, now: float | None = None
    ) -> BudgetVerdict:
        now = time.time() if now is None else now
        self._maybe_sweep(now)  # before the periods are looked up: an expired one starts anew
        periods, exhausted, refusal = self._budget_check(lines, now)
        if refusal is not None:
            return refusal
        return self._budget_take(tuple(lines), periods, exhausted, amount, now)

    def _budget_check(
        self, lines: Sequence[BudgetLine], now: float
    ) -> tuple[list[_Period], tuple[int, ...], BudgetVerdict | None]:
        """Each line's period, the exhausted lines, and the refusal if a hard one is among them
        (nothing reserved). An admissible request gets its only verdict from `_budget_take`."""
        periods = [self._period(line.key, line.period_id, line.ttl, now) for line in lines]
        exhausted: list[int] = []
        blocked_by = None
        for i, period in enumerate(periods):
            if now >= period.next_expiry:
                period.expire_leases(now)
            line = lines[i]
            limit = line.limit_usd
            # SPEC §2.6: a period admits requests until spend plus reservations reach the limit.
            if not math.isinf(limit) and period.spent + period.reserved >= usd_to_units(limit):
                exhausted.append(i)
                if line.hard and blocked_by is None:
                    blocked_by = i
        found = tuple(exhausted) if exhausted else ()
        if blocked_by is None:
            return periods, found, None
        spent = tuple([p.spent / NANO for p in periods])
        return periods, found, BudgetVerdict(False, spent, found, blocked_by)

    def _budget_take(
        self,
        lines: tuple[BudgetLine, ...],
        periods: list[_Period],
        exhausted: tuple[int, ...],
        amount: float,
        now: float,
    ) -> BudgetVerdict:
        spent = tuple([p.spent / NANO for p in periods])  # settled spend: leases add none
        units = usd_to_units(amount) if amount > 0 else 0
        rid, expiry = str(next(self._lease_ids)), now + self.budget_lease
        for period in periods:
            period.lease(rid, units, expiry)
        reservation = BudgetReservation(lines, rid, units / NANO)
        return BudgetVerdict(True, spent, exhausted, None, reservation)

    async def budget_settle(
        self, reservation: BudgetReservation, actual: float
    ) -> tuple[float, ...]:
        return self._budget_settle(reservation, actual)

    def _budget_settle(self, reservation: BudgetReservation, actual: float) -> tuple[float, ...]:
        now, units = time.time(), usd_to_units(actual) if actual > 0 else 0
        spent = []
        for line in reservation.lines:
            period = self._period(line.key, line.period_id, line.ttl, now)
            lease = period.leases.pop(reservation.id, None)
            if lease is not None:
                period.reserved -= lease[0]
            period.spent += units
            spent.append(period.spent / NANO)
        return tuple(spent)

    async def budget_spent(self, periods: Sequence[tuple[str, str]]) -> list[float]:
        found = [self._periods.get(p) for p in periods]
        return [units_to_usd(p.spent) if p else 0.0 for p in found]

    async def budget_seed(
        self, key: str, period_id: str, spent: float, *, ttl: float | None = None
    ) -> None:
        self.seed_now(key, period_id, spent, ttl=ttl)

    def seed_now(self, key: str, period_id: str, spent: float, *, ttl: float | None = None) -> None:
        """`budget_seed` without a suspension point (the resilient wrapper's bookkeeping)."""
        period = self._period(key, period_id, ttl, time.time())
        period.spent = max(period.spent, usd_to_units(spent))

    def _period(self, key: str, period_id: str, ttl: float | None, now: float) -> _Period:
        period = self._periods.get((key, period_id))
        if period is None:
            # Without a ttl, keep it as long as the longest period could last.
            lifetime = ttl if ttl is not None else _DEFAULT_PERIOD_LIFETIME
            period = self._periods[(key, period_id)] = _Period(expires_at=now + lifetime)
        elif ttl is not None:
            period.expires_at = now + ttl
        return period

    # -- response cache (SPEC §2.5) -----------------------------------------------------------

    async def cache_get(self, key: str) -> bytes | None:
        return self._cache_get(key)

    def _cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        value, expires_at = entry
        if expires_at <= time.monotonic():
            self._cache_bytes -= len(self._cache.pop(key)[0])
            return None
        self._cache.move_to_end(key)
        return value

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        self._cache_set(key, value, ttl)

    def _cache_set(self, key: str, value: bytes, ttl: float) -> None:
        if ttl <= 0 or self.cache_max_entries <= 0 or len(value) > self.cache_max_bytes:
            return
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= len(old[0])
        self._cache[key] = (value, time.monotonic() + ttl)
        self._cache_bytes += len(value)
        # Least recently used first out, until both the entry and the byte bound hold.
        while len(self._cache) > self.cache_max_entries or self._cache_bytes > self.cache_max_bytes:
            self._cache_bytes -= len(self._cache.popitem(last=False)[1][0])

    # -- one call per request (the guards step) --------------------------------------------------

    async def admit(self, ticket: Ticket, now: float | None = None) -> Admitted:
        return self.admit_now(ticket, time.time() if now is None else now)

    def admit_now(self, ticket: Ticket, now: float) -> Admitted:
        """`admit` without a suspension point: atomic on the event loop by construction."""
        buckets, lines = ticket.buckets, ticket.lines
        self._maybe_sweep(now)  # first, as in `budget_reserve`
        levels: list[float] = []
        if buckets:
            levels, refusal = self._rate_check(buckets, now)
            if refusal is not None:
                return Admitted(refusal)
        budget = None
        if lines:
            periods, exhausted, refusal = self._budget_check(lines, now)
            if refusal is not None:
                return Admitted(_NOTHING_TAKEN, refusal)  # no bucket charged either
            budget = self._budget_take(lines, periods, exhausted, ticket.amount, now)
        rate = self._rate_take(buckets, levels, now) if buckets else _NOTHING_TAKEN
        cached = self._cache_get(ticket.cache_key) if ticket.cache_key is not None else None
        return Admitted(rate, budget, cached)

    def settle(self, settlement: Settlement, done: SettleCallback | None = None) -> None:
        if settlement.rate is not None:
            self._rate_settle(settlement.rate, settlement.tokens, time.time())
        spent: tuple[float, ...] = ()
        if settlement.budget is not None:
            spent = self._budget_settle(settlement.budget, settlement.cost)
        if settlement.store is not None:
            self._cache_set(*settlement.store)
        if done is not None:
            done(spent)

    async def flush(self) -> None:
        return None

    # -- lifecycle ------------------------------------------------------------------------------

    async def ping(self) -> bool:
        return True

    async def seeded(self) -> bool:
        return True  # nothing outside the process can take its counters away

    async def mark_seeded(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _maybe_sweep(self, now: float) -> None:
        """Forget full rate buckets and expired budget periods once enough have piled up."""
        if len(self._levels) + len(self._periods) <= self._sweep_at:
            return
        self._levels = {k: v for k, v in self._levels.items() if v.full_at > now}
        self._periods = {k: v for k, v in self._periods.items() if v.expires_at > now}
        # Amortise: the next sweep waits until the live state has doubled.
        self._sweep_at = max(_SWEEP_THRESHOLD, 2 * (len(self._levels) + len(self._periods)))
