"""The current database schema as SQLAlchemy Core tables (SPEC §1 durable records).

These definitions describe the schema *after* every migration in `migrations.py` has run; queries
use them. Migrations never import them (each step carries its own snapshot), so editing a table
here without adding a migration step is caught by `tests/records/test_migrations.py`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the database.

    SQLite has no timezone type: values are stored as naive UTC text, which sorts correctly, and
    are given back their UTC zone on the way out. PostgreSQL stores `timestamptz`.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw text from a hand-written SQLite query
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


metadata = sa.MetaData()

# SPEC §2.6: declared (source 'config') and admin-created (source 'api') workspaces.
workspaces = sa.Table(
    "workspaces",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("limit_usd", sa.Float, nullable=True),
    sa.Column("period", sa.String(16), nullable=False, server_default="month"),
    sa.Column("on_exceed", sa.String(16), nullable=False, server_default="block"),
    sa.Column("downgrade_to", sa.String(200), nullable=True),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# SPEC §2.8: client keys, stored by SHA-256 only. `updated_at` moves on create and revoke so that
# every process can poll for changes cheaply (the key cache in keys.py).
api_keys = sa.Table(
    "api_keys",
    metadata,
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

# SPEC §1: one row per request, written in batches by usage.UsageWriter.
usage = sa.Table(
    "usage",
    metadata,
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
    # added by migration v2
    sa.Column("cached_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("ttft_ms", sa.Float, nullable=True),
    # added by migration v3: the `budgets[]` with a `when` the request was charged to, as
    # ",name,name," (NULL for none), so their spend can be rebuilt from this log; unbounded since
    # v4: a name cut off would drop that budget's spend from the rebuild
    sa.Column("budgets", sa.Text, nullable=True),
    sa.Index("ix_usage_ts", "ts"),
    sa.Index("ix_usage_workspace_ts", "workspace", "ts"),
    sa.Index("ix_usage_key_ts", "key_id", "ts"),
)
