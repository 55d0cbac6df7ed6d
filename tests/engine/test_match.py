"""SPEC §2.4.1: every condition field and operator, as a table."""

from __future__ import annotations

from typing import Any

import pytest

from concord.engine.graph import RequestContext
from concord.engine.match import WhenError, compile_when

BASE = RequestContext(
    endpoint="chat",
    model="gpt-4o",
    workspace="free-team",
    key="ci-key",
    user="alice",
    tags=frozenset({"paid", "beta"}),
    headers={"x-tier": "gold", "x-priority": "2"},
    metadata={"region": "eu", "app": {"name": "billing"}, "a.b": "flat"},
    input_tokens=1200,
    max_tokens=500,
    temperature=0.0,
    stream=True,
    tools=False,
    images=False,
    budget_used=0.85,
)
BARE = RequestContext(endpoint="embeddings", model="text-embedding-3-small")

CASES: list[tuple[dict[str, Any], RequestContext, bool]] = [
    # scalars: equality, globs
    ({"endpoint": "chat"}, BASE, True),
    ({"endpoint": "embeddings"}, BASE, False),
    ({"model": "gpt-4o"}, BASE, True),
    ({"model": "gpt-4"}, BASE, False),
    ({"model": "gpt-*"}, BASE, True),
    ({"model": "*-4o"}, BASE, True),
    ({"model": "claude-*"}, BASE, False),
    ({"workspace": "free-*"}, BASE, True),
    ({"workspace": "free-*"}, BARE, False),
    ({"key": "ci-key"}, BASE, True),
    ({"key": "ci-key"}, BARE, False),
    ({"user": "alice"}, BASE, True),
    ({"user": None}, BARE, True),
    ({"user": None}, BASE, False),
    # lists: any of
    ({"model": ["gpt-4o", "gpt-4.1"]}, BASE, True),
    ({"model": ["gpt-4.1", "o3"]}, BASE, False),
    ({"model": ["o3", "gpt-*"]}, BASE, True),
    # tags: any request tag
    ({"tags": "paid"}, BASE, True),
    ({"tags": "free"}, BASE, False),
    ({"tags": ["free", "beta"]}, BASE, True),
    ({"tags": "pa*"}, BASE, True),
    ({"tags": {"exists": True}}, BASE, True),
    ({"tags": {"exists": False}}, BARE, True),
    ({"tags": "paid"}, BARE, False),
    # headers: case-insensitive names, numeric text
    ({"header.x-tier": "gold"}, BASE, True),
    ({"header.X-Tier": "gold"}, BASE, True),
    ({"header.x-tier": "silver"}, BASE, False),
    ({"header.x-priority": 2}, BASE, True),
    ({"header.x-priority": {"gte": 2}}, BASE, True),
    ({"header.x-priority": {"gt": 2}}, BASE, False),
    ({"header.x-missing": {"exists": False}}, BASE, True),
    ({"header.x-missing": "gold"}, BASE, False),
    # metadata: dotted paths, or a literal dotted key
    ({"metadata.region": "eu"}, BASE, True),
    ({"metadata.region": "us"}, BASE, False),
    ({"metadata.app.name": "billing"}, BASE, True),
    ({"metadata.a.b": "flat"}, BASE, True),
    ({"metadata.app.missing": {"exists": True}}, BASE, False),
    # numbers
    ({"input_tokens": 1200}, BASE, True),
    ({"input_tokens": {"gt": 1000}}, BASE, True),
    ({"input_tokens": {"gt": 1200}}, BASE, False),
    ({"input_tokens": {"gte": 1200}}, BASE, True),
    ({"input_tokens": {"lt": 1200}}, BASE, False),
    ({"input_tokens": {"lte": 1200}}, BASE, True),
    ({"input_tokens": {"gt": 1000, "lt": 2000}}, BASE, True),
    ({"input_tokens": {"gt": 1000, "lt": 1100}}, BASE, False),
    ({"max_tokens": {"lte": 500}}, BASE, True),
    ({"max_tokens": {"lte": 500}}, BARE, False),  # absent: comparisons fail
    ({"max_tokens": {"exists": False}}, BARE, True),
    ({"temperature": 0}, BASE, True),
    ({"temperature": 0}, BARE, False),
    ({"budget_used": {"gte": 0.8}}, BASE, True),
    ({"budget_used": {"gte": 0.8}}, BARE, False),
    # booleans
    ({"stream": True}, BASE, True),
    ({"stream": False}, BASE, False),
    ({"tools": False}, BASE, True),
    ({"images": True}, BASE, False),
    ({"stream": {"gt": 0}}, BASE, False),  # booleans are not numbers
    # operators
    ({"model": {"eq": "gpt-4o"}}, BASE, True),
    ({"model": {"ne": "gpt-4o"}}, BASE, False),
    ({"user": {"ne": "bob"}}, BARE, True),  # absent is not "bob"
    ({"model": {"in": ["gpt-4o", "o3"]}}, BASE, True),
    ({"model": {"not_in": ["gpt-4o", "o3"]}}, BASE, False),
    ({"user": {"not_in": ["bob"]}}, BARE, True),
    ({"model": {"regex": "^gpt-4"}}, BASE, True),
    ({"model": {"regex": "mini$"}}, BASE, False),
    ({"user": {"regex": ".*"}}, BARE, False),
    ({"user": {"exists": True}}, BASE, True),
    ({"user": {"exists": True}}, BARE, False),
    # keys AND; all / any / not
    ({"model": "gpt-4o", "workspace": "free-*"}, BASE, True),
    ({"model": "gpt-4o", "workspace": "paid-*"}, BASE, False),
    ({"all": [{"model": "gpt-4o"}, {"stream": True}]}, BASE, True),
    ({"all": [{"model": "gpt-4o"}, {"stream": False}]}, BASE, False),
    ({"any": [{"model": "o3"}, {"stream": True}]}, BASE, True),
    ({"any": [{"model": "o3"}, {"stream": False}]}, BASE, False),
    ({"not": {"model": "o3"}}, BASE, True),
    ({"not": {"model": "gpt-4o"}}, BASE, False),
    ({"not": {"any": [{"user": "bob"}, {"tags": "free"}]}}, BASE, True),
]


