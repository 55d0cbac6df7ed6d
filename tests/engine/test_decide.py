"""Graph.decide (SPEC §2.3-§2.7): routing, plans, policies."""

from __future__ import annotations

import pytest

from concord.config.errors import ConfigError
from concord.config.model import Config
from concord.engine.compile import compile_graph
from concord.engine.graph import Decision, RequestContext, RuntimeView
from tests.engine.conftest import MODELS, PROVIDERS, build


def chat(model: str = "gpt-4o", **fields: object) -> RequestContext:
    return RequestContext(endpoint="chat", model=model, **fields)  # type: ignore[arg-type]


def ids(decision: Decision) -> list[str]:
    return [a.target.id for a in decision.attempts]


ROUTES = [
    {"name": "free-no-embeddings", "when": {"endpoint": "embeddings", "workspace": "free-*"},
     "reject": {"status": 403, "message": "Embeddings are not part of the free tier"}},
    {"name": "long-prompts",
     "when": {"model": ["gpt-4o", "gpt-4.1"], "input_tokens": {"gt": 30000}},
     "use": "claude-sonnet", "fallbacks": ["gpt-4o"]},
    {"name": "soft-budget", "when": {"budget_used": {"gte": 0.8}}, "use": "fast"},
    {"name": "alias", "when": {"model": "gpt-4"}, "use": "gpt-4o"},
    {"name": "default", "use": "$requested", "fallbacks": ["fast"]},
]  # fmt: skip


@pytest.fixture(scope="module")
def graph():  # type: ignore[no-untyped-def]
    return build(routes=ROUTES)


def test_first_matching_route_wins_in_file_order(graph) -> None:  # type: ignore[no-untyped-def]
    # Both long-prompts and soft-budget match; the earlier one wins.
    d = graph.decide(chat(input_tokens=40000, budget_used=0.9))
    assert (d.route, d.model) == ("long-prompts", "claude-sonnet")
    assert graph.decide(chat(budget_used=0.9)).route == "soft-budget"
    assert graph.decide(chat()).route == "default"


def test_rejection_route_returns_its_status_and_message(graph) -> None:  # type: ignore[no-untyped-def]
    d = graph.decide(RequestContext("embeddings", "embed", workspace="free-team"))
    assert d.rejection is not None
    assert (d.rejection.status, d.rejection.message) == (403, d.rejection.message)
    assert d.rejection.message == "Embeddings are not part of the free tier"
    assert d.model is None and d.attempts == () and not d.not_found
    assert graph.decide(RequestContext("embeddings", "embed", workspace="acme")).rejection is None


def test_requested_model_is_used_by_dollar_requested_and_when_nothing_matches() -> None:
    graph = build(routes=[{"name": "only-o3", "when": {"model": "o3"}, "use": "fast"}])
    d = graph.decide(chat("claude-sonnet"))
    assert (d.route, d.model) == (None, "claude-sonnet")
    assert ids(d) == ["anthropic/claude-sonnet-4-5"]
    routed = build(routes=ROUTES).decide(chat("claude-sonnet"))
    assert (routed.route, routed.model) == ("default", "claude-sonnet")


def test_unknown_model_is_not_found(graph) -> None:  # type: ignore[no-untyped-def]
    d = graph.decide(chat("gpt-5"))
    assert d.not_found and d.model is None and d.route == "default"
    assert graph.decide(chat("gpt-4")).model == "gpt-4o"  # an alias route resolves it


def test_workspace_visibility_hides_models() -> None:
    graph = build(workspaces={"free": {"models": ["fast", "embed*"]}, "paid": {}})
    assert graph.decide(chat("gpt-4o", workspace="free")).not_found
    assert graph.decide(chat("fast", workspace="free")).model == "fast"
    assert graph.decide(chat("gpt-4o", workspace="paid")).model == "gpt-4o"
    assert graph.decide(chat("gpt-4o", workspace="undeclared")).model == "gpt-4o"
    assert graph.visible_models("free") == ["fast", "embed"]
    assert graph.visible_models("paid") == list(MODELS)
    assert graph.visible_models("undeclared") == list(MODELS)


