"""Token-bucket arithmetic: the model the memory backend and the Redis Lua scripts implement.

SPEC §2.7 limits are per minute. A bucket holds up to `limit` units and refills continuously at
`limit / window` units per second, like the upstream providers' own limits: a client that stays
under its rpm is never refused, a burst may use the whole minute's allowance at once, and
`Retry-After` says exactly when enough capacity will be back. A request larger than the whole
bucket (a huge prompt against a small tpm) is let through when the bucket is full and leaves it
in debt, rather than being refused forever.

`MemoryState` writes `level_at` and `time_to_full` out on its per-request path (a call each
costs more than the arithmetic); `tests/state/test_tokenbucket.py` holds it to these functions.
"""

from __future__ import annotations


def level_at(used: float | None, ts: float, limit: int, window: float, now: float) -> float:
    """What the bucket can take at `now`: `limit` less the units used (as of `ts`) that have not
    drained yet, at `limit / window` per second; an unknown bucket is full, and clocks that step
    back drain nothing. Buckets store what was used, not what is left, so that a changed limit
    applies at once: raising rpm from 3 to 5 right after three requests leaves room for two, and
    what was used drains at the new rate."""
    if limit <= 0:
        return 0.0
    if used is None:
        return float(limit)
    if now > ts:
        used = max(0.0, used - (now - ts) * limit / window)
    return limit - used


def shortfall_wait(level: float, cost: int, limit: int, window: float) -> float:
    """Seconds until the bucket can take `cost` (0 when it can now; `window` for a zero limit)."""
    if limit <= 0:
        return window
    need = min(cost, limit)
    if level >= need:
        return 0.0
    return (need - level) * window / limit


def time_to_full(level: float, limit: int, window: float) -> float:
    """Seconds until the bucket is full again, after which it need not be stored."""
    if limit <= 0:
        return 0.0
    return max(0.0, (limit - level) * window / limit)
