"""Read side of the usage log: spend for budgets, reports for the admin API and CLI (SPEC §5).

All windows are half-open `[start, end)` in UTC. `model` groups by the model that served the
request, or the one requested when nothing served it (a rejected or failed request).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from concord.records.db import Database
from concord.records.errors import InvalidRecord
from concord.records.tables import usage
from concord.state.principal import KEY_ID_PREFIX

GroupField = Literal["workspace", "key", "user", "model"]
GROUP_COLUMNS: Mapping[str, Any] = {
    "workspace": usage.c.workspace,
    "key": usage.c.key_name,
    "user": usage.c.user,
    "model": sa.func.coalesce(usage.c.served_model, usage.c.requested_model),
}
SpendScope = Literal["workspace", "key", "user", "global"]
_SCOPE_COLUMNS: Mapping[str, Any] = {
    "workspace": usage.c.workspace,
    # per-key budgets count a key as the gateway does (`concord.state.principal.key_ident`)
    "key": sa.case(
        (usage.c.key_id.is_not(None), sa.literal(KEY_ID_PREFIX) + usage.c.key_id),
        else_=usage.c.key_name,
    ),
    "user": usage.c.user,
}
DEFAULT_WINDOW = timedelta(hours=24)


def _charged_to(budget: str) -> sa.ColumnElement[bool]:
    """Rows whose `budgets` (",a,b,") name `budget`; `%` and `_` in a name match themselves."""
    return usage.c.budgets.contains(f",{budget},", autoescape=True)


def period_start(period: str, now: datetime | None = None) -> datetime:
    """Start of the current calendar period in UTC (SPEC §2.6: day, week, month)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return midnight
    if period == "week":
        return midnight - timedelta(days=midnight.weekday())  # ISO weeks start on Monday
    if period == "month":
        return midnight.replace(day=1)
    raise InvalidRecord(f"unknown budget period {period!r}: expected day, week or month")


