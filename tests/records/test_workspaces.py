"""SPEC §2.6: workspaces from the config and from the admin API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from concord.records.db import Database
from concord.records.errors import InvalidRecord, WorkspaceExists, WorkspaceNotFound
from concord.records.usage import UsageRecord, UsageWriter
from concord.records.workspaces import Budget, Workspaces


@dataclass(frozen=True)
class Declared:  # the shape of the engine's WorkspaceSpec
    name: str
    tags: frozenset[str] = frozenset()
    budget: Budget | None = None


async def test_create_then_create_again_conflicts(database: Database) -> None:
    workspaces = Workspaces(database)
    created = await workspaces.create("acme", Budget(200, "month", "downgrade", "fast"), ["paid"])
    assert created.source == "api" and created.budget == Budget(200, "month", "downgrade", "fast")
    with pytest.raises(WorkspaceExists):
        await workspaces.create("acme")
    assert (await workspaces.get("acme")).tags == ("paid",)


@pytest.mark.parametrize("name", ["", "free-*", "has space", "x" * 201])
async def test_invalid_names_are_rejected(database: Database, name: str) -> None:
    with pytest.raises(InvalidRecord):
        await Workspaces(database).create(name)


@pytest.mark.parametrize(
    "budget",
    [{"limit_usd": -1}, {"limit_usd": "5"}, {"limit_usd": 5, "period": "year"},
     {"limit_usd": 5, "on_exceed": "warn"}, {"period": "day"}],
)  # fmt: skip
def test_invalid_budgets_are_rejected(budget: dict[str, object]) -> None:
    with pytest.raises(InvalidRecord):
        Budget.of(budget)


async def test_list_shows_spend_of_the_current_period(database: Database, tmp_path: Path) -> None:
    workspaces = Workspaces(database)
    await workspaces.create("daily", Budget(5, "day"))
    await workspaces.create("monthly", Budget(100, "month"))
    await workspaces.create("unbudgeted")
    now = datetime.now(UTC)
    start_of_day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    writer = UsageWriter(database, tmp_path / "journal")
    for ws, ts, cost in [
        ("daily", now, 1.5),
        ("daily", start_of_day - timedelta(seconds=1), 7.0),  # yesterday: not this period
        ("monthly", now, 2.0),
        ("unbudgeted", now, 0.5),
    ]:
        writer.record(UsageRecord(request_id=ws, workspace=ws, status=200, ts=ts, cost_usd=cost))
    await writer.aclose()

    spend = {w.name: w.spend_usd for w in await workspaces.list()}

    assert spend["daily"] == pytest.approx(1.5)
    assert spend["monthly"] == pytest.approx(2.0)
    assert spend["unbudgeted"] == pytest.approx(0.5)


async def test_declared_workspaces_win_and_stale_ones_go(database: Database) -> None:
    workspaces = Workspaces(database)
    await workspaces.create("acme", Budget(1))  # made through the API first
    await workspaces.create("api-only")
    await workspaces.sync_declared(
        {
            "acme": Declared("acme", frozenset({"paid"}), Budget(200, "month", "block")),
            "old": Declared("old"),
        }
    )
    acme = await workspaces.get("acme")
    assert (acme.source, acme.budget, acme.tags) == ("config", Budget(200), ("paid",))

    await workspaces.sync_declared({"acme": Declared("acme")})  # `old` left the config

    names = {w.name: w.source for w in await workspaces.list(with_spend=False)}
    assert names == {"acme": "config", "api-only": "api"}
    with pytest.raises(WorkspaceNotFound):
        await workspaces.get("old")
