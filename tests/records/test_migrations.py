"""Schema migrations upgrade an existing database in place and keep its data."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from concord.records import migrations
from concord.records.db import Database, open_database
from concord.records.errors import SchemaVersionError
from concord.records.tables import metadata


async def _columns(db: Database, table: str) -> set[str]:
    async with db.connect() as conn:
        return await conn.run_sync(
            lambda c: {col["name"] for col in sa.inspect(c).get_columns(table)}
        )


async def test_v1_database_upgrades_to_latest_and_keeps_its_rows(
    database_url: str, tmp_path: Path
) -> None:
    db = await open_database(database_url, base_dir=tmp_path, migrate=False)
    try:
        assert await migrations.migrate(db.engine, target=1) == migrations.MigrationResult(0, 1)
        assert "cached_tokens" not in await _columns(db, "usage")
        async with db.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO usage (id, request_id, ts, workspace, status, input_tokens,"
                    " output_tokens, cost_usd, cache_hit, attempts)"
                    " VALUES ('r1', 'req-1', :ts, 'acme', 200, 10, 5, 0.5, false, 1)"
                ),
                {"ts": datetime(2025, 1, 1, tzinfo=UTC).replace(tzinfo=None)},
            )

        result = await migrations.migrate(db.engine)

        assert (result.before, result.after) == (1, migrations.LATEST)
        assert {"cached_tokens", "ttft_ms"} <= await _columns(db, "usage")
        async with db.connect() as conn:
            row = (
                await conn.execute(sa.text("SELECT workspace, cost_usd, cached_tokens FROM usage"))
            ).one()
        assert tuple(row) == ("acme", 0.5, 0)
        assert await migrations.current_version(db.engine) == migrations.LATEST
    finally:
        await db.close()


async def test_a_v3_database_takes_budget_lists_past_the_old_bound_after_upgrading(
    database_url: str, tmp_path: Path
) -> None:
    db = await open_database(database_url, base_dir=tmp_path, migrate=False)
    charged = "," + ",".join(f"budget-{i:03d}" for i in range(200)) + ","  # 2,201 characters
    try:
        await migrations.migrate(db.engine, target=3)
        await migrations.migrate(db.engine)
        async with db.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO usage (id, request_id, ts, workspace, status, budgets)"
                    " VALUES ('r1', 'req-1', :ts, 'acme', 200, :budgets)"
                ),
                {"ts": datetime(2025, 1, 1), "budgets": charged},
            )
        async with db.connect() as conn:
            stored = (await conn.execute(sa.text("SELECT budgets FROM usage"))).scalar_one()
        assert stored == charged
    finally:
        await db.close()


async def test_migrated_schema_matches_the_table_definitions(database: Database) -> None:
    for table in metadata.sorted_tables:
        assert await _columns(database, table.name) == {c.name for c in table.columns}, table.name


async def test_migrating_twice_applies_nothing(database: Database) -> None:
    assert (await migrations.migrate(database.engine)).applied == 0


async def test_concurrent_openers_apply_each_step_once(database_url: str, tmp_path: Path) -> None:
    opened = await asyncio.gather(
        *(open_database(database_url, base_dir=tmp_path) for _ in range(4))
    )
    try:
        async with opened[0].connect() as conn:
            versions = (await conn.execute(sa.text("SELECT version FROM schema_version"))).all()
        assert sorted(v for (v,) in versions) == [s.version for s in migrations.STEPS]
    finally:
        for db in opened:
            await db.close()


async def test_database_from_a_newer_concord_is_refused(database_url: str, tmp_path: Path) -> None:
    async with await open_database(database_url, base_dir=tmp_path) as db, db.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO schema_version (version, description, applied_at)"
                " VALUES (99, 'future', :at)"
            ),
            {"at": datetime(2030, 1, 1)},
        )
    with pytest.raises(SchemaVersionError, match="newer"):
        await open_database(database_url, base_dir=tmp_path)
