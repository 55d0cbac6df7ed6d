"""The state backend seam: shared counters, budgets and cache entries (SPEC §1).

State that must survive config reloads (SPEC §4) and be shared by workers and replicas lives
behind `StateBackend`. Two implementations: `MemoryState` (one process, the default) and
`RedisState` (every multi-step update is one Lua script, so limits and budgets hold exactly across
processes). `open_state` wraps Redis in `ResilientState`, which keeps requests flowing when Redis
is unreachable.

    StateError
    └── StateUnavailable      the backend could not be reached (connection refused, timeout)

Values cross the seam as plain numbers: seconds since the epoch, USD, token counts. Callers use
the policy layers (`RateLimiter`, `BudgetKeeper`, `ResponseCache`), not this protocol directly.

The value types below are built several times per request, so they are plain slotted dataclasses
(hashable, never changed after construction by convention): a frozen dataclass's `__init__` sets
each field through `object.__setattr__` and costs about four times as much.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

FailureMode = Literal["open", "closed"]


class StateError(Exception):
    """Base class of the state backend's errors."""


class StateUnavailable(StateError):
    """The shared state cannot be reached; with `failure: closed` the request must be refused."""


@dataclass(slots=True, unsafe_hash=True)
class Bucket:
    """One rate-limit bucket touched by a request.

    `key` names the bucket (rule, scope and principal); `limit` units refill evenly over `window`
    seconds; this request takes `cost` units. `settles` marks token buckets, whose reservation is
    corrected to actual usage afterwards (SPEC §2.7).
    """

    key: str
    limit: int
    cost: int
    window: float = 60.0
    settles: bool = False


@dataclass(slots=True, unsafe_hash=True)
class RateReservation:
    """What a granted request holds until it settles. `local` = taken on the fallback backend."""

    buckets: tuple[Bucket, ...]
    local: bool = False


@dataclass(slots=True, unsafe_hash=True)
class RateVerdict:
    """`allowed`, or the bucket that refused (`denied`, an index) and when to retry (seconds)."""

    allowed: bool
    retry_after: float = 0.0
    denied: int | None = None
    reservation: RateReservation | None = None


@dataclass(slots=True, unsafe_hash=True)
class BudgetLine:
    """One budget period a request is charged to (SPEC §2.6).

    A `hard` line refuses the request once exhausted (`on_exceed: block`); a soft one (`downgrade`)
    is only reported as exhausted and still charged. `ttl`: how long the backend keeps the period.
    """

    key: str
    period_id: str
    limit_usd: float
    hard: bool = True
    ttl: float | None = None


@dataclass(slots=True, unsafe_hash=True)
class BudgetReservation:
    """An amount reserved on every line of one request, released exactly once by settlement."""

    lines: tuple[BudgetLine, ...]
    id: str
    amount: float
    local: bool = False


@dataclass(slots=True, unsafe_hash=True)
class BudgetVerdict:
    """`allowed` unless a hard line is exhausted (`blocked_by`, the first such line's index).
    `exhausted` lists every line at or over its limit, `spent` each line's settled spend before
    this request (USD)."""

    allowed: bool
    spent: tuple[float, ...]
    exhausted: tuple[int, ...] = ()
    blocked_by: int | None = None
    reservation: BudgetReservation | None = None


@dataclass(slots=True, unsafe_hash=True)
class Ticket:
    """Everything one request asks of the state at admission, answered in one backend call:
    take `buckets` (SPEC §2.7), reserve `amount` USD on `lines` (§2.6), read `cache_key` (§2.5).
    """

    buckets: tuple[Bucket, ...] = ()
    lines: tuple[BudgetLine, ...] = ()
    amount: float = 0.0
    cache_key: str | None = None


@dataclass(slots=True, unsafe_hash=True)
class Admitted:
    """The answer to a `Ticket`. A refused request is charged nothing: `rate` refused → budgets
    untouched (`budget` None); a hard budget line exhausted → no bucket charged. `cached` is read
    only for an admitted request (None: a miss, or no key)."""

    rate: RateVerdict
    budget: BudgetVerdict | None = None
    cached: bytes | None = None


@dataclass(slots=True, unsafe_hash=True)
class Settlement:
    """What one finished request owes the state: token buckets corrected to `tokens`, budget
    reservation replaced by `cost` USD, and optionally a response to store (key, value, ttl)."""

    rate: RateReservation | None = None
    tokens: int = 0
    budget: BudgetReservation | None = None
    cost: float = 0.0
    store: tuple[str, bytes, float] | None = None

    @property
    def empty(self) -> bool:
        return self.rate is None and self.budget is None and self.store is None