@pytest.mark.parametrize(("when", "ctx", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_condition_matches_like_the_spec_says(
    when: dict[str, Any], ctx: RequestContext, expected: bool
) -> None:
    condition = compile_when(when)
    assert condition is not None
    assert condition.test(ctx) is expected
    assert (condition.why_not(ctx) is None) is expected


def test_empty_when_means_always() -> None:
    assert compile_when(None) is None
    assert compile_when({}) is None


WHY_NOT = [
    ({"model": ["gpt-4o", "gpt-4.1"]}, {"model": "gpt-4o-mini"},
     "model: 'gpt-4o-mini' is not one of [gpt-4o, gpt-4.1]"),
    ({"input_tokens": {"gt": 30000}}, {"input_tokens": 1200}, "input_tokens: 1200 is not > 30000"),
    ({"workspace": "free-*"}, {"workspace": "acme"}, "workspace: 'acme' does not match 'free-*'"),
    ({"endpoint": "embeddings"}, {}, "endpoint: 'chat' is not 'embeddings'"),
    ({"user": {"exists": True}}, {}, "user: absent is absent"),
    ({"max_tokens": {"lte": 100}}, {}, "max_tokens: absent is not <= 100"),
    ({"model": {"regex": "^o"}}, {}, "model: 'gpt-4o' does not match /^o/"),
    ({"model": {"not_in": ["gpt-4o"]}}, {}, "model: 'gpt-4o' is one of [gpt-4o]"),
    ({"tags": "paid"}, {}, "tags: none, expected paid"),
    ({"tags": "paid"}, {"tags": frozenset({"free"})}, "tags: no tag in [free] matches paid"),
    ({"not": {"model": "gpt-4o"}}, {}, "not: {model: gpt-4o} matched"),
    ({"any": [{"model": "o3"}, {"stream": True}]}, {},
     "any: none matched (model: 'gpt-4o' is not 'o3'; stream: false is not true)"),
    ({"model": "gpt-4o", "header.x-tier": "gold"}, {"headers": {"x-tier": "free"}},
     "header.x-tier: 'free' is not 'gold'"),
    ({"header.authorization": "Bearer x"}, {"headers": {"authorization": "Bearer sk-secret"}},
     "header.authorization: '***' is not '***'"),
    ({"header.x-api-key": {"regex": "^sk-live-"}}, {},
     "header.x-api-key: absent does not match /***/"),
    ({"not": {"header.cookie": "session=abc"}}, {"headers": {"cookie": "session=abc"}},
     "not: {header.cookie: ***} matched"),
]  # fmt: skip


@pytest.mark.parametrize(("when", "fields", "text"), WHY_NOT, ids=[t for *_, t in WHY_NOT])
def test_why_not_names_the_first_failing_condition(
    when: dict[str, Any], fields: dict[str, Any], text: str
) -> None:
    ctx = RequestContext(**{"endpoint": "chat", "model": "gpt-4o", **fields})
    condition = compile_when(when)
    assert condition is not None
    assert condition.why_not(ctx) == text


BAD = [
    ({"modle": "gpt-4o"}, ("modle",), "unknown condition field 'modle'", "did you mean 'model'?"),
    ({"model": {"regx": "a"}}, ("model", "regx"), "unknown operator 'regx'", "did you mean"),
    ({"model": {"regex": "("}}, ("model", "regex"), "invalid regex", None),
    ({"input_tokens": {"gt": "many"}}, ("input_tokens", "gt"), "'gt' needs a number", None),
    ({"model": {"in": "gpt-4o"}}, ("model", "in"), "'in' needs a list", None),
    ({"user": {"exists": "yes"}}, ("user", "exists"), "'exists' needs true or false", None),
    ({"all": [{"model": "a"}, {"nope": 1}]}, ("all", 1, "nope"), "unknown condition field", None),
    ({"any": []}, ("any",), "non-empty list", None),
    ({"not": "model"}, ("not",), "must be a non-empty map", None),
]


@pytest.mark.parametrize(("when", "path", "message", "hint"), BAD, ids=[b[2] for b in BAD])
def test_malformed_conditions_are_rejected_with_their_path(
    when: dict[str, Any], path: tuple[object, ...], message: str, hint: str | None
) -> None:
    with pytest.raises(WhenError) as caught:
        compile_when(when)
    assert caught.value.path == path
    assert message in caught.value.message
    if hint:
        assert caught.value.hint is not None and hint in caught.value.hint


def test_endpoint_model_and_workspace_strings_are_pinned_for_the_index() -> None:
    condition = compile_when(
        {"endpoint": "chat", "model": ["a", "b"], "workspace": "free-*", "user": "u"},
        ("endpoint", "model", "workspace"),
    )
    assert condition is not None
    assert condition.pins == {
        "endpoint": frozenset({"chat"}),
        "model": frozenset({"a", "b"}),
        "workspace": frozenset({"free-*"}),
    }
    # The residual checks only what the index cannot.
    assert condition.residual is not None
    assert condition.residual(RequestContext("chat", "a", user="u"))
    assert not condition.residual(RequestContext("chat", "a", user="v"))
    unpinned = compile_when({"model": {"ne": "a"}, "workspace": {"regex": "x"}}, ("model",))
    assert unpinned is not None and unpinned.pins == {}
