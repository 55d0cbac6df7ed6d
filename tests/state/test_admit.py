"""One backend call per request: `admit` (rate + budget + cache read) and `settle` (SPEC §2.5-§2.7),
on memory and on Redis, and the batched Redis command stream under them."""

from __future__ import annotations

import asyncio

import pytest

from concord.state import (
    Bucket,
    BudgetLine,
    Settlement,
    StateBackend,
    StateUnavailable,
    Ticket,
)
from concord.state.pipe import Pipe
from concord.state.redis import RedisState

T0 = 1_800_000_000.0
RPM1 = Bucket("k:rpm", 1, 1)
TPM = Bucket("k:tpm", 100, 60, settles=True)
LINE = BudgetLine("b:acme", "2027-01", 1.0)


async def test_admit_charges_reserves_and_reads_in_one_call(backend: StateBackend) -> None:
    await backend.cache_set("entry", b"stored", 60)
    admitted = await backend.admit(Ticket((TPM,), (LINE,), 0.4, "entry"), T0)
    assert admitted.rate.allowed and admitted.rate.reservation is not None
    assert admitted.budget is not None and admitted.budget.reservation is not None
    assert admitted.cached == b"stored"
    # tpm 100 holds one 60-token estimate; the budget holds $0.4 in flight
    refused = await backend.admit(Ticket((TPM,), (LINE,), 0.4), T0)
    assert not refused.rate.allowed and refused.budget is None


async def test_settlement_is_seen_by_the_next_call_and_stores_the_answer(
    backend: StateBackend,
) -> None:
    first = await backend.admit(Ticket((TPM,), (LINE,), 0.9), T0)
    assert first.budget is not None
    settlement = Settlement(first.rate.reservation, 5, first.budget.reservation, 0.25)
    backend.settle(replace_store(settlement, ("answer", b"body", 60.0)))
    # not awaited, yet applied before anything sent later: the tokens came back, $0.25 is spent
    second = await backend.admit(Ticket((TPM,), (LINE,), 0.5, "answer"), T0)
    assert second.rate.allowed
    assert second.budget is not None and second.budget.spent == (pytest.approx(0.25),)
    assert second.cached == b"body"
    assert await backend.budget_spent([(LINE.key, LINE.period_id)]) == [pytest.approx(0.25)]


async def test_a_request_blocked_by_a_budget_charges_no_bucket(backend: StateBackend) -> None:
    await backend.budget_seed(LINE.key, LINE.period_id, 1.0)  # exhausted
    blocked = await backend.admit(Ticket((RPM1,), (LINE,), 0.1), T0)
    assert blocked.budget is not None and blocked.budget.blocked_by == 0
    assert blocked.rate.reservation is None
    assert (await backend.admit(Ticket((RPM1,)), T0)).rate.allowed  # rpm 1 still unused


async def test_a_rate_limited_request_reserves_no_budget(backend: StateBackend) -> None:
    line = BudgetLine("b:tight", "2027-01", 0.5)
    assert (await backend.admit(Ticket((RPM1,)), T0)).rate.allowed
    refused = await backend.admit(Ticket((RPM1,), (line,), 0.5), T0)
    assert not refused.rate.allowed and refused.rate.denied == 0
    assert (await backend.admit(Ticket((), (line,), 0.5), T0)).budget.allowed  # type: ignore[union-attr]


@pytest.mark.services
async def test_settlements_in_flight_are_applied_before_close(make_redis_state) -> None:
    state: RedisState = make_redis_state()
    admitted = await state.admit(Ticket((), (LINE,), 0.1), T0)
    assert admitted.budget is not None
    for _ in range(20):
        state.settle(Settlement(budget=admitted.budget.reservation, cost=0.01))
    await state.close()
    other: RedisState = make_redis_state()
    assert await other.budget_spent([(LINE.key, LINE.period_id)]) == [pytest.approx(0.2)]


async def test_a_silent_server_times_out_as_unavailable() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # reads the command and never answers
        await asyncio.sleep(5)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = RedisState(Pipe.from_url(f"redis://127.0.0.1:{port}", timeout=0.1))
    try:
        with pytest.raises(StateUnavailable):
            await asyncio.wait_for(state.admit(Ticket((RPM1,)), T0), 2)
        assert state.failures == 1
    finally:
        await state.close()
        server.close()


async def test_a_dead_server_fails_fast_and_fire_and_forget_reports_it() -> None:
    pipe = Pipe.from_url("redis://127.0.0.1:1", timeout=0.5)
    with pytest.raises(OSError):  # connection refused
        await pipe.call("PING")
    seen: list[object] = []
    pipe.send(("PING",), seen.append)
    await asyncio.sleep(0.05)
    assert seen and isinstance(seen[0], OSError)


def replace_store(settlement: Settlement, store: tuple[str, bytes, float]) -> Settlement:
    return Settlement(settlement.rate, settlement.tokens, settlement.budget, settlement.cost, store)