SettleCallback = Callable[[tuple[float, ...] | BaseException], None]


class StateBackend(Protocol):
    """Shared state for the guards step. Every method is atomic with respect to other callers."""

    @property
    def healthy(self) -> bool:
        """False while the backing store is unreachable (readiness, SPEC §3)."""
        ...

    @property
    def failures(self) -> int:
        """How many operations failed to reach the backing store since start (metrics)."""
        ...

    async def rate_check_and_reserve(
        self, buckets: Sequence[Bucket], now: float | None = None
    ) -> RateVerdict:
        """Take `cost` from every bucket, or from none if any lacks capacity."""
        ...

    async def rate_settle(
        self, reservation: RateReservation, actual_tokens: int, now: float | None = None
    ) -> None:
        """Correct the settling buckets of `reservation` from their reserved cost to actual use."""
        ...

    async def budget_reserve(
        self, lines: Sequence[BudgetLine], amount: float, now: float | None = None
    ) -> BudgetVerdict:
        """Reserve `amount` on every line at once, unless a hard line is exhausted (its settled
        spend plus the reservations in flight reach its limit); then reserve nothing."""
        ...

    async def budget_settle(
        self, reservation: BudgetReservation, actual: float
    ) -> tuple[float, ...]:
        """Release the reservation and add `actual` to every line; returns their new spend."""
        ...

    async def budget_spent(self, periods: Sequence[tuple[str, str]]) -> list[float]:
        """Settled spend (reservations excluded) of each `(key, period_id)`, in USD."""
        ...

    async def budget_seed(
        self, key: str, period_id: str, spent: float, *, ttl: float | None = None
    ) -> None:
        """Raise the period's spend to at least `spent` (rebuilt from the usage log at start-up)."""
        ...

    async def cache_get(self, key: str) -> bytes | None:
        """The cached value, or None when absent or expired."""
        ...

    async def cache_set(self, key: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds."""
        ...

    async def admit(self, ticket: Ticket, now: float | None = None) -> Admitted:
        """All of a request's admission in one atomic step (see `Ticket` and `Admitted`)."""
        ...

    def settle(self, settlement: Settlement, done: SettleCallback | None = None) -> None:
        """Apply `settlement` without making the caller wait for it. It is applied before any
        later call of this process; `done` receives the budget lines' new spend, or the error
        that lost the settlement. `flush` waits for every settlement sent so far."""
        ...

    async def flush(self) -> None:
        """Wait until every settlement handed to `settle` has been applied."""
        ...

    async def ping(self) -> bool:
        """True when the backing store answers now (readiness probe)."""
        ...

    async def seeded(self) -> bool:
        """False when the budget counters seeded from the usage log may be gone: a Redis that
        was flushed, or evicted its keys, while the gateway ran (SPEC §2.6). True when the store
        cannot say, or cannot lose them (memory)."""
        ...

    async def mark_seeded(self) -> None:
        """Note that the budget counters were just seeded from the usage log."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def open_state(
    url: str,
    *,
    failure: FailureMode = "open",
    key_prefix: str = "concord:",
    cache_max_entries: int = 10_000,
    cache_max_bytes: int = 256 * 1024 * 1024,
    timeout: float = 0.25,
) -> StateBackend:
    """Build the backend named by `storage.state`: `memory`, or a `redis://`, `rediss://` or
    `unix://` URL. Redis is wrapped in `ResilientState` with the given failure mode.

    The cache bounds apply to the memory backend (Redis bounds its cache by TTL and its own
    `maxmemory` policy); `timeout` is Redis's connect and socket timeout in seconds.
    """
    from concord.state.memory import MemoryState

    if url.strip().lower() == "memory":
        return MemoryState(cache_max_entries=cache_max_entries, cache_max_bytes=cache_max_bytes)
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError("storage.state must be 'memory' or a redis://, rediss:// or unix:// URL")

    from concord.state.redis import RedisState
    from concord.state.resilient import ResilientState

    primary = RedisState.from_url(url, key_prefix=key_prefix, timeout=timeout)
    fallback = MemoryState()  # holds limits and budgets only: the cache is skipped in an outage
    return ResilientState(primary, fallback, failure=failure)


# Money is stored as integer nano-dollars so that many small settlements add up exactly, in
# Python and in Redis (HINCRBY) alike; 2**53 nano-dollars is about $9M per budget period.
NANO = 1_000_000_000


def usd_to_units(usd: float) -> int:
    """USD → integer nano-dollars (rounded)."""
    return round(usd * NANO)


def units_to_usd(units: int) -> float:
    """Integer nano-dollars → USD."""
    return units / NANO
