"""The JSON Schema layer: every violation as one located, readable line (SPEC §2, §6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.config.schema import SCHEMA_FILE, schema_diagnostics, schema_text, write_schema_file
from concord.config.source import read_source
from tests.conftest import WriteYaml

HEAD = "version: 1\n"
PROVIDERS = "providers:\n  demo: {type: mock}\n"
MODELS = "models:\n  m: {targets: [demo/m]}\n"
VALID = HEAD + PROVIDERS + MODELS  # lines 1-5; each case's own text starts on line 6


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def rendered(write_yaml: WriteYaml, text: str) -> list[str]:
    write_yaml("concord.yaml", text)
    return [d.render() for d in schema_diagnostics(read_source("concord.yaml", env={}))]


CASES = [
    pytest.param(VALID, [], id="valid"),
    pytest.param(
        VALID + "modles: {}\n",
        ["concord.yaml:6:1: modles: unknown field 'modles' (did you mean 'models'?)"],
        id="unknown-top-level-key",
    ),
    pytest.param(
        VALID + "routes:\n  - name: r\n    when: {modle: gpt-4o}\n",
        ["concord.yaml:8:12: routes[0].when.modle: unknown field 'modle' (did you mean 'model'?)"],
        id="unknown-key-inside-when-anyof",
    ),
    pytest.param(
        VALID + "routes:\n  - name: r\n    when: {input_tokens: {gtt: 5}}\n",
        [
            "concord.yaml:8:27: routes[0].when.input_tokens.gtt: unknown field 'gtt' "
            "(did you mean 'gt'?)"
        ],
        id="unknown-operator",
    ),
    pytest.param(
        HEAD + PROVIDERS + "models:\n  f: {targets: [{target: demo/m, wieght: 2}]}\n",
        [
            "concord.yaml:5:34: models.f.targets[0].wieght: unknown field 'wieght' "
            "(did you mean 'weight'?)"
        ],
        id="unknown-key-in-target-spec",
    ),
    pytest.param(
        VALID + "defaults:\n  context_overflow: truncat\n",
        [
            "concord.yaml:7:21: defaults.context_overflow: 'truncat' is not one of fallback, "
            "truncate, summarize (did you mean 'truncate'?)"
        ],
        id="enum-with-did-you-mean",
    ),
    pytest.param(
        HEAD + PROVIDERS + "models:\n  m: {targets: [demo/m], price: {input: abc}}\n",
        ["concord.yaml:5:41: models.m.price.input: expected a number, got 'abc'"],
        id="type",
    ),
    pytest.param(
        VALID + "defaults:\n  timeout: 10q\n",
        [
            "concord.yaml:7:12: defaults.timeout: '10q' is not a duration "
            "(use 250ms, 30s, 10m, 1h or 1d)"
        ],
        id="duration",
    ),
    pytest.param(
        VALID + "server:\n  max_body: 8 megs\n",
        [
            "concord.yaml:7:13: server.max_body: '8 megs' is not a size "
            "(use 512KiB, 8MiB or a number of bytes)"
        ],
        id="size",
    ),
    pytest.param(
        VALID + "routes:\n  - {name: r, timeout: true}\n",
        ["concord.yaml:7:24: routes[0].timeout: expected a duration or a number, got true"],
        id="no-branch-fits",
    ),
    pytest.param(
        VALID + "routes:\n  - {name: r, cache: true}\n",
        ["concord.yaml:7:22: routes[0].cache: expected false or a mapping, got true"],
        id="const-or-mapping",
    ),
    pytest.param(
        VALID + "server:\n  port: 70000\n",
        ["concord.yaml:7:9: server.port: must be at most 65535, got 70000"],
        id="maximum",
    ),
    pytest.param(
        HEAD + PROVIDERS + "models:\n  m: {targets: []}\n",
        ["concord.yaml:5:16: models.m.targets: must not be empty"],
        id="min-items",
    ),
    pytest.param(
        VALID + "routes:\n  - use: m\n",
        ["concord.yaml:7:5: routes[0]: missing required field 'name'"],
        id="required-in-item",
    ),
    pytest.param(
        "version: 2\nproviders: {}\n",
        [
            "concord.yaml:1:10: version: expected 1, got 2",
            "concord.yaml:1:1: <root>: missing required field 'models'",
        ],
        id="version-and-required",
    ),
    pytest.param(
        HEAD + MODELS + "providers: []\n",
        ["concord.yaml:4:12: providers: expected a mapping, got a list"],
        id="wrong-container",
    ),
    pytest.param(
        VALID + "auth:\n  keys: [{name: k, sha256: abc}]\n",
        [
            "concord.yaml:7:28: auth.keys[0].sha256: 'abc' is not a SHA-256 digest "
            "(64 lower-case hex characters)"
        ],
        id="sha256",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_schema_messages(write_yaml: WriteYaml, text: str, expected: list[str]) -> None:
    assert rendered(write_yaml, text) == expected


SECRETS = [
    pytest.param(
        VALID + "auth:\n  admin_key: 987654321\n",
        "concord.yaml:7:14: auth.admin_key: expected a string, got an integer",
        id="admin-key",
    ),
    pytest.param(
        HEAD + MODELS + "providers:\n  x: {type: openai, api_keys: [987654321]}\n",
        "concord.yaml:5:32: providers.x.api_keys[0]: expected a string, got an integer",
        id="api-key",
    ),
    pytest.param(
        HEAD + MODELS + "providers:\n  x: {type: openai, headers: {Authorization: 987654321}}\n",
        "concord.yaml:5:46: providers.x.headers.Authorization: expected a string, got an integer",
        id="header",
    ),
]


@pytest.mark.parametrize(("text", "expected"), SECRETS)
def test_secret_values_are_never_printed(write_yaml: WriteYaml, text: str, expected: str) -> None:
    lines = rendered(write_yaml, text)
    assert lines == [expected]
    assert "987654321" not in lines[0]


def test_the_same_value_outside_secret_paths_is_named(write_yaml: WriteYaml) -> None:
    lines = rendered(write_yaml, VALID + "server:\n  host: 987654321\n")
    assert lines == ["concord.yaml:7:9: server.host: expected a string, got 987654321"]


def test_checked_in_schema_is_current() -> None:
    editors_copy = Path(__file__).resolve().parents[2] / "schemas" / "concord.schema.json"
    for checked_in in (SCHEMA_FILE, editors_copy):
        assert checked_in.read_text(encoding="utf-8") == schema_text(), (
            f"{checked_in} is stale: run `concord schema > concord/config/concord.schema.json`"
        )


def test_write_schema_file_writes_the_schema_text(tmp_path: Path) -> None:
    target = write_schema_file(tmp_path / "out" / "schema.json")
    assert target.read_text(encoding="utf-8") == schema_text()
    assert schema_text().endswith("}\n")


def test_a_quoted_variable_where_a_number_belongs_says_to_drop_the_quotes(
    write_yaml: WriteYaml,
) -> None:
    text = VALID + 'server:\n  port: "${PORT:-8081}"\n'
    assert rendered(write_yaml, text) == [
        "concord.yaml:7:9: server.port: expected an integer, got '8081' (in quotes a variable "
        "stays text: write it unquoted to read a number or bool)"
    ]
