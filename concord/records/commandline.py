"""What `concord keys|workspaces|usage` share (SPEC §6): finding the config, opening the database
it names, and printing tables or JSON. Errors are `CommandError`s with one clear line each."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from concord.records.db import Database, open_database
from concord.records.errors import RecordsError
from concord.records.keys import KeyStore
from concord.records.queries import UsageQueries
from concord.records.workspaces import Workspaces

DEFAULT_CONFIG = "concord.yaml"


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


def add_common_arguments(parser: argparse.ArgumentParser, *, nested: bool = False) -> None:
    """`-c FILE` and `--json`. Actions (`keys create`) are `nested`: there the options may follow
    the action too, without hiding a value given before it."""
    default = argparse.SUPPRESS if nested else None
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="config file (default: $CONCORD_CONFIG, $PROXY_CONFIG_PATH, ./concord.yaml)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print JSON instead of a table",
    )


def config_path(value: str | None) -> Path:
    """SPEC §6, §3.1: -c, $CONCORD_CONFIG, V0's $PROXY_CONFIG_PATH, then ./concord.yaml."""
    chosen = (
        value
        or os.environ.get("CONCORD_CONFIG")
        or os.environ.get("PROXY_CONFIG_PATH")
        or DEFAULT_CONFIG
    )
    return Path(chosen)


@dataclass(frozen=True, slots=True)
class StorageTarget:
    """The database a config names, the workspaces it declares and its catalog's model names
    (None: not known)."""

    database_url: str
    base_dir: Path
    declared_workspaces: Mapping[str, Any] | None = field(default=None)
    models: frozenset[str] | None = None


def storage_target(path: Path) -> StorageTarget:
    """Read `storage.database` through the real loader, so the CLI sees what the server sees."""
    if not path.is_file():
        raise CommandError(f"no config file at {path} (use -c FILE or set CONCORD_CONFIG)")
    from concord.config.errors import ConfigError
    from concord.config.load import load

    try:
        loaded = load(path)
    except ConfigError as exc:
        raise CommandError(f"cannot read {path}: {_first_line(str(exc))}") from None
    if not loaded.ok:
        first = loaded.errors[0].render()
        more = len(loaded.errors) - 1
        suffix = f" (and {more} more; run `concord validate`)" if more else ""
        raise CommandError(f"invalid config: {first}{suffix}")
    base_dir = Path(loaded.base_dir)
    if loaded.graph is not None:
        graph = loaded.graph
        return StorageTarget(
            graph.storage.database, base_dir, graph.workspaces, frozenset(graph.models)
        )
    if loaded.config is not None:
        config = loaded.config
        return StorageTarget(
            config.storage.database, base_dir, config.workspaces, frozenset(config.models)
        )
    raise CommandError(f"cannot read {path}")


@dataclass(frozen=True, slots=True)
class Records:
    database: Database
    keys: KeyStore
    workspaces: Workspaces
    usage: UsageQueries
    models: frozenset[str] | None = None  # the config's catalog, to check `downgrade_to`


@asynccontextmanager
async def open_records(args: argparse.Namespace) -> AsyncIterator[Records]:
    """Open the config's database (migrating it) and sync the declared workspaces."""
    target = storage_target(config_path(getattr(args, "config", None)))
    try:
        database = await open_database(target.database_url, base_dir=target.base_dir)
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(describe_database_error(exc, target.database_url)) from None
    try:
        records = Records(
            database,
            KeyStore(database),
            Workspaces(database),
            UsageQueries(database),
            target.models,
        )
        if target.declared_workspaces is not None:
            await records.workspaces.sync_declared(target.declared_workspaces)
        yield records
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(describe_database_error(exc, database.url)) from None
    finally:
        await database.close()


def run_async(main: Callable[[], Any]) -> int:
    """Run a command coroutine; records and command errors become one line on stderr."""
    import asyncio

    try:
        return int(asyncio.run(main()) or 0)
    except (CommandError, RecordsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def describe_database_error(exc: BaseException, url: str) -> str:
    """A one-line reason without SQL, parameters or a password."""
    from concord.records.db import resolve_url

    try:
        shown = resolve_url(url, base_dir=Path.cwd()).display
    except RecordsError:
        shown = "the configured database"
    reason = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return f"database error ({shown}): {_first_line(str(reason)) or type(reason).__name__}"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> None:
    """Left-aligned columns under upper-case headers; `(none)` for an empty result."""
    if not rows:
        print("(none)")
        return
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    headers = [title for _, title in columns]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for line in (headers, *cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)
