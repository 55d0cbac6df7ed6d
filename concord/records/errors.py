"""Errors raised by the records layer, so callers (admin routes, commands) can map them.

    RecordsError
     ├── DatabaseURLError     storage.database is not a URL Concord can open
     ├── SchemaVersionError   the database was migrated by a newer Concord
     ├── InvalidRecord        a value a user supplied is not acceptable (HTTP 400)
     ├── NotFound             (HTTP 404)
     │    ├── KeyNotFound
     │    └── WorkspaceNotFound
     └── WorkspaceExists      (HTTP 409)

Database outages surface as SQLAlchemy's `DBAPIError`/`OSError` and are not wrapped.
"""

from __future__ import annotations


class RecordsError(Exception):
    """Base of every records error; its message is safe to show a user."""


class DatabaseURLError(RecordsError, ValueError):
    pass


class SchemaVersionError(RecordsError):
    pass


class InvalidRecord(RecordsError, ValueError):
    pass


class NotFound(RecordsError):
    pass


class KeyNotFound(NotFound):
    pass


class WorkspaceNotFound(NotFound):
    pass


class WorkspaceExists(RecordsError):
    pass
