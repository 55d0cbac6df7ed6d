"""Database fixtures: every records test runs on SQLite (a temp file) and on PostgreSQL.

PostgreSQL tests use one fresh database per session (`concord_test_<random>`), reset to an empty
schema before each test and dropped at the end. When the server at $CONCORD_TEST_POSTGRES
(default postgresql://postgres@127.0.0.1:5432/test) is unreachable they are skipped with the
reason, unless CONCORD_TEST_REQUIRE_SERVICES=1, in which case they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path

import asyncpg
import pytest

from concord.records.db import Database, open_database

ADMIN_URL = os.environ.get("CONCORD_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def services_required() -> bool:
    return os.environ.get("CONCORD_TEST_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip, or fail when the environment says the services must be there."""
    if services_required():
        pytest.fail(f"{reason} (CONCORD_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def run_sync(coro: Coroutine[object, object, None]) -> None:
    """Run a coroutine to completion from any context, even inside a running event loop."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped on exit; skips (or fails, with
    CONCORD_TEST_REQUIRE_SERVICES=1) when the server is unreachable."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        run_sync(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        unavailable(f"PostgreSQL unreachable at {ADMIN_URL}: {type(exc).__name__}: {exc}")
    try:
        yield with_database(ADMIN_URL, name)
    finally:
        run_sync(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    with fresh_postgres_database("concord_test") as url:
        yield url


async def reset_postgres(url: str) -> None:
    """Drop every table: each test starts from an empty, unmigrated database."""
    conn = await asyncpg.connect(url, timeout=3)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


_postgres_migrated: set[str] = set()  # session databases whose schema is current


async def truncate_postgres(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=3)
    try:
        await conn.execute("TRUNCATE workspaces, api_keys, usage")
    finally:
        await conn.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, unmigrated database of each backend, as a `storage.database` URL."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'concord.db'}"
    url: str = request.getfixturevalue("postgres_url")
    run_sync(reset_postgres(url))
    _postgres_migrated.discard(url)
    return url


@pytest.fixture
def migrated_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database of each backend at the latest schema with no rows (cheaper than empty:
    PostgreSQL tables are truncated rather than rebuilt)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'concord.db'}"
    url: str = request.getfixturevalue("postgres_url")
    empty_postgres(url)
    return url


def empty_postgres(url: str) -> None:
    """Leave the session database with no rows; its schema is current or absent."""
    if url in _postgres_migrated:
        run_sync(truncate_postgres(url))
    else:
        run_sync(reset_postgres(url))
        _postgres_migrated.add(url)


@pytest.fixture
async def database(migrated_url: str, tmp_path: Path) -> AsyncIterator[Database]:
    db = await open_database(migrated_url, base_dir=tmp_path)
    try:
        yield db
    finally:
        await db.close()
