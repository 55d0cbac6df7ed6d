"""`concord serve --workers N`: what each worker does before it serves (SPEC §4, §6)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from concord.gateway.app import CONFIG_ENV, app_from_env, create_app


@pytest.fixture
def restore_sighup() -> Iterator[None]:
    previous = signal.getsignal(signal.SIGHUP)
    yield
    signal.signal(signal.SIGHUP, previous)


def worker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str) -> Path:
    """A config whose one model is served by `target`, where a worker finds it ($CONCORD_CONFIG)."""
    config = tmp_path / "concord.yaml"
    config.write_text(
        f"version: 1\nproviders: {{demo: {{type: mock}}}}\nmodels:\n  m: {{targets: [{target}]}}\n"
    )
    monkeypatch.setenv(CONFIG_ENV, str(config))
    return config


@pytest.mark.usefixtures("restore_sighup")
def test_a_worker_with_an_invalid_config_says_where_once_and_waits_for_a_valid_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A worker replacing one that died after a bad edit must not exit (the supervisor would
    start it again and again): it reports the problem once and starts when the file is fixed."""
    config = worker_config(tmp_path, monkeypatch, "nowhere/m")
    valid = config.read_text().replace("nowhere/m", "demo/m")
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:  # the operator fixes the file
            config.write_text(valid)

    monkeypatch.setattr("concord.gateway.app.time.sleep", wait)
    sigterm_at_load: list[object] = []

    def load(path: str) -> object:
        sigterm_at_load.append(signal.getsignal(signal.SIGTERM))
        return create_app(path)

    monkeypatch.setattr("concord.gateway.app.create_app", load)
    before = signal.getsignal(signal.SIGTERM)
    app = app_from_env(retry_every=0.25)
    assert app is not None and waits == [0.25, 0.25, 0.25]
    message = capsys.readouterr().err
    assert message.count("is not a valid configuration") == 1  # the same problem, said once
    assert message.startswith(f"concord serve: {config} is not a valid configuration;")
    assert f"{config}:4:" in message  # file:line:col of the unknown provider
    assert "Traceback" not in message
    assert sigterm_at_load[1:] == [signal.SIG_DFL] * 3  # waiting: SIGTERM ends it at once
    assert signal.getsignal(signal.SIGTERM) is before  # then the server's handlers are back


@pytest.mark.usefixtures("restore_sighup")
def test_a_starting_worker_ignores_sighup_until_its_reloader_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor passes SIGHUP on to every worker, one that is still starting included."""
    worker_config(tmp_path, monkeypatch, "demo/m")
    app_from_env()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN


def wait_at_most(times: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stubs the worker's sleep: each wait is noted, and one past `times` fails the test."""
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        assert len(sleeps) <= times, "the worker goes on waiting"

    monkeypatch.setattr("concord.gateway.app.time.sleep", sleep)
    return sleeps


class _StartingServer:
    """Stands for uvicorn's server, whose SIGTERM handler only notes a stop while it starts."""

    should_exit = False

    def handle_exit(self, sig: int, frame: object) -> None:
        self.should_exit = True


@pytest.mark.usefixtures("restore_sighup")
def test_a_stop_that_came_while_the_worker_started_is_heeded_instead_of_waiting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`concord serve` stopping while a replacement worker starts on a bad file: the server's
    handler noted the SIGTERM, and a worker that waited anyway would keep the supervisor from
    ever finishing its shutdown."""
    worker_config(tmp_path, monkeypatch, "nowhere/m")
    server = _StartingServer()
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        signal.raise_signal(signal.SIGTERM)
        sleeps = wait_at_most(3, monkeypatch)
        with pytest.raises(SystemExit) as stopped:
            app_from_env()
        assert stopped.value.code == 0 and sleeps == []
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit  # the server's, for its exit
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("restore_sighup")
def test_a_waiting_worker_whose_supervisor_is_gone_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A supervisor killed outright cannot stop its workers: one waiting for a valid file would
    wait forever, orphaned, with nothing to serve for."""
    worker_config(tmp_path, monkeypatch, "nowhere/m")
    parents = iter([4242, 4242, 1])  # at start, after the first wait, after the second
    monkeypatch.setattr("concord.gateway.app.os.getppid", lambda: next(parents))
    sleeps = wait_at_most(3, monkeypatch)
    with pytest.raises(SystemExit) as stopped:
        app_from_env(retry_every=0.5)
    assert stopped.value.code == 0 and sleeps == [0.5, 0.5]
