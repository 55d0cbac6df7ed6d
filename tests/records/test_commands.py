"""SPEC §6: `concord keys|workspaces|usage` work straight on the database the config names."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest

from concord.cli import main
from concord.records.keys import hash_key


@pytest.fixture
def config(migrated_url: str, tmp_path: Path) -> Path:
    path = tmp_path / "concord.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            storage: {{database: "{migrated_url}"}}
            workspaces:
              acme: {{budget: {{limit_usd: 200, period: month, on_exceed: block}}, tags: [paid]}}
            providers:
              demo: {{type: mock}}
            models:
              gpt-4o: {{targets: [demo/gpt-4o]}}
            """
        )
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_workspaces_list_shows_declared_ones(config: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, "workspaces", "list", "-c", str(config))
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "SOURCE", "BUDGET", "SPEND_USD", "TAGS"]
    assert "acme" in out and "config" in out


def test_workspaces_create_then_conflict(config: Path, capsys: pytest.CaptureFixture[str]):
    args = ["workspaces", "create", "team-b", "--budget", "5", "--period", "day", "-c", str(config)]
    assert run(capsys, *args)[0] == 0
    code, out, err = run(capsys, *args)
    assert code == 1
    assert err.strip() == "error: workspace 'team-b' already exists"
    assert "Traceback" not in err

    _, out, _ = run(capsys, "workspaces", "list", "--json", "-c", str(config))
    team = next(w for w in json.loads(out)["data"] if w["name"] == "team-b")
    assert team["budget"]["period"] == "day" and team["source"] == "api"


def test_workspaces_create_checks_the_downgrade_target(
    config: Path, capsys: pytest.CaptureFixture[str]
):
    base = ["workspaces", "create", "team-c", "--budget", "5", "--on-exceed", "downgrade"]
    code, _, err = run(capsys, *base, "--downgrade-to", "gpt-4", "-c", str(config))
    assert code == 1
    assert err.strip() == (
        "error: budget.downgrade_to 'gpt-4' is not a catalog model (known: gpt-4o)"
    )
    assert run(capsys, *base, "--downgrade-to", "gpt-4o", "-c", str(config))[0] == 0


