"""The admin tests run on both databases, with the records fixtures."""

from __future__ import annotations

from tests.records.conftest import (  # noqa: F401  (fixtures)
    backend,
    database,
    migrated_url,
    postgres_url,
)
