"""Workspaces in the database (SPEC §2.6).

Workspaces declared in the config are synced into the table at load (`source='config'`);
workspaces created through the admin API or the CLI live only in the database (`source='api'`). A
declared workspace that later disappears from the config is deleted from the table at the next
sync: the config is where it lived.

A declared workspace wins over an API one of the same name, but only while it is declared: the API
row is never rewritten, and reads show the declaration over it. Once the config drops the name, the
API workspace is back as it was created (budget, tags, keys), with nothing to restore. The
gateway's workspace directory reads the rows as stored (`as_stored=True`): the graph already
applies the declarations, so an API budget is enforced again the moment a reload drops one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from concord.records.db import Database
from concord.records.errors import InvalidRecord, WorkspaceExists, WorkspaceNotFound
from concord.records.queries import UsageQueries, period_start
from concord.records.tables import workspaces

Source = Literal["config", "api"]
PERIODS = ("day", "week", "month")
ON_EXCEED = ("block", "downgrade")
# Globs (`free-*`) match workspace names in routes, so names themselves stay glob-free.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")


@dataclass(frozen=True, slots=True)
class Budget:
    limit_usd: float
    period: str = "month"
    on_exceed: str = "block"
    downgrade_to: str | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.limit_usd, bool)
            or not isinstance(self.limit_usd, int | float)
            or not math.isfinite(self.limit_usd)
            or self.limit_usd < 0
        ):
            raise InvalidRecord("budget.limit_usd must be a number of US dollars, 0 or more")
        if self.period not in PERIODS:
            raise InvalidRecord(f"budget.period must be one of {', '.join(PERIODS)}")
        if self.on_exceed not in ON_EXCEED:
            raise InvalidRecord(f"budget.on_exceed must be one of {', '.join(ON_EXCEED)}")

    @classmethod
    def of(cls, value: Any) -> Budget | None:
        """A budget from a mapping, a config/graph budget object, or None."""
        if value is None or isinstance(value, Budget):
            return value
        get = value.get if isinstance(value, Mapping) else lambda n, d=None: getattr(value, n, d)
        if get("limit_usd") is None:
            raise InvalidRecord("budget.limit_usd is required")
        return cls(
            limit_usd=get("limit_usd"),
            period=get("period") or "month",
            on_exceed=get("on_exceed") or "block",
            downgrade_to=get("downgrade_to"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "limit_usd": self.limit_usd,
            "period": self.period,
            "on_exceed": self.on_exceed,
            "downgrade_to": self.downgrade_to,
        }


@dataclass(frozen=True, slots=True)
class WorkspaceRecord:
    name: str
    budget: Budget | None
    tags: tuple[str, ...]
    source: Source
    created_at: datetime
    spend_usd: float | None = None  # current budget period (calendar month without a budget)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "budget": self.budget.to_json() if self.budget else None,
            "tags": list(self.tags),
            "source": self.source,
            "created_at": self.created_at.isoformat().replace("+00:00", "Z"),
            "spend_usd": None if self.spend_usd is None else round(self.spend_usd, 10),
        }


def validate_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise InvalidRecord(
            "workspace name must be 1-200 letters, digits or . _ : @ - and start with a "
            "letter or digit"
        )
    return name


class Workspaces:
    """Create, list and sync workspaces."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._usage = UsageQueries(database)
        # the last synced declarations as rows: they win over stored rows of their names on reads
        self._declared: dict[str, dict[str, Any]] = {}

    async def create(
        self,
        name: str,
        budget: Budget | None = None,
        tags: Iterable[str] = (),
        *,
        models: Collection[str] | None = None,
    ) -> WorkspaceRecord:
        """Add an API-managed workspace; WorkspaceExists (409) if the name is taken. With the
        catalog's `models`, a `downgrade_to` outside it is refused (InvalidRecord)."""
        name = validate_name(name)
        target = budget.downgrade_to if budget is not None else None
        if target and models is not None and target not in models:
            known = ", ".join(sorted(models)) or "none"
            raise InvalidRecord(
                f"budget.downgrade_to {target!r} is not a catalog model (known: {known})"
            )
        row = _row(name, budget, tags, "api")
        try:
            async with self._db.begin() as conn:
                await conn.execute(workspaces.insert().values(**row))
        except sa.exc.IntegrityError:
            raise WorkspaceExists(f"workspace {name!r} already exists") from None
        return _record(row)

    async def get(self, name: str, *, as_stored: bool = False) -> WorkspaceRecord:
        """The workspace as clients see it, or with `as_stored` as its row holds it (an API
        workspace without the declaration that overrides it)."""
        async with self._db.connect() as conn:
            row = (
                (await conn.execute(sa.select(workspaces).where(workspaces.c.name == name)))
                .mappings()
                .first()
            )
        if row is None:
            raise WorkspaceNotFound(f"no workspace named {name!r}")
        return _record(row if as_stored else self._declared_over(row))

    async def exists(self, name: str) -> bool:
        try:
            await self.get(name)
        except WorkspaceNotFound:
            return False
        return True

    async def list(
        self, *, with_spend: bool = True, now: datetime | None = None, as_stored: bool = False
    ) -> list[WorkspaceRecord]:
        """Every workspace by name, with its spend in the current budget period; `as_stored` as
        in `get`."""
        async with self._db.connect() as conn:
            rows = (
                (await conn.execute(sa.select(workspaces).order_by(workspaces.c.name)))
                .mappings()
                .all()
            )
        records = [_record(row if as_stored else self._declared_over(row)) for row in rows]
        if not with_spend:
            return records
        now = now or datetime.now(UTC)
        periods = {r.budget.period if r.budget else "month" for r in records}
        spend = {
            p: await self._usage.spend_by("workspace", since=period_start(p, now)) for p in periods
        }
        return [
            _with_spend(r, spend[r.budget.period if r.budget else "month"].get(r.name, 0.0))
            for r in records
        ]

    async def with_spend(
        self, record: WorkspaceRecord, now: datetime | None = None
    ) -> WorkspaceRecord:
        """`record` with its spend in the current budget period, as `list` reports it."""
        period = record.budget.period if record.budget else "month"
        since = period_start(period, now or datetime.now(UTC))
        return _with_spend(record, await self._usage.spend(record.name, since=since))

    async def sync_declared(self, specs: Mapping[str, Any]) -> None:
        """Make the table hold the declared workspaces as `source='config'` rows next to the API
        ones, deleting config rows no longer declared. An API row of a declared name is left as
        it is (reads show the declaration over it) so that it survives the declaration."""
        declared = {
            name: _row(name, Budget.of(_get(spec, "budget")), _get(spec, "tags") or (), "config")
            for name, spec in specs.items()
        }
        self._declared = declared  # reads follow the config even if this write fails
        async with self._db.begin(immediate=True) as conn:
            stored = {
                r.name: r.source
                for r in await conn.execute(sa.select(workspaces.c.name, workspaces.c.source))
            }
            for name, source in stored.items():
                if source == "config" and name not in declared:
                    await conn.execute(workspaces.delete().where(workspaces.c.name == name))
            for name, row in declared.items():
                await _write_declared(conn, row, stored.get(name))

    def _declared_over(self, row: Mapping[str, Any]) -> Mapping[str, Any]:
        """A stored row as clients see it: its declaration's settings when its name is declared
        (SPEC §2.6), keeping the row's creation time."""
        declared = self._declared.get(row["name"])
        if declared is None:
            return row
        return {**declared, "created_at": row["created_at"]}


