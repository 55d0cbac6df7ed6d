"""Workspaces created through the admin API, as the data plane sees them (SPEC §2.6).

Declared workspaces are compiled into the graph; API-created ones live only in the database.
This directory keeps the latter in memory: their tags (route conditions on `tags`) and their
budgets, enforced like declared ones. It is refreshed every few seconds, and a workspace it has
not seen yet is read at once when one of its keys authenticates, so a workspace created a moment
ago is guarded from its first request. A declared workspace wins over a database one with its
name: the graph applies it, so the directory keeps the rows as stored, and the database one's
budget and tags apply again as soon as a reload drops the declaration.

A database budget may say `on_exceed: downgrade` without `downgrade_to` (V0's admin body has no
field for it), or name a model a later config dropped: it then downgrades to the cheapest priced
catalog model (input + output price per 1M tokens, ties by name). With no priced model to go to,
an exhausted budget blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from concord.engine.graph import BudgetRule, CatalogModel, Graph
from concord.records.errors import WorkspaceNotFound
from concord.records.workspaces import Budget, WorkspaceRecord, Workspaces


@dataclass(frozen=True, slots=True)
class DatabaseWorkspace:
    tags: frozenset[str]
    budget: Budget | None


class WorkspaceDirectory:
    """Tags and budgets of database workspaces, read without a database round trip."""

    def __init__(self, workspaces: Workspaces, current_graph: Callable[[], Graph]) -> None:
        self._workspaces = workspaces
        self._graph = current_graph
        self._entries: dict[str, DatabaseWorkspace | None] = {}  # None: no such workspace
        # workspace → (graph it was resolved against, rule): rules follow reloads and refreshes
        self._rules: dict[str, tuple[Graph, BudgetRule | None]] = {}

    async def refresh(self) -> None:
        """Read every workspace again (budgets and tags may have changed)."""
        records = await self._workspaces.list(with_spend=False, as_stored=True)
        self._entries = {record.name: _entry(record) for record in records}
        self._rules = {}

    def names(self) -> list[str]:
        return [name for name, entry in self._entries.items() if entry is not None]

    def knows(self, name: str) -> bool:
        return name in self._entries

    async def learn(self, name: str) -> None:
        """Read one workspace the directory has not seen (a key of it just authenticated)."""
        try:
            entry: DatabaseWorkspace | None = _entry(
                await self._workspaces.get(name, as_stored=True)
            )
        except WorkspaceNotFound:
            entry = None
        self._entries[name] = entry
        self._rules.pop(name, None)

    def tags(self, name: str) -> frozenset[str]:
        """The workspace's tags: the declared ones when the config declares it."""
        declared = self._graph().workspaces.get(name)
        if declared is not None:
            return declared.tags
        entry = self._entries.get(name)
        return entry.tags if entry is not None else frozenset()

    def budget(self, graph: Graph, name: str) -> BudgetRule | None:
        """The budget a database workspace adds to a request; None for a declared workspace
        (the graph already applies its budget) or one without a budget."""
        found = self._rules.get(name)
        if found is not None and found[0] is graph:
            return found[1]
        rule = None
        entry = self._entries.get(name)
        if entry is not None and entry.budget is not None and name not in graph.workspaces:
            rule = budget_rule(name, entry.budget, graph.models)
        if len(self._rules) >= 4096:  # bounded like the guards' plan memo
            self._rules = {}
        self._rules[name] = (graph, rule)
        return rule


def budget_rule(name: str, budget: Budget, models: Mapping[str, CatalogModel]) -> BudgetRule:
    """The guards' rule for a database workspace's budget, resolved against the catalog."""
    on_exceed, target = budget.on_exceed, None
    if on_exceed == "downgrade":
        target = budget.downgrade_to if budget.downgrade_to in models else cheapest_model(models)
        if target is None:
            on_exceed = "block"
    return BudgetRule(
        f"workspace:{name}",
        "workspace",
        budget.limit_usd,
        budget.period,  # type: ignore[arg-type]  # validated by Budget
        on_exceed,  # type: ignore[arg-type]
        target,
    )


def cheapest_model(models: Mapping[str, CatalogModel]) -> str | None:
    """The priced catalog model that writes answers with the lowest input + output price (ties
    by name). A model priced for input tokens only is an embeddings model: a chat request
    downgraded to it would fail, so it is never the target."""
    priced = [
        (model.price.input + model.price.output, name)
        for name, model in models.items()
        if model.price is not None and model.price.output > 0
    ]
    return min(priced)[1] if priced else None


def _entry(record: WorkspaceRecord) -> DatabaseWorkspace:
    return DatabaseWorkspace(frozenset(record.tags), record.budget)
