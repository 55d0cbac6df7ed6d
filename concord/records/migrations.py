"""Schema migrations: ordered steps that upgrade a database in place, run at open.

`schema_version` holds one row per applied step. `migrate()` runs every missing step inside one
transaction that also holds a lock (a PostgreSQL advisory lock, SQLite `BEGIN IMMEDIATE`), so N
workers starting at once apply each step exactly once. Each step carries its own snapshot of the
tables it touches and never imports `tables.py`, whose definitions follow the *latest* version.

To change the schema: add a step here, then update `tables.py` to match.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from concord.records.errors import SchemaVersionError
from concord.records.tables import UTCDateTime

# Any constant works; it only has to be the same in every Concord process.
_PG_LOCK_ID = 0x636F6E636F7264  # "concord"

_schema_version = sa.Table(
    "schema_version",
    sa.MetaData(),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("description", sa.String(200), nullable=False),
    sa.Column("applied_at", UTCDateTime, nullable=False),
)


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _v1_initial(conn: Connection) -> None:
    """The first schema: workspaces, api_keys and usage without cached/ttft columns."""
    md = sa.MetaData()
    sa.Table(
        "workspaces",
        md,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("limit_usd", sa.Float, nullable=True),
        sa.Column("period", sa.String(16), nullable=False, server_default="month"),
        sa.Column("on_exceed", sa.String(16), nullable=False, server_default="block"),
        sa.Column("downgrade_to", sa.String(200), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    sa.Table(
        "api_keys",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("workspace", sa.String(200), nullable=False),
        sa.Column("user", sa.String(200), nullable=True),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Index("ix_api_keys_workspace", "workspace"),
        sa.Index("ix_api_keys_updated_at", "updated_at"),
    )
    sa.Table(
        "usage",
        md,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("workspace", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("key_name", sa.String(200), nullable=True),
        sa.Column("user", sa.String(200), nullable=True),
        sa.Column("requested_model", sa.String(200), nullable=True),
        sa.Column("served_model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(200), nullable=True),
        sa.Column("route", sa.String(200), nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"),
        sa.Column("latency_ms", sa.Float, nullable=True),
        sa.Column("cache_hit", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
        sa.Column("error_type", sa.String(100), nullable=True),
        sa.Index("ix_usage_ts", "ts"),
        sa.Index("ix_usage_workspace_ts", "workspace", "ts"),
        sa.Index("ix_usage_key_ts", "key_id", "ts"),
    )
    md.create_all(conn)


def _v2_usage_cache_and_ttft(conn: Connection) -> None:
    """Usage gains cached input tokens (SPEC §2.3 cached_input price) and time to first token."""
    conn.exec_driver_sql("ALTER TABLE usage ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0")
    conn.exec_driver_sql("ALTER TABLE usage ADD COLUMN ttft_ms FLOAT")


def _v3_usage_budgets(conn: Connection) -> None:
    """Usage names the conditional budgets each request was charged to (SPEC §2.6 rebuilds)."""
    conn.exec_driver_sql("ALTER TABLE usage ADD COLUMN budgets VARCHAR(1000)")


def _v4_usage_budgets_unbounded(conn: Connection) -> None:
    """Usage's budget names are never cut: a request matching many conditional budgets with
    long names would otherwise lose the last ones from the rebuilt spend. SQLite keeps text
    whole whatever length is declared, so only PostgreSQL has anything to change."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE usage ALTER COLUMN budgets TYPE TEXT")


STEPS: tuple[Step, ...] = (
    Step(1, "initial schema", _v1_initial),
    Step(2, "usage.cached_tokens and usage.ttft_ms", _v2_usage_cache_and_ttft),
    Step(3, "usage.budgets", _v3_usage_budgets),
    Step(4, "usage.budgets unbounded", _v4_usage_budgets_unbounded),
)
LATEST = STEPS[-1].version


@dataclass(frozen=True, slots=True)
class MigrationResult:
    before: int
    after: int

    @property
    def applied(self) -> int:
        return self.after - self.before


async def current_version(engine: AsyncEngine) -> int:
    """The schema version of the database; 0 when it has never been migrated."""
    async with engine.connect() as conn:
        return await conn.run_sync(_read_version)


async def migrate(engine: AsyncEngine, *, target: int = LATEST) -> MigrationResult:
    """Apply every step above the database's version up to `target`, under a lock."""
    async with engine.connect() as conn:
        # SQLite: take the write lock at BEGIN so two processes cannot both see version 0.
        conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
        async with conn.begin():
            return await conn.run_sync(_migrate_sync, target)


def _migrate_sync(conn: Connection, target: int) -> MigrationResult:
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
    _schema_version.create(conn, checkfirst=True)
    before = _read_version(conn)
    if before > LATEST:
        raise SchemaVersionError(
            f"the database schema is version {before}, newer than this Concord supports "
            f"({LATEST}); upgrade Concord"
        )
    for step in STEPS:
        if before < step.version <= target:
            step.apply(conn)
            conn.execute(
                _schema_version.insert().values(
                    version=step.version,
                    description=step.description,
                    applied_at=datetime.now(UTC),
                )
            )
    return MigrationResult(before=before, after=max(before, min(target, LATEST)))


def _read_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table("schema_version"):
        return 0
    value = conn.execute(sa.select(sa.func.max(_schema_version.c.version))).scalar()
    return int(value or 0)
