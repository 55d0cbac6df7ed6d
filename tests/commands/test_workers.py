"""`concord serve --workers N`: what each worker does before it serves (SPEC §4, §6)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from concord.gateway.app import CONFIG_ENV, app_from_env


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
def test_a_worker_with_an_invalid_config_says_where_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = worker_config(tmp_path, monkeypatch, "nowhere/m")
    with pytest.raises(SystemExit) as exited:
        app_from_env()
    message = str(exited.value.code)
    assert message.startswith(f"concord serve: {config} is not a valid configuration:")
    assert f"{config}:4:" in message  # file:line:col of the unknown provider
    assert "Traceback" not in message


@pytest.mark.usefixtures("restore_sighup")
def test_a_starting_worker_ignores_sighup_until_its_reloader_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor passes SIGHUP on to every worker, one that is still starting included."""
    worker_config(tmp_path, monkeypatch, "demo/m")
    app_from_env()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
