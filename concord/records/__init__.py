"""Durable records (SPEC §1): workspaces, API keys and the usage log, in SQLite or PostgreSQL.

db.py          open_database(url, base_dir=...) -> Database (migrates at open)
tables.py      the current schema;  migrations.py  how databases get there
keys.py        KeyStore: create/list/revoke keys, cached lookup(sha256) -> Principal
usage.py       UsageRecord and the batched, journalling UsageWriter
queries.py     UsageQueries: spend, usage_report, today_stats
workspaces.py  Workspaces: create, list with spend, sync_declared
"""

from __future__ import annotations

from concord.records.db import Database, open_database
from concord.records.errors import (
    InvalidRecord,
    KeyNotFound,
    NotFound,
    RecordsError,
    WorkspaceExists,
    WorkspaceNotFound,
)
from concord.records.keys import KeyRecord, KeyStore, Principal
from concord.records.queries import UsageQueries
from concord.records.usage import UsageRecord, UsageWriter
from concord.records.workspaces import Budget, WorkspaceRecord, Workspaces

__all__ = [
    "Budget",
    "Database",
    "InvalidRecord",
    "KeyNotFound",
    "KeyRecord",
    "KeyStore",
    "NotFound",
    "Principal",
    "RecordsError",
    "UsageQueries",
    "UsageRecord",
    "UsageWriter",
    "WorkspaceExists",
    "WorkspaceNotFound",
    "WorkspaceRecord",
    "Workspaces",
    "open_database",
]
