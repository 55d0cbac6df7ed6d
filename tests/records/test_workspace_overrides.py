"""SPEC §2.6: a declared workspace wins over a database one of its name while it is declared,
and the database one (its budget, tags, creation time) is back once the declaration goes."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from concord.cli import main
from concord.engine.graph import Graph
from concord.gateway.workspace_directory import WorkspaceDirectory
from concord.records.db import Database
from concord.records.errors import WorkspaceExists, WorkspaceNotFound
from concord.records.workspaces import Budget, Workspaces

API_BUDGET = Budget(0.0001, "day", "block")


@dataclass(frozen=True)
class Declared:  # the shape of the engine's WorkspaceSpec
    name: str
    tags: frozenset[str] = frozenset()
    budget: Budget | None = None


async def test_a_declaration_overrides_an_api_workspace_while_it_lasts(database: Database) -> None:
    workspaces = Workspaces(database)
    await workspaces.create("ws-y", API_BUDGET, ["team"])

    await workspaces.sync_declared({"ws-y": Declared("ws-y", frozenset({"cfg"}))})

    declared = await workspaces.get("ws-y")
    assert (declared.source, declared.budget, declared.tags) == ("config", None, ("cfg",))
    (listed,) = await workspaces.list()
    assert (listed.source, listed.budget, listed.tags) == ("config", None, ("cfg",))
    with pytest.raises(WorkspaceExists):
        await workspaces.create("ws-y")


async def test_removing_the_declaration_brings_the_api_workspace_back(database: Database) -> None:
    workspaces = Workspaces(database)
    created = await workspaces.create("ws-y", API_BUDGET, ["team"])
    await workspaces.sync_declared({"ws-y": Declared("ws-y", frozenset({"cfg"}), Budget(5))})

    await workspaces.sync_declared({})

    restored = await workspaces.get("ws-y")
    assert restored == created
    assert [w.name for w in await workspaces.list(with_spend=False)] == ["ws-y"]


async def test_the_database_row_is_never_rewritten_by_a_declaration(database: Database) -> None:
    """Another process that does not declare the name (an older config, a CLI run without one)
    sees the API workspace as it was created."""
    created = await Workspaces(database).create("ws-y", API_BUDGET, ["team"])
    gateway = Workspaces(database)
    await gateway.sync_declared({"ws-y": Declared("ws-y", frozenset({"cfg"}))})

    assert await Workspaces(database).get("ws-y") == created
    assert await gateway.get("ws-y", as_stored=True) == created
    assert await gateway.list(with_spend=False, as_stored=True) == [created]


async def test_config_only_workspaces_still_leave_with_their_declaration(
    database: Database,
) -> None:
    workspaces = Workspaces(database)
    await workspaces.create("ws-y", API_BUDGET)
    await workspaces.sync_declared({"ws-y": Declared("ws-y"), "cfg-only": Declared("cfg-only")})
    assert (await workspaces.get("cfg-only")).source == "config"

    await workspaces.sync_declared({"ws-y": Declared("ws-y")})

    with pytest.raises(WorkspaceNotFound):
        await workspaces.get("cfg-only")
    assert [w.name for w in await workspaces.list(with_spend=False)] == ["ws-y"]
    await workspaces.sync_declared({})
    assert (await workspaces.get("ws-y")).source == "api"


async def test_a_declaration_changing_again_keeps_overriding(database: Database) -> None:
    workspaces = Workspaces(database)
    created = await workspaces.create("ws-y", API_BUDGET, ["team"])
    await workspaces.sync_declared({"ws-y": Declared("ws-y", frozenset({"cfg"}))})

    await workspaces.sync_declared({"ws-y": Declared("ws-y", budget=Budget(7, "week"))})

    now = await workspaces.get("ws-y")
    assert (now.source, now.budget, now.tags, now.created_at) == (
        "config",
        Budget(7, "week"),
        (),
        created.created_at,
    )
    await workspaces.sync_declared({})
    assert await workspaces.get("ws-y") == created


async def test_the_gateway_enforces_the_api_budget_as_soon_as_a_reload_undeclares_it(
    database: Database,
) -> None:
    """The directory keeps the rows as stored: one refreshed while the name was declared must
    not hold the declaration's settings once the graph drops it."""
    workspaces = Workspaces(database)
    await workspaces.create("ws-y", API_BUDGET, ["team"])
    await workspaces.sync_declared({"ws-y": Declared("ws-y", frozenset({"cfg"}))})
    declaring = stand_in_graph({"ws-y": Declared("ws-y", frozenset({"cfg"}))})
    undeclared = stand_in_graph({})
    current = [declaring]
    directory = WorkspaceDirectory(workspaces, lambda: current[0])
    await directory.refresh()
    assert directory.budget(declaring, "ws-y") is None  # the graph applies the declaration

    current[0] = undeclared  # the reload's swap: the sync and the next refresh come later

    rule = directory.budget(undeclared, "ws-y")
    assert rule is not None and (rule.limit_usd, rule.period) == (0.0001, "day")
    assert directory.tags("ws-y") == {"team"}
    await directory.learn("ws-y")  # a key of it authenticating reads the stored row too
    assert directory.budget(undeclared, "ws-y") == rule


def stand_in_graph(declared: dict[str, Declared]) -> Graph:
    """What the directory reads of a graph: its declared workspaces and its catalog."""
    return cast(Graph, SimpleNamespace(workspaces=declared, models={}))


def test_the_cli_lists_the_api_workspace_again_once_undeclared(
    migrated_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`concord workspaces list` syncs the config it reads: declaring the name, then dropping
    it, must leave the API workspace and its budget in place."""
    config = tmp_path / "concord.yaml"

    def listed(declared: str) -> dict[str, Any]:
        config.write_text(cli_config(migrated_url, declared), encoding="utf-8")
        assert main(["workspaces", "list", "--json", "-c", str(config)]) == 0
        data = json.loads(capsys.readouterr().out)["data"]
        return next(w for w in data if w["name"] == "ws-y")

    config.write_text(cli_config(migrated_url), encoding="utf-8")
    create = ["workspaces", "create", "ws-y", "--budget", "0.0001", "--period", "day"]
    assert main([*create, "-c", str(config)]) == 0
    capsys.readouterr()

    assert listed("  ws-y: {tags: [cfg]}\n")["source"] == "config"
    restored = listed("")
    assert (restored["source"], restored["budget"]) == ("api", API_BUDGET.to_json())


def cli_config(database: str, declared: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        version: 1
        storage: {{database: "{database}"}}
        providers:
          demo: {{type: mock}}
        models:
          echo: {{targets: [demo/echo]}}
        workspaces:
          acme: {{}}
        """
        )
        + declared
    )
