"""`concord explain` and `concord test` decide as `concord serve` does (SPEC §2.4, §2.6, §2.8, §6):
budgets at a stated spend block or downgrade, a declared key brings its workspace, user and tags,
and a model the workspace may not see is a 404 rejection."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from concord.cli import main
from concord.commands.explain import budget_outcome
from concord.config.load import load
from concord.engine.graph import NO_RUNTIME, Graph, RequestContext
from concord.gateway.auth import ConfigKeyStore
from concord.gateway.errors import BudgetExceeded
from concord.gateway.guards import StateGuards, principal_ids
from concord.gateway.parse import build_context
from concord.state import MemoryState
from concord.state.principal import scope_id
from tests.conftest import WriteYaml

KEY_SHA = hashlib.sha256(b"ck-not-needed-by-explain").hexdigest()

CONFIG = f"""
version: 1
providers:
  demo: {{type: mock}}
models:
  big: {{targets: [demo/big], price: {{input: 1, output: 1}}}}
  small: {{targets: [demo/small], price: {{input: 0.1, output: 0.1}}}}
  embed: {{targets: [demo/embed], price: {{input: 1}}}}
  hidden: {{targets: [demo/hidden], price: {{input: 1, output: 1}}}}
auth:
  keys:
    - {{name: k-acme, sha256: {KEY_SHA}, workspace: acme, user: ops, tags: [gold]}}
workspaces:
  acme: {{tags: [paid], budget: {{limit_usd: 1, on_exceed: downgrade, downgrade_to: small}}}}
  strict: {{budget: {{limit_usd: 1, on_exceed: block}}, models: [big, small]}}
budgets:
  - {{name: per-key, scope: key, limit_usd: 5, on_exceed: block}}
routes:
  - name: gold-keys
    when: {{tags: gold, workspace: acme}}
    use: big
"""


def explain(write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    path = write_yaml("concord.yaml", CONFIG)
    assert main(["explain", "-c", str(path), *argv]) == 0
    return capsys.readouterr().out


def concord_test(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], tests: str
) -> tuple[int, str]:
    path = write_yaml("concord.yaml", CONFIG + "tests:\n" + tests)
    code = main(["test", "-c", str(path)])
    return code, capsys.readouterr().out


def graph_of(tmp_path: Path) -> Graph:
    path = tmp_path / "graph.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    loaded = load(str(path))
    assert loaded.ok and loaded.graph is not None
    return loaded.graph


# -- 1. budgets at a stated spend ------------------------------------------------------------------


def test_explain_shows_the_downgrade_serve_applies(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(write_yaml, capsys, "--model", "big", "--workspace", "acme",
                  "--budget-used", "1.2")  # fmt: skip
    assert "model: small" in out and "model: big" not in out
    assert "1. demo/small (small)" in out
    assert "budget: 'workspace:acme' exhausted at budget_used 1.2" in out
    assert "(x-concord-downgraded: big)" in out


def test_explain_shows_the_429_a_block_budget_answers(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(write_yaml, capsys, "--model", "big", "--workspace", "strict",
                  "--budget-used", "1.2")  # fmt: skip
    assert "rejected: 429 Budget 'workspace:strict' is exhausted for this period." in out
    assert "-> 429 budget_exceeded" in out
    assert "attempts:" not in out


def test_explain_under_the_limit_serves_as_asked(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(write_yaml, capsys, "--model", "big", "--workspace", "acme",
                  "--budget-used", "0.99")  # fmt: skip
    assert "model: big" in out and "budget: '" not in out


def test_explain_embeddings_are_not_downgraded(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(write_yaml, capsys, "--model", "embed", "--endpoint", "embeddings",
                  "--workspace", "acme", "--budget-used", "2")  # fmt: skip
    assert "model: embed" in out
    assert "downgrade to small not applied; served as asked" in out


def test_concord_test_sees_budget_outcomes(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = concord_test(write_yaml, capsys, """
  - name: exhausted acme runs on small
    request: {model: big, workspace: acme, budget_used: 1.0}
    expect: {model: small, attempts: [demo/small]}
  - name: exhausted strict is refused
    request: {model: big, workspace: strict, budget_used: 3}
    expect: {reject: 429}
  - name: a key over its own budget is refused in any workspace
    request: {model: big, workspace: acme, key: db-key, budget_used: 1.5}
    expect: {reject: 429}
