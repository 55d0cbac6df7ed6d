"""Reading concord.yaml: positions, includes (SPEC §2.9) and ${VAR} expansion (SPEC §2.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from concord.config.errors import ConfigUnreadable, Location
from concord.config.source import Source, read_includes, read_source
from tests.conftest import WriteYaml


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # included files are shown relative to the current directory


def rendered(source: Source) -> list[str]:
    return [d.render() for d in source.diagnostics]


# --- positions ----------------------------------------------------------------------------------


def test_where_points_at_values_keys_and_list_items(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        models:
          gpt-4o:
            targets: [openai/gpt-4o, azure/gpt-4o]
        routes:
          - name: default
            use: gpt-4o
        """,
    )
    source = read_source("concord.yaml", env={})
    assert source.where(("version",)) == Location("concord.yaml", 1, 10)
    assert source.key_where(("models", "gpt-4o")) == Location("concord.yaml", 3, 3)
    assert source.where(("models", "gpt-4o", "targets", 1)) == Location("concord.yaml", 4, 30)
    assert source.where(("routes", 0)) == Location("concord.yaml", 6, 5)
    assert source.where(("routes", 0, "use")) == Location("concord.yaml", 7, 10)
    assert source.key_where(("routes", 0, "use")) == Location("concord.yaml", 7, 5)


