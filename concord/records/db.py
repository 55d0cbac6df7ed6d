"""The database handle: URL resolution, the async engine, and migrations at open (SPEC §1).

`storage.database` is `sqlite:///path` (relative to the config file's directory),
`sqlite:///:memory:`, or a `postgresql://` URL (driven by asyncpg). `create_database` builds a
pooled SQLAlchemy async engine for it without connecting (the gateway needs the handle before its
event loop runs); `open_database` also upgrades the schema before anyone uses it.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from concord.records import migrations
from concord.records.errors import DatabaseURLError
from concord.records.tables import UTCDateTime
from concord.timestamps import second_text

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class ResolvedURL:
    """A user's database URL turned into what SQLAlchemy opens, plus a printable form."""

    url: URL
    dialect: Dialect
    memory: bool = False

    @property
    def display(self) -> str:
        """The URL with its password hidden: safe for logs and error messages."""
        return self.url.render_as_string(hide_password=True)


def resolve_url(url: str, *, base_dir: Path) -> ResolvedURL:
    """Map `sqlite:///rel.db` onto base_dir and `postgresql://` onto asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(
            "storage.database must be a sqlite:/// or postgresql:// URL"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ":memory:"
        if database == ":memory:":
            return ResolvedURL(parsed.set(drivername="sqlite+aiosqlite"), "sqlite", memory=True)
        path = Path(database)
        if not path.is_absolute():
            path = base_dir / path
        return ResolvedURL(
            parsed.set(drivername="sqlite+aiosqlite", database=str(path.resolve())), "sqlite"
        )
    if backend in ("postgresql", "postgres"):
        query = dict(parsed.query)
        if "sslmode" in query:  # libpq spelling; asyncpg calls it `ssl`
            query["ssl"] = query.pop("sslmode")
        return ResolvedURL(parsed.set(drivername="postgresql+asyncpg", query=query), "postgresql")
    raise DatabaseURLError(
        f"unsupported database {backend!r} in storage.database: use sqlite:/// or postgresql://"
    )


@dataclass(frozen=True, slots=True)
class BulkInsert:
    """A driver-level INSERT for row tuples in table column order, and the per-column value
    conversions SQLAlchemy would have applied (UTC timestamps as SQLite text, booleans)."""

    sql: str
    converters: tuple[tuple[int, Callable[[Any], Any]], ...]

    def params(self, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        converters = self.converters
        if not converters:
            return [row if type(row) is tuple else tuple(row) for row in rows]
        params: list[tuple[Any, ...]] = []
        append = params.append
        if len(converters) == 1:  # PostgreSQL's usage rows: the timestamp only
            ((index, convert),) = converters
            for row in rows:
                values = list(row)
                values[index] = convert(values[index])
                append(tuple(values))
            return params
        for row in rows:
            values = list(row)  # a copy and a tuple: cheaper than slicing the row around values
            for index, convert in converters:
                values[index] = convert(values[index])
            append(tuple(values))
        return params


def _bulk_converter(
    kind: sa.types.TypeEngine[Any], dialect: sa.engine.Dialect
) -> Callable[[Any], Any] | None:
    """The conversion SQLAlchemy would apply to one column's values, or a cheaper equivalent:
    booleans go to PostgreSQL as they are and to SQLite as 0/1 (sqlite3 would look a bool up in
    its adapter registry first, failing two attribute lookups per value), and SQLite's UTC
    timestamps are written as the same text in one call instead of two layers of Python
    formatting per row."""
    if isinstance(kind, sa.Boolean):
        return _sqlite_bool if dialect.name == "sqlite" else None
    if isinstance(kind, UTCDateTime):
        if dialect.name == "sqlite":
            return _sqlite_utc_text
        process = kind.dialect_impl(dialect).bind_processor(dialect)
        return None if process is None else _utc_as_it_is(process)
    return kind.dialect_impl(dialect).bind_processor(dialect)


def _utc_as_it_is(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`process` (`UTCDateTime`'s PostgreSQL binding), less its two layers of Python calls for
    a datetime already in UTC (every usage row's): `process_bind_param` hands that one back as
    it is (`astimezone` to its own zone returns the very object)."""

    def convert(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            return value
        return process(value)

    return convert


def _bind_none_directly() -> None:
    """sqlite3 looks every parameter that is not an exact int, float or str up in its adapter
    registry; for None, finding nothing costs two failed attribute lookups, each building and
    dropping an AttributeError (about 2,000 instructions), and a usage row has several NULLs.
    An adapter that hands None back as it is (a C call) gives the same NULL at once. The
    registry is the process's: binding None the same way everywhere changes nothing else."""
    sqlite3.register_adapter(type(None), _SAME_NONE)


_SAME_NONE: Callable[[None], None] = {}.get  # {}.get(None) is None: a C-level identity here


def _sqlite_bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """`UTCDateTime` as SQLAlchemy stores it in SQLite: naive UTC, `YYYY-MM-DD HH:MM:SS.ffffff`.

    A UTC datetime (every usage row's) takes the per-second prefix of `concord.timestamps`:
    `isoformat` on an aware datetime formats its offset only to have it cut off, a microsecond
    or so per row, where the seconds since the epoch and two list lookups take a third of that."""
    if value is None:
        return None
    if value.tzinfo is UTC:
        delta = value - _EPOCH
        second = delta.days * 86400 + delta.seconds  # a timedelta keeps 0 <= seconds < 86400
        micros = delta.microseconds
        return second_text(second, " ") + _MILLIS_TEXT[micros // 1000] + _MICROS_TEXT[micros % 1000]
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # less "+00:00"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLIS_TEXT = [f".{millis:03d}" for millis in range(1000)]  # a format spec costs more
_MICROS_TEXT = [f"{micros:03d}" for micros in range(1000)]


class Database:
    """An open database: the engine plus the few dialect differences the records layer needs."""

    def __init__(self, engine: AsyncEngine, resolved: ResolvedURL) -> None:
        self.engine = engine
        self.dialect: Dialect = resolved.dialect
        self.url = resolved.display
        self._bulk: dict[str, BulkInsert] = {}

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    @asynccontextmanager
    async def begin(self, *, immediate: bool = False) -> AsyncIterator[AsyncConnection]:
        """A connection inside a transaction that commits on success.

        `immediate` is for transactions that read before they write: SQLite then takes the write
        lock at BEGIN (waiting for it) instead of failing when it upgrades a read lock later.
        """
        async with self.engine.connect() as conn:
            if immediate:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def insert_rows(self, table: sa.Table, rows: Sequence[Sequence[Any]]) -> None:
        """Insert row tuples (values in `table.columns` order) in one transaction, skipping rows
        whose key is already there: replaying a batch twice must not double it.

        One driver-level executemany (asyncpg pipelines it; aiosqlite runs it off the event loop)
        instead of a compiled SQLAlchemy statement, whose per-row cost is several times higher:
        the usage writer shares the event loop with the request path (SPEC §1).
        """
        if not rows:
            return
        bulk = self._bulk.get(table.name)
        if bulk is None:
            bulk = self._bulk[table.name] = self._bulk_insert(table)
        params = bulk.params(rows)
        async with self.begin() as conn:
            await conn.exec_driver_sql(bulk.sql, params)

    def _bulk_insert(self, table: sa.Table) -> BulkInsert:
        dialect = self.engine.dialect
        quote = dialect.identifier_preparer.quote
        columns = list(table.columns)
        if dialect.paramstyle == "numeric_dollar":
            marks = [f"${i}" for i in range(1, len(columns) + 1)]
        elif dialect.paramstyle == "qmark":
            marks = ["?"] * len(columns)
        else:  # pragma: no cover - only asyncpg and aiosqlite are ever configured
            raise RuntimeError(f"unsupported paramstyle {dialect.paramstyle!r}")
        sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) "
            f"VALUES ({', '.join(marks)}) ON CONFLICT DO NOTHING"
        )
        converters = []
        for index, column in enumerate(columns):
            convert = _bulk_converter(column.type, dialect)
            if convert is not None:
                converters.append((index, convert))
        return BulkInsert(sql, tuple(converters))

    async def ping(self) -> None:
        """Raise unless the database answers (readiness, SPEC §3)."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def create_database(
    url: str, base_dir: Path, *, connect_timeout: float = 5.0, pool_size: int = 10
) -> Database:
    """The handle for `url`, built without connecting nor migrating: routes and stores can hold
    it before the event loop starts; `migrations.migrate(database.engine)` runs later."""
    resolved = resolve_url(url, base_dir=base_dir)
    if resolved.dialect == "sqlite":
        engine = _sqlite_engine(resolved, connect_timeout)
    else:
        engine = create_async_engine(
            resolved.url,
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_pre_ping=True,  # a restarted server or a killed backend costs one retry, no error
            pool_recycle=1800,
            connect_args={"timeout": connect_timeout, "command_timeout": 60},
        )
    return Database(engine, resolved)


async def open_database(
    url: str,
    *,
    base_dir: Path,
    migrate: bool = True,
    connect_timeout: float = 5.0,
    pool_size: int = 10,
) -> Database:
    """Open `url` and, unless told otherwise, bring its schema to the latest version."""
    database = create_database(url, base_dir, connect_timeout=connect_timeout, pool_size=pool_size)
    if migrate:
        try:
            await migrations.migrate(database.engine)
        except BaseException:
            await database.close()
            raise
    return database


def _sqlite_engine(resolved: ResolvedURL, busy_timeout: float) -> AsyncEngine:
    _bind_none_directly()
    if resolved.memory:
        # One shared connection, or every checkout would see its own empty database.
        engine = create_async_engine(resolved.url, poolclass=StaticPool)
    else:
        # a directory that cannot be made shows as a database that cannot be opened: the
        # gateway serves, reports it in /readyz and journals usage (as for any database down)
        with contextlib.suppress(OSError):
            Path(resolved.url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(resolved.url, pool_size=5, max_overflow=5)
    memory = resolved.memory

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (below), so migrations can ask for BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if not memory:
            # WAL lets the CLI read while the gateway writes; NORMAL is durable across crashes
            # of the process, which is what the usage journal relies on. WAL persists in the
            # file, and switching needs a moment alone with it: only the first opener does it.
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() != "wal":
                with contextlib.suppress(Exception):
                    cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine
