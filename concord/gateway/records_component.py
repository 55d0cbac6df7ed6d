"""Durable records in the running gateway (SPEC §1, §2.6, §2.8, §5).

`Records` is one object in three roles, wired by `gateway.assemble`:

- a `Component`: at start it migrates `storage.database`, syncs the workspaces the config declares,
  loads the API keys, rebuilds budget spend from the usage log (again whenever a Redis state
  backend comes back from an outage, in case it lost it) and registers `/readyz`'s "database"
  check; at stop it flushes every queued usage record (or journals it) and closes the database.
  It mounts the admin API and `/_stats/today`.
- the `Recorder`: usage records go to the batched `UsageWriter`; `record()` never blocks.
- the `KeyStore`: keys declared in the graph serving now first, then the database's keys.

If the database cannot be reached at start-up, the gateway starts anyway: declared keys work,
usage goes to the journal, `/readyz` reports the database down, and a background task retries
every `retry_interval` until it can finish the start-up steps; the writer then replays the journal.

The journal is a directory of JSON-lines files holding records the database did not take yet:
`$CONCORD_JOURNAL_DIR` when set, else `<database file>.usage-journal/` for a SQLite file, else
`<config dir>/.concord-journal/` (PostgreSQL, in-memory SQLite), or, when that directory cannot be
written (a mounted ConfigMap, a database path on a read-only disk), a directory under the
system's temporary directory named after it. Processes on one host may share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from concord.admin.routes import AdminContext, admin_routes
from concord.engine.graph import Graph
from concord.gateway.auth import (
    ChainedKeyStore,
    ConfigKeyStore,
    DatabaseKeys,
    Principal,
)
from concord.gateway.auth import KeyStore as GatewayKeyStore
from concord.gateway.record import UsageRecord
from concord.gateway.workspace_directory import WorkspaceDirectory
from concord.records import migrations
from concord.records.db import create_database, resolve_url
from concord.records.keys import KeyStore
from concord.records.queries import UsageQueries, period_start
from concord.records.usage import UsageWriter
from concord.records.workspaces import Workspaces
from concord.state import BudgetKeeper, StateUnavailable

if TYPE_CHECKING:
    from concord.gateway.app import GatewayState

log = logging.getLogger("concord.records")

JOURNAL_DIRNAME = ".concord-journal"
CONNECT_TIMEOUT = 10.0  # seconds the start-up steps may take before the gateway serves without
RETRY_INTERVAL = 1.0  # seconds between attempts to reach a database that was down at start-up
WORKSPACES_REFRESH = 5.0  # seconds between reloads of database workspaces (tags, budgets)


JOURNAL_ENV = "CONCORD_JOURNAL_DIR"


def journal_dir(database_url: str, base_dir: Path, env: Mapping[str, str] = os.environ) -> Path:
    """Where unwritten usage records wait (see the module docstring)."""
    chosen = env.get(JOURNAL_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    resolved = resolve_url(database_url, base_dir=base_dir)
    if resolved.dialect == "sqlite" and not resolved.memory and resolved.url.database:
        path = Path(resolved.url.database)
        beside = path.with_name(path.name + ".usage-journal")
    else:
        beside = base_dir / JOURNAL_DIRNAME
    if _writable(beside) or (not beside.exists() and _can_create(beside.parent)):
        return beside
    # a read-only directory: records kept on this host, one journal per place it stood for
    digest = hashlib.sha256(str(beside).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"concord-journal-{digest}"
    log.warning(
        "%s cannot be written: the usage journal goes to %s (set %s to choose)",
        beside.parent,
        fallback,
        JOURNAL_ENV,
    )
    return fallback


def _writable(directory: Path) -> bool:
    return directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)


def _can_create(directory: Path) -> bool:
    """Whether `directory` is there to write in or can be made (its nearest existing parent
    takes new entries)."""
    while not directory.exists() and directory.parent != directory:
        directory = directory.parent
    return _writable(directory)


class Records:
    """Workspaces, API keys and the usage log of one gateway process."""

    def __init__(
        self,
        graph: Graph,
        config_path: str,
        *,
        keeper: BudgetKeeper | None = None,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        # SPEC §1: sqlite paths are relative to the config file, as `concord keys` resolves them
        base_dir = Path(config_path).absolute().parent
        # built without connecting: routes and stores exist before the event loop runs
        self.database = create_database(graph.storage.database, base_dir)
        self.journal_dir = journal_dir(graph.storage.database, base_dir)
        self.keys = KeyStore(self.database)
        self.workspaces = Workspaces(self.database)
        self.usage = UsageQueries(self.database)
        self.writer = UsageWriter(self.database, self.journal_dir, retry_interval=retry_interval)
        self.keeper = keeper
        self.online = False  # migrated, declared workspaces synced, keys loaded
        self._retry_interval = retry_interval
        self._graph = graph  # until start: embedders that skip lifespan still get declared keys
        self._state: GatewayState | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self.directory = WorkspaceDirectory(self.workspaces, self._current_graph)
        self._declared_for: Graph | None = None
        self._chain: GatewayKeyStore = ConfigKeyStore({}, {})
        self._database_keys = DatabaseKeys(self.keys, self.directory, self._keys_available)
        self._started = False

    # -- Component -----------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        context = AdminContext(
            admin_key=self._admin_key,  # SPEC §2.8: read from the graph serving now
            keys=self.keys,
            workspaces=self.workspaces,
            usage=self.usage,
            writer=self.writer,
            models=lambda: self._current_graph().models,
        )
        return list(admin_routes(context))

    async def start(self, state: GatewayState) -> None:
        self._state = state
        self._loop = asyncio.get_running_loop()
        self._started = True
        self._declared_for = None  # the key chain gains its database half
        state.readiness_checks["database"] = self.ready
        await self.writer.start()
        try:
            await asyncio.wait_for(self._go_online(), CONNECT_TIMEOUT)
        except Exception as exc:
            log.warning(
                "database %s unreachable at start-up (%s); serving declared keys, journalling "
                "usage to %s, retrying every %.0f s",
                self.database.url,
                type(exc).__name__,
                self.journal_dir,
                self._retry_interval,
            )
        self._task = asyncio.create_task(self._maintain(), name="concord-records")

    async def stop(self, state: GatewayState) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for chore in list(self._chores):
            chore.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await chore
        state.readiness_checks.pop("database", None)
        await self.writer.aclose()  # SPEC §1: every queued record is written or journalled
        await self.keys.aclose()
        await self.database.close()

    async def ready(self) -> bool:
        """SPEC §3 /readyz: the database answers and the start-up steps are done."""
        if not self.online:
            return False
        await self.database.ping()
        return True

    # -- Recorder ------------------------------------------------------------------------------

    def record(self, record: UsageRecord) -> None:
        self.writer.record(record)

    # -- KeyStore ------------------------------------------------------------------------------

    async def lookup(self, sha256: str) -> Principal | None:
        """Keys declared in the config first, then the database's (SPEC §2.8)."""
        graph = self._state.graph if self._state is not None else self._graph
        if graph is not self._declared_for:
            declared = ConfigKeyStore(graph.auth.keys, graph.workspaces)
            stores = [declared, self._database_keys] if self._started else [declared]
            self._chain = ChainedKeyStore(stores)
            self._declared_for = graph
        return await self._chain.lookup(sha256)

    def _keys_available(self) -> bool:
        return self.online

    def _admin_key(self) -> str | None:
        graph = self._state.graph if self._state is not None else self._graph
        return graph.auth.admin_key

    # -- reload listener -----------------------------------------------------------------------

    def reloaded(self, outcome: object) -> None:
        """Reloader listener: after a swap, sync the declared workspaces (SPEC §2.6) and seed
        budgets the new graph added. Safe to call from any thread."""
        if not getattr(outcome, "ok", False) or not getattr(outcome, "changed", True):
            return
        if self._loop is None or not self.online:
            return  # start-up (or recovery) syncs the graph serving then
        self._loop.call_soon_threadsafe(self._spawn, self._after_reload())

    async def _after_reload(self) -> None:
        graph = self._current_graph()
        try:
            await self.workspaces.sync_declared(graph.workspaces)
            await self._seed_budgets(graph)
        except Exception as exc:
            log.warning("syncing workspaces after reload failed: %s", type(exc).__name__)

    # -- internals -----------------------------------------------------------------------------

    def _current_graph(self) -> Graph:
        return self._state.graph if self._state is not None else self._graph

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _go_online(self) -> None:
        """Migrate, sync declared workspaces, load keys, rebuild budgets: then serve from it."""
        await migrations.migrate(self.database.engine)
        graph = self._current_graph()
        await self.workspaces.sync_declared(graph.workspaces)
        await self.keys.start()
        await self.directory.refresh()
        await self._seed_budgets(graph)
        if not self.online:
            self.online = True
            log.info("database %s ready", self.database.url)

    async def _maintain(self) -> None:
        """Retry start-up until the database answers; then keep database workspaces fresh."""
        while not self.online:
            await asyncio.sleep(self._retry_interval)
            try:
                await asyncio.wait_for(self._go_online(), CONNECT_TIMEOUT)
            except Exception as exc:
                log.debug("database still unreachable: %s", type(exc).__name__)
        while True:
            await asyncio.sleep(WORKSPACES_REFRESH)
            with contextlib.suppress(Exception):
                await self.directory.refresh()
            with contextlib.suppress(Exception):
                await self._reseed_if_lost()

    async def _reseed_if_lost(self) -> None:
        """SPEC §2.6: a Redis flushed, or evicting keys, while the gateway runs answers without
        an error, so no outage tells that its budget counters went: the mark set at seeding did
        too. Rebuild them from the usage log, as after an outage."""
        if self.keeper is None or await self.keeper.backend.seeded():
            return
        log.warning("the state backend lost its budget counters; rebuilding them from usage")
        await self._seed_budgets(self._current_graph())

    async def _seed_budgets(self, graph: Graph) -> None:
        """SPEC §2.6: this period's spend from the usage log into the state backend, which may
        have none: a fresh process on memory, or a Redis that restarted empty, evicted the keys
        or was flushed. Seeding never lowers a spend, so a backend that kept it loses nothing.
        An unreachable state backend is left to its own recovery (`state_recovered`)."""
        if self.keeper is None:
            return
        try:
            seeded = await rebuild_budgets(graph, self.keeper, self.usage, self.directory)
        except StateUnavailable:
            log.warning("state backend unreachable: budgets are rebuilt when it returns")
            return
        await self.keeper.backend.mark_seeded()
        if seeded:
            log.info("rebuilt %d budget counters from the usage log", seeded)

    def state_recovered(self) -> None:
        """Listener of the state backend's recovery (`ResilientState.recovered`): rebuild the
        budgets from the usage log, in case it came back empty."""
        if self._loop is not None and self.online:
            self._spawn(self._reseed())

    async def _reseed(self) -> None:
        try:
            await self._seed_budgets(self._current_graph())
        except Exception as exc:
            log.warning("rebuilding budgets after a state outage failed: %s", type(exc).__name__)


async def rebuild_budgets(
    graph: Graph,
    keeper: BudgetKeeper,
    usage: UsageQueries,
    directory: WorkspaceDirectory | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """SPEC §2.6 with a per-process state backend: seed each budget's current-period spend from
    the usage log, so a restart does not hand out a fresh budget. Returns the counters seeded.

    Budgets with a `when` count only the rows that name them (the `budgets` column; rows
    written before it existed name none). `BudgetKeeper.seed` never lowers a spend, so running
    this again (after a reload) is safe.
    """
    now = now or datetime.now(UTC)
    Spent = Mapping[str | None, float]
    spend: dict[tuple[str, str, str | None], Spent] = {}

    async def spent(scope: str, period: str, budget: str | None = None) -> Spent:
        if (scope, period, budget) not in spend:
            since = period_start(period, now)
            spend[scope, period, budget] = await usage.spend_by(
                scope,  # type: ignore[arg-type]
                since=since,
                budget=budget,
            )
        return spend[scope, period, budget]

    budgets = {name: ws.budget for name, ws in graph.workspaces.items() if ws.budget is not None}
    if directory is not None:  # SPEC §2.6: workspaces created through the admin API too
        for name in directory.names():
            rule = directory.budget(graph, name)
            if rule is not None:
                budgets[name] = rule
    seeded = 0
    for name, rule in budgets.items():
        amount = (await spent("workspace", rule.period)).get(name, 0.0)
        if amount > 0:
            await keeper.seed(rule, name, amount, now=now.timestamp())
            seeded += 1
    rules = [(rule, None) for rule in graph.unconditional_budgets]
    rules += [(rule, name) for name, rule in graph.conditional_budgets.items()]
    for rule, only in rules:
        for ident, amount in (await spent(rule.scope, rule.period, only)).items():
            ident = "*" if rule.scope == "global" else ident  # concord.state.principal.scope_id
            if ident and amount > 0:
                await keeper.seed(rule, ident, amount, now=now.timestamp())
                seeded += 1
    return seeded
