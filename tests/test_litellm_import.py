"""SPEC §3.1: `concord import litellm` turns a LiteLLM proxy config into a valid concord.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from concord.cli import main
from concord.config.load import load
from concord.litellm_import import convert

INLINE_KEY = "sk-ant-inline-secret-123"
LITELLM = {
    "model_list": [
        {
            "model_name": "gpt-4o",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_key": "os.environ/OPENAI_API_KEY",
                "input_cost_per_token": 0.0000025,
                "output_cost_per_token": 0.00001,
                "rpm": 600,
            },
            "model_info": {"max_input_tokens": 128000},
        },
        {
            "model_name": "gpt-4o",
            "litellm_params": {
                "model": "azure/gpt-4o-eu",
                "api_base": "https://my-eu.openai.azure.com",
                "api_key": "os.environ/AZURE_API_KEY",
                "api_version": "2024-10-21",
            },
        },
        {
            "model_name": "claude-sonnet",
            "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": INLINE_KEY},
        },
        {"model_name": "llama", "litellm_params": {"model": "ollama/llama3.1"}},
        {"model_name": "titan", "litellm_params": {"model": "bedrock/amazon.titan-text"}},
    ],
    "router_settings": {
        "routing_strategy": "latency-based-routing",
        "num_retries": 3,
        "timeout": 30,
        "fallbacks": [{"gpt-4o": ["claude-sonnet"]}],
        "allowed_fails": 2,
        "cooldown_time": 60,
    },
    "litellm_settings": {
        "cache": True,
        "cache_params": {"type": "redis", "host": "redis", "port": 6379, "ttl": 600},
        "success_callback": ["langfuse"],
    },
    "general_settings": {
        "master_key": "os.environ/LITELLM_MASTER_KEY",
        "database_url": "postgresql://llm:hunter2@db:5432/litellm",
    },
}
ENV = {
    "OPENAI_API_KEY": "sk-1",
    "AZURE_API_KEY": "az-1",
    "ANTHROPIC_API_KEY": "ant-1",
    "LITELLM_MASTER_KEY": "admin",
    "DATABASE_URL": "postgresql://concord@db/concord",
}


def converted(tmp_path: Path) -> tuple[str, dict]:  # type: ignore[type-arg]
    text = convert(LITELLM)
    (tmp_path / "concord.yaml").write_text(text, encoding="utf-8")
    return text, YAML(typ="safe").load(text)


def test_output_loads_without_errors(tmp_path: Path) -> None:
    converted(tmp_path)
    loaded = load(tmp_path / "concord.yaml", env=ENV)
    assert loaded.errors == [], [d.render() for d in loaded.errors]
    assert loaded.graph is not None


def test_deployments_become_targets_providers_and_settings(tmp_path: Path) -> None:
    _, config = converted(tmp_path)
    gpt = config["models"]["gpt-4o"]
    assert gpt["targets"] == ["openai/gpt-4o", "azure/gpt-4o-eu"]
    assert gpt["balance"] == "least_latency"
    assert gpt["fallbacks"] == ["claude-sonnet"]
    assert gpt["price"] == {"input": 2.5, "output": 10.0}
    assert gpt["context_window"] == 128000
    assert config["providers"]["azure"] == {
        "type": "azure",
        "base_url": "https://my-eu.openai.azure.com",
        "api_version": "2024-10-21",
        "api_keys": ["${AZURE_API_KEY}"],
    }
    assert config["providers"]["ollama"]["base_url"] == "http://127.0.0.1:11434/v1"
    assert config["defaults"]["retry"] == {"attempts": 4}
    assert config["defaults"]["timeout"] == "30s"
    assert config["defaults"]["circuit_breaker"] == {"failures": 2, "cooldown": "60s"}
    assert config["defaults"]["cache"] == {"enabled": True, "when": {}, "ttl": "600s"}
    assert config["storage"]["state"] == "redis://redis:6379/0"
    assert config["auth"] == {"mode": "keys", "admin_key": "${LITELLM_MASTER_KEY}"}
    assert "titan" not in config["models"]


def test_unsupported_settings_become_comments_and_secrets_stay_out(tmp_path: Path) -> None:
    text, config = converted(tmp_path)
    comments = [line for line in text.splitlines() if line.startswith("#")]
    for expected in ("rpm", "bedrock", "success_callback", "virtual keys"):
        assert any(expected in line for line in comments), expected
    assert INLINE_KEY not in text and "hunter2" not in text
    assert config["providers"]["anthropic"]["api_keys"] == ["${ANTHROPIC_API_KEY}"]
    assert config["storage"]["database"] == "${DATABASE_URL}"


def test_a_self_hosted_ollama_redis_from_router_settings_and_unweighted_balance() -> None:
    """Ollama's OpenAI-compatible API lives under /v1; the Redis LiteLLM instances share (named
    in router_settings) holds Concord's state; weights go only with a weighted balance."""
    deployment = {"model": "openai/gpt-4o", "weight": 2}
    text = convert(
        {
            "model_list": [
                {
                    "model_name": "llama",
                    "litellm_params": {"model": "ollama/llama3", "api_base": "http://ollama:11434"},
                },
                {"model_name": "gpt", "litellm_params": deployment},
                {"model_name": "gpt", "litellm_params": {"model": "groq/gpt-4o"}},
            ],
            "router_settings": {
                "routing_strategy": "usage-based-routing-v2",
                "redis_host": "os.environ/REDIS_HOST",
                "redis_port": 6380,
            },
        }
    )
    config = YAML(typ="safe").load(text)
    assert config["providers"]["ollama"]["base_url"] == "http://ollama:11434/v1"
    assert config["storage"]["state"] == "redis://${REDIS_HOST}:6380/0"
    assert config["models"]["gpt"]["targets"] == ["openai/gpt-4o", "groq/gpt-4o"]
    assert "weight dropped: balance is round_robin" in text
    assert "redis_host: not translated" not in text