def test_where_falls_back_to_the_nearest_existing_ancestor(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nroutes:\n  - name: a\n")
    source = read_source("concord.yaml", env={})
    assert source.where(("routes", 0, "when", "model")) == Location("concord.yaml", 3, 5)
    assert source.key_where(("routes", 0, "nope")) == Location("concord.yaml", 3, 5)
    assert source.where(("absent",)) == Location("concord.yaml", 1, 1)


def test_tree_is_plain_python_with_yaml_types(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        a: {int: 3, float: 2.5, yes: true, none: null, text: "7", date: 2025-01-31}
        base: &base {x: 1, y: 2}
        merged: {<<: *base, y: 3}
        """,
    )
    tree = read_source("concord.yaml", env={}).tree
    assert tree["a"] == {
        "int": 3,
        "float": 2.5,
        "yes": True,
        "none": None,
        "text": "7",
        "date": "2025-01-31",
    }
    assert type(tree["a"]) is dict
    assert tree["merged"] == {"x": 1, "y": 3}


def test_duplicate_key_in_one_file_names_both_locations(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nmodels:\n  a: {}\n  a: {targets: [x/y]}\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "concord.yaml:4:3: models.a: defined twice: here and at concord.yaml:3:3"
    ]
    assert source.tree["models"]["a"] == {}


def test_yaml_syntax_error_is_unreadable_with_its_position(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nmodels: a: b\n")
    with pytest.raises(ConfigUnreadable) as caught:
        read_source("concord.yaml", env={})
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.render() == (
        "concord.yaml:2:10: <root>: YAML syntax error: mapping values are not allowed here"
    )


def test_missing_file_is_unreadable() -> None:
    with pytest.raises(ConfigUnreadable, match=r"missing\.yaml"):
        read_source("missing.yaml", env={})


def test_top_level_must_be_a_mapping(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "- version: 1\n")
    source = read_source("concord.yaml", env={})
    assert source.tree == {}
    assert rendered(source) == [
        "concord.yaml:1:1: <root>: the top level of a config file must be a mapping"
    ]


def test_empty_file_is_an_empty_mapping(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "# nothing yet\n")
    source = read_source("concord.yaml", env={})
    assert (source.tree, source.diagnostics) == ({}, [])


# --- includes (SPEC §2.9) -----------------------------------------------------------------------


def test_includes_merge_maps_and_list_files_in_load_order(
    write_yaml: WriteYaml, tmp_path: Path
) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        include: [policies/*.yaml]
        defaults: {timeout: 30s}
        models: {a: {targets: [p/a]}}
        """,
    )
    write_yaml("policies/b.yaml", "models: {b: {targets: [p/b]}}\n")
    write_yaml("policies/a.yaml", "defaults: {retry: {attempts: 3}}\n")
    source = read_source("concord.yaml", env={})
    assert source.diagnostics == []
    assert source.tree == {
        "version": 1,
        "defaults": {"timeout": "30s", "retry": {"attempts": 3}},
        "models": {"a": {"targets": ["p/a"]}, "b": {"targets": ["p/b"]}},
    }
    assert source.files == [
        str(tmp_path / "concord.yaml"),
        str(tmp_path / "policies/a.yaml"),
        str(tmp_path / "policies/b.yaml"),
    ]
    assert source.where(("models", "b", "targets", 0)) == Location("policies/b.yaml", 1, 24)


def test_a_key_defined_in_two_files_is_an_error_naming_both(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        include: [policies/a.yaml]
        models:
          gpt-4o: {targets: [openai/gpt-4o]}
        server: {port: 8080}
        """,
    )
    write_yaml(
        "policies/a.yaml",
        """
        server: {port: 9090, host: 0.0.0.0}
        models:
          gpt-4o: {targets: [azure/gpt-4o]}
        """,
    )
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "policies/a.yaml:1:10: server.port: defined twice: here and at concord.yaml:5:10",
        "policies/a.yaml:3:3: models.gpt-4o: defined twice: here and at concord.yaml:4:3",
    ]
    assert source.tree["models"]["gpt-4o"] == {"targets": ["openai/gpt-4o"]}
    assert source.tree["server"] == {"port": 8080, "host": "0.0.0.0"}


def test_lists_concatenate_after_the_including_files_own(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        include: [policies/*.yaml]
        routes:
          - name: root
        """,
    )
    write_yaml(
        "policies/a.yaml",
        """
        include: [nested/*.yaml]
        routes:
          - name: a
        """,
    )
    write_yaml("policies/nested/n.yaml", "routes:\n  - name: nested\n")
    write_yaml("policies/b.yaml", "routes:\n  - name: b\ntests:\n  - name: t\n")
    source = read_source("concord.yaml", env={})
    assert [r["name"] for r in source.tree["routes"]] == ["root", "a", "nested", "b"]
    assert source.tree["tests"] == [{"name": "t"}]
    assert source.where(("routes", 0, "name")) == Location("concord.yaml", 4, 11)
    assert source.where(("routes", 2, "name")) == Location("policies/nested/n.yaml", 2, 11)
    assert source.where(("routes", 3)) == Location("policies/b.yaml", 2, 5)


def test_include_cycle_is_an_error_naming_the_chain(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\ninclude: [a.yaml]\n")
    write_yaml("a.yaml", "include: [b.yaml]\n")
    write_yaml("b.yaml", "include: [concord.yaml]\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "b.yaml:1:11: include: include cycle: concord.yaml -> a.yaml -> b.yaml -> concord.yaml"
    ]


def test_a_glob_beside_the_root_file_does_not_include_it_or_its_includers(
    write_yaml: WriteYaml,
) -> None:
    """A flat ConfigMap mount: `*.yaml` beside concord.yaml matches concord.yaml itself, and a
    policy file's own `*.yaml` matches the files including it. Those are skipped, not cycles."""
    write_yaml("concord.yaml", 'version: 1\ninclude: ["*.yaml"]\n')
    write_yaml("limits.yaml", 'include: ["*.yaml"]\nrate_limits: [{name: l, rpm: 1}]\n')
    write_yaml("routes.yaml", "routes: [{name: r, use: m}]\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "concord.yaml:2:11: warning: include: routes.yaml is already included "
        "(at limits.yaml:1:11); included once"
    ]
    assert source.tree["rate_limits"] == [{"name": "l", "rpm": 1}]
    assert source.tree["routes"] == [{"name": "r", "use": "m"}]


def test_version_is_only_allowed_in_the_root_file(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\ninclude: [p.yaml]\n")
    write_yaml("p.yaml", "version: 1\nrate_limits: []\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == ["p.yaml:1:1: version: only the root file may set version"]
    assert source.tree == {"version": 1, "rate_limits": []}


def test_glob_matching_nothing_warns_and_missing_literal_file_errors(
    write_yaml: WriteYaml,
) -> None:
    write_yaml("concord.yaml", "version: 1\ninclude:\n  - policies/*.yaml\n  - extra.yaml\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "concord.yaml:3:5: warning: include: include 'policies/*.yaml' matches no file",
        "concord.yaml:4:5: include: included file 'extra.yaml' does not exist",
    ]


def test_includes_resolve_relative_to_the_including_file(
    write_yaml: WriteYaml, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_yaml("conf/concord.yaml", "version: 1\ninclude: [policies/p.yaml]\n")
    write_yaml("conf/policies/p.yaml", "include: [q.yaml]\n")
    write_yaml("conf/policies/q.yaml", "rate_limits: [{name: q}]\n")
    monkeypatch.chdir(tmp_path / "conf" / "policies")
    source = read_source(tmp_path / "conf" / "concord.yaml", env={})
    assert source.diagnostics == []
    assert source.tree["rate_limits"] == [{"name": "q"}]
    assert source.where(("rate_limits", 0)).file == "q.yaml"


def test_include_paths_expand_environment_variables(write_yaml: WriteYaml) -> None:
    """SPEC §2.1: `${VAR}` in any string, include paths too: a policy directory chosen per
    environment, with a default; an unset one is an error naming it, not a silent no-match."""
    write_yaml("concord.yaml", 'version: 1\ninclude: ["${POLICY_DIR:-conf.d}/*.yaml"]\n')
    write_yaml("conf.d/a.yaml", "rate_limits: [{name: from-default}]\n")
    write_yaml("prod.d/a.yaml", "rate_limits: [{name: from-prod}]\n")
    source = read_source("concord.yaml", env={})
    assert source.diagnostics == []
    assert source.tree["rate_limits"] == [{"name": "from-default"}]
    assert read_source("concord.yaml", env={"POLICY_DIR": "prod.d"}).tree["rate_limits"] == [
        {"name": "from-prod"}
    ]
    assert read_includes("concord.yaml", env={"POLICY_DIR": "prod.d"}) == ["prod.d/*.yaml"]
    write_yaml("concord.yaml", 'version: 1\ninclude: ["${POLICY_DIR}/*.yaml"]\n')
    assert rendered(read_source("concord.yaml", env={})) == [
        "concord.yaml:2:11: include: environment variable POLICY_DIR is not set "
        "(set it or write ${POLICY_DIR:-default})"
    ]


def test_syntax_error_in_an_included_file_names_that_file(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\ninclude: [bad.yaml]\n")
    write_yaml("bad.yaml", "routes: [\n")
    with pytest.raises(ConfigUnreadable) as caught:
        read_source("concord.yaml", env={})
    assert caught.value.diagnostics[0].location.file == "bad.yaml"


# --- ${VAR} expansion (SPEC §2.1) ---------------------------------------------------------------


def test_variables_expand_inside_strings_with_defaults_and_escapes(
    write_yaml: WriteYaml,
) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        storage:
          database: "postgresql://${DB_USER}@${DB_HOST:-localhost}/concord"
        routes:
          - name: r
            reject: {message: "costs $$5, see ${DOCS:-docs}"}
        """,
    )
    source = read_source("concord.yaml", env={"DB_USER": "app"})
    assert source.diagnostics == []
    assert source.tree["storage"]["database"] == "postgresql://app@localhost/concord"
    assert source.tree["routes"][0]["reject"]["message"] == "costs $5, see docs"


def test_missing_variable_is_an_error_naming_it_and_its_location(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", "version: 1\nstorage:\n  state: redis://${REDIS_HOST}:6379\n")
    source = read_source("concord.yaml", env={})
    assert rendered(source) == [
        "concord.yaml:3:10: storage.state: environment variable REDIS_HOST is not set "
        "(set it or write ${REDIS_HOST:-default})"
    ]


def test_unquoted_variable_reads_as_the_number_it_expands_to(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", 'server:\n  port: ${PORT}\n  host: "${PORT}"\n')
    tree = read_source("concord.yaml", env={"PORT": "9000"}).tree
    assert tree["server"] == {"port": 9000, "host": "9000"}


def test_empty_api_keys_are_dropped_and_a_keyless_provider_warns(write_yaml: WriteYaml) -> None:
    write_yaml(
        "concord.yaml",
        """
        version: 1
        providers:
          openai: {type: openai, api_keys: ["${OPENAI_KEY}", "${OPENAI_KEY_2:-}"]}
          anthropic:
            type: anthropic
            api_keys: ["${ANTHROPIC_KEY}"]
        """,
    )
    source = read_source("concord.yaml", env={"OPENAI_KEY": "sk-one"})
    assert source.tree["providers"]["openai"]["api_keys"] == ["sk-one"]
    assert source.tree["providers"]["anthropic"]["api_keys"] == []
    assert rendered(source) == [
        "concord.yaml:6:15: warning: providers.anthropic.api_keys: provider 'anthropic' has no "
        "API key (ANTHROPIC_KEY is not set); it is unavailable and routes fall through to "
        "fallbacks"
    ]


def test_malformed_reference_is_an_error(write_yaml: WriteYaml) -> None:
    write_yaml("concord.yaml", 'auth:\n  admin_key: "${ADMIN"\n')
    source = read_source("concord.yaml", env={"ADMIN": "secret-admin"})
    assert [d.message for d in source.diagnostics] == [
        "malformed variable reference (use ${NAME}, ${NAME:-default} or $$ for a literal $)"
    ]


def test_environment_defaults_to_os_environ(
    write_yaml: WriteYaml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONCORD_TEST_HOST", "10.0.0.1")
    write_yaml("concord.yaml", "server:\n  host: ${CONCORD_TEST_HOST}\n")
    assert read_source("concord.yaml").tree["server"]["host"] == "10.0.0.1"
