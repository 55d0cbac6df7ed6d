"""SPEC §3.1: `concord import litellm` turns a LiteLLM proxy config into a valid concord.yaml."""

from __future__ import annotations

from pathlib import Path

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
    assert config["defaults"]["cache"] == {"enabled": True, "ttl": "600s"}
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