def test_plan_is_targets_then_model_fallbacks_then_route_fallbacks() -> None:
    models = {
        **MODELS,
        "gpt-4o": {**MODELS["gpt-4o"], "fallbacks": ["claude-sonnet"]},
        "claude-sonnet": {**MODELS["claude-sonnet"], "fallbacks": ["embed"]},
    }
    graph = build(models=models, routes=[{"name": "r", "fallbacks": ["fast", "gpt-4o"]}])
    d = graph.decide(chat("gpt-4o"))
    assert ids(d) == [
        "openai/gpt-4o",
        "azure/gpt-4o",
        "anthropic/claude-sonnet-4-5",  # the model's fallback
        "openai/text-embedding-3-small",  # ...and its own fallback, depth first
        "openai/gpt-4o-mini",  # then the route's fallbacks; gpt-4o is not repeated
    ]
    assert d.fallbacks == ("claude-sonnet", "embed", "fast")
    assert [a.model for a in d.attempts][:2] == ["gpt-4o", "gpt-4o"]


def test_fallback_cycles_and_unknown_fallbacks_do_not_loop_or_crash() -> None:
    models = {
        **MODELS,
        "gpt-4o": {**MODELS["gpt-4o"], "fallbacks": ["fast", "ghost"]},
        "fast": {**MODELS["fast"], "fallbacks": ["gpt-4o"]},
    }
    graph = build(models=models, routes=[{"name": "r", "fallbacks": ["nope"]}])
    assert ids(graph.decide(chat("fast"))) == [
        "openai/gpt-4o-mini", "openai/gpt-4o", "azure/gpt-4o",
    ]  # fmt: skip


BALANCED = {
    "pool": {
        "targets": [
            {"target": "openai/a", "weight": 1},
            {"target": "azure/b", "weight": 3},
            {"target": "anthropic/c", "weight": 2},
        ],
        "balance": "weighted",
    }
}


@pytest.mark.parametrize(
    ("balance", "runtime", "expected"),
    [
        ("priority", RuntimeView(draw=0.9), ["openai/a", "azure/b", "anthropic/c"]),
        # weights 1,3,2 of 6: [0, 1/6) -> a, [1/6, 4/6) -> b, [4/6, 1) -> c; rest by weight
        ("weighted", RuntimeView(draw=0.0), ["openai/a", "azure/b", "anthropic/c"]),
        ("weighted", RuntimeView(draw=0.5), ["azure/b", "anthropic/c", "openai/a"]),
        ("weighted", RuntimeView(draw=0.99), ["anthropic/c", "azure/b", "openai/a"]),
        ("round_robin", RuntimeView(rr_position={"pool": 0}),
         ["openai/a", "azure/b", "anthropic/c"]),
        ("round_robin", RuntimeView(rr_position={"pool": 4}),
         ["azure/b", "anthropic/c", "openai/a"]),
        ("least_latency", RuntimeView(latency_ms={"openai/a": 300, "azure/b": 100}),
         ["anthropic/c", "azure/b", "openai/a"]),  # unknown latency first
    ],
)  # fmt: skip
def test_balance_orders_targets(balance: str, runtime: RuntimeView, expected: list[str]) -> None:
    graph = build(models={"pool": {**BALANCED["pool"], "balance": balance}})
    assert ids(graph.decide(chat("pool"), runtime)) == expected


def test_open_circuits_and_unavailable_providers_are_skipped() -> None:
    graph = build(routes=[{"name": "r", "fallbacks": ["claude-sonnet"]}])
    runtime = RuntimeView(open_circuits=frozenset({"openai/gpt-4o"}),
                          unavailable_providers=frozenset({"anthropic"}))  # fmt: skip
    d = graph.decide(chat("gpt-4o"), runtime)
    assert ids(d) == ["azure/gpt-4o"]
    assert [(s.target, s.reason) for s in d.skipped] == [
        ("openai/gpt-4o", "circuit_open"),
        ("anthropic/claude-sonnet-4-5", "provider_unavailable"),
    ]


