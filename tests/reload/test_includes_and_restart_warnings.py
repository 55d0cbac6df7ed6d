"""SPEC §4 reload: the watcher follows the includes the loader follows, whatever YAML style the
root file uses, and start-up-only settings are warned about against what the process runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from concord.config.load import load_graph
from concord.engine.reload import LISTEN_ENV, Reloader, ReloadOutcome, watch_set
from concord.gateway.app import GatewayState
from tests.reload.conftest import (
    ADMIN_KEY,
    StartServer,
    chat,
    eventually,
    free_port,
    gateway_yaml,
    until,
    write_atomic,
)

PORT = 18102
# SPEC §2's example writes `storage:` flow-style; a URL's `:` in a flow mapping is valid YAML
# that some parsers (libyaml) reject.
FLOW_ROOT = "include: [pol/*.yaml]\nstorage: {database: sqlite:///r.db}\n"
BLOCK_ROOT = "include: [pol/*.yaml]\n"
GAMMA = "providers: {c: {type: mock, reply: from C}}\nmodels: {gamma: {targets: [c/m]}}\n"
DELTA = GAMMA.replace("gamma", "delta").replace("c:", "d:").replace("c/m", "d/m")
PORT_WARNING = "server.port: changed, but applied only when the server restarts"


async def started(path: Path) -> tuple[Reloader, GatewayState]:
    state = GatewayState(load_graph(path, {}))
    reloader = Reloader(str(path), {}, step_ms=20)
    await reloader.start(state)
    return reloader, state


@contextlib.asynccontextmanager
async def watching(folder: Path, body: str) -> AsyncIterator[tuple[Reloader, GatewayState, Path]]:
    """A reloader watching a root with `body` in `folder`, beside an empty `pol/`."""
    (folder / "pol").mkdir()
    path = folder / "concord.yaml"
    path.write_text(gateway_yaml(PORT, body), encoding="utf-8")
    reloader, state = await started(path)
    try:
        yield reloader, state, path
    finally:
        await reloader.stop(state)
        await state.pool.close()


# ---- includes ----------------------------------------------------------------------------------


def test_include_globs_are_read_from_a_flow_style_root_with_a_url(tmp_path: Path) -> None:
    root = tmp_path / "concord.yaml"
    root.write_text(gateway_yaml(PORT, FLOW_ROOT), encoding="utf-8")
    load_graph(root, {})  # the loader accepts it
    watch = watch_set(str(root), [str(root)])
    assert watch.globs == (str(tmp_path / "pol" / "*.yaml"),)
    assert watch.matters(str(tmp_path / "pol" / "0.yaml"))


async def test_new_glob_match_is_picked_up_under_a_flow_style_root(tmp_path: Path) -> None:
    async with watching(tmp_path, FLOW_ROOT) as (reloader, state, _):
        write_atomic(tmp_path / "pol" / "0.yaml", GAMMA)
        assert await until(lambda: "gamma" in state.graph.models)
        assert str(tmp_path / "pol" / "0.yaml") in reloader.status()["files"]


def test_an_unparsable_file_keeps_what_was_watched(tmp_path: Path) -> None:
    root = tmp_path / "concord.yaml"
    root.write_text(gateway_yaml(PORT, BLOCK_ROOT), encoding="utf-8")
    before = watch_set(str(root), [str(root)])
    assert before.globs
    root.write_text("version: 1\ninclude: [pol/*.yaml\n", encoding="utf-8")  # half-written
    assert watch_set(str(root), [str(root)], before) == before
    assert watch_set(str(root), [str(root)]).globs == ()  # nothing else to go by


async def test_a_broken_root_keeps_its_globs_watched_until_it_is_fixed(tmp_path: Path) -> None:
    """While the root cannot be parsed, spurious events stay no-ops (not the same error again),
    a new glob match is still seen (checked, and the root reported still broken), and it is in
    the graph once the root is fixed."""
    async with watching(tmp_path, BLOCK_ROOT) as (reloader, state, path):
        write_atomic(tmp_path / "pol" / "0.yaml", GAMMA)
        assert await until(lambda: "gamma" in state.graph.models)
        good = path.read_text(encoding="utf-8")
        outcomes: list[ReloadOutcome] = []
        reloader.add_listener(outcomes.append)
        write_atomic(path, good.replace("include: [pol/*.yaml]", "include: [pol/*.yaml"))
        assert await until(lambda: bool(outcomes))
        for _ in range(2):  # what an event on an unrelated file in a watched folder runs
            await reloader.reload("watch", force=False)
        await asyncio.sleep(0.3)
        assert [o.result for o in outcomes] == ["error"]
        write_atomic(tmp_path / "pol" / "1.yaml", DELTA)
        assert await until(lambda: len(outcomes) == 2)
        assert outcomes[-1].result == "error" and "YAML syntax error" in outcomes[-1].errors[0]
        write_atomic(path, good)
        assert await until(lambda: {"gamma", "delta"} <= set(state.graph.models))


# ---- start-up-only settings --------------------------------------------------------------------


def with_port(port: int, use: str = "alpha") -> str:
    return gateway_yaml(port, "", use=use)


async def test_restart_warnings_compare_with_the_config_the_process_started_with(
    tmp_path: Path,
) -> None:
    """The watcher may apply an edit before the forced reload does: either way the warnings
    are the same."""
    path = tmp_path / "concord.yaml"
    path.write_text(with_port(PORT), encoding="utf-8")
    reloader, state = await started(path)

    async def edit(text: str) -> ReloadOutcome:
        write_atomic(path, text)
        outcome = await reloader.reload("admin")
        assert outcome.ok and state.graph.version == load_graph(path, {}).version
        return outcome

    try:
        assert (await edit(with_port(PORT + 8))).warnings == (PORT_WARNING,)
        # another edit: the process still listens on PORT
        assert (await edit(with_port(PORT + 8, use="beta"))).warnings == (PORT_WARNING,)
        # a reload that changes nothing says so too
        outcome = await reloader.reload("admin")
        assert (outcome.changed, outcome.warnings) == (False, (PORT_WARNING,))
        # back to what it listens on: nothing waits for a restart any more
        assert (await edit(with_port(PORT, use="beta"))).warnings == ()
    finally:
        await reloader.stop(state)
        await state.pool.close()


async def test_a_worker_started_after_an_edit_warns_of_the_port_its_supervisor_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`concord serve --workers` binds the socket before any worker reads the config: a worker
    that starts (or replaces one) after the port was edited still listens on the old port."""
    monkeypatch.setenv(LISTEN_ENV, f"127.0.0.1:{PORT}")
    path = tmp_path / "concord.yaml"
    path.write_text(with_port(PORT + 8), encoding="utf-8")  # edited before this worker read it
    reloader, state = await started(path)
    try:
        write_atomic(path, with_port(PORT + 8, use="beta"))
        assert (await reloader.reload("admin")).warnings == (PORT_WARNING,)
        write_atomic(path, with_port(PORT, use="beta"))
        assert (await reloader.reload("admin")).warnings == ()
    finally:
        await reloader.stop(state)
        await state.pool.close()


