"""The printed schema rejects what `concord validate` rejects for local reasons (SPEC §2, §6).

Editors and CI pipelines check files against `concord schema` alone, so a rule it could state
but leaves to the later stages lets a broken file through them. Each case is a small config as
data: the printed schema and the whole `load()` pipeline must give the same verdict, and the
shipped configs must pass both. What a schema cannot say (names that refer to other names,
duplicate names, regexes that do not compile, backoff initial above max) is left out.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter, ValidationError
from ruamel.yaml import YAML

from concord.config import checks, model
from concord.config.load import load
from concord.config.schema import schema_text, validator
from concord.config.source import read_source

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "version": 1,
    "providers": {"demo": {"type": "mock"}},
    "models": {"m": {"targets": ["demo/m"]}},
}
HEX = "a" * 64


@cache
def printed() -> Draft202012Validator:
    """The schema exactly as `concord schema` prints it, as an editor or CI job reads it."""
    return Draft202012Validator(json.loads(schema_text()))


def schema_accepts(document: Any) -> bool:
    return printed().is_valid(document)


def config(**sections: Any) -> dict[str, Any]:
    return {**BASE, **sections}


def route(**fields: Any) -> dict[str, Any]:
    return config(routes=[{"name": "r", "use": "m", **fields}])


def when(condition: dict[str, Any]) -> dict[str, Any]:
    return route(when=condition)


def provider(**fields: Any) -> dict[str, Any]:
    return config(providers={"demo": {"type": "mock"}, "p": fields})


def budget(**fields: Any) -> dict[str, Any]:
    return config(budgets=[{"name": "b", "limit_usd": 1, **fields}])


def validate_codes(tmp_path: Path, document: dict[str, Any]) -> set[str]:
    """The codes of the errors `concord validate` reports for `document` (JSON is YAML)."""
    path = tmp_path / "concord.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")
    return {d.code for d in load(path, env={}).errors}


REJECTED = [
    # SPEC §2.4.1 `when`: the value each field holds (config/checks.py)
    pytest.param(when({"endpoint": "chatt"}), "unknown_endpoint", id="endpoint-name"),
    pytest.param(when({"endpoint": ["chat", "embedding"]}), "unknown_endpoint", id="endpoint-list"),
    pytest.param(when({"endpoint": {"ne": "chatt"}}), "unknown_endpoint", id="endpoint-operator"),
    pytest.param(when({"endpoint": "x*"}), "unknown_endpoint", id="endpoint-glob"),
    pytest.param(when({"stream": "yes"}), "type_mismatch", id="stream-text"),
    pytest.param(when({"stream": 1}), "type_mismatch", id="stream-number"),
    pytest.param(when({"tools": {"in": [True, 3]}}), "type_mismatch", id="flag-in-list"),
    pytest.param(when({"input_tokens": "big"}), "type_mismatch", id="numeric-text"),
    pytest.param(when({"budget_used": [0.5, True]}), "type_mismatch", id="numeric-list"),
    pytest.param(when({"model": {"gt": 3}}), "type_mismatch", id="compare-a-string-field"),
    pytest.param(when({"images": {"lte": 1}}), "type_mismatch", id="compare-a-flag"),
    pytest.param(when({"model": ""}), "bad_glob", id="empty-pattern"),
    pytest.param(when({"workspace": "team-[a"}), "bad_glob", id="unclosed-bracket"),
    pytest.param(when({"tags": {"in": ["a]b"]}}), "bad_glob", id="stray-bracket"),
    pytest.param(when({"header.x-tier": "[[a]]"}), "bad_glob", id="nested-bracket"),
    pytest.param(when({"metadata.team": {"ne": ""}}), "bad_glob", id="metadata-empty"),
    pytest.param(
        when({"any": [{"not": {"model": {"lt": 1}}}]}), "type_mismatch", id="nested-condition"
    ),
    pytest.param(
        config(defaults={"cache": {"enabled": False, "when": {"endpoint": "chatt"}}}),
        "unknown_endpoint",
        id="disabled-cache-when-is-checked",
    ),
    # the `when` compiler: groups are not empty
    pytest.param(when({"all": []}), "compile", id="empty-all"),
    pytest.param(when({"any": [{}]}), "compile", id="empty-any-member"),
    pytest.param(when({"not": {}}), "compile", id="empty-not"),
    pytest.param(budget(when={"all": [{"model": "m"}, {}]}), "compile", id="budget-when"),
    pytest.param(
        config(rate_limits=[{"name": "l", "rpm": 1, "when": {"any": []}}]),
        "compile",
        id="rate-limit-when",
    ),
    # SPEC §2.4.2 route actions
    pytest.param(route(reject={"status": 403}), "route_action", id="use-and-reject"),
    pytest.param(config(routes=[{"name": "r"}]), "route_action", id="neither-use-nor-reject"),
    pytest.param(config(routes=[{"name": "r", "use": None}]), "route_action", id="use-null"),
    pytest.param(route(params={"set": {"model": "m"}}), "params_set", id="params-set-model"),
    pytest.param(route(params={"set": {"stream": True}}), "params_set", id="params-set-stream"),
    pytest.param(
        route(use="$requested", fallbacks=["$requested"]),
        "misplaced_requested",
        id="requested-route-fallback",
    ),
    # SPEC §2.3 targets and the catalog
    pytest.param(config(models={"m": {"targets": ["gpt-4o"]}}), "bad_target", id="target-no-slash"),
    pytest.param(config(models={"m": {"targets": ["/gpt-4o"]}}), "bad_target", id="no-provider"),
    pytest.param(
        config(models={"m": {"targets": [{"target": "demo/"}]}}), "bad_target", id="no-model"
    ),
    pytest.param(
        config(models={"m": {"targets": ["demo/m"], "fallbacks": ["$requested"]}}),
        "misplaced_requested",
        id="requested-model-fallback",
    ),
    pytest.param(
        config(tests=[{"name": "t", "request": {"model": "m"}, "expect": {"attempts": ["m"]}}]),
        "bad_target",
        id="test-attempt",
    ),
    pytest.param(
        config(tests=[{"name": "t", "request": {"model": "m"}, "expect": {"model": "$requested"}}]),
        "misplaced_requested",
        id="test-model",
    ),
    # SPEC §2.6, §2.7 budgets and limits
    pytest.param(budget(on_exceed="downgrade"), "downgrade", id="downgrade-without-model"),
    pytest.param(
        config(workspaces={"w": {"budget": {"limit_usd": 1, "on_exceed": "downgrade"}}}),
        "downgrade",
        id="workspace-downgrade-without-model",
    ),
    pytest.param(
        budget(on_exceed="downgrade", downgrade_to="$requested"),
        "misplaced_requested",
        id="downgrade-to-requested",
    ),
    pytest.param(config(rate_limits=[{"name": "l"}]), "empty_rate_limit", id="no-rpm-no-tpm"),
    pytest.param(
        config(rate_limits=[{"name": "l", "rpm": None, "tpm": None}]),
        "empty_rate_limit",
        id="null-rpm-and-tpm",
    ),
    # SPEC §1, §2.2, §2.8 storage, providers, keys
    pytest.param(config(storage={"state": "redis"}), "storage_url", id="state-not-a-url"),
    pytest.param(
        config(storage={"state": "postgresql://h/db"}), "storage_url", id="state-wrong-scheme"
    ),
    pytest.param(config(storage={"database": "mysql://h/db"}), "storage_url", id="database"),
    pytest.param(provider(type="azure"), "provider_settings", id="azure-needs-settings"),
    pytest.param(
        provider(type="azure", base_url="https://x.openai.azure.com", api_version=None),
        "provider_settings",
        id="azure-null-version",
    ),
    pytest.param(provider(type="mock", probe={"model": "x", "interval": 0}), "model", id="probe-0"),
    pytest.param(
        provider(type="mock", probe={"model": "x", "timeout": "0.0s"}), "model", id="probe-0s"
    ),
    pytest.param(
        config(auth={"keys": [{"name": "k", "sha256": HEX, "expires": "next tuesday"}]}),
        "model",
        id="expires",
    ),
    # SPEC §2.9 includes
    pytest.param(config(include=[""]), "include", id="empty-include"),
]

ACCEPTED = [
    pytest.param(BASE, id="base"),
    pytest.param(when({}), id="empty-when"),
    pytest.param(when({"endpoint": "*"}), id="endpoint-star"),
    pytest.param(when({"endpoint": ["chat", "co*ions", "*s"]}), id="endpoint-globs"),
    pytest.param(
        when({"endpoint": {"not_in": ["messages"], "ne": "chat", "regex": "^e"}}),
        id="endpoint-operators",
    ),
    pytest.param(when({"endpoint": None, "model": 5, "user": True}), id="non-text-scalars"),
    pytest.param(when({"stream": None, "tools": [True], "images": {"ne": False}}), id="flags"),
    pytest.param(when({"stream": {"regex": "t", "exists": True}}), id="flag-operators"),
    pytest.param(when({"input_tokens": {"gt": 10, "in": [1, None]}}), id="numbers"),
    pytest.param(when({"temperature": {"regex": "0", "exists": False}}), id="numeric-regex"),
    pytest.param(when({"model": "gpt-[4]o*", "tags": {"in": ["a", 5]}}), id="globs"),
    pytest.param(when({"header.x-tier": {"gt": 5}, "metadata.n": [1, "x*"]}), id="headers"),
    pytest.param(when({"all": [{"any": [{"model": "m"}]}, {"not": {"tools": True}}]}), id="nest"),
    pytest.param(
        config(defaults={"cache": {"enabled": False, "when": {"all": [], "not": {}}}}),
        id="disabled-cache-when-never-compiles",
    ),
    pytest.param(route(use=None, reject={"status": 429}), id="reject-with-null-use"),
    pytest.param(route(reject=None), id="use-with-null-reject"),
    pytest.param(route(use="$requested", params={"set": {"Model": "x", "top_p": 1}}), id="params"),
    pytest.param(
        config(models={"m": {"targets": ["demo/a/b", {"target": "demo/c", "weight": 2}]}}),
        id="targets",
    ),
    pytest.param(budget(on_exceed="downgrade", downgrade_to="m"), id="downgrade"),
    pytest.param(budget(on_exceed="block"), id="block"),
    pytest.param(config(rate_limits=[{"name": "l", "rpm": None, "tpm": 5}]), id="tpm-only"),
    pytest.param(
        config(storage={"state": "REDIS://h:6379/0", "database": "sqlite+aiosqlite:///x.db"}),
        id="storage-urls",
    ),
    pytest.param(
        config(storage={"state": "unix:///r.sock", "database": "postgres://u@h/d"}),
        id="storage-urls-2",
    ),
    pytest.param(
        provider(type="azure", base_url="https://x.openai.azure.com", api_version="2024-10-21"),
        id="azure",
    ),
    pytest.param(provider(type="mock", probe={"model": "x", "interval": "1ms"}), id="probe"),
    pytest.param(
        config(
            auth={
                "keys": [
                    {"name": "a", "sha256": HEX, "expires": "2030-01-01"},
                    {"name": "b", "sha256": HEX, "expires": "2030-01-01T10:00:00.5+01:00"},
                    {"name": "c", "sha256": HEX, "expires": "1900000000"},
                ]
            }
        ),
        id="expires",
    ),
]


@pytest.mark.parametrize(("document", "code"), REJECTED)
def test_both_reject(tmp_path: Path, document: dict[str, Any], code: str) -> None:
    assert not schema_accepts(document)
    assert validate_codes(tmp_path, document) == {code}


@pytest.mark.parametrize("document", ACCEPTED)
def test_both_accept(tmp_path: Path, document: dict[str, Any]) -> None:
    assert schema_accepts(document), [e.message for e in printed().iter_errors(document)]
    assert validate_codes(tmp_path, document) == set()


# --- the shipped configs -------------------------------------------------------------------------


def _yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


def _shipped() -> list[Path]:
    candidates = [ROOT / "concord.yaml", *sorted((ROOT / "examples").rglob("*.yaml"))]
    candidates += sorted((ROOT / "tests" / "config" / "fixtures").glob("*.yaml"))
    return [p for p in candidates if isinstance(d := _yaml(p), dict) and d.get("version") == 1]


@pytest.mark.parametrize("path", _shipped(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_configs_pass_the_printed_schema(path: Path) -> None:
    """Both as an editor reads the file (`${VAR}` unexpanded) and as validate checks it."""
    assert schema_accepts(_yaml(path))
    assert schema_accepts(read_source(path, env={}).tree)


@pytest.mark.parametrize("path", sorted((ROOT / "policies").glob("*.yaml")), ids=lambda p: p.name)
def test_policy_files_pass_the_printed_schema(path: Path) -> None:
    assert schema_accepts({**BASE, **_yaml(path)})


def test_numbers_and_flags_written_as_variables_pass_the_printed_schema(tmp_path: Path) -> None:
    """An editor sees `port: ${PORT:-8090}` before it is expanded; validate after."""
    text = textwrap.dedent(
        """\
        version: 1
        server:
          port: ${QA_PORT:-8090}
          max_body: ${QA_BODY:-1048576}
          log_bodies: ${QA_LOG_BODIES:-false}
        providers:
          demo: {type: mock}
        models:
          m: {targets: [demo/m]}
        """
    )
    path = tmp_path / "concord.yaml"
    path.write_text(text, encoding="utf-8")
    document = _yaml(path)
    assert document["server"]["port"] == "${QA_PORT:-8090}"
    assert schema_accepts(document), [e.message for e in printed().iter_errors(document)]
    assert not schema_accepts({**document, "server": {"port": "8090"}})  # text is not a number
    assert not schema_accepts({**document, "server": {"port": "${A} ${B}"}})


def test_validate_checks_numbers_after_expansion_as_before() -> None:
    """The `${VAR}` allowance is the editor's: the schema validate uses has none of it."""
    assert model.TEMPLATABLE in schema_text()
    assert model.TEMPLATABLE not in json.dumps(validator().schema)
    assert not validator().is_valid({**BASE, "server": {"port": "${PORT}"}})