def test_no_master_key_means_open_mode_and_no_cache() -> None:
    config = YAML(typ="safe").load(
        convert({"model_list": [{"model_name": "m", "litellm_params": {"model": "gpt-4o-mini"}}]})
    )
    assert config["auth"] == {"mode": "open"}
    assert config["models"]["m"]["targets"] == ["openai/gpt-4o-mini"]
    assert config["defaults"]["cache"] == {"enabled": False}


def test_cli_writes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    source = tmp_path / "litellm.yaml"
    out = tmp_path / "concord.yaml"
    yaml = YAML(typ="safe")
    with source.open("w") as handle:
        yaml.dump(LITELLM, handle)
    assert main(["import", "litellm", str(source), "-o", str(out)]) == 0, capsys.readouterr().err
    assert load(out).ok
    monkeypatch.delenv("DATABASE_URL")
    assert main(["import", "litellm", str(source), "-o", str(out)]) == 1
    assert "DATABASE_URL" in capsys.readouterr().err
    assert main(["import", "litellm", str(tmp_path / "missing.yaml")]) == 2


# -- inline keys: one variable per provider ------------------------------------------------------

OPENAI_INLINE = "sk-proj-openai-inline-111"
ROUTER_INLINE = "sk-proj-openrouter-inline-222"


def mini(api_key: str, api_base: str | None = None, model: str = "gpt-4o-mini") -> dict[str, Any]:
    params = {"model": f"openai/{model}", "api_key": api_key}
    if api_base:
        params["api_base"] = api_base
    return {"model_name": model, "litellm_params": params}


def written(tmp_path: Path, litellm: dict[str, Any]) -> tuple[str, Any, Path]:
    text = convert(litellm)
    path = tmp_path / "concord.yaml"
    path.write_text(text, encoding="utf-8")
    return text, YAML(typ="safe").load(text), path


def comments(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("#")]


def test_inline_keys_for_different_endpoints_get_a_variable_each(tmp_path: Path) -> None:
    """A key written for OpenAI must never be the one sent to OpenRouter."""
    text, config, path = written(
        tmp_path,
        {
            "model_list": [
                mini(OPENAI_INLINE),
                mini(ROUTER_INLINE, "https://openrouter.ai/api/v1"),
            ]
        },
    )
    providers = config["providers"]
    assert providers["openai"]["api_keys"] == ["${OPENAI_API_KEY}"]
    assert providers["openai-2"]["api_keys"] == ["${OPENAI_2_API_KEY}"]
    assert providers["openai-2"]["base_url"] == "https://openrouter.ai/api/v1"
    header = comments(text)
    for provider, variable in (("openai", "OPENAI_API_KEY"), ("openai-2", "OPENAI_2_API_KEY")):
        named = [line for line in header if f"${variable} " in line]
        assert len(named) == 1, header
        assert f"providers.{provider} " in named[0]
    assert OPENAI_INLINE not in text and ROUTER_INLINE not in text
    loaded = load(path, env={"OPENAI_API_KEY": "k-openai", "OPENAI_2_API_KEY": "k-router"})
    assert loaded.ok and loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]
    assert loaded.config is not None
    assert loaded.config.providers["openai"].api_keys == ["k-openai"]
    assert loaded.config.providers["openai-2"].api_keys == ["k-router"]