# ---- against a real `concord serve` ------------------------------------------------------------


@pytest.mark.slow
def test_serve_picks_up_a_new_glob_match_under_a_flow_style_root(
    serve: StartServer, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "concord.yaml"
    root = gateway_yaml(port, FLOW_ROOT)  # no catch-all route: an unknown model is a 404
    config.write_text(root.replace("routes:\n  - {name: main, use: alpha}\n", ""), "utf-8")
    server = serve(config=config, port=port)
    url = server.url + "/v1/chat/completions"
    assert httpx.post(url, json=chat("gamma")).status_code == 404
    (tmp_path / "pol").mkdir()
    write_atomic(tmp_path / "pol" / "0.yaml", GAMMA)
    assert eventually(lambda: httpx.post(url, json=chat("gamma")).status_code == 200)
    assert str(tmp_path / "pol" / "0.yaml") in server.status()["files"]  # type: ignore[operator]


@pytest.mark.slow
def test_every_worker_warns_until_the_port_it_listens_on_is_back(serve: StartServer) -> None:
    server = serve(workers=2)
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: any worker may answer
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=server.url, limits=fresh, headers=admin, timeout=5) as client:

        def warnings_of(version: str) -> set[tuple[str, ...]]:
            """The warnings of 20 answers; empty until every answer serves `version`."""
            statuses = [client.get("/_admin/config").json() for _ in range(20)]
            if {s["version"] for s in statuses} != {version}:
                return set()
            return {tuple(s["last_reload"]["warnings"]) for s in statuses}

        def edit(text: str) -> str:
            write_atomic(server.config, text)
            return str(load_graph(server.config, {}).version)

        moved = edit(with_port(server.port + 1))
        assert eventually(lambda: warnings_of(moved) == {(PORT_WARNING,)}, timeout=10)
        other = edit(with_port(server.port + 1, use="beta"))
        assert eventually(lambda: warnings_of(other) == {(PORT_WARNING,)}, timeout=10)
        back = edit(with_port(server.port, use="beta"))
        assert eventually(lambda: warnings_of(back) == {()}, timeout=10)