# --- the two schemas -----------------------------------------------------------------------------


def test_the_printed_schema_is_valid_json_schema() -> None:
    Draft202012Validator.check_schema(json.loads(schema_text()))


def test_validate_leaves_the_semantic_rules_to_the_later_stages() -> None:
    """So its messages stay theirs, and one run lists every problem (SPEC §6)."""
    assert model.SEMANTIC in schema_text()
    assert model.SEMANTIC not in json.dumps(validator().schema)


def test_the_schema_and_the_checks_share_their_vocabulary() -> None:
    assert model.ENDPOINTS == checks.ENDPOINTS
    assert set(model.STRING_FIELDS) == checks.STRING_FIELDS
    assert set(model.NUMERIC_FIELDS) == checks.NUMERIC_FIELDS
    assert set(model.BOOLEAN_FIELDS) == checks.BOOLEAN_FIELDS
    assert set(model.ROUTING_OWNED_PARAMS) == set(checks.ROUTING_OWNED_PARAMS)
    assert model.REQUESTED == checks.REQUESTED


# --- each pattern against the rule it restates ---------------------------------------------------


def _text(alphabet: str, *fragments: str) -> st.SearchStrategy[str]:
    pieces = st.sampled_from([*alphabet, *fragments])
    return st.lists(pieces, max_size=12).map("".join)


