"""Budgets (SPEC §2.6): spend per key, workspace, user or globally, per calendar UTC period.

Reserve before, settle after. The guards step calls `BudgetKeeper.reserve` with the request's
worst-case cost (`worst_case_cost`); a period admits requests while its settled spend plus the
reservations in flight is below the limit, so N concurrent requests overshoot a budget by at most
one request's worst case. After the response, `settle` replaces every reservation by the actual
cost from the upstream's usage block.

All the budgets of a request are reserved in one atomic backend call. Outcomes: `ok`; `blocked`
(HTTP 429 insufficient_quota / budget_exceeded) when an exhausted budget says `on_exceed: block`,
and nothing is reserved; `downgrade` when the exhausted budgets all say `downgrade`: the grant
still holds its reservation (charged past the limit), the request continues on `downgrade_to`,
and the gateway settles it like any other. Call `reserve` once per request.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal

from concord.engine.graph import BudgetRule, Price
from concord.state.backend import (
    BudgetLine,
    BudgetReservation,
    BudgetVerdict,
    StateBackend,
    StateUnavailable,
)
from concord.state.principal import PrincipalIds, scope_id, state_key

log = logging.getLogger("concord.state")

Period = Literal["day", "week", "month"]
Outcome = Literal["ok", "blocked", "downgrade"]

# Output tokens assumed when neither the request nor the model caps them.
DEFAULT_MAX_TOKENS = 4096
# Period state outlives its period by this long, then the backend forgets it.
_GRACE = 2 * 86400.0


def _utc(now: datetime | float) -> datetime:
    if isinstance(now, datetime):
        return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(now, UTC)


def period_start(period: Period, now: datetime | float) -> datetime:
    """Start of the calendar UTC period holding `now` (ISO weeks start on Monday)."""
    day = _utc(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def period_end(period: Period, now: datetime | float) -> datetime:
    """End (exclusive) of the calendar UTC period holding `now`."""
    start = period_start(period, now)
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return start + timedelta(days=calendar.monthrange(start.year, start.month)[1])


def period_id(period: Period, now: datetime | float) -> str:
    """`2026-11-25` (day), `2026-W48` (ISO week), `2026-11` (month)."""
    start = period_start(period, now)
    if period == "day":
        return start.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = start.isocalendar()
        return f"{year}-W{week:02d}"
    return start.strftime("%Y-%m")


def worst_case_cost(
    price: Price | None,
    input_tokens: int,
    max_tokens: int | None,
    *,
    default_max_tokens: int | None = None,
) -> float:
    """SPEC §2.6: estimated input plus `max_tokens` (or the model's default), at full price."""
    if price is None:
        return 0.0
    output = max_tokens if max_tokens is not None else default_max_tokens
    return price.cost(
        max(input_tokens, 0), max(output if output is not None else DEFAULT_MAX_TOKENS, 0)
    )


_DAY = 86400.0


@lru_cache(maxsize=64)
def _period_of_day(period: Period, day: int) -> tuple[str, float]:
    """(period id, end timestamp) of the period holding UTC day number `day` (memoised: the
    calendar arithmetic runs once a day per period kind, not once per request)."""
    start = day * _DAY
    return period_id(period, start), period_end(period, start).timestamp()


def period_bounds(period: Period, now: float) -> tuple[str, float]:
    """The id and the end (epoch seconds) of the calendar UTC period holding `now`."""
    return _period_of_day(period, int(now // _DAY))


def budget_key(rule: BudgetRule, ident: str) -> str:
    """Backend key of one rule's budget for one principal; the period is added by the backend."""
    return state_key("b", rule.name, rule.scope, ident)


@dataclass(slots=True, unsafe_hash=True)
class BudgetGrant:
    """The outcome of `reserve`; `rule` is the budget that blocked or downgraded the request."""

    outcome: Outcome
    rule: BudgetRule | None = None
    reservation: BudgetReservation | None = None

    @property
    def downgrade_to(self) -> str | None:
        return self.rule.downgrade_to if self.outcome == "downgrade" and self.rule else None


OK = BudgetGrant("ok")


def budget_lines(
    rules: Sequence[BudgetRule], principal_ids: PrincipalIds, now: float
) -> tuple[tuple[BudgetLine, ...], tuple[BudgetRule, ...]]:
    """The lines a request is charged to, and the rule behind each (pure)."""
    lines: list[BudgetLine] = []
    applied: list[BudgetRule] = []
    for rule in rules:
        ident = scope_id(rule.scope, principal_ids)
        if ident:
            lines.append(BudgetKeeper._line(rule, ident, now))
            applied.append(rule)
    return tuple(lines), tuple(applied)


@dataclass(frozen=True, slots=True)
class BudgetPlan:
    """A decision's budget lines for one principal, minus the period (which moves with the
    clock): built once per principal, turned into lines per request by `lines_at`."""

    entries: tuple[tuple[BudgetRule, str, bool], ...]  # rule, backend key, hard
    applied: tuple[BudgetRule, ...]

    def lines_at(self, now: float) -> tuple[BudgetLine, ...]:
        """Exactly the lines `budget_lines` builds at `now`."""
        lines = []
        for rule, key, hard in self.entries:
            pid, end = period_bounds(rule.period, now)
            lines.append(BudgetLine(key, pid, rule.limit_usd, hard, end - now + _GRACE))
        return tuple(lines)


def budget_plan(rules: Sequence[BudgetRule], principal_ids: PrincipalIds) -> BudgetPlan:
    """The time-independent part of `budget_lines` (pure)."""
    entries = []
    for rule in rules:
        ident = scope_id(rule.scope, principal_ids)
        if ident:
            entries.append((rule, budget_key(rule, ident), not _soft(rule)))
    return BudgetPlan(tuple(entries), tuple(rule for rule, _, _ in entries))


def _soft(rule: BudgetRule) -> bool:
    """SPEC §2.6: a `downgrade` budget with a target only reports exhaustion; others block."""
    return rule.on_exceed == "downgrade" and rule.downgrade_to is not None


def grant_for(verdict: BudgetVerdict, applied: Sequence[BudgetRule]) -> BudgetGrant:
    """The outcome of a reservation: a `block` budget wins over a `downgrade` one."""
    if verdict.blocked_by is not None:
        return BudgetGrant("blocked", applied[verdict.blocked_by])
    if verdict.exhausted:  # only soft lines: the request goes on with the cheaper model
        return BudgetGrant("downgrade", applied[verdict.exhausted[0]], verdict.reservation)
    if verdict.reservation is None:
        return OK  # shared: nothing reserved, nothing to settle
    return BudgetGrant("ok", None, verdict.reservation)


class BudgetKeeper:
    """Reserves, settles and reports the budgets a decision carries."""

    def __init__(self, backend: StateBackend) -> None:
        self.backend = backend

    async def reserve(
        self,
        rules: Sequence[BudgetRule],
        principal_ids: PrincipalIds,
        worst_case_usd: float,
        *,
        now: float | None = None,
    ) -> BudgetGrant:
        """Reserve `worst_case_usd` on every applicable budget in one atomic step, or report the
        exhausted one. A `block` budget wins over a `downgrade` one.

        `StateUnavailable` propagates when the backend is down with `failure: closed`.
        """
        now = time.time() if now is None else now
        lines, applied = budget_lines(rules, principal_ids, now)
        if not lines:
            return OK
        verdict = await self.backend.budget_reserve(lines, worst_case_usd, now)
        return grant_for(verdict, applied)

    async def settle(self, grant: BudgetGrant, actual_usd: float) -> None:
        """Charge the actual cost (0 when no upstream call was billed) to every reserved budget.

        Never raises for an unreachable backend: the reservation's lease expires by itself and
        the usage log keeps the cost."""
        if grant.reservation is None:
            return
        try:
            await self.backend.budget_settle(grant.reservation, actual_usd)
        except StateUnavailable:
            log.warning("budget settlement lost: state backend unreachable")

    async def used(
        self, rules: Sequence[BudgetRule], principal_ids: PrincipalIds, *, now: float | None = None
    ) -> float:
        """SPEC §2.4.1 `budget_used`: spend / limit of the tightest applicable budget."""
        now = time.time() if now is None else now
        applied = [
            (rule, ident) for rule in rules if (ident := scope_id(rule.scope, principal_ids))
        ]
        if not applied:
            return 0.0
        periods = [
            (budget_key(rule, ident), period_bounds(rule.period, now)[0]) for rule, ident in applied
        ]
        spent = await self.backend.budget_spent(periods)
        return max(
            value / rule.limit_usd if rule.limit_usd > 0 else 1.0
            for (rule, _), value in zip(applied, spent, strict=True)
        )

    async def spent(self, rule: BudgetRule, ident: str, *, now: float | None = None) -> float:
        """Current-period spend of one budget (admin listings)."""
        now = time.time() if now is None else now
        periods = [(budget_key(rule, ident), period_id(rule.period, now))]
        return (await self.backend.budget_spent(periods))[0]

    async def seed(
        self, rule: BudgetRule, ident: str, spent: float, *, now: float | None = None
    ) -> None:
        """Rebuild a budget's current-period spend from the usage log at start-up; never lowers
        a spend the backend already holds (another replica may have settled more since)."""
        now = time.time() if now is None else now
        line = self._line(rule, ident, now)
        await self.backend.budget_seed(line.key, line.period_id, spent, ttl=line.ttl)

    @staticmethod
    def _line(rule: BudgetRule, ident: str, now: float) -> BudgetLine:
        pid, end = period_bounds(rule.period, now)
        return BudgetLine(
            budget_key(rule, ident), pid, rule.limit_usd, not _soft(rule), end - now + _GRACE
        )
