"""SPEC §1: storage.database URLs and opening the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from concord.records import migrations
from concord.records.db import (
    Database,
    _bulk_converter,
    _sqlite_utc_text,
    create_database,
    open_database,
    resolve_url,
)
from concord.records.errors import DatabaseURLError
from concord.records.tables import UTCDateTime


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///concord.db", "sqlite+aiosqlite:////srv/app/concord.db"),
        ("sqlite:///data/usage.db", "sqlite+aiosqlite:////srv/app/data/usage.db"),
        ("sqlite:////var/lib/concord.db", "sqlite+aiosqlite:////var/lib/concord.db"),
        ("postgresql://u@db:5432/concord", "postgresql+asyncpg://u@db:5432/concord"),
        ("postgres://u@db/concord", "postgresql+asyncpg://u@db/concord"),
        ("postgresql+psycopg://u@db/concord", "postgresql+asyncpg://u@db/concord"),
        ("postgresql://u@db/c?sslmode=require", "postgresql+asyncpg://u@db/c?ssl=require"),
    ],
)
def test_urls_resolve_relative_to_the_config_directory(url: str, expected: str) -> None:
    assert resolve_url(url, base_dir=Path("/srv/app")).display == expected


def test_memory_url_is_recognised() -> None:
    resolved = resolve_url("sqlite:///:memory:", base_dir=Path("/srv"))
    assert resolved.memory and resolved.dialect == "sqlite"


def test_password_is_hidden_from_the_display_url() -> None:
    resolved = resolve_url("postgresql://app:s3cret@db/concord", base_dir=Path("/"))
    assert "s3cret" not in resolved.display


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", ""])
def test_unsupported_urls_are_rejected_with_a_clear_error(url: str) -> None:
    with pytest.raises(DatabaseURLError):
        resolve_url(url, base_dir=Path("/"))


async def test_relative_sqlite_file_is_created_next_to_the_config(tmp_path: Path) -> None:
    db = await open_database("sqlite:///state/concord.db", base_dir=tmp_path)
    await db.ping()
    await db.close()
    assert (tmp_path / "state" / "concord.db").is_file()


async def test_memory_database_is_shared_by_every_connection(tmp_path: Path) -> None:
    db = await open_database("sqlite:///:memory:", base_dir=tmp_path)
    async with db, db.connect() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert {"workspaces", "api_keys", "usage", "schema_version"} <= set(tables)


def test_create_database_needs_no_event_loop_and_no_server(tmp_path: Path) -> None:
    # Port 9 (discard) has no PostgreSQL: building the handle must not try to connect.
    db = create_database("postgresql://u@127.0.0.1:9/concord", tmp_path)
    assert db.dialect == "postgresql"
    assert db.url == "postgresql+asyncpg://u@127.0.0.1:9/concord"


async def test_create_database_leaves_the_schema_to_migrate(tmp_path: Path) -> None:
    async def tables(db: Database) -> list[str]:
        async with db.connect() as conn:
            return await conn.run_sync(lambda c: sa.inspect(c).get_table_names())

    async with create_database("sqlite:///concord.db", tmp_path) as db:
        assert await tables(db) == []
        await migrations.migrate(db.engine)
        assert "usage" in await tables(db)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 25, 21, 0, 0, 0, tzinfo=UTC),  # no fraction: still six digits
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 600000),  # naive: taken as UTC
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=5))),
    ],
)
def test_bulk_inserts_write_sqlite_timestamps_as_sqlalchemy_would(value: datetime) -> None:
    """Rows written by the usage writer's fast path must sort and read back like every other
    timestamp in the database."""
    dialect = sqlite.dialect()
    reference = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert _sqlite_utc_text(value) == reference(value)


@pytest.mark.parametrize("value", [True, False, None])
def test_bulk_inserts_write_sqlite_booleans_as_sqlalchemy_would(value: bool | None) -> None:
    dialect = sqlite.dialect()
    reference = sa.Boolean().dialect_impl(dialect).bind_processor(dialect)
    convert = _bulk_converter(sa.Boolean(), dialect)
    assert convert is not None
    written = convert(value)
    assert written == (reference(value) if reference else value)
    assert type(written) is (int if value is not None else type(None))
