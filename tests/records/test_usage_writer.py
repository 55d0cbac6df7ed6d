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

from concord.records.db import Database, open_database
from concord.records.queries import UsageQueries
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
