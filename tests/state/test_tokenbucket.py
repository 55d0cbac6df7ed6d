"""The memory backend writes the token-bucket arithmetic out on its hot path; `tokenbucket.py`
is the model it must agree with (and the one the Lua scripts mirror)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from concord.state import Bucket, MemoryState
from concord.state.memory import _Usage
from concord.state.tokenbucket import level_at, shortfall_wait, time_to_full

T0 = 1_800_000_000.0
limits = st.integers(min_value=-1, max_value=10**9)
windows = st.sampled_from([1.0, 60.0, 3600.0])
offsets = st.floats(min_value=-120, max_value=600, allow_nan=False)
used_units = st.floats(min_value=-10.0, max_value=2e9, allow_nan=False)


@given(
    limit=limits,
    window=windows,
    used=st.none() | used_units,
    stamped=offsets,
    later=offsets,
)
def test_a_stored_bucket_reads_the_level_the_model_gives(
    limit: int, window: float, used: float | None, stamped: float, later: float
) -> None:
    state = MemoryState()
    bucket = Bucket("k", limit, 1, window)
    if used is not None:
        state._levels["k"] = _Usage(used, T0 + stamped, math.inf)
    expected = level_at(used, T0 + stamped, limit, window, T0 + later)
    assert state._level_at(bucket, T0 + later) == expected


@given(limit=limits, window=windows, level=used_units, before=st.booleans())
def test_a_written_bucket_is_kept_until_the_model_says_it_is_full(
    limit: int, window: float, level: float, before: bool
) -> None:
    state = MemoryState()
    bucket = Bucket("k", limit, 1, window)
    if before:  # an existing entry is updated in place, stamped no earlier than it was
        state._levels["k"] = _Usage(0.0, T0 - 5, T0)
    state._put_level(bucket, level, T0)
    stored = state._levels["k"]
    assert stored.used == limit - level and stored.ts == T0
    assert stored.full_at == T0 + time_to_full(level, limit, window)


@given(limit=limits, window=windows, level=used_units, cost=st.integers(0, 10**9))
def test_only_a_bucket_short_of_room_is_refused(
    limit: int, window: float, level: float, cost: int
) -> None:
    state = MemoryState()
    bucket = Bucket("k", limit, cost, window)
    state._levels["k"] = _Usage(max(limit, 0) - level, T0, math.inf)
    levels, refusal = state._rate_check((bucket,), T0)
    wait = shortfall_wait(levels[0], cost, limit, window)
    assert (refusal is None) == (wait <= 0)
    if refusal is not None:
        assert refusal.retry_after == wait and refusal.denied == 0
