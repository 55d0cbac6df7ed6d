"""The reloader in-process (SPEC §4): what it watches, when it reloads, what survives a reload."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from concord.config.load import load_graph
from concord.engine.graph import BreakerPolicy, ProviderSpec, RequestContext
from concord.engine.reload import Reloader, ReloadOutcome, fingerprint, watch_set
from concord.gateway.app import GatewayState
from concord.providers.base import Provider
from concord.providers.mock import MockProvider
from concord.providers.registry import ProviderPool
from tests.reload.conftest import gateway_yaml, until, write_atomic

PORT = 18080
THIRD = "  c: {type: mock, reply: from C}\n"


class TrackedMock(MockProvider):
    """A mock adapter that remembers being closed."""

    def __init__(self, spec: ProviderSpec) -> None:
        super().__init__(spec)
        self.closed = False

    async def close(self) -> None:
        self.closed = True


def tracked(spec: ProviderSpec) -> Provider:
    return TrackedMock(spec)


def config_with(use: str = "alpha", *, third: bool = False) -> str:
    text = gateway_yaml(PORT, "", use=use)
    return text.replace("models:\n", THIRD + "models:\n") if third else text


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Reloader, GatewayState, Path]]:
    path = tmp_path / "concord.yaml"
    path.write_text(config_with(third=True), encoding="utf-8")
    pool = ProviderPool(grace=0.05, build=tracked)
    state = GatewayState(load_graph(path, {}), pool=pool)
    reloader = Reloader(str(path), {}, step_ms=20)
    await reloader.start(state)
    yield reloader, state, path
    await reloader.stop(state)
    await state.pool.close()


def test_watch_set_covers_includes_symlink_targets_and_glob_folders(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "concord.yaml").write_text(
        "version: 1\ninclude: [policies/*.yaml, base.yaml, later/**/*.yaml]\n", encoding="utf-8"
    )
    root = tmp_path / "concord.yaml"
    os.symlink(tmp_path / "real" / "concord.yaml", root)
    watch = watch_set(str(root), [str(root)])
    # includes resolve against the file as the loader names it, not its symlink target
    assert watch.globs == (str(tmp_path / "policies" / "*.yaml"), str(tmp_path / "later/**/*.yaml"))
    assert str(tmp_path / "base.yaml") in watch.files  # watched before it exists
    assert watch.links == {str(tmp_path / "real" / "concord.yaml")}
    # folders that do not exist yet are covered by their nearest existing parent
    assert watch.dirs == {str(tmp_path), str(tmp_path / "real")}
    assert watch.recursive  # `**` needs the subtree
    assert watch.matters(str(tmp_path / "policies" / "a.yaml"))
    assert watch.matters(str(tmp_path / "policies"))  # the glob's folder being created
    assert watch.matters(str(tmp_path / "..data"))  # a ConfigMap swap
    assert not watch.matters(str(tmp_path / ".concord.yaml.swp"))
    assert not watch.matters(str(tmp_path / "notes.txt"))


def test_fingerprint_follows_content_and_new_glob_matches(tmp_path: Path) -> None:
    root = tmp_path / "concord.yaml"
    root.write_text("version: 1\ninclude: [policies/*.yaml]\n", encoding="utf-8")
    watch = watch_set(str(root), [str(root)])
    first = fingerprint(watch)
    assert fingerprint(watch) == first
    os.utime(root, (0, 0))  # a touch alone is not a change
    assert fingerprint(watch) == first
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "a.yaml").write_text("routes: []\n", encoding="utf-8")
    second = fingerprint(watch)
    assert second != first
    root.write_text("version: 1\ninclude: [policies/*.yaml]\n# note\n", encoding="utf-8")
    assert fingerprint(watch) not in (first, second)


async def test_file_edit_is_swapped_in(running: tuple[Reloader, GatewayState, Path]) -> None:
    reloader, state, path = running
    outcomes: list[ReloadOutcome] = []
    reloader.add_listener(outcomes.append)
    before = state.graph
    write_atomic(path, config_with("beta", third=True))
    assert await until(lambda: state.graph is not before)
    assert state.graph.decide(RequestContext(endpoint="chat", model="alpha")).model == "beta"
    assert [(o.result, o.trigger, o.changed) for o in outcomes] == [("ok", "watch", True)]
    assert reloader.counts == {"ok": 1, "error": 0}


async def test_unchanged_content_is_a_no_op(running: tuple[Reloader, GatewayState, Path]) -> None:
    reloader, state, path = running
    outcomes: list[ReloadOutcome] = []
    reloader.add_listener(outcomes.append)
    before = state.graph
    write_atomic(path, path.read_text(encoding="utf-8"))  # rewritten, same bytes
    await asyncio.sleep(0.3)
    assert outcomes == []
    assert state.graph is before


async def test_invalid_reload_keeps_previous_graph(
    running: tuple[Reloader, GatewayState, Path], caplog: pytest.LogCaptureFixture
) -> None:
    reloader, state, path = running
    outcomes: list[ReloadOutcome] = []
    reloader.add_listener(outcomes.append)
    before = state.graph
    write_atomic(path, config_with("gamma", third=True))
    assert await until(lambda: bool(outcomes))
    assert state.graph is before
    (outcome,) = outcomes
    assert outcome.result == "error"
    assert outcome.version == before.version
    assert outcome.errors[0].startswith(f"{path}:")
    assert "unknown model 'gamma'" in outcome.errors[0]
    assert outcome.errors[0] in caplog.text  # logged on concord.reload
    assert reloader.status()["last_reload"]["result"] == "error"
    assert reloader.counts == {"ok": 0, "error": 1}


async def test_a_failing_listener_does_not_stop_reloads(
    running: tuple[Reloader, GatewayState, Path],
) -> None:
    reloader, _, path = running

    def broken(outcome: ReloadOutcome) -> None:
        raise RuntimeError("listener bug")

    seen: list[str] = []
    reloader.add_listener(broken)
    reloader.add_listener(lambda outcome: seen.append(outcome.result))
    path.write_text(config_with("beta", third=True), encoding="utf-8")
    outcome = await reloader.reload("admin")
    assert outcome.ok and outcome.changed
    assert seen[-1] == "ok"


async def test_state_and_unchanged_providers_survive_a_reload(
    running: tuple[Reloader, GatewayState, Path],
) -> None:
    reloader, state, path = running
    kept, dropped = state.pool.get("a"), state.pool.get("c")
    runtime = state.runtime
    runtime.breakers.failure("a/m", BreakerPolicy(failures=1, cooldown=600))
    assert runtime.breakers.state("a/m") == "open"
    path.write_text(config_with("beta"), encoding="utf-8")  # provider `c` removed
    outcome = await reloader.reload("admin")
    assert outcome.changed
    assert state.pool.get("a") is kept  # same adapter object, same pooled session
    assert "c" not in state.pool
    assert state.runtime is runtime and runtime.breakers.state("a/m") == "open"
    # the removed adapter drains for the grace period, then is closed
    assert isinstance(dropped, TrackedMock) and not dropped.closed
    assert await until(lambda: dropped.closed, timeout=1.0)
    assert isinstance(kept, TrackedMock) and not kept.closed


async def test_new_glob_match_in_a_new_folder_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "concord.yaml"
    path.write_text(gateway_yaml(PORT, "include: [extra/*.yaml]\n"), encoding="utf-8")
    state = GatewayState(load_graph(path, {}))
    reloader = Reloader(str(path), {}, step_ms=20)
    await reloader.start(state)
    try:
        (tmp_path / "extra").mkdir()
        write_atomic(tmp_path / "extra" / "gamma.yaml", "models: {gamma: {targets: [a/g]}}\n")
        assert await until(lambda: "gamma" in state.graph.models)
    finally:
        await reloader.stop(state)
        await state.pool.close()


async def test_start_up_only_settings_are_named_in_the_reload_warnings(
    running: tuple[Reloader, GatewayState, Path],
) -> None:
    """A reload applies what it can and says which changes wait for a restart, never showing the
    values (a state or database URL may hold a password)."""
    reloader, state, path = running
    secret_url = "redis://:s3cret-pass@redis.internal:6379/0"
    edited = config_with("beta", third=True).replace(f"port: {PORT}", f"port: {PORT + 1}")
    write_atomic(path, edited + f'storage: {{state: "{secret_url}"}}\n')
    outcome = await reloader.reload("api")
    assert (outcome.result, outcome.changed) == ("ok", True)
    assert state.graph.decide(RequestContext(endpoint="chat", model="alpha")).model == "beta"
    assert outcome.warnings == (
        "server.port: changed, but applied only when the server restarts",
        "storage.state: changed, but applied only when the server restarts",
    )
    assert "s3cret" not in repr(outcome.as_dict())
