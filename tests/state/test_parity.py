"""The Lua scripts and the memory backend implement one behaviour: same operations, same answers."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concord.state import Bucket, BudgetLine, MemoryState, StateBackend
from concord.state.redis import RedisState

T0 = 1_800_000_000.0

# One step: advance the clock, then acquire (bucket subset, tokens) or settle the last grant.
steps = st.lists(
    st.tuples(
        st.floats(min_value=0, max_value=20, allow_nan=False),
        st.sampled_from(["acquire", "settle"]),
        st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=3, unique=True),
        st.integers(min_value=0, max_value=1500),
    ),
    min_size=1,
    max_size=25,
)
LIMITS = ((3, False), (5, False), (1000, True))  # rpm 3, rpm 5, tpm 1000


def buckets(run: str, chosen: list[int], tokens: int) -> list[Bucket]:
    return [
        Bucket(f"{run}:{i}", LIMITS[i][0], tokens if LIMITS[i][1] else 1, settles=LIMITS[i][1])
        for i in chosen
    ]


async def replay(state: StateBackend, run: str, ops: list) -> list[tuple]:
    now, last, seen = T0, None, []
    for dt, op, chosen, tokens in ops:
        now += dt
        if op == "settle" and last is not None:
            await state.rate_settle(last, tokens, now)
            last = None
            continue
        verdict = await state.rate_check_and_reserve(buckets(run, chosen, tokens), now)
        seen.append((verdict.allowed, verdict.denied, round(verdict.retry_after, 6)))
        last = verdict.reservation or last
    return seen


@pytest.mark.services
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=steps)
async def test_rate_limits_agree(make_redis_state, ops) -> None:
    run = uuid.uuid4().hex  # the Redis fixture outlives one example
    assert await replay(MemoryState(), run, ops) == await replay(make_redis_state(), run, ops)


budget_steps = st.lists(
    st.tuples(
        st.sampled_from(["reserve", "settle"]),
        st.lists(st.sampled_from([0, 1]), min_size=1, max_size=2, unique=True),
        st.integers(min_value=0, max_value=400),  # cents
    ),
    min_size=1,
    max_size=20,
)


async def replay_budgets(state: StateBackend, run: str, ops: list) -> list[tuple]:
    pending, seen = [], []
    for op, chosen, cents in ops:
        if op == "settle" and pending:
            seen.append(await state.budget_settle(pending.pop(0), cents / 100))
            continue
        lines = [BudgetLine(f"{run}:{i}", "p", (5.0, 3.0)[i], hard=i == 0) for i in chosen]
        verdict = await state.budget_reserve(lines, cents / 100, T0)
        seen.append((verdict.allowed, verdict.spent, verdict.exhausted, verdict.blocked_by))
        if verdict.reservation is not None:
            pending.append(verdict.reservation)
    return seen


@pytest.mark.services
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=budget_steps)
async def test_budgets_agree(make_redis_state, ops) -> None:
    run = uuid.uuid4().hex  # the Redis fixture outlives one example
    redis_state: RedisState = make_redis_state()
    assert await replay_budgets(MemoryState(), run, ops) == await replay_budgets(
        redis_state, run, ops
    )
