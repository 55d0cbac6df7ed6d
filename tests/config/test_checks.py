"""Semantic checks (SPEC §6 "Validation also reports"): each mistake, its exact place and words.

Every case writes a small concord.yaml (a valid base plus one mistake), loads it, and compares
the rendered diagnostics line for line: file:line:col, dotted path, message and hint.
"""

from __future__ import annotations

import json
import random
import textwrap
from pathlib import Path

import pytest

from concord.config.load import load

HEADER = "version: 1\n"
PROVIDERS = """\
providers:
  openai: {type: openai}
  anthropic: {type: anthropic}
"""
MODELS = """\
models:
  gpt-4o: {targets: [openai/gpt-4o], price: {input: 2.5, output: 10}}
  claude: {targets: [anthropic/claude-sonnet-4-5], price: {input: 3, output: 15}}
"""
HEX = "a" * 64
FIXTURES = Path(__file__).parent / "fixtures"


def config_text(case: str) -> str:
    """The base config around one case: the case's lines start at line 2."""
    body = textwrap.dedent(case).lstrip("\n")
    text = HEADER + body
    if "providers:" not in body:
        text += PROVIDERS
    if not any(line.startswith("models:") for line in body.splitlines()):
        text += MODELS
    return text


def diagnose(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every diagnostic of the whole load pipeline, rendered; file names relative to tmp_path."""
    (tmp_path / "concord.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return [d.render() for d in load("concord.yaml").diagnostics]


F = "concord.yaml"

CASES = [
    # 1. targets
    pytest.param(
        """
        models:
          gpt-4o: {targets: [opneai/gpt-4o]}
        """,
        [
            f"{F}:3:22: models.gpt-4o.targets[0]: unknown provider 'opneai' in target"
            " 'opneai/gpt-4o' (did you mean 'openai'?)"
        ],
        id="target-unknown-provider",
    ),
    pytest.param(
        """
        models:
          gpt-4o:
            targets:
              - target: gpt-4o
        """,
        [
            f"{F}:5:17: models.gpt-4o.targets[0].target: target 'gpt-4o' is not provider/model"
            " (write it as <provider>/<upstream model>, e.g. openai/gpt-4o)"
        ],
        id="target-without-slash",
    ),
    # 2, 3. model references
    pytest.param(
        """
        routes:
          - {name: r, use: gpt4o}
        """,
        [f"{F}:3:20: routes[0].use: unknown model 'gpt4o' (did you mean 'gpt-4o'?)"],
        id="route-use-unknown-model",
    ),
    pytest.param(
        """
        routes:
          - {name: r, use: gpt-4o, fallbacks: [$requested]}
        """,
        [f"{F}:3:40: routes[0].fallbacks[0]: '$requested' is only allowed in a route's use"],
        id="requested-in-route-fallbacks",
    ),
    pytest.param(
        """
        workspaces:
          acme:
            budget: {limit_usd: 5, on_exceed: downgrade, downgrade_to: $requested}
        """,
        [
            f"{F}:4:64: workspaces.acme.budget.downgrade_to: '$requested' is only allowed"
            " in a route's use"
        ],
        id="requested-in-downgrade-to",
    ),
    pytest.param(
        """
        models:
          gpt-4o: {targets: [openai/gpt-4o], fallbacks: [claud]}
          claude: {targets: [anthropic/claude-sonnet-4-5]}
        """,
        [f"{F}:3:50: models.gpt-4o.fallbacks[0]: unknown model 'claud' (did you mean 'claude'?)"],
        id="model-fallback-unknown",
    ),
    pytest.param(
        """
        budgets:
          - {name: daily, scope: key, limit_usd: 2, on_exceed: downgrade, downgrade_to: gpt-4}
        """,
        [f"{F}:3:81: budgets[0].downgrade_to: unknown model 'gpt-4' (did you mean 'gpt-4o'?)"],
        id="budget-downgrade-unknown",
    ),
    pytest.param(
        """
        routes:
          - {name: default, use: $requested}
        tests:
          - name: t
            request: {model: gpt-4o}
            expect: {route: defualt, model: gtp-4o}
        """,
        [
            f"{F}:7:21: tests[0].expect.route: unknown route 'defualt' (did you mean 'default'?)",
            f"{F}:7:37: tests[0].expect.model: unknown model 'gtp-4o' (did you mean 'gpt-4o'?)",
        ],
        id="test-expect-unknown-route-and-model",
    ),
    # 4. fallback cycles
    pytest.param(
        """
        models:
          a: {targets: [openai/a], fallbacks: [b]}
          b: {targets: [openai/b], fallbacks: [a]}
        """,
        [f"{F}:4:40: models.b.fallbacks[0]: fallback cycle: a -> b -> a"],
        id="fallback-cycle",
    ),
    pytest.param(
        """
        routes:
          - {name: r, use: gpt-4o, fallbacks: [claude, gpt-4o]}
        """,
        [
            f"{F}:3:48: warning: routes[0].fallbacks[1]: route 'r' falls back to its own"
            " model 'gpt-4o'"
        ],
        id="route-falls-back-to-itself",
    ),
    # 5. rate limit references
    pytest.param(
        """
        rate_limits:
          - {name: per-key, rpm: 60}
        routes:
          - {name: r, use: gpt-4o, limits: [per-kye]}
        """,
        [f"{F}:5:37: routes[0].limits[0]: unknown rate limit 'per-kye' (did you mean 'per-key'?)"],
        id="route-unknown-rate-limit",
    ),
    # 6. duplicate names
    pytest.param(
        """
        routes:
          - name: a
            when: {model: gpt-4o}
            use: gpt-4o
          - name: a
            use: claude
        """,
        [f"{F}:6:5: routes[1].name: duplicate route name 'a' (first defined at {F}:3:5)"],
        id="duplicate-route-name",
    ),
    pytest.param(
        f"""
        auth:
          admin_key: x
          keys:
            - {{name: ci, sha256: {HEX}}}
            - {{name: ci, sha256: {HEX}}}
        """,
        [f"{F}:6:8: auth.keys[1].name: duplicate key name 'ci' (first defined at {F}:5:8)"],
        id="duplicate-key-name",
    ),
    # 6, 12. duplicate rate limit, and one that limits nothing
    pytest.param(
        """
        rate_limits:
          - {name: rl, rpm: 10}
          - {name: rl}
        """,
        [
            f"{F}:4:5: rate_limits[1]: rate limit 'rl' sets neither rpm nor tpm",
            f"{F}:4:6: rate_limits[1].name: duplicate rate limit name 'rl'"
            f" (first defined at {F}:3:6)",
        ],
        id="rate-limit-duplicate-and-empty",
    ),
    # 7. route actions
    pytest.param(
        """
        routes:
          - name: r
            when: {model: gpt-4o}
        """,
        [
            f"{F}:3:5: routes[0]: route 'r' has neither use nor reject"
            " (add use: <model or $requested> or reject: {status, message})"
        ],
        id="route-without-action",
    ),
    pytest.param(
        """
        routes:
          - name: r
            use: gpt-4o
            reject: {status: 403}
        """,
        [f"{F}:5:5: routes[0].reject: route 'r' has both use and reject (keep one of them)"],
        id="route-with-use-and-reject",
    ),
    pytest.param(
        """
        routes:
          - name: r
            reject: {status: 403}
            fallbacks: [gpt-4o]
        """,
        [
            f"{F}:5:5: warning: routes[0].fallbacks: route 'r' rejects, so its fallbacks"
            " are never tried"
        ],
        id="reject-with-fallbacks",
    ),
    # 8. shadowed routes
    pytest.param(
        """
        routes:
          - {name: everything, use: $requested}
          - {name: acme, when: {workspace: acme}, use: claude}
        """,
        [
            f"{F}:4:5: warning: routes[1]: route 'acme' can never match: the earlier route"
            " 'everything' matches all its requests"
        ],
        id="shadowed-by-catch-all",
    ),
    pytest.param(
        """
        routes:
          - {name: acme, when: {workspace: acme}, use: gpt-4o}
          - {name: acme-stream, when: {workspace: acme, stream: true}, use: claude}
          - {name: other, when: {workspace: other}, use: claude}
        """,
        [
            f"{F}:4:5: warning: routes[1]: route 'acme-stream' can never match: the earlier"
            " route 'acme' matches all its requests"
        ],
        id="shadowed-by-broader-when",
    ),
    pytest.param(
        """
        routes:
          - {name: gpt-family, when: {model: "gpt-*"}, use: gpt-4o}
          - {name: gpt-acme, when: {model: gpt-4o, workspace: acme}, use: claude}
          - {name: gpt-4-family, when: {model: "gpt-4*"}, use: claude}
          - {name: claude-acme, when: {model: claude, workspace: acme}, use: claude}
          - {name: two-teams, when: {workspace: [red, blue]}, use: gpt-4o}
          - {name: red, when: {workspace: {in: [red]}, stream: true}, use: claude}
          - {name: long, when: {max_tokens: {gt: 100}}, use: claude}
          - {name: longer, when: {max_tokens: {gte: 200, lt: 500}}, use: gpt-4o}
          - {name: exactly-150, when: {max_tokens: 150}, use: gpt-4o}
          - {name: shorter, when: {max_tokens: {gt: 50}}, use: gpt-4o}
          - {name: any-user, when: {user: {exists: true}}, use: gpt-4o}
          - {name: alice, when: {user: alice}, use: claude}
        """,
        [
            f"{F}:4:5: warning: routes[1]: route 'gpt-acme' can never match: the earlier route"
            " 'gpt-family' matches all its requests",
            f"{F}:5:5: warning: routes[2]: route 'gpt-4-family' can never match: the earlier"
            " route 'gpt-family' matches all its requests",
            f"{F}:8:5: warning: routes[5]: route 'red' can never match: the earlier route"
            " 'two-teams' matches all its requests",
            f"{F}:10:5: warning: routes[7]: route 'longer' can never match: the earlier route"
            " 'long' matches all its requests",
            f"{F}:11:5: warning: routes[8]: route 'exactly-150' can never match: the earlier"
            " route 'long' matches all its requests",
            f"{F}:14:5: warning: routes[11]: route 'alice' can never match: the earlier route"
            " 'any-user' matches all its requests",
        ],
        id="shadowed-by-a-glob-list-range-or-exists",
    ),
    # 9. regexes
    pytest.param(
        """
        rate_limits:
          - name: rl
            rpm: 10
            when:
              any:
                - {model: gpt-4o}
                - {header.x-team: {regex: "team-(a|b"}}
        """,
        [
            f"{F}:8:35: rate_limits[0].when.any[1].header.x-team.regex: invalid regex"
            " 'team-(a|b': missing ), unterminated subpattern at position 5"
        ],
        id="bad-regex-nested",
    ),
    pytest.param(
        """
        routes:
          - {name: r, when: {header.authorization: {regex: "Bearer (sk"}}, use: gpt-4o}
        """,
        [
            f"{F}:3:52: routes[0].when.header.authorization.regex: invalid regex ***:"
            " missing ), unterminated subpattern at position 7"
        ],
        id="bad-regex-on-secret-header-is-not-echoed",
    ),
    # 10. globs and endpoints
    pytest.param(
        """
        routes:
          - {name: r, when: {workspace: "team-[ab"}, use: gpt-4o}
        """,
        [f"{F}:3:33: routes[0].when.workspace: invalid pattern 'team-[ab': '[' is never closed"],
        id="glob-unclosed-bracket",
    ),
    pytest.param(
        """
        routes:
          - name: r
            when: {user: "", model: [gpt-4o, "gpt]"]}
            use: gpt-4o
        """,
        [
            f"{F}:4:18: routes[0].when.user: invalid pattern '': an empty pattern matches nothing",
            f"{F}:4:38: routes[0].when.model[1]: invalid pattern 'gpt]': ']' has no matching '['",
        ],
        id="glob-empty-and-stray-bracket",
    ),
    pytest.param(
        """
        routes:
          - {name: r, when: {header.x-team: "research-[0-9]*"}, use: gpt-4o}
        """,
        [
            f"{F}:3:37: warning: routes[0].when.header.x-team: in pattern 'research-[0-9]*',"
            " '[0-9]' matches only the text [0-9] (only * is a wildcard)"
        ],
        id="glob-bracket-is-literal",
    ),
    pytest.param(
        """
        routes:
          - {name: r, when: {endpoint: {in: [chat, embedding]}}, use: gpt-4o}
        """,
        [
            f"{F}:3:44: routes[0].when.endpoint.in[1]: unknown endpoint 'embedding'"
            " (did you mean 'embeddings'?)"
        ],
        id="unknown-endpoint",
    ),
    # 11. operator / type mismatches
    pytest.param(
        """
        routes:
          - {name: r, when: {model: {gt: 4}}, use: gpt-4o}
        """,
        [
            f"{F}:3:34: routes[0].when.model.gt: operator 'gt' compares numbers,"
            " but 'model' is a string field"
        ],
        id="numeric-operator-on-string-field",
    ),
    pytest.param(
        """
        budgets:
          - name: b
            limit_usd: 10
            when: {input_tokens: lots, stream: "yes"}
        """,
        [
            f"{F}:5:26: budgets[0].when.input_tokens: 'input_tokens' is a numeric field;"
            " 'lots' is not a number",
            f"{F}:5:40: budgets[0].when.stream: 'stream' is a boolean field;"
            " 'yes' is not true or false",
        ],
        id="value-of-wrong-type",
    ),
    pytest.param(
        """
        defaults:
          cache: {when: {stream: {gt: 0}}}
        """,
        [
            f"{F}:3:31: defaults.cache.when.stream.gt: operator 'gt' compares numbers,"
            " but 'stream' is a boolean field"
        ],
        id="numeric-operator-on-boolean-field",
    ),
    # 13. backoff
    pytest.param(
        """
        defaults:
          retry: {backoff: {initial: 10s, max: 2s}}
        """,
        [f"{F}:3:30: defaults.retry.backoff.initial: backoff initial 10s is greater than max 2s"],
        id="backoff-initial-above-max",
    ),
    pytest.param(
        """
        routes:
          - name: r
            use: gpt-4o
            retry: {backoff: {max: 100ms}}
        """,
        [f"{F}:5:28: routes[0].retry.backoff.max: backoff initial 250ms is greater than max 100ms"],
        id="route-backoff-max-below-default-initial",
    ),
    pytest.param(
        """
        defaults:
          retry: {backoff: {max: 30s}}
        routes:
          - {name: r, use: gpt-4o, retry: {backoff: {initial: 10s}}}
        """,
        [],
        id="route-backoff-merges-with-defaults",
    ),
    # 14. downgrades
    pytest.param(
        """
        workspaces:
          acme: {budget: {limit_usd: 5, on_exceed: downgrade}}
        """,
        [
            f"{F}:3:44: workspaces.acme.budget.on_exceed: on_exceed: downgrade needs"
            " downgrade_to (name the catalog model to continue on)"
        ],
        id="downgrade-without-target",
    ),
    pytest.param(
        """
        budgets:
          - {name: b, limit_usd: 5, on_exceed: block, downgrade_to: claude}
        """,
        [
            f"{F}:3:61: warning: budgets[0].downgrade_to: downgrade_to 'claude' is ignored:"
            " on_exceed is block"
        ],
        id="downgrade-to-with-block",
    ),
    # 15. storage
    pytest.param(
        """
        storage: {state: "redis//:hunter2@cache:6379", database: "mysql://db/concord"}
        """,
        [
            f"{F}:2:18: storage.state: 'redis//***@cache:6379' is neither memory nor a Redis URL"
            " (use memory, redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock)",
            f"{F}:2:58: storage.database: 'mysql://db/concord' is not a SQLite or PostgreSQL URL"
            " (use sqlite:///concord.db or postgresql://user@host/dbname)",
        ],
        id="storage-urls",
    ),
    # 16. providers
    pytest.param(
        """
        providers:
          openai: {type: openai}
          anthropic: {type: anthropic}
          azure-eu: {type: azure}
          demo: {type: mock, base_url: "http://localhost"}
        """,
        [
            f"{F}:5:3: providers.azure-eu: azure provider 'azure-eu' needs api_version"
            " (e.g. api_version: 2024-10-21)",
            f"{F}:5:3: providers.azure-eu: azure provider 'azure-eu' needs base_url"
            " (e.g. base_url: https://x.openai.azure.com)",
            f"{F}:6:32: warning: providers.demo.base_url: base_url is ignored:"
            " provider 'demo' is a mock",
        ],
        id="provider-settings",
    ),
    # 17. price and context window
    pytest.param(
        """
        workspaces:
          acme: {budget: {limit_usd: 5}}
        models:
          gpt-4o: {targets: [openai/gpt-4o], price: {input: 2.5, output: 10}}
          claude: {targets: [anthropic/claude-sonnet-4-5]}
        """,
        [f"{F}:6:3: warning: models.claude: model 'claude' has no price; budgets count it as free"],
        id="price-missing-under-budget",
    ),
    pytest.param(
        """
        budgets:
          - {name: b, limit_usd: 5}
        routes:
          - {name: all, use: gpt-4o}
        models:
          gpt-4o: {targets: [openai/gpt-4o], price: {input: 2.5}}
          claude: {targets: [anthropic/claude-sonnet-4-5]}
        """,
        [],
        id="price-not-needed-on-unreachable-model",
    ),
    pytest.param(
        """
        routes:
          - {name: long, when: {input_tokens: {gt: 30000}}, use: claude, fallbacks: [gpt-4o]}
        models:
          gpt-4o: {targets: [openai/gpt-4o], context_window: 128000}
          claude: {targets: [anthropic/claude-sonnet-4-5]}
        """,
        [
            f"{F}:6:3: warning: models.claude: model 'claude' has no context_window;"
            " route 'long' matches on input_tokens"
        ],
        id="window-missing-for-input-tokens-route",
    ),
    pytest.param(
        """
        defaults: {context_overflow: truncate}
        """,
        [
            f"{F}:7:3: warning: models.gpt-4o: model 'gpt-4o' has no context_window;"
            " defaults.context_overflow is truncate",
            f"{F}:8:3: warning: models.claude: model 'claude' has no context_window;"
            " defaults.context_overflow is truncate",
        ],
        id="window-missing-for-truncate",
    ),
    # 18. target lists
    pytest.param(
        """
        models:
          gpt-4o:
            targets:
              - openai/gpt-4o
              - {target: openai/gpt-4o, weight: 2}
        """,
        [
            f"{F}:6:18: warning: models.gpt-4o.targets[1].target: duplicate target"
            " 'openai/gpt-4o' in model 'gpt-4o' (also targets[0])",
            f"{F}:6:41: warning: models.gpt-4o.targets[1].weight: weight is ignored:"
            " model 'gpt-4o' balances by priority (set balance: weighted)",
        ],
        id="duplicate-target-and-unused-weight",
    ),
    # 20. auth
    pytest.param(
        f"""
        workspaces:
          acme: {{}}
        auth:
          admin_key: x
          keys:
            - {{name: ci, workspace: acmee, sha256: {HEX}}}
        """,
        [
            f"{F}:7:29: warning: auth.keys[0].workspace: workspace 'acmee' is not declared"
            " in workspaces (did you mean 'acme'?)"
        ],
        id="key-in-undeclared-workspace",
    ),
    pytest.param(
        """
        auth:
          mode: keys
        """,
        [
            f"{F}:3:9: warning: auth.mode: mode is keys, but no keys are declared and admin_key"
            " is empty: only keys made with `concord keys create` can call the gateway"
            " (declare auth.keys, set admin_key, or use mode: open for local development)"
        ],
        id="keys-mode-without-keys",
    ),
    # 21. model patterns
    pytest.param(
        """
        workspaces:
          acme: {models: [gpt-4o, "claude*", "gemini-*", gtp-4o]}
        """,
        [
            f"{F}:3:38: workspaces.acme.models[2]: pattern 'gemini-*' matches no catalog model",
            f"{F}:3:50: workspaces.acme.models[3]: unknown model 'gtp-4o' (did you mean 'gpt-4o'?)",
        ],
        id="workspace-models-unknown",
    ),
    pytest.param(
        """
        budgets:
          - {name: b, limit_usd: 5, when: {model: {in: [claude, gpt4o]}}}
        """,
        [f"{F}:3:57: budgets[0].when.model.in[1]: unknown model 'gpt4o' (did you mean 'gpt-4o'?)"],
        id="budget-when-model-unknown",
    ),
    # 22. params
    pytest.param(
        """
        routes:
          - name: r
            use: gpt-4o
            params: {set: {model: gpt-3.5, temperature: 0}}
        """,
        [
            f"{F}:5:20: routes[0].params.set.model: params.set cannot force 'model':"
            " the route's use decides the model"
        ],
        id="params-set-model",
    ),
]


@pytest.mark.parametrize(("case", "expected"), CASES)
def test_each_mistake_is_reported_where_it_was_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, expected: list[str]
) -> None:
    assert diagnose(tmp_path, config_text(case), monkeypatch) == expected


def test_a_rich_valid_config_has_no_diagnostics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    loaded = load("rich.yaml", env={})
    assert loaded.config is not None
    assert [d.render() for d in loaded.diagnostics] == []


def test_every_mistake_in_every_file_is_reported_in_one_run_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "extra.yaml").write_text(
        textwrap.dedent(
            """\
            routes:
              - {name: default, use: $requested}
              - {name: bad, when: {model: "gpt-[4"}, use: gtp-4o}
            rate_limits:
              - {name: per-key}
            """
        )
    )
    root = """\
        include: [policies/*.yaml]
        providers:
          openai: {type: openai}
        models:
          gpt-4o: {targets: [openai/gpt-4o], fallbacks: [mini]}
          mini: {targets: [opnai/gpt-4o-mini], fallbacks: [gpt-4o]}
        routes:
          - {name: default, use: gpt-4o, limits: [per-kye]}
        rate_limits:
          - {name: per-key, rpm: 60}
        """
    extra = "policies/extra.yaml"
    assert diagnose(tmp_path, config_text(root), monkeypatch) == [
        f"{F}:7:20: models.mini.targets[0]: unknown provider 'opnai' in target"
        " 'opnai/gpt-4o-mini' (did you mean 'openai'?)",
        f"{F}:7:52: models.mini.fallbacks[0]: fallback cycle: gpt-4o -> mini -> gpt-4o",
        f"{F}:9:43: routes[0].limits[0]: unknown rate limit 'per-kye' (did you mean 'per-key'?)",
        f"{extra}:2:5: warning: routes[1]: route 'default' can never match: the earlier route"
        " 'default' matches all its requests",
        f"{extra}:2:6: routes[1].name: duplicate route name 'default' (first defined at {F}:9:6)",
        f"{extra}:3:5: warning: routes[2]: route 'bad' can never match: the earlier route"
        " 'default' matches all its requests",
        f"{extra}:3:31: routes[2].when.model: invalid pattern 'gpt-[4': '[' is never closed",
        f"{extra}:3:47: routes[2].use: unknown model 'gtp-4o' (did you mean 'gpt-4o'?)",
        f"{extra}:5:5: rate_limits[1]: rate limit 'per-key' sets neither rpm nor tpm",
        f"{extra}:5:6: rate_limits[1].name: duplicate rate limit name 'per-key'"
        f" (first defined at {F}:11:6)",
    ]


def test_only_warnings_leave_the_config_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "concord.yaml").write_text(
        config_text(
            """
            routes:
              - {name: r, use: gpt-4o, fallbacks: [gpt-4o]}
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    loaded = load("concord.yaml")
    assert [d.severity for d in loaded.diagnostics] == ["warning"]
    assert loaded.ok


def test_each_unreachable_route_names_the_first_route_that_covers_it(tmp_path: Path) -> None:
    """Routes drawn at random from a few conditions: the warnings are exactly those a
    route-by-route comparison gives (every condition of an earlier route found, verbatim, in a
    later one), each naming the first such earlier route; `1` does not cover `true`."""
    conditions = [
        ("workspace", "acme"),
        ("workspace", "beta"),
        ("stream", True),
        ("stream", 1),
        ("model", "gpt-*"),
        ("input_tokens", {"gt": 1000}),
        ("header.x-team", "red"),
    ]
    rng = random.Random(11)
    routes: list[dict[str, object]] = []
    for index in range(60):
        picked = dict(rng.sample(conditions, rng.choice([1, 1, 2, 2, 3, 4])))
        routes.append({"name": f"r{index}", "when": picked, "use": "gpt-4o"})
    routes.insert(45, {"name": "all", "use": "gpt-4o"})  # covers every route after it

    def covers(earlier: dict[str, object], later: dict[str, object]) -> bool:
        mine, theirs = earlier.get("when", {}), later.get("when", {})
        return all(
            key in theirs and json.dumps(theirs[key]) == json.dumps(value)
            for key, value in mine.items()  # type: ignore[union-attr]
        )

    expected = []
    for i, route in enumerate(routes):
        first = next((e for e in routes[:i] if covers(e, route)), None)
        if first is not None:
            expected.append(
                f"route '{route['name']}' can never match: the earlier route "
                f"'{first['name']}' matches all its requests"
            )
    config = tmp_path / "concord.yaml"
    listed = "".join(f"  - {json.dumps(route)}\n" for route in routes)
    config.write_text(config_text("routes:\n" + listed), encoding="utf-8")
    loaded = load(config)
    found = [d.message for d in loaded.diagnostics if d.code == "shadowed_route"]
    assert found == expected
    assert len(expected) > 20 and any("'all'" in message for message in expected)