def parse_group_by(value: str | Sequence[str] | None) -> list[str]:
    """`workspace,model` or a list of names → validated group fields, in the order given."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    fields = [p.strip() for p in parts if p and p.strip()]
    for name in fields:
        if name not in GROUP_COLUMNS:
            raise InvalidRecord(
                f"cannot group by {name!r}: expected any of {', '.join(GROUP_COLUMNS)}"
            )
    return list(dict.fromkeys(fields))


def parse_time(value: str, what: str) -> datetime:
    """An ISO 8601 timestamp (a trailing Z is fine; no zone means UTC)."""
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRecord(f"{what} must be an ISO 8601 timestamp, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_window(
    start: str | datetime | None = None,
    end: str | datetime | None = None,
    last_hours: str | float | None = None,
    *,
    now: datetime | None = None,
) -> tuple[datetime, datetime]:
    """`start`/`end` or `last_hours` → a UTC window; the last 24 hours when none is given."""
    now = now or datetime.now(UTC)
    if last_hours is not None and last_hours != "":
        if start is not None or end is not None:
            raise InvalidRecord("give either last_hours or start/end, not both")
        try:
            hours = float(last_hours)
        except ValueError:
            raise InvalidRecord(f"last_hours must be a number, got {last_hours!r}") from None
        if not 0 < hours <= 24 * 3660:
            raise InvalidRecord("last_hours must be a positive number of hours")
        return now - timedelta(hours=hours), now
    end_at = _moment(end, "end") if end is not None else now
    start_at = _moment(start, "start") if start is not None else end_at - DEFAULT_WINDOW
    if start_at >= end_at:
        raise InvalidRecord("start must be before end")
    return start_at, end_at


def _moment(value: str | datetime, what: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_time(value, what)


class UsageQueries:
    """Aggregates over the `usage` table."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def spend(
        self,
        workspace: str | None = None,
        key: str | None = None,
        *,
        since: datetime,
        until: datetime | None = None,
        user: str | None = None,
        budget: str | None = None,
    ) -> float:
        """USD spent since `since` (by workspace, key name and/or user when given; `budget`:
        only what was charged to that conditional budget)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0)).where(
            usage.c.ts >= since
        )
        if budget is not None:
            query = query.where(_charged_to(budget))
        if until is not None:
            query = query.where(usage.c.ts < until)
        if workspace is not None:
            query = query.where(usage.c.workspace == workspace)
        if key is not None:
            query = query.where(usage.c.key_name == key)
        if user is not None:
            query = query.where(usage.c.user == user)
        async with self._db.connect() as conn:
            return float((await conn.execute(query)).scalar() or 0.0)

    async def spend_by(
        self, scope: SpendScope, *, since: datetime, budget: str | None = None
    ) -> dict[str | None, float]:
        """USD spent since `since` per workspace, key name or user (or `{None: total}` for
        global): what a budget needs to rebuild its counters at start-up. `budget` counts only
        the rows charged to that conditional budget (the `budgets` column)."""
        if scope == "global":
            return {None: await self.spend(since=since, budget=budget)}
        column = _SCOPE_COLUMNS[scope]
        query = (
            sa.select(column, sa.func.sum(usage.c.cost_usd))
            .where(usage.c.ts >= since)
            .group_by(column)
        )
        if budget is not None:
            query = query.where(_charged_to(budget))
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {name: float(total or 0.0) for name, total in rows}

    async def usage_report(
        self, start: datetime, end: datetime, group_by: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """Totals per group in `[start, end)`, costliest first (SPEC §5 GET /_admin/usage)."""
        fields = parse_group_by(list(group_by))
        groups = [GROUP_COLUMNS[name].label(f"g_{name}") for name in fields]
        if "key" in fields:  # keys are named per workspace: two named alike stay two rows
            groups.append(usage.c.key_id.label("g_key_id"))
        query = (
            sa.select(*groups, *_totals())
            .where(usage.c.ts >= start, usage.c.ts < end)
            .group_by(*groups)
            .order_by(sa.desc("cost_usd"), *groups)
        )
        async with self._db.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        report = []
        for row in rows:
            if not fields and not row["requests"]:
                continue  # an empty window has no groups, not one group of zeros
            entry: dict[str, Any] = {name: row[f"g_{name}"] for name in fields}
            if "key" in fields:
                entry["key_id"] = row["g_key_id"]  # an issued key's id; None for a declared one
            entry.update(_totals_of(row))
            report.append(entry)
        return report

    async def today_stats(self, now: datetime | None = None) -> dict[str, Any]:
        """The last 24 hours in V0's `/_stats/today` shape (SPEC §3.1)."""
        end = now or datetime.now(UTC)
        query = sa.select(*_totals()).where(usage.c.ts >= end - DEFAULT_WINDOW, usage.c.ts < end)
        async with self._db.connect() as conn:
            row = (await conn.execute(query)).mappings().one()
        totals = _totals_of(row)
        return {
            "requests": totals["requests"],
            "cost_usd": totals["cost_usd"],
            "input_tokens": totals["input_tokens"],
            "output_tokens": totals["output_tokens"],
        }


def _totals() -> list[Any]:
    return [
        sa.func.count().label("requests"),
        sa.func.coalesce(sa.func.sum(usage.c.input_tokens), 0).label("input_tokens"),
        sa.func.coalesce(sa.func.sum(usage.c.output_tokens), 0).label("output_tokens"),
        sa.func.coalesce(sa.func.sum(usage.c.cached_tokens), 0).label("cached_tokens"),
        sa.func.coalesce(sa.func.sum(usage.c.cost_usd), 0.0).label("cost_usd"),
    ]


def _totals_of(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "requests": int(row["requests"] or 0),
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
        "cached_tokens": int(row["cached_tokens"] or 0),
        "cost_usd": round(float(row["cost_usd"] or 0.0), 10),
    }
