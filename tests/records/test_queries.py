"""SPEC §5 GET /_admin/usage and §3.1 /_stats/today: windows and group_by over the usage log."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from concord.records.db import Database
from concord.records.errors import InvalidRecord
from concord.records.queries import UsageQueries, parse_group_by, parse_window, period_start
from concord.records.usage import UsageRecord, UsageWriter

NOW = datetime(2025, 6, 18, 12, 0, tzinfo=UTC)  # a Wednesday


async def seed(database: Database, tmp_path: Path) -> None:
    rows = [
        # hours ago, workspace, key, user, model, input, output, cached, cost
        (1, "acme", "ci", "alice", "gpt-4o", 100, 10, 20, 1.00),
        (2, "acme", "ci", "bob", "gpt-4o", 200, 20, 0, 2.00),
        (3, "acme", "web", "alice", "fast", 50, 5, 0, 0.25),
        (5, "beta", "beta-key", None, "gpt-4o", 10, 1, 0, 0.10),
        (30, "acme", "ci", "alice", "gpt-4o", 1000, 100, 0, 9.00),  # outside the last 24 h
    ]
    writer = UsageWriter(database, tmp_path / "journal")
    for i, (hours, ws, key, user, model, inp, out, cached, cost) in enumerate(rows):
        writer.record(
            UsageRecord(
                request_id=f"r{i}",
                workspace=ws,
                status=200,
                ts=NOW - timedelta(hours=hours),
                key_name=key,
                user=user,
                served_model=model,
                input_tokens=inp,
                output_tokens=out,
                cached_tokens=cached,
                cost_usd=cost,
            )
        )
    await writer.aclose()


async def test_totals_over_a_window_without_groups(database: Database, tmp_path: Path) -> None:
    await seed(database, tmp_path)
    report = await UsageQueries(database).usage_report(NOW - timedelta(hours=24), NOW)
    assert report == [
        {
            "requests": 4,
            "input_tokens": 360,
            "output_tokens": 36,
            "cached_tokens": 20,
            "cost_usd": pytest.approx(3.35),
        }
    ]


async def test_group_by_workspace_and_model(database: Database, tmp_path: Path) -> None:
    await seed(database, tmp_path)
    report = await UsageQueries(database).usage_report(
        NOW - timedelta(hours=24), NOW, ["workspace", "model"]
    )
    summary = [(r["workspace"], r["model"], r["requests"], r["cost_usd"]) for r in report]
    assert summary == [
        ("acme", "gpt-4o", 2, pytest.approx(3.0)),
        ("acme", "fast", 1, pytest.approx(0.25)),
        ("beta", "gpt-4o", 1, pytest.approx(0.10)),
    ]


async def test_group_by_key_and_user(database: Database, tmp_path: Path) -> None:
    await seed(database, tmp_path)
    report = await UsageQueries(database).usage_report(
        NOW - timedelta(hours=48), NOW, ["user", "key"]
    )
    by_group = {(r["user"], r["key"]): r["requests"] for r in report}
    assert by_group == {
        ("alice", "ci"): 2,
        ("bob", "ci"): 1,
        ("alice", "web"): 1,
        (None, "beta-key"): 1,
    }


async def test_window_end_is_exclusive_and_empty_window_is_empty(
    database: Database, tmp_path: Path
) -> None:
    await seed(database, tmp_path)
    queries = UsageQueries(database)
    assert await queries.usage_report(NOW - timedelta(hours=3), NOW - timedelta(hours=2)) == [
        {"requests": 1, "input_tokens": 50, "output_tokens": 5, "cached_tokens": 0,
         "cost_usd": pytest.approx(0.25)}
    ]  # fmt: skip
    assert await queries.usage_report(NOW + timedelta(hours=1), NOW + timedelta(hours=2)) == []


async def test_today_stats_cover_the_last_24_hours(database: Database, tmp_path: Path) -> None:
    await seed(database, tmp_path)
    stats = await UsageQueries(database).today_stats(now=NOW)
    assert stats == {
        "requests": 4,
        "cost_usd": pytest.approx(3.35),
        "input_tokens": 360,
        "output_tokens": 36,
    }


async def test_spend_since_filters_by_workspace_key_and_user(
    database: Database, tmp_path: Path
) -> None:
    await seed(database, tmp_path)
    queries = UsageQueries(database)
    since = NOW - timedelta(hours=24)
    assert await queries.spend("acme", since=since) == pytest.approx(3.25)
    assert await queries.spend(key="ci", since=since) == pytest.approx(3.0)
    assert await queries.spend(user="alice", since=since) == pytest.approx(1.25)
    assert await queries.spend(since=NOW - timedelta(days=7)) == pytest.approx(12.35)
    assert await queries.spend_by("workspace", since=since) == {
        "acme": pytest.approx(3.25),
        "beta": pytest.approx(0.10),
    }


async def test_spend_charged_to_a_conditional_budget_counts_only_rows_naming_it(
    database: Database, tmp_path: Path
) -> None:
    writer = UsageWriter(database, tmp_path / "journal")
    charged = [(",gpt_spend,", 1.0), (",gpt_spend,other,", 2.0), (",gptXspend,", 4.0), (None, 8.0)]
    for i, (budgets, cost) in enumerate(charged):
        ts = NOW - timedelta(hours=1)
        record = UsageRecord(
            request_id=f"b{i}", workspace="acme", status=200, ts=ts, key_name="ci", cost_usd=cost
        )
        record.budgets = budgets
        writer.record(record)
    await writer.aclose()
    queries = UsageQueries(database)
    since = NOW - timedelta(hours=24)
    # `_` in a name matches only itself, not any character as in LIKE
    assert await queries.spend_by("key", since=since, budget="gpt_spend") == {
        "ci": pytest.approx(3.0)
    }
    assert await queries.spend_by("global", since=since, budget="other") == {
        None: pytest.approx(2.0)
    }
    assert await queries.spend(since=since, budget="nothing") == 0.0


async def test_a_request_charged_to_many_long_named_budgets_counts_for_the_last_one(
    database: Database, tmp_path: Path
) -> None:
    names = [f"team-{i:02d}-" + "x" * 40 for i in range(60)]  # about 3,000 characters in all
    writer = UsageWriter(database, tmp_path / "journal")
    record = UsageRecord(
        request_id="many", workspace="acme", status=200, ts=NOW, key_name="ci", cost_usd=0.5
    )
    record.budgets = "," + ",".join(names) + ","
    writer.record(record)
    await writer.aclose()
    queries = UsageQueries(database)
    since = NOW - timedelta(hours=1)
    assert await queries.spend(since=since, budget=names[-1]) == pytest.approx(0.5)
    assert await queries.spend(since=since, budget=names[0]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("period", "start"),
    [
        ("day", datetime(2025, 6, 18, tzinfo=UTC)),
        ("week", datetime(2025, 6, 16, tzinfo=UTC)),
        ("month", datetime(2025, 6, 1, tzinfo=UTC)),
    ],
)
def test_periods_are_calendar_utc(period: str, start: datetime) -> None:
    assert period_start(period, NOW) == start


def test_window_parsing() -> None:
    assert parse_window(last_hours="6", now=NOW) == (NOW - timedelta(hours=6), NOW)
    assert parse_window(now=NOW) == (NOW - timedelta(hours=24), NOW)
    assert parse_window("2025-06-01T00:00:00Z", "2025-06-02", now=NOW) == (
        datetime(2025, 6, 1, tzinfo=UTC),
        datetime(2025, 6, 2, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": "yesterday"},
        {"last_hours": "-1"},
        {"last_hours": "abc"},
        {"last_hours": "2", "start": "2025-06-01"},
        {"start": "2025-06-02", "end": "2025-06-01"},
    ],
)
def test_bad_windows_are_rejected(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidRecord):
        parse_window(now=NOW, **kwargs)  # type: ignore[arg-type]


def test_group_by_accepts_only_known_fields() -> None:
    assert parse_group_by("workspace, model,workspace") == ["workspace", "model"]
    with pytest.raises(InvalidRecord, match="provider"):
        parse_group_by("provider")
