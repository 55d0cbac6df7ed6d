"""`concord validate` and `concord schema` as a user runs them (SPEC §6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from concord.cli import main
from concord.config.schema import schema_text
from tests.conftest import WriteYaml

VALID = """
version: 1
providers:
  demo: {type: mock}
models:
  m: {targets: [demo/m]}
"""
# A warning and nothing worse: a provider whose only key is unset (SPEC §2.1).
WARNS = VALID.replace(
    "  demo: {type: mock}\n",
    '  demo: {type: mock}\n  openai: {type: openai, api_keys: ["${CONCORD_TEST_UNSET_KEY:-}"]}\n',
)
INVALID = VALID + "defaults:\n  timeout: 10q\n  retyr: {}\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONCORD_CONFIG", raising=False)
    monkeypatch.delenv("PROXY_CONFIG_PATH", raising=False)
    monkeypatch.delenv("CONCORD_TEST_UNSET_KEY", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["validate", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_valid_file_exits_0(write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml("concord.yaml", VALID)
    assert run(capsys, "concord.yaml") == (0, ["concord.yaml: valid"])


def test_invalid_file_exits_1_with_one_line_per_problem(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml("concord.yaml", INVALID)
    assert run(capsys, "concord.yaml") == (
        1,
        [
            "concord.yaml:7:12: defaults.timeout: '10q' is not a duration "
            "(use 250ms, 30s, 10m, 1h or 1d)",
            "concord.yaml:8:3: defaults.retyr: unknown field 'retyr' (did you mean 'retry'?)",
            "concord.yaml: 2 errors",
        ],
    )


def test_warnings_pass_unless_strict(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml("concord.yaml", WARNS)
    code, lines = run(capsys, "concord.yaml")
    assert code == 0
    assert lines[-1] == "concord.yaml: valid (1 warning)"
    assert "warning: providers.openai.api_keys" in lines[0]
    code, lines = run(capsys, "--strict", "concord.yaml")
    assert code == 1
    assert lines[-1] == "concord.yaml: 1 error"
    assert "warning" not in lines[0]


def test_unreadable_files_exit_2(write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml("broken.yaml", "version: 1\nmodels: a: b\n")
    write_yaml("concord.yaml", INVALID)
    code, lines = run(capsys, "concord.yaml", "broken.yaml", "missing.yaml")
    assert code == 2
    assert lines[2:] == [
        "concord.yaml: 2 errors",
        "broken.yaml:2:10: <root>: YAML syntax error: mapping values are not allowed here",
        "broken.yaml: unreadable",
        "missing.yaml: <root>: cannot read: no such file",
        "missing.yaml: unreadable",
    ]


def test_several_files_report_each_and_fail_if_any_fails(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    write_yaml("good.yaml", VALID)
    write_yaml("bad.yaml", INVALID)
    code, lines = run(capsys, "good.yaml", "bad.yaml")
    assert code == 1
    assert lines[0] == "good.yaml: valid"
    assert lines[-1] == "bad.yaml: 2 errors"


def test_json_format(write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]) -> None:
    write_yaml("good.yaml", WARNS)
    write_yaml("bad.yaml", INVALID)
    assert main(["validate", "--format", "json", "good.yaml", "bad.yaml", "nope.yaml"]) == 2
    report = json.loads(capsys.readouterr().out)
    good, bad, nope = report["files"]
    assert (good["file"], good["valid"], len(good["version"])) == ("good.yaml", True, 12)
    assert good["errors"] == []
    assert [w["path"] for w in good["warnings"]] == ["providers.openai.api_keys"]
    assert bad["valid"] is False
    assert bad["errors"][0] == {
        "severity": "error",
        "file": "bad.yaml",
        "line": 7,
        "col": 12,
        "path": "defaults.timeout",
        "message": "'10q' is not a duration",
        "hint": "use 250ms, 30s, 10m, 1h or 1d",
        "code": "pattern",
    }
    assert (nope["valid"], nope["unreadable"], nope["version"]) == (False, True, None)


def test_default_file_comes_from_the_environment(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml("concord.yaml", INVALID)
    write_yaml("legacy.yaml", VALID)
    write_yaml("env.yaml", VALID)
    assert run(capsys)[0] == 1  # ./concord.yaml
    monkeypatch.setenv("PROXY_CONFIG_PATH", "legacy.yaml")
    assert run(capsys) == (0, ["legacy.yaml: valid"])
    monkeypatch.setenv("CONCORD_CONFIG", "env.yaml")
    assert run(capsys) == (0, ["env.yaml: valid"])


def test_secrets_never_reach_the_output(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "424242424242"  # a number where a string belongs: an error about the secret itself
    write_yaml("concord.yaml", VALID + f"auth:\n  admin_key: {secret}\n")
    write_yaml(
        "keys.yaml",
        VALID.replace("mock}", f"mock, api_keys: [{secret}], headers: {{x: {secret}}}}}"),
    )
    for argv in (["concord.yaml", "keys.yaml"], ["--format", "json", "concord.yaml", "keys.yaml"]):
        code, lines = run(capsys, *argv)
        assert code == 1
        text = "\n".join(lines)
        assert "admin_key" in text and "api_keys[0]" in text and "headers.x" in text
        assert secret not in text


def test_a_key_expanded_into_the_wrong_field_is_named_not_printed(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${OPENAI_KEY}` pasted into `timeout` by mistake: the error must not print the key."""
    secret = "sk-live-0123456789abcdef"
    monkeypatch.setenv("OPENAI_KEY", secret)
    for reference in ("${OPENAI_KEY}", "${OPENAI_KEY:-60s}"):  # set, a default changes nothing
        write_yaml("concord.yaml", VALID.replace("mock}", f'mock, timeout: "{reference}"}}'))
        for argv in (["concord.yaml"], ["--format", "json", "concord.yaml"]):
            code, lines = run(capsys, *argv)
            text = "\n".join(lines)
            assert code == 1 and "timeout" in text
            assert "${OPENAI_KEY}" in text  # what the error is about, by its name
            assert secret not in text


def test_schema_command_prints_the_checked_in_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_text()


def test_the_installed_command_runs(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", VALID)
    result = subprocess.run(
        [sys.executable, "-m", "concord.cli", "validate", "concord.yaml"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout) == (0, "concord.yaml: valid\n")