def test_keys_create_list_revoke(config: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(
        capsys, "keys", "create", "--workspace", "acme", "--name", "ci", "--tag", "batch",
        "--json", "-c", str(config),
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert created["key"].startswith("ck-")

    code, out, _ = run(capsys, "keys", "list", "--workspace", "acme", "-c", str(config))
    assert code == 0
    assert created["id"] in out
    assert created["key"] not in out and hash_key(created["key"]) not in out

    code, out, _ = run(capsys, "keys", "revoke", created["id"], "-c", str(config))
    assert code == 0 and "Revoked" in out
    _, out, _ = run(capsys, "keys", "list", "--json", "-c", str(config))
    assert json.loads(out)["data"][0]["status"] == "revoked"


def _create_key(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> dict[str, str]:
    code, out, _ = run(capsys, "keys", "create", *args, "--json", "-c", str(config))
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


def test_keys_list_filters_by_user(config: Path, capsys: pytest.CaptureFixture[str]):
    alice = _create_key(capsys, config, "--workspace", "acme", "--name", "a", "--user", "alice")
    bob = _create_key(capsys, config, "--workspace", "acme", "--name", "b", "--user", "bob")

    code, out, _ = run(capsys, "keys", "list", "--user", "alice", "--json", "-c", str(config))
    assert code == 0
    assert [k["id"] for k in json.loads(out)["data"]] == [alice["id"]]
    _, out, _ = run(
        capsys, "keys", "list", "--user", "bob", "--workspace", "acme", "-c", str(config)
    )
    assert bob["id"] in out and alice["id"] not in out


def test_keys_revoke_by_user(config: Path, capsys: pytest.CaptureFixture[str]):
    a1 = _create_key(capsys, config, "--workspace", "acme", "--name", "a1", "--user", "alice")
    a2 = _create_key(capsys, config, "--workspace", "default", "--name", "a2", "--user", "alice")
    bob = _create_key(capsys, config, "--workspace", "acme", "--name", "b", "--user", "bob")

    code, out, _ = run(
        capsys, "keys", "revoke", "--user", "alice", "--workspace", "acme", "-c", str(config)
    )
    assert code == 0
    assert out.splitlines() == [f"Revoked key {a1['id']} (a1, workspace acme, user alice)."]

    code, out, _ = run(capsys, "keys", "revoke", "--user", "alice", "--json", "-c", str(config))
    assert code == 0
    assert [(k["id"], k["status"]) for k in json.loads(out)["data"]] == [(a2["id"], "revoked")]

    code, _, err = run(capsys, "keys", "revoke", "--user", "alice", "-c", str(config))
    assert code == 1 and err.strip() == "error: no active API key of user 'alice'"
    _, out, _ = run(capsys, "keys", "list", "--json", "-c", str(config))
    status = {k["id"]: k["status"] for k in json.loads(out)["data"]}
    assert status == {a1["id"]: "revoked", a2["id"]: "revoked", bob["id"]: "active"}


def test_keys_revoke_by_key_value(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    first = _create_key(capsys, config, "--workspace", "acme", "--name", "a1", "--user", "alice")
    second = _create_key(capsys, config, "--workspace", "acme", "--name", "a2", "--user", "alice")

    code, out, err = run(capsys, "keys", "revoke", "--key", first["key"], "-c", str(config))
    assert code == 0
    assert out.strip() == f"Revoked key {first['id']} (a1, workspace acme, user alice)."
    assert first["key"] not in out + err

    monkeypatch.setattr("sys.stdin", io.StringIO(second["key"] + "\n"))  # `--key -`: from stdin
    code, out, err = run(capsys, "keys", "revoke", "--key", "-", "--json", "-c", str(config))
    assert code == 0
    assert [k["id"] for k in json.loads(out)["data"]] == [second["id"]]
    assert second["key"] not in out + err

    unknown = "ck-" + "n" * 40
    code, out, err = run(capsys, "keys", "revoke", "--key", unknown, "-c", str(config))
    assert code == 1 and err.strip() == "error: no API key matches the given key"
    assert unknown not in out + err


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["key_1", "--user", "alice"],
        ["--user", "alice", "--key", "ck-abc"],
        ["key_1", "--key", "ck-abc"],
        ["--key", "ck-abc", "--workspace", "acme"],
        ["key_1", "--workspace", "acme"],
    ],
)
def test_keys_revoke_takes_exactly_one_form(
    config: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
):
    code, out, err = run(capsys, "keys", "revoke", *argv, "-c", str(config))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "ck-abc" not in err


def test_key_for_unknown_workspace_is_one_clear_line(
    config: Path, capsys: pytest.CaptureFixture[str]
):
    code, _, err = run(
        capsys, "keys", "create", "--workspace", "ghost", "--name", "x", "-c", str(config)
    )
    assert code == 1
    assert err.strip() == "error: no workspace named 'ghost'"


def test_usage_groups_and_validates(config: Path, capsys: pytest.CaptureFixture[str]):
    code, out, _ = run(capsys, "usage", "--group-by", "workspace,model", "-c", str(config))
    assert code == 0 and "(none)" in out
    code, _, err = run(capsys, "usage", "--group-by", "provider", "-c", str(config))
    assert code == 1 and "cannot group by 'provider'" in err
    code, out, _ = run(capsys, "usage", "--last-hours", "2", "--json", "-c", str(config))
    assert code == 0 and json.loads(out)["data"] == []


def test_config_is_found_through_the_environment(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.delenv("CONCORD_CONFIG", raising=False)
    monkeypatch.setenv("PROXY_CONFIG_PATH", str(config))
    code, out, _ = run(capsys, "workspaces", "list")
    assert code == 0 and "acme" in out


def test_missing_config_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code, _, err = run(capsys, "keys", "list", "-c", str(tmp_path / "absent.yaml"))
    assert code == 1
    assert err.startswith("error: no config file at") and len(err.strip().splitlines()) == 1


def test_unreachable_database_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "concord.yaml"
    path.write_text(
        "version: 1\n"
        "storage: {database: 'postgresql://app:pw-secret@127.0.0.1:1/concord'}\n"
        "providers: {demo: {type: mock}}\n"
        "models: {m: {targets: [demo/m]}}\n"
    )
    code, _, err = run(capsys, "keys", "list", "-c", str(path))
    assert code == 1
    assert err.startswith("error: database error") and len(err.strip().splitlines()) == 1
    assert "pw-secret" not in err


def create_expiring(capsys: pytest.CaptureFixture[str], config: Path, expires: str):
    argv = ["keys", "create", "--workspace", "acme", "--name", "ci", "--expires", expires]
    return run(capsys, *argv, "-c", str(config))


@pytest.mark.parametrize("expires", ["0d", "0s", "2020-01-01T00:00:00Z"])
def test_keys_create_refuses_a_key_that_would_never_work(
    config: Path, capsys: pytest.CaptureFixture[str], expires: str
):
    code, out, err = create_expiring(capsys, config, expires)
    assert code == 1
    assert err.strip() == "error: --expires must be in the future"
    assert "sk-" not in out  # no key was printed, none was stored
    _, listed, _ = run(capsys, "keys", "list", "--json", "-c", str(config))
    assert json.loads(listed)["data"] == []


def test_keys_create_with_a_duration_expires_that_far_ahead(
    config: Path, capsys: pytest.CaptureFixture[str]
):
    assert create_expiring(capsys, config, "30d")[0] == 0
    _, listed, _ = run(capsys, "keys", "list", "--json", "-c", str(config))
    (key,) = json.loads(listed)["data"]
    assert key["status"] == "active" and key["expires_at"] > key["created_at"]