def test_provider_without_keys_is_skipped() -> None:
    providers = {**PROVIDERS, "anthropic": {"type": "anthropic", "api_keys": ["", ""]}}
    graph = build(providers=providers)
    d = graph.decide(chat("claude-sonnet"))
    assert d.attempts == () and [s.reason for s in d.skipped] == ["provider_unavailable"]
    assert not graph.providers["anthropic"].available
    # Routing tests check policy, not this environment's secrets.
    assert ids(graph.decide(chat("claude-sonnet"), RuntimeView(assume_providers_available=True)))


def test_context_window_too_small_is_skipped_only_with_fallback_overflow() -> None:
    routes = [{"name": "r", "fallbacks": ["fast", "claude-sonnet"]}]
    graph = build(routes=routes)
    d = graph.decide(chat("gpt-4o", input_tokens=127000, max_tokens=2000))
    assert ids(d) == ["anthropic/claude-sonnet-4-5"]
    assert {(s.model, s.reason) for s in d.skipped} == {
        ("gpt-4o", "context_window"), ("fast", "context_window"),
    }  # fmt: skip
    assert len(ids(graph.decide(chat("gpt-4o", input_tokens=120000, max_tokens=2000)))) == 3
    truncating = build(routes=[{**routes[0], "context_overflow": "truncate"}])
    d = truncating.decide(chat("gpt-4o", input_tokens=127000, max_tokens=2000))
    assert len(ids(d)) == 4 and d.skipped == () and d.context_overflow == "truncate"


def test_route_retry_fields_override_only_what_they_set() -> None:
    graph = build(
        defaults={"retry": {"attempts": 3, "backoff": {"initial": "1s", "max": "4s"}, "on": [429]},
                  "timeout": "30s"},
        routes=[{"name": "r", "when": {"model": "fast"}, "retry": {"backoff": {"max": "2s"}},
                 "timeout": "5s"},
                {"name": "s", "retry": {"attempts": 1}}],
    )  # fmt: skip
    r = graph.decide(chat("fast"))
    assert r.retry.attempts == 3 and r.retry.on_status == {429} and not r.retry.on_timeout
    assert (r.retry.backoff.initial, r.retry.backoff.max) == (1.0, 2.0)
    assert r.timeout == 5.0 and {a.tries for a in r.attempts} == {3}
    s = graph.decide(chat("gpt-4o"))
    assert s.retry.attempts == 1 and s.retry.backoff.max == 4.0 and s.timeout == 30.0
    assert {a.tries for a in s.attempts} == {1}


def test_cache_applies_by_its_when() -> None:
    graph = build(
        routes=[
            {"name": "nocache", "when": {"model": "fast"}, "cache": False},
            {"name": "tools", "when": {"tools": True},
             "cache": {"ttl": "5m", "when": {"stream": False}}},
            {"name": "default", "cache": {"ttl": "10m"}},
        ]
    )  # fmt: skip
    d = graph.decide(chat("gpt-4o", temperature=0))
    assert d.cache is not None and d.cache.ttl == 600 and d.cache.scope == "workspace"
    assert graph.decide(chat("gpt-4o", temperature=0.7)).cache is None
    assert graph.decide(chat("gpt-4o")).cache is None  # absent temperature is not 0
    assert graph.decide(RequestContext("embeddings", "embed")).cache is not None
    assert graph.decide(chat("fast", temperature=0)).cache is None
    tools = graph.decide(chat("gpt-4o", tools=True, temperature=0.9))
    assert tools.cache is not None and tools.cache.ttl == 300
    disabled = build(defaults={"cache": {"enabled": False}}).decide(chat(temperature=0))
    assert disabled.cache is None