""")  # fmt: skip
    assert code == 0, out
    assert out.rstrip().endswith("3 passed, 0 failed")


CASES = [
    ("acme", None, "chat", "big", 1.2),
    ("acme", None, "chat", "big", 0.5),
    ("acme", None, "embeddings", "embed", 1.2),
    ("acme", None, "chat", "small", 1.2),
    ("strict", None, "chat", "big", 1.0),
    ("acme", "db-key", "chat", "big", 1.0),
    ("nowhere", None, "chat", "big", 9.0),
]


@pytest.mark.parametrize(("workspace", "key", "endpoint", "model", "used"), CASES)
async def test_budget_outcome_agrees_with_the_gateway_guards(
    tmp_path: Path, workspace: str, key: str | None, endpoint: str, model: str, used: float
) -> None:
    """The same request through serve's guards, with the spend seeded into a fresh backend."""
    graph = graph_of(tmp_path)
    ctx = RequestContext(endpoint=endpoint, model=model, workspace=workspace, key=key,  # type: ignore[arg-type]
                         budget_used=used)  # fmt: skip
    decision = graph.decide(ctx)
    guards = StateGuards(MemoryState())
    for rule in decision.budgets:
        ident = scope_id(rule.scope, principal_ids(ctx))
        if ident:
            await guards.keeper.seed(rule, ident, used * rule.limit_usd)
    outcome = budget_outcome(graph, ctx, decision)
    try:
        admission = await guards.admit(graph, ctx, decision, {}, NO_RUNTIME)
    except BudgetExceeded as exc:
        assert outcome.decision.rejection is not None
        assert outcome.decision.rejection.status == exc.status == 429
        assert outcome.decision.rejection.message == exc.message
        return
    assert outcome.decision.rejection is None
    assert outcome.decision.model == admission.decision.model
    assert outcome.downgraded_from == admission.downgraded_from


# -- 2. declared keys ------------------------------------------------------------------------------


def test_explain_resolves_a_declared_key(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    out = explain(write_yaml, capsys, "--model", "small", "--key", "k-acme")
    assert "workspace=acme key=k-acme user=ops" in out and "tags=gold,paid" in out
    assert "route: gold-keys" in out and "model: big" in out
    assert "budgets: workspace:acme ($1 per month, downgrade to small), per-key" in out


def test_explain_declared_key_outranks_a_stated_workspace(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    argv = ["explain", "-c", str(path), "--model", "small", "--key", "k-acme"]
    assert main([*argv, "--workspace", "strict", "--user", "alice"]) == 0
    out, err = capsys.readouterr()
    assert "workspace=acme key=k-acme user=alice" in out  # the request's user wins, as in serve
    assert "belongs to workspace 'acme'; --workspace strict is ignored" in err


def test_explain_an_undeclared_key_keeps_the_stated_workspace(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_yaml("concord.yaml", CONFIG)
    assert main(["explain", "-c", str(path), "--model", "big", "--key", "db-key",
                 "--workspace", "acme"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert "workspace=acme key=db-key input_tokens=0 tags=paid" in out
    assert "route: (none matched; requested model)" in out
    assert "'db-key' is not declared under auth.keys" in err


def test_concord_test_resolves_a_declared_key(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = concord_test(write_yaml, capsys, """
  - name: the key's workspace and tags route it
    request: {model: small, key: k-acme}
    expect: {route: gold-keys, model: big}
""")  # fmt: skip
    assert code == 0, out


def test_explain_context_is_the_one_serve_builds(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    graph = graph_of(tmp_path)
    principal = ConfigKeyStore(graph.auth.keys, graph.workspaces).principals[KEY_SHA]
    served = build_context("chat", {"model": "small", "messages": []}, principal, {})
    body = tmp_path / "request.json"
    body.write_text(json.dumps({"model": "small", "messages": []}))
    out = explain(write_yaml, capsys, "--key", "k-acme", str(body))
    tags = ",".join(sorted(served.tags))
    assert f"workspace={served.workspace} key={served.key} user={served.user}" in out
    assert f"tags={tags}" in out


# -- 3. model_not_found is a rejection -------------------------------------------------------------


def test_concord_test_counts_model_not_found_as_a_404_rejection(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = concord_test(write_yaml, capsys, """
  - name: hidden is a 404
    request: {model: hidden, workspace: strict}
    expect: {reject: 404}
  - name: hidden is rejected
    request: {model: hidden, workspace: strict}
    expect: {reject: true}
  - name: unknown is rejected
    request: {model: no-such-model}
    expect: {reject: 404}
""")  # fmt: skip
    assert code == 0, out
    assert out.rstrip().endswith("3 passed, 0 failed")


def test_concord_test_reports_a_404_where_no_rejection_was_expected(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = concord_test(write_yaml, capsys, """
  - name: hidden is served
    request: {model: hidden, workspace: strict}
    expect: {reject: false}
  - name: hidden is a 403
    request: {model: hidden, workspace: strict}
    expect: {reject: 403}
""")  # fmt: skip
    assert code == 1
    assert "    reject: expected not rejected, got rejected with 404" in out
    assert "    reject: expected rejected with 403, got rejected with 404" in out


def test_explain_never_prints_what_a_secret_header_is_compared_with(
    write_yaml: WriteYaml, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §2.1: a partner token a route matches on (`${PARTNER_TOKEN}`, expanded from the
    environment) stays out of explain's account of why the route missed."""
    monkeypatch.setenv("PARTNER_TOKEN", "ptok-LIVE-SECRET-42")
    routes = """
  - name: partner
    when: {header.authorization: "Bearer ${PARTNER_TOKEN}", header.x-api-key: {regex: "^sk-1"}}
    use: hidden
  - name: not-partner
    when: {not: {header.cookie: "session=${PARTNER_TOKEN}"}, model: nothing}
    use: hidden
"""
    path = write_yaml("concord.yaml", CONFIG + routes)
    assert main(["explain", "-c", str(path), "--model", "big"]) == 0
    out = capsys.readouterr().out
    assert "partner: header.authorization: absent is not '***'" in out
    assert "ptok" not in out and "sk-1" not in out and "session=" not in out