@given(_text("ab[]*\n"))
def test_glob_rule(pattern: str) -> None:
    valid = pattern != "" and checks._glob_problem(pattern) is None
    assert schema_accepts(when({"model": pattern})) == valid


@given(_text("achtx*[", *checks.ENDPOINTS))
def test_endpoint_rule(pattern: str) -> None:
    """Exact for names; a glob that can match no endpoint may pass the schema."""
    valid = checks._glob_problem(pattern) is None and any(
        checks._glob_matches(pattern, endpoint) for endpoint in checks.ENDPOINTS
    )
    accepted = schema_accepts(when({"endpoint": pattern}))
    assert accepted == valid if "*" not in pattern else accepted or not valid


@given(_text("a/ \n", "demo"))
def test_target_rule(target: str) -> None:
    valid = checks._split_target(target) is not None
    assert schema_accepts(config(models={"m": {"targets": [target]}})) == valid


@given(_text(":/\n", "redis", "REDIS", "Rediſ", "unıx", "rediss", "memory", "x"))
def test_state_rule(state: str) -> None:
    valid = state == "memory" or checks._STATE_URL.match(state) is not None
    assert schema_accepts(config(storage={"state": state})) == valid


@given(_text(":/+\n", "sqlite", "postgres", "postgresql", "asyncpg", "x"))
def test_database_rule(database: str) -> None:
    valid = checks._DATABASE_URL.match(database) is not None
    assert schema_accepts(config(storage={"database": database})) == valid


_DATETIME = TypeAdapter(datetime)


@given(_text("0123456789-:.+ TZe", "2030-01-01", "2030-01-01T10:00"))
def test_expires_rule(expires: str) -> None:
    try:
        _DATETIME.validate_python(expires)
    except ValidationError:
        return  # the schema may let an odd one through; pydantic still reports it
    key = {"name": "k", "sha256": HEX, "expires": expires}
    assert schema_accepts(config(auth={"keys": [key]}))


@given(_text("0123456789.", "s", "ms", "m"))
def test_probe_interval_rule(interval: str) -> None:
    if re.fullmatch(r"\d+(\.\d+)?(ms|s|m)", interval) is None:
        return
    number = float(re.sub(r"[a-z]+$", "", interval))
    probe = {"model": "x", "interval": interval}
    assert schema_accepts(provider(type="mock", probe=probe)) == (number > 0)
