"""The loading pipeline shared by validate, explain, test and serve (STYLE habit 12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from concord.config.errors import ConfigError, ConfigUnreadable
from concord.config.load import load, load_graph
from tests.conftest import WriteYaml

VALID = """
version: 1
providers:
  demo: {type: mock}
  openai: {type: openai, api_keys: ["${OPENAI_KEY:-}"]}
models:
  m: {targets: [demo/m]}
routes:
  - name: default
    use: $requested
tests:
  - name: routes to m
    request: {model: m}
    expect: {model: m}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_valid_file_loads_into_a_config_with_a_version(
    write_yaml: WriteYaml, tmp_path: Path
) -> None:
    write_yaml("concord.yaml", VALID)
    loaded = load("concord.yaml", env={"OPENAI_KEY": "sk-1"})
    assert loaded.ok, [d.render() for d in loaded.diagnostics]
    assert loaded.config is not None
    assert loaded.config.models["m"].targets == ["demo/m"]
    assert re.fullmatch(r"[0-9a-f]{12}", loaded.version)
    assert loaded.files == [str(tmp_path / "concord.yaml")]
    assert loaded.base_dir == tmp_path


def test_warnings_do_not_make_a_config_invalid(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", VALID)
    loaded = load("concord.yaml", env={})
    assert loaded.ok
    assert [d.path for d in loaded.warnings] == ["providers.openai.api_keys"]


def test_version_follows_the_expanded_config_but_not_its_tests(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", VALID)
    first = load("concord.yaml", env={"OPENAI_KEY": "sk-1"}).version
    assert load("concord.yaml", env={"OPENAI_KEY": "sk-1"}).version == first
    assert load("concord.yaml", env={"OPENAI_KEY": "sk-2"}).version != first
    write_yaml("concord.yaml", VALID.replace("name: routes to m", "name: renamed test"))
    assert load("concord.yaml", env={"OPENAI_KEY": "sk-1"}).version == first


def test_every_error_is_collected_and_sorted_by_file_and_line(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        include: [policies/p.yaml]
        providers:
          demo: {type: mokc}
        models:
          m: {targets: [demo/m], balance: weighed}
        """,
    )
    write_yaml("policies/p.yaml", "defaults:\n  timeout: 10q\n  retry:\n    attempts: ${TRIES}\n")
    loaded = load("concord.yaml", env={})
    assert not loaded.ok
    assert loaded.config is None and loaded.graph is None
    assert [f"{d.location}: {d.path}" for d in loaded.errors] == [
        "concord.yaml:4:16: providers.demo.type",
        "concord.yaml:6:35: models.m.balance",
        "policies/p.yaml:2:12: defaults.timeout",
        "policies/p.yaml:4:15: defaults.retry.attempts",
    ]


def test_model_errors_after_the_schema_are_located(write_yaml: WriteYaml) -> None:
    # The schema does not assert date-time formats; pydantic does, and is located all the same.
    write_yaml(
        "concord.yaml",
        VALID
        + "auth:\n  keys:\n    - name: k\n      sha256: "
        + "a" * 64
        + "\n      expires: next tuesday\n",
    )
    loaded = load("concord.yaml", env={})
    assert not loaded.ok
    (error,) = loaded.errors
    assert error.path == "auth.keys[0].expires"
    assert str(error.location) == "concord.yaml:18:16"


def test_unreadable_file_raises(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nmodels: [\n")
    with pytest.raises(ConfigUnreadable):
        load("concord.yaml")


def test_load_graph_raises_config_error_listing_the_problems(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nproviders: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_graph("concord.yaml", env={})
    assert [d.message for d in caught.value.diagnostics] == ["missing required field 'models'"]