def test_the_same_inline_key_for_one_endpoint_shares_its_variable(tmp_path: Path) -> None:
    """Deployments of one endpoint with one key are one provider; a second key is another."""
    text, config, path = written(
        tmp_path,
        {
            "model_list": [
                mini(OPENAI_INLINE),
                mini(OPENAI_INLINE, model="gpt-4o"),
                mini(ROUTER_INLINE, model="o3"),
            ]
        },
    )
    providers = config["providers"]
    assert sorted(providers) == ["openai", "openai-2"]
    assert config["models"]["gpt-4o-mini"]["targets"] == ["openai/gpt-4o-mini"]
    assert config["models"]["gpt-4o"]["targets"] == ["openai/gpt-4o"]
    assert config["models"]["o3"]["targets"] == ["openai-2/o3"]
    assert providers["openai"]["api_keys"] == ["${OPENAI_API_KEY}"]
    assert providers["openai-2"]["api_keys"] == ["${OPENAI_2_API_KEY}"]
    assert sum("$OPENAI_API_KEY " in line for line in comments(text)) == 1
    assert OPENAI_INLINE not in text and ROUTER_INLINE not in text
    loaded = load(path, env={"OPENAI_API_KEY": "k-1", "OPENAI_2_API_KEY": "k-2"})
    assert loaded.ok and loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]


def test_an_inline_key_never_takes_a_variable_the_file_reads_elsewhere(tmp_path: Path) -> None:
    """`os.environ/NAME` keeps its NAME; an inline key then gets a name of its own."""
    text, config, path = written(
        tmp_path,
        {
            "model_list": [
                mini(OPENAI_INLINE),
                mini("os.environ/OPENAI_API_KEY", "https://openrouter.ai/api/v1", "o3"),
            ]
        },
    )
    providers = config["providers"]
    assert providers["openai"]["api_keys"] == ["${CONCORD_OPENAI_API_KEY}"]
    assert providers["openai-2"]["api_keys"] == ["${OPENAI_API_KEY}"]
    assert any(
        "providers.openai " in line and "$CONCORD_OPENAI_API_KEY" in line for line in comments(text)
    )
    loaded = load(path, env={"CONCORD_OPENAI_API_KEY": "k-1", "OPENAI_API_KEY": "k-2"})
    assert loaded.ok and loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]


# -- azure api_version ---------------------------------------------------------------------------


def azure(**params: str) -> dict[str, Any]:
    litellm_params = {
        "model": "azure/gpt-4o-eu",
        "api_base": "https://my-eu.openai.azure.com",
        "api_key": "os.environ/AZURE_API_KEY",
        **params,
    }
    return {"model_name": "gpt-4o", "litellm_params": litellm_params}


def test_azure_without_api_version_asks_for_the_variable_litellm_reads(tmp_path: Path) -> None:
    text, config, path = written(tmp_path, {"model_list": [azure()]})
    assert config["providers"]["azure"]["api_version"] == "${AZURE_API_VERSION}"
    assert any(
        "providers.azure" in line and "$AZURE_API_VERSION" in line for line in comments(text)
    )
    missing = load(path, env={"AZURE_API_KEY": "az"})
    assert [d.path for d in missing.errors] == ["providers.azure.api_version"]
    assert "AZURE_API_VERSION" in missing.errors[0].render()
    loaded = load(path, env={"AZURE_API_KEY": "az", "AZURE_API_VERSION": "2024-10-21"})
    assert loaded.ok and loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]


def test_azure_api_version_read_from_the_environment_is_no_gap() -> None:
    text = convert({"model_list": [azure(api_version="os.environ/AZURE_API_VERSION")]})
    assert YAML(typ="safe").load(text)["providers"]["azure"]["api_version"] == (
        "${AZURE_API_VERSION}"
    )
    assert "no api_version" not in text


@pytest.mark.parametrize(
    ("litellm", "version"),
    [
        ({"litellm_settings": {"api_version": "2024-06-01"}}, "2024-06-01"),
        ({"environment_variables": {"AZURE_API_VERSION": "2024-08-01"}}, "2024-08-01"),
        (
            {
                "litellm_settings": {"api_version": "2024-06-01"},
                "environment_variables": {"AZURE_API_VERSION": "2024-08-01"},
            },
            "2024-06-01",
        ),
    ],
)
def test_azure_api_version_falls_back_in_litellms_order(
    tmp_path: Path,
    litellm: dict[str, Any],
    version: str,
) -> None:
    """A deployment's own api_version wins; then litellm_settings, then AZURE_API_VERSION."""
    text, config, path = written(
        tmp_path,
        {
            "model_list": [azure(), {**azure(api_version="2024-10-21"), "model_name": "b"}],
            **litellm,
        },
    )
    assert config["providers"]["azure"]["api_version"] == version
    assert config["providers"]["azure-2"]["api_version"] == "2024-10-21"
    assert "litellm_settings.api_version" not in text
    assert "environment_variables" not in text  # AZURE_API_VERSION was all it held, and used
    loaded = load(path, env={"AZURE_API_KEY": "az"})
    assert loaded.ok and loaded.diagnostics == [], [d.render() for d in loaded.diagnostics]


def test_environment_variables_are_named_for_the_operator_never_copied() -> None:
    secret = "sk-live-" + "e" * 20
    text = convert({"model_list": [], "environment_variables": {"OTEL_HOST": "h", "X_KEY": secret}})
    assert "environment_variables: set OTEL_HOST, X_KEY in Concord's environment" in text
    assert secret not in text and "not translated" not in text
