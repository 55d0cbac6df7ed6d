"""SPEC §2.6 budgets: calendar periods, reserve before / settle after, block and downgrade."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from concord.engine.graph import BudgetRule, Price
from concord.state import BudgetKeeper, StateBackend, period_end, period_id, worst_case_cost
from concord.state.memory import MemoryState

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC).timestamp()
IDS = {"key": "k1", "workspace": "acme", "user": "u1"}


@pytest.mark.parametrize(
    ("period", "when", "pid", "end"),
    [
        ("day", datetime(2026, 11, 25, 23, 59, 59), "2026-11-25", datetime(2026, 11, 26)),
        ("day", datetime(2026, 12, 31, 12), "2026-12-31", datetime(2027, 1, 1)),
        ("week", datetime(2026, 11, 25, 8), "2026-W48", datetime(2026, 11, 30)),
        ("week", datetime(2024, 12, 31), "2025-W01", datetime(2025, 1, 6)),  # ISO year
        ("week", datetime(2027, 1, 2), "2026-W53", datetime(2027, 1, 4)),
        ("month", datetime(2028, 2, 29, 23), "2028-02", datetime(2028, 3, 1)),
        ("month", datetime(2026, 12, 1), "2026-12", datetime(2027, 1, 1)),
    ],
)
def test_periods_are_calendar_utc(period, when, pid, end) -> None:
    when = when.replace(tzinfo=UTC)
    assert period_id(period, when) == pid
    assert period_id(period, when.timestamp()) == pid
    assert period_end(period, when) == end.replace(tzinfo=UTC)


def test_periods_use_utc_whatever_the_input_timezone() -> None:
    from datetime import timedelta, timezone

    late_in_new_york = datetime(2026, 11, 25, 22, tzinfo=timezone(timedelta(hours=-5)))
    assert period_id("day", late_in_new_york) == "2026-11-26"


@pytest.mark.parametrize(
    ("price", "input_tokens", "max_tokens", "default", "expected"),
    [
        (Price(input=2.5, output=10.0), 1000, 500, None, 0.0025 + 0.005),
        (Price(input=2.5, output=10.0, cached_input=1.25), 1000, 0, None, 0.0025),
        (Price(input=1.0, output=2.0), 0, None, 1000, 0.002),
        (Price(input=1.0, output=2.0), 0, None, None, 4096 * 2 / 1e6),
        (None, 1000, 500, None, 0.0),
    ],
)
def test_worst_case_cost(price, input_tokens, max_tokens, default, expected) -> None:
    got = worst_case_cost(price, input_tokens, max_tokens, default_max_tokens=default)
    assert got == pytest.approx(expected)


def ws_budget(limit: float, **kw) -> BudgetRule:
    return BudgetRule("workspace:acme", "workspace", limit, **kw)


async def test_reserve_then_settle_counts_the_actual_cost(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    rules = [ws_budget(1.0, period="day")]
    grant = await keeper.reserve(rules, IDS, 0.30, now=NOW)
    assert grant.outcome == "ok"
    assert await keeper.used(rules, IDS, now=NOW) == 0.0  # reservations are not spend
    await keeper.settle(grant, 0.20)
    assert await keeper.used(rules, IDS, now=NOW) == pytest.approx(0.2)


async def test_exhausted_budget_blocks(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    rules = [ws_budget(0.5, on_exceed="block")]
    await keeper.settle(await keeper.reserve(rules, IDS, 0.1, now=NOW), 0.5)
    grant = await keeper.reserve(rules, IDS, 0.1, now=NOW)
    assert grant.outcome == "blocked"
    assert grant.rule is not None and grant.rule.name == "workspace:acme"
    assert await keeper.used(rules, IDS, now=NOW) == pytest.approx(1.0)


async def test_a_blocked_request_reserves_nothing_on_its_other_budgets(
    backend: StateBackend,
) -> None:
    keeper = BudgetKeeper(backend)
    per_key = BudgetRule("per-key", "key", 1.0)
    exhausted = ws_budget(0.0)
    assert (await keeper.reserve([per_key, exhausted], IDS, 1.0, now=NOW)).outcome == "blocked"
    # A leftover $1 reservation on per-key would exhaust it.
    assert (await keeper.reserve([per_key], IDS, 1.0, now=NOW)).outcome == "ok"


async def test_downgrade_continues_and_still_charges(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    rules = [ws_budget(0.5, on_exceed="downgrade", downgrade_to="fast")]
    await keeper.settle(await keeper.reserve(rules, IDS, 0.1, now=NOW), 0.5)
    grant = await keeper.reserve(rules, IDS, 0.1, now=NOW)
    assert grant.outcome == "downgrade"
    assert grant.downgrade_to == "fast"
    await keeper.settle(grant, 0.05)
    assert await keeper.used(rules, IDS, now=NOW) == pytest.approx(0.55 / 0.5)


async def test_a_downgraded_request_is_charged_to_every_budget(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    soft = ws_budget(0.0, on_exceed="downgrade", downgrade_to="fast")
    per_key = BudgetRule("per-key", "key", 10.0)
    grant = await keeper.reserve([soft, per_key], IDS, 0.1, now=NOW)
    assert (grant.outcome, grant.downgrade_to) == ("downgrade", "fast")
    await keeper.settle(grant, 0.04)
    assert await keeper.spent(per_key, "k1", now=NOW) == pytest.approx(0.04)
    assert await keeper.spent(soft, "acme", now=NOW) == pytest.approx(0.04)


async def test_block_wins_over_downgrade(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    soft = ws_budget(0.0, on_exceed="downgrade", downgrade_to="fast")
    hard = BudgetRule("per-key", "key", 0.0, on_exceed="block")
    grant = await keeper.reserve([soft, hard], IDS, 0.1, now=NOW)
    assert grant.outcome == "blocked"
    assert grant.rule == hard


async def test_spend_rolls_over_with_the_period(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    rules = [ws_budget(1.0, period="day")]
    await keeper.settle(await keeper.reserve(rules, IDS, 1.0, now=NOW), 1.0)
    assert (await keeper.reserve(rules, IDS, 0.1, now=NOW)).outcome == "blocked"
    tomorrow = NOW + 86400
    assert await keeper.used(rules, IDS, now=tomorrow) == 0.0
    assert (await keeper.reserve(rules, IDS, 0.1, now=tomorrow)).outcome == "ok"


async def test_budgets_apply_per_principal(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    per_user = [BudgetRule("per-user", "user", 1.0)]
    await keeper.settle(await keeper.reserve(per_user, IDS, 0.1, now=NOW), 1.0)
    assert (await keeper.reserve(per_user, IDS, 0.1, now=NOW)).outcome == "blocked"
    other = {**IDS, "user": "u2"}
    assert (await keeper.reserve(per_user, other, 0.1, now=NOW)).outcome == "ok"
    anonymous = {**IDS, "user": None}
    assert (await keeper.reserve(per_user, anonymous, 0.1, now=NOW)).reservation is None


async def test_seeding_rebuilds_spend_but_never_lowers_it(backend: StateBackend) -> None:
    keeper = BudgetKeeper(backend)
    rule = ws_budget(10.0)
    await keeper.seed(rule, "acme", 4.0, now=NOW)
    assert await keeper.used([rule], IDS, now=NOW) == pytest.approx(0.4)
    await keeper.seed(rule, "acme", 1.0, now=NOW)
    assert await keeper.spent(rule, "acme", now=NOW) == pytest.approx(4.0)


async def test_an_abandoned_reservation_expires(backend: StateBackend) -> None:
    """A process that dies between reserve and settle must not shrink the budget for good."""
    keeper = BudgetKeeper(backend)
    rules = [ws_budget(1.0)]
    assert (await keeper.reserve(rules, IDS, 1.0, now=NOW)).outcome == "ok"
    assert (await keeper.reserve(rules, IDS, 0.1, now=NOW + 60)).outcome == "blocked"
    assert (await keeper.reserve(rules, IDS, 0.1, now=NOW + 3600)).outcome == "ok"


async def _hammer(keepers: list[BudgetKeeper], limit: float, worst: float, n: int) -> int:
    """n concurrent requests that each end up costing their full worst case."""
    rules = [ws_budget(limit)]

    async def one(i: int) -> bool:
        keeper = keepers[i % len(keepers)]
        grant = await keeper.reserve(rules, IDS, worst, now=NOW)
        if grant.outcome != "ok":
            return False
        await asyncio.sleep(0.001 * (i % 5))  # the upstream call
        await keeper.settle(grant, worst)
        return True

    return sum(await asyncio.gather(*(one(i) for i in range(n))))


async def test_concurrent_requests_overshoot_by_at_most_one_worst_case(
    backend: StateBackend,
) -> None:
    keeper = BudgetKeeper(backend)
    served = await _hammer([keeper], limit=1.0, worst=0.07, n=100)
    spent = await keeper.spent(ws_budget(1.0), "acme", now=NOW)
    assert 1.0 <= spent <= 1.0 + 0.07
    assert served == 15  # ceil(1.0 / 0.07): the budget is used up, not left idle


@pytest.mark.services
async def test_overshoot_bound_holds_across_processes(make_redis_state) -> None:
    keepers = [BudgetKeeper(make_redis_state()) for _ in range(3)]
    await _hammer(keepers, limit=1.0, worst=0.07, n=100)
    spent = await keepers[0].spent(ws_budget(1.0), "acme", now=NOW)
    assert 1.0 <= spent <= 1.0 + 0.07


async def test_many_small_settlements_add_up_exactly() -> None:
    keeper = BudgetKeeper(MemoryState())
    rules = [ws_budget(100.0)]
    for _ in range(1000):
        await keeper.settle(await keeper.reserve(rules, IDS, 0.01, now=NOW), 0.000_123)
    assert await keeper.spent(rules[0], "acme", now=NOW) == pytest.approx(0.123, abs=1e-12)