def test_route_scoped_rate_limits_apply_only_on_their_routes() -> None:
    graph = build(
        rate_limits=[
            {"name": "per-key", "per": "key", "rpm": 600},
            {"name": "gpt4o-global", "per": "global", "when": {"model": "gpt-4o"}, "rpm": 10},
            {"name": "batch", "per": "workspace", "rpm": 5},
        ],
        routes=[{"name": "batch", "when": {"header.x-batch": "1"}, "limits": ["batch"]}],
    )
    names = lambda d: [r.name for r in d.rate_limits]  # noqa: E731
    assert names(graph.decide(chat("gpt-4o"))) == ["per-key", "gpt4o-global"]
    assert names(graph.decide(chat("fast"))) == ["per-key"]
    batch = graph.decide(chat("fast", headers={"x-batch": "1"}))
    assert batch.route == "batch" and names(batch) == ["per-key", "batch"]
    assert set(graph.rate_limits) == {"per-key", "gpt4o-global", "batch"}


def test_budgets_for_collects_workspace_and_scoped_budgets() -> None:
    graph = build(
        workspaces={"acme": {"budget": {"limit_usd": 200, "on_exceed": "downgrade",
                                        "downgrade_to": "fast"}}},
        budgets=[
            {"name": "per-key-daily", "scope": "key", "limit_usd": 2, "period": "day"},
            {"name": "per-user", "scope": "user", "limit_usd": 1},
            {"name": "gpt4o-global", "scope": "global", "limit_usd": 100,
             "when": {"model": "gpt-4o"}},
        ],
    )  # fmt: skip
    names = lambda ctx: [b.name for b in graph.budgets_for(ctx)]  # noqa: E731
    assert names(chat("gpt-4o", workspace="acme", key="k")) == [
        "workspace:acme", "per-key-daily", "gpt4o-global",
    ]  # fmt: skip
    assert names(chat("fast", user="u")) == ["per-user"]
    acme = graph.budgets_for(chat(workspace="acme"))[0]
    assert (acme.limit_usd, acme.on_exceed, acme.downgrade_to) == (200, "downgrade", "fast")
    assert graph.decide(chat("fast", workspace="acme")).budgets == (acme,)


def test_replan_serves_another_model_under_the_same_route() -> None:
    graph = build(routes=[{"name": "r", "fallbacks": ["claude-sonnet"], "retry": {"attempts": 4},
                           "params": {"max": {"max_tokens": 100}}}])  # fmt: skip
    decision = graph.decide(chat("gpt-4o"))
    downgraded = graph.replan(decision, "fast", chat("gpt-4o"))
    assert downgraded.route == "r" and downgraded.model == "fast"
    assert downgraded.requested_model == "gpt-4o"
    assert ids(downgraded) == ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4-5"]
    assert downgraded.retry.attempts == 4 and downgraded.params.max == {"max_tokens": 100}
    assert graph.replan(decision, "ghost", chat("gpt-4o")).not_found


def test_decision_carries_route_constants() -> None:
    graph = build(
        defaults={"circuit_breaker": {"failures": 5, "cooldown": "1m"}, "key_cooldown": "2m"},
        routes=[{"name": "r", "params": {"set": {"temperature": 0}}}],
    )
    d = graph.decide(chat("gpt-4o"))
    assert d.params.set == {"temperature": 0}
    assert (d.breaker.failures, d.breaker.cooldown, d.key_cooldown) == (5, 60.0, 120.0)
    assert d.price is not None and d.price.input == 2.5
    assert d.attempts[0].context_window == 128000


def test_decide_never_raises() -> None:
    graph = build(routes=ROUTES)
    weird = RequestContext("chat", None, workspace=None, headers=None)  # type: ignore[arg-type]
    d = graph.decide(weird)
    assert isinstance(d, Decision)