async def _write_declared(conn: AsyncConnection, row: dict[str, Any], source: str | None) -> None:
    """Insert a new declared workspace or update its config row; an API row is not touched."""
    if source is None:
        await conn.execute(workspaces.insert().values(**row))
    elif source == "config":
        settings = {k: v for k, v in row.items() if k != "created_at"}
        await conn.execute(
            workspaces.update().where(workspaces.c.name == row["name"]).values(**settings)
        )


def _get(spec: Any, name: str) -> Any:
    return spec.get(name) if isinstance(spec, Mapping) else getattr(spec, name, None)


def _row(name: str, budget: Budget | None, tags: Iterable[str], source: Source) -> dict[str, Any]:
    return {
        "name": name,
        "limit_usd": budget.limit_usd if budget else None,
        "period": budget.period if budget else "month",
        "on_exceed": budget.on_exceed if budget else "block",
        "downgrade_to": budget.downgrade_to if budget else None,
        "tags": sorted({str(t) for t in tags}),
        "source": source,
        "created_at": datetime.now(UTC),
    }


def _record(row: Mapping[str, Any]) -> WorkspaceRecord:
    budget = None
    if row["limit_usd"] is not None:
        budget = Budget(
            limit_usd=float(row["limit_usd"]),
            period=row["period"],
            on_exceed=row["on_exceed"],
            downgrade_to=row["downgrade_to"],
        )
    return WorkspaceRecord(
        name=row["name"],
        budget=budget,
        tags=tuple(row["tags"] or ()),
        source=row["source"],
        created_at=row["created_at"],
    )


def _with_spend(record: WorkspaceRecord, spend: float) -> WorkspaceRecord:
    return WorkspaceRecord(
        record.name, record.budget, record.tags, record.source, record.created_at, spend
    )
