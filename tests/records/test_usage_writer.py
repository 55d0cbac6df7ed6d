"""SPEC §1: usage is recorded async, batched, and never lost, even while the database is away."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from concord.gateway.record import UsageRecord as GatewayRecord
from concord.records.db import Database, open_database
from concord.records.queries import UsageQueries
from concord.records.tables import usage
from concord.records.usage import Journal, UsageRecord, UsageWriter
from tests.records.conftest import empty_postgres
from tests.records.tcp_proxy import TcpProxy


def make_record(i: int, workspace: str = "acme", cost: float = 0.01) -> UsageRecord:
    return UsageRecord(
        request_id=f"req-{i}",
        workspace=workspace,
        status=200,
        key_name="ci",
        served_model="gpt-4o",
        input_tokens=10,
        output_tokens=5,
        cached_tokens=2,
        cost_usd=cost,
    )


async def count_rows(db: Database) -> int:
    async with db.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM usage"))).scalar() or 0)


async def wait_until(predicate, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_records_arrive_in_batches_and_totals_match(
    database: Database, tmp_path: Path
) -> None:
    writer = UsageWriter(database, tmp_path / "journal", batch_size=100, flush_interval=0.05)
    await writer.start()
    for i in range(1000):
        writer.record(make_record(i))

    async def all_written() -> bool:
        return await count_rows(database) == 1000

    await wait_until(all_written)
    await writer.aclose()

    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert await UsageQueries(database).spend("acme", since=since) == pytest.approx(10.0)
    assert await UsageQueries(database).spend("other", since=since) == 0.0


async def test_a_steady_stream_is_written_in_few_transactions(
    database: Database, tmp_path: Path
) -> None:
    """Records arriving while a batch is written wait for the next flush instead of being
    chased one small transaction after another: each transaction costs the event loop several
    round trips, whatever its size."""
    writer = UsageWriter(database, tmp_path / "journal", batch_size=500, flush_interval=0.1)
    inserts: list[int] = []
    insert_rows = database.insert_rows

    async def slow_insert(table: sa.Table, rows: list) -> None:  # type: ignore[type-arg]
        inserts.append(len(rows))
        await asyncio.sleep(0.01)  # a database a few milliseconds away
        await insert_rows(table, rows)

    database.insert_rows = slow_insert  # type: ignore[method-assign]
    await writer.start()
    for i in range(600):  # 2,000 records/s for 0.3 s, as a busy gateway hands them over
        writer.record(make_record(i))
        if i % 10 == 9:
            await asyncio.sleep(0.005)
    await writer.aclose()
    assert sum(inserts) == 600 and await count_rows(database) == 600
    assert len(inserts) <= 8, inserts  # about one per flush interval, not one per write


async def test_record_never_blocks_and_close_flushes_everything(
    database: Database, tmp_path: Path
) -> None:
    writer = UsageWriter(database, tmp_path / "journal", flush_interval=10)
    await writer.start()
    for i in range(1234):
        writer.record(make_record(i))  # no await: the caller's request is never held up
    await writer.aclose()
    assert await count_rows(database) == 1234
    assert not Journal(tmp_path / "journal").files()


async def test_gateway_shaped_records_are_accepted(database: Database, tmp_path: Path) -> None:
    gateway_record = SimpleNamespace(
        request_id="req-1", time=1_700_000_000.0, workspace="acme", key="ci", user=None,
        requested_model="fast", model="gpt-4o", provider="openai", route="default",
        status=200, input_tokens=3, output_tokens=4, cached_tokens=0, cost_usd=0.5,
        latency_ms=12.0, ttft_ms=None, cache_hit=False, attempts=1, error_type=None,
    )  # fmt: skip
    writer = UsageWriter(database, tmp_path / "journal")
    writer.record(gateway_record)
    await writer.aclose()
    async with database.connect() as conn:
        row = (await conn.execute(sa.text("SELECT key_name, served_model FROM usage"))).one()
    assert tuple(row) == ("ci", "gpt-4o")


async def _take_usage_table_away(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE usage RENAME TO usage_away"))


async def _give_usage_table_back(db: Database) -> None:
    async with db.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE usage_away RENAME TO usage"))


async def test_outage_journals_batches_then_replays_them(
    database: Database, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    writer = UsageWriter(
        database, journal_dir, batch_size=50, flush_interval=0.02, retry_interval=0.1
    )
    await writer.start()
    await _take_usage_table_away(database)
    for i in range(300):
        writer.record(make_record(i))

    async def journalled() -> bool:
        return writer.journalled == 300

    await wait_until(journalled)
    assert not writer.healthy
    lines = [json.loads(line) for f in Journal(journal_dir).files() for line in f.open()]
    assert sorted(r["request_id"] for r in lines) == sorted(f"req-{i}" for i in range(300))

    await _give_usage_table_back(database)

    async def replayed() -> bool:
        return await count_rows(database) == 300

    await wait_until(replayed)
    await writer.aclose()
    assert writer.healthy
    assert not Journal(journal_dir).files()


async def test_close_during_an_outage_journals_and_the_next_run_replays(
    database: Database, tmp_path: Path
) -> None:
    journal_dir = tmp_path / "journal"
    await _take_usage_table_away(database)
    first = UsageWriter(database, journal_dir)
    for i in range(10):
        first.record(make_record(i))
    await first.aclose()
    assert len(Journal(journal_dir).files()) == 1
    await _give_usage_table_back(database)

    second = UsageWriter(database, journal_dir)
    await second.start()
    assert await second.replay_journal() in (0, 10)  # the background task may have won
    await second.aclose()
    assert await count_rows(database) == 10
    assert not Journal(journal_dir).files()


async def test_replaying_a_batch_twice_does_not_double_it(
    database: Database, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal")
    batch = [make_record(i) for i in range(5)]
    writer = UsageWriter(database, tmp_path / "journal")
    writer.record(batch[0])
    await writer.flush()  # the first record reached the database before the "outage"
    await journal.append(batch)
    await journal.append(batch)
    assert await writer.replay_journal() == 10
    assert await count_rows(database) == 5


async def test_postgres_connection_loss_is_journalled_and_replayed(
    postgres_url: str, tmp_path: Path
) -> None:
    empty_postgres(postgres_url)
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    via_proxy = postgres_url.replace(f":{parts.port}/", f":{proxy.port}/")
    db = await open_database(via_proxy, base_dir=tmp_path, connect_timeout=1)
    writer = UsageWriter(db, tmp_path / "journal", flush_interval=0.02, retry_interval=0.1)
    await writer.start()
    try:
        for i in range(100):
            writer.record(make_record(i))
        await writer.flush()
        await proxy.stop()  # the server goes away, open connections die
        for i in range(100, 300):
            writer.record(make_record(i))

        async def journalled() -> bool:
            return writer.journalled == 200

        await wait_until(journalled)
        await proxy.start()

        async def replayed() -> bool:
            return writer.healthy and not Journal(tmp_path / "journal").files()

        await wait_until(replayed, timeout=5)
        assert await count_rows(db) == 300
    finally:
        await writer.aclose()
        await db.close()
        await proxy.stop()


async def test_postgres_backends_killed_mid_run_lose_nothing(
    postgres_url: str, tmp_path: Path
) -> None:
    empty_postgres(postgres_url)
    db = await open_database(postgres_url, base_dir=tmp_path)
    writer = UsageWriter(db, tmp_path / "journal", flush_interval=0.02, retry_interval=0.1)
    await writer.start()
    try:
        for i in range(100):
            writer.record(make_record(i))
        await writer.flush()
        name = urlsplit(postgres_url).path.lstrip("/")
        async with db.connect() as conn:  # a server restart, as far as pooled sessions know
            await conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
        for i in range(100, 200):
            writer.record(make_record(i))

        async def all_in() -> bool:
            return await count_rows(db) == 200 and not Journal(tmp_path / "journal").files()

        await wait_until(all_in)
    finally:
        await writer.aclose()
        await db.close()


async def test_a_failed_replay_gives_back_every_file_it_claimed(
    database: Database, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal")
    for start in (0, 10, 20):
        await journal.append([make_record(i) for i in range(start, start + 10)])
    writer = UsageWriter(database, tmp_path / "journal")
    await _take_usage_table_away(database)
    assert await writer.replay_journal() == 0
    assert len(journal.files()) == 3  # none is left claimed by this process
    await _give_usage_table_back(database)
    assert await writer.replay_journal() == 30
    assert await count_rows(database) == 30
    assert not list((tmp_path / "journal").iterdir())


async def test_gateway_records_are_stored_under_the_usage_columns(
    database: Database, tmp_path: Path
) -> None:
    record = GatewayRecord(
        request_id="req-9", time=1_700_000_000.25, workspace="acme", key="ci", user="ann",
        requested_model="fast", model="gpt-4o", provider="openai", target="openai/gpt-4o",
        route="default", endpoint="chat", status=200, input_tokens=30, output_tokens=7,
        cached_tokens=4, cost_usd=0.25, latency_ms=12.5, ttft_ms=3.0, attempts=2, key_id="k_1",
    )  # fmt: skip
    writer = UsageWriter(database, tmp_path / "journal")
    writer.record(record)
    await writer.aclose()
    columns = [usage.c.key_name, usage.c.served_model, usage.c.key_id, usage.c.ts]
    columns += [usage.c.cached_tokens, usage.c.ttft_ms, usage.c.attempts, usage.c.cost_usd]
    async with database.connect() as conn:
        row = (await conn.execute(sa.select(*columns))).one()
    stored_at = datetime.fromtimestamp(1_700_000_000.25, UTC)
    assert tuple(row) == ("ci", "gpt-4o", "k_1", stored_at, 4, 3.0, 2, 0.25)


async def test_timestamps_round_trip_exactly_and_filter_reports(
    database: Database, tmp_path: Path
) -> None:
    old = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)  # whole second: no fraction to drop
    new = datetime(2024, 3, 2, 8, 30, 15, 123456, tzinfo=UTC)
    writer = UsageWriter(database, tmp_path / "journal")
    writer.record(UsageRecord(request_id="a", workspace="acme", status=200, ts=old, cost_usd=1))
    writer.record(UsageRecord(request_id="b", workspace="acme", status=200, ts=new, cost_usd=2))
    await writer.aclose()
    async with database.connect() as conn:
        stamps = (await conn.execute(sa.select(usage.c.ts).order_by(usage.c.ts))).scalars()
        assert list(stamps) == [old, new]
    since = datetime(2024, 3, 1, 12, 0, 0, 1, tzinfo=UTC)
    assert await UsageQueries(database).spend("acme", since=since) == pytest.approx(2.0)


async def test_client_chosen_text_that_does_not_fit_does_not_fail_the_batch(
    database: Database, tmp_path: Path
) -> None:
    writer = UsageWriter(database, tmp_path / "journal")
    for i in range(5):
        writer.record(make_record(i))
    writer.record(
        UsageRecord(
            request_id="r" * 500, workspace="acme", status=404, requested_model="m\x00" * 300
        )
    )
    await writer.aclose()
    assert writer.healthy and writer.journalled == 0
    async with database.connect() as conn:
        long_one = (
            await conn.execute(
                sa.select(usage.c.request_id, usage.c.requested_model).where(usage.c.status == 404)
            )
        ).one()
    assert long_one == ("r" * 64, "m" * 200)
    assert await count_rows(database) == 6


async def test_a_record_missing_its_workspace_is_dropped_alone(
    database: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    writer = UsageWriter(database, tmp_path / "journal")
    writer.record(make_record(1))
    writer.record({"request_id": "no-workspace", "status": 200})
    writer.record(make_record(2))
    await writer.aclose()
    assert await count_rows(database) == 2
    assert writer.healthy
    assert "usage record dropped: usage record without workspace" in caplog.text


async def test_journal_files_written_by_the_previous_version_are_replayed(
    database: Database, tmp_path: Path
) -> None:
    # Before migration v2 there were no cached_tokens / ttft_ms; keys came in dataclass order.
    line = {
        "request_id": "req-old", "workspace": "acme", "status": 200,
        "ts": "2024-05-01T10:00:00.500000+00:00", "key_id": None, "key_name": "ci",
        "user": None, "requested_model": "gpt-4o", "served_model": "gpt-4o",
        "provider": "openai", "route": None, "input_tokens": 10, "output_tokens": 5,
        "cost_usd": 0.5, "latency_ms": 20.0, "cache_hit": False, "attempts": 1,
        "error_type": None, "id": "0123456789abcdef0123456789abcdef",
    }  # fmt: skip
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    (journal_dir / "usage-1-1-1.jsonl").write_text(json.dumps(line) + "\n")
    writer = UsageWriter(database, journal_dir)
    assert await writer.replay_journal() == 1
    async with database.connect() as conn:
        row = (await conn.execute(sa.select(usage.c.id, usage.c.cached_tokens, usage.c.ts))).one()
    ts = datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert tuple(row) == ("0123456789abcdef0123456789abcdef", 0, ts)
