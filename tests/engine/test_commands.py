"""`concord test` and `concord explain` through the real CLI (SPEC §6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from concord.cli import main
from tests.conftest import WriteYaml

CONFIG = """
version: 1
auth: {admin_key: admin-secret-value}
providers:
  openai: {type: openai, api_keys: ["sk-openai-secret-value"]}
  anthropic: {type: anthropic, api_keys: ["${NO_SUCH_KEY_FOR_TESTS:-}"]}
models:
  gpt-4o: {targets: [openai/gpt-4o], context_window: 128000, price: {input: 2.5, output: 10}}
  claude-sonnet: {targets: [anthropic/claude-sonnet-4-5], context_window: 200000}
  fast: {targets: [openai/gpt-4o-mini]}
workspaces:
  acme: {tags: [paid], budget: {limit_usd: 200, on_exceed: downgrade, downgrade_to: fast}}
rate_limits:
  - {name: per-key, per: key, rpm: 600}
routes:
  - name: free-embeddings
    when: {endpoint: embeddings, workspace: "free-*"}
    reject: {status: 403, message: no embeddings on the free tier}
  - name: long-prompts
    when: {model: [gpt-4o, gpt-4.1], input_tokens: {gt: 30000}}
    use: claude-sonnet
    fallbacks: [gpt-4o]
  - name: paid
    when: {tags: paid, header.x-tier: gold}
    use: gpt-4o
  - name: default
    use: $requested
    fallbacks: [fast]
    cache: {ttl: 10m}
tests:
  - name: big prompts go to claude
    request: {model: gpt-4o, input_tokens: 40000, workspace: acme}
    expect: {route: long-prompts, model: claude-sonnet,
             attempts: [anthropic/claude-sonnet-4-5, openai/gpt-4o]}
  - name: workspace tags count
    request: {model: fast, workspace: acme, headers: {X-Tier: gold}}
    expect: {route: paid, model: gpt-4o, limits: [per-key]}
  - name: free embeddings are refused
    request: {model: fast, endpoint: embeddings, workspace: free-1}
    expect: {reject: 403}
"""
FAILING_TESTS = """
  - name: wrong expectations
    request: {model: gpt-4o, temperature: 0.5}
    expect: {route: long-prompts, model: fast, attempts: [openai/gpt-4o], cache: true, reject: true}
"""


def test_concord_test_passes(write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    assert main(["test", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PASS big prompts go to claude" in out
    assert "PASS workspace tags count" in out
    assert out.rstrip().endswith("3 passed, 0 failed")


def test_concord_test_reports_each_difference(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG + FAILING_TESTS)
    assert main(["test", "-c", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL wrong expectations" in out
    assert "    route: expected long-prompts, got default" in out
    assert "    model: expected fast, got gpt-4o" in out
    assert "    attempts: expected [openai/gpt-4o], got [openai/gpt-4o, openai/gpt-4o-mini]" in out
    assert "    cache: expected true, got false" in out
    assert "    reject: expected rejected, got not rejected" in out
    assert out.rstrip().endswith("3 passed, 1 failed")


def test_concord_test_uses_the_environment_default_path(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_yaml("elsewhere.yaml", CONFIG)
    monkeypatch.delenv("CONCORD_CONFIG", raising=False)
    monkeypatch.setenv("PROXY_CONFIG_PATH", str(path))
    assert main(["test"]) == 0
    assert "3 passed" in capsys.readouterr().out


def test_concord_test_invalid_and_unreadable_configs(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = write_yaml("bad.yaml", CONFIG.replace("use: claude-sonnet", "use: claude-sonet"))
    assert main(["test", "-c", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "claude-sonet" in err and "bad.yaml:" in err
    assert main(["test", "-c", str(tmp_path / "missing.yaml")]) == 2


def test_explain_shows_misses_plan_and_policies(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    code = main(["explain", "-c", str(path), "--model", "gpt-4o-mini", "--workspace", "acme",
                 "--key", "ci", "--input-tokens", "1200", "--temperature", "0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "free-embeddings: endpoint: 'chat' is not 'embeddings'" in out
    assert "long-prompts: model: 'gpt-4o-mini' is not one of [gpt-4o, gpt-4.1]" in out
    assert "paid: header.x-tier: absent is not 'gold'" in out
    assert "route: default" in out
    assert "model: 'gpt-4o-mini' -> 404 model_not_found" in out


def test_explain_prints_the_attempt_plan_and_never_secrets(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    code = main(["explain", "-c", str(path), "--model", "gpt-4o", "--workspace", "acme",
                 "--key", "ci", "--input-tokens", "40000",
                 "--header", "Authorization=Bearer x"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "long-prompts: " not in out and "route: long-prompts" in out
    assert "1. openai/gpt-4o (gpt-4o), 2 tries" in out
    assert "anthropic/claude-sonnet-4-5 (claude-sonnet): provider_unavailable" in out
    assert "rate limits: per-key (per key, 600 rpm)" in out
    assert "budgets: workspace:acme ($200 per month, downgrade to fast)" in out
    assert "retry: 2 per target" in out and "timeout: 1m" in out
    for secret in ("sk-openai-secret-value", "admin-secret-value", "Bearer x"):
        assert secret not in out


def test_explain_reads_a_request_body(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    body = {
        "model": "gpt-4o",
        "max_tokens": 100,
        "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 200_000}]}],
    }
    request = tmp_path / "request.json"
    request.write_text(json.dumps(body))
    assert main(["explain", "-c", str(path), str(request)]) == 0
    out = capsys.readouterr().out
    assert "input_tokens=50000" in out and "max_tokens=100" in out
    assert "route: long-prompts" in out


def test_explain_without_a_model_is_an_error(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    assert main(["explain", "-c", str(path)]) == 1
    assert "--model" in capsys.readouterr().err
    assert main(["explain", "-c", str(path), "--model", "x", "--header", "novalue"]) == 1