def test_graph_is_immutable_and_exposes_settings() -> None:
    graph = build(
        server={"port": 9000, "max_body": "1MiB", "cors_origins": ["https://a"]},
        auth={"admin_key": "admin-secret", "keys": [{"name": "ci", "sha256": "a" * 64,
                                                     "workspace": "acme", "tags": ["x"]}]},
        providers={**PROVIDERS, "openai": {**PROVIDERS["openai"], "timeout": "5s"}},
        defaults={"timeout": "20s", "key_cooldown": "1m"},
    )  # fmt: skip
    with pytest.raises(AttributeError):
        graph.version = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        graph.models["new"] = graph.models["fast"]  # type: ignore[index]
    assert graph.server.port == 9000 and graph.server.max_body == 1024 * 1024
    assert graph.server.cors_origins == ("https://a",)
    assert graph.auth.keys["a" * 64].workspace == "acme"
    assert graph.auth.keys["a" * 64].tags == frozenset({"x"})
    assert "admin-secret" not in repr(graph.auth) and "sk-openai" not in repr(graph.providers)
    assert (graph.providers["openai"].timeout, graph.providers["azure"].timeout) == (5.0, 20.0)
    assert graph.providers["azure"].key_cooldown == 60.0
    assert graph.models["gpt-4o"].targets[1].upstream_model == "gpt-4o"


def test_malformed_target_and_condition_are_compile_errors() -> None:
    raw = {
        "version": 1,
        "providers": PROVIDERS,
        "models": {"m": {"targets": ["no-slash"]}},
        "routes": [{"name": "r", "when": {"model": {"regex": "("}}}],
    }
    with pytest.raises(ConfigError) as caught:
        compile_graph(Config.model_validate(raw))
    paths = [d.path for d in caught.value.diagnostics]
    assert paths == ["models.m.targets[0]", "routes[0].when.model.regex"]
    assert all(d.location.file == "<config>" for d in caught.value.diagnostics)


def test_unresolved_references_compile_and_decide_gracefully() -> None:
    graph = build(
        models={"m": {"targets": ["ghost/x", "openai/y"]}},
        routes=[{"name": "r", "when": {"model": "a"}, "use": "nowhere", "limits": ["nope"]}],
    )
    assert graph.decide(chat("a")).not_found
    d = graph.decide(chat("m"))
    assert ids(d) == ["openai/y"] and d.skipped[0].reason == "provider_unavailable"


def test_provider_whose_declared_keys_are_all_unset_is_skipped(tmp_path) -> None:
    """SPEC §2.1: keys emptied by the environment make the provider unavailable; a keyless
    OpenAI-compatible server declared without `api_keys` stays available."""
    from concord.config.load import load
    from concord.engine.graph import RequestContext

    path = tmp_path / "concord.yaml"
    path.write_text(
        "version: 1\n"
        "providers:\n"
        '  openai: {type: openai, api_keys: ["${OPENAI_KEY_FOR_TEST:-}"]}\n'
        '  local: {type: openai, base_url: "http://127.0.0.1:1/v1"}\n'
        "models:\n"
        "  m: {targets: [openai/gpt-4o, local/llama]}\n"
    )
    unset = load(path, env={}).graph
    assert unset is not None
    decision = unset.decide(RequestContext(endpoint="chat", model="m"))
    assert [a.target.id for a in decision.attempts] == ["local/llama"]
    assert [(s.target, s.reason) for s in decision.skipped] == [
        ("openai/gpt-4o", "provider_unavailable")
    ]

    with_key = load(path, env={"OPENAI_KEY_FOR_TEST": "sk-test"}).graph
    assert with_key is not None
    decision = with_key.decide(RequestContext(endpoint="chat", model="m"))
    assert [a.target.id for a in decision.attempts] == ["openai/gpt-4o", "local/llama"]


def test_graph_says_whether_any_condition_reads_budget_used() -> None:
    """The data plane fetches budget spend before decide only when a condition needs it."""
    from concord.config.model import Config
    from concord.engine.compile import compile_graph

    base = {
        "version": 1,
        "providers": {"p": {"type": "mock"}},
        "models": {"m": {"targets": ["p/x"]}, "cheap": {"targets": ["p/y"]}},
    }
    plain = compile_graph(Config.model_validate({**base, "routes": [{"name": "r", "use": "m"}]}))
    assert plain.reads_budget_used is False
    nested = {"any": [{"model": "m"}, {"not": {"budget_used": {"gte": 0.8}}}]}
    soft = compile_graph(
        Config.model_validate({**base, "routes": [{"name": "r", "when": nested, "use": "cheap"}]})
    )
    assert soft.reads_budget_used is True
