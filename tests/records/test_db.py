"""SPEC §1: storage.database URLs and opening the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg

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


# Around a second's edge and a millisecond's, before the epoch, the first and the last years.
_EDGE_EPOCHS = [
    1_700_000_000.9999996,
    1_700_000_000.9999994,
    1_700_000_000.0000005,
    1_700_000_000.0009995,
    1_700_000_000.0,
    1_699_999_999.999999,
    0.0,
    -0.5,
    -1.0000004,
    -86_400.25,
    253_402_300_799.75,  # 9999-12-31 23:59:59.75
    -62_135_596_800.0,  # 0001-01-01
]


@pytest.mark.parametrize("epoch", _EDGE_EPOCHS)
def test_sqlite_timestamps_from_epoch_edges_match_sqlalchemy(epoch: float) -> None:
    """The per-second cached formatting must give, digit for digit, what SQLAlchemy writes for
    `datetime.fromtimestamp(epoch, UTC)` (which rounds the float to the microsecond)."""
    dialect = sqlite.dialect()
    reference = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    value = datetime.fromtimestamp(epoch, UTC)
    assert _sqlite_utc_text(value) == reference(value)
    assert _sqlite_utc_text(value) == _sqlite_utc_text(value)  # cached now: still the same


@settings(max_examples=500)
@given(
    st.one_of(
        st.datetimes(timezones=st.just(UTC)),
        st.floats(-1e10, 1e10, allow_nan=False).map(lambda e: datetime.fromtimestamp(e, UTC)),
        st.integers(1_600_000_000, 1_900_000_000).map(lambda s: datetime.fromtimestamp(s, UTC)),
    )
)
def test_sqlite_timestamps_of_any_utc_datetime_match_sqlalchemy(value: datetime) -> None:
    dialect = sqlite.dialect()
    reference = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert _sqlite_utc_text(value) == reference(value)
    assert _sqlite_utc_text(value + timedelta(microseconds=1)) == reference(
        value + timedelta(microseconds=1)
    )


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, 600000),
        datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=5))),
        None,
    ],
)
def test_bulk_inserts_bind_postgresql_timestamps_as_sqlalchemy_would(
    value: datetime | None,
) -> None:
    dialect = postgresql_asyncpg.dialect()
    reference = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    convert = _bulk_converter(UTCDateTime(), dialect)
    assert convert is not None and reference is not None
    written = convert(value)
    assert written == reference(value)
    if value is not None:
        assert written.tzinfo is UTC and written.utcoffset() == timedelta(0)


def test_bulk_insert_params_convert_only_the_columns_that_need_it(tmp_path: Path) -> None:
    from concord.records.tables import usage

    row = tuple(range(22))
    for dialect in (sqlite.dialect(), postgresql_asyncpg.dialect()):
        db = create_database("sqlite:///:memory:", tmp_path)
        db.engine.dialect = dialect  # type: ignore[misc]  # only the statement is built
        bulk = db._bulk_insert(usage)
        stamp = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
        rows = [(*row[:2], stamp, *row[3:16], True, *row[17:]), list(row[:2]) + [None] * 20]
        params = bulk.params(rows)
        expected_ts = "2026-01-02 03:04:05.000006" if dialect.name == "sqlite" else stamp
        expected_bool = 1 if dialect.name == "sqlite" else True
        assert params[0] == (*row[:2], expected_ts, *row[3:16], expected_bool, *row[17:])
        assert params[1] == (*row[:2], *[None] * 20)
        assert all(type(p) is tuple for p in params)
