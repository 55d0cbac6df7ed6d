"""Explain output pieces (SPEC §6): request bodies read as routing sees them, rendering."""

from __future__ import annotations

from concord.engine.explain import endpoint_of, estimate_tokens, render, request_fields
from concord.engine.graph import RequestContext
from tests.engine.conftest import build


def test_openai_body_fields() -> None:
    body = {
        "model": "gpt-4o",
        "max_completion_tokens": 256,
        "temperature": 0.2,
        "stream": True,
        "user": "u-1",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "metadata": {"region": "eu"},
        "messages": [
            {"role": "system", "content": "x" * 40},
            {"role": "user", "content": [
                {"type": "text", "text": "y" * 40},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ]},
        ],
    }  # fmt: skip
    fields = request_fields(body)
    assert fields["model"] == "gpt-4o" and fields["max_tokens"] == 256
    assert fields["temperature"] == 0.2 and fields["stream"] and fields["tools"]
    assert fields["images"] and fields["user"] == "u-1"
    assert fields["metadata"] == {"region": "eu"}
    assert fields["input_tokens"] == 20  # 80 characters of text / 4; the image URL is not text
    assert endpoint_of(body) == "chat"


def test_anthropic_body_fields() -> None:
    body = {
        "model": "claude-sonnet",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "s" * 400}],
        "metadata": {"user_id": "end-user-7"},
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
            {"type": "text", "text": "hello"},
        ]}],
    }  # fmt: skip
    fields = request_fields(body)
    assert fields["user"] == "end-user-7" and fields["images"] and not fields["tools"]
    assert fields["max_tokens"] == 1024 and fields["input_tokens"] == 101


def test_endpoint_guess_and_token_estimate_for_other_bodies() -> None:
    assert endpoint_of({"model": "m", "prompt": "abcd" * 10}) == "completions"
    assert endpoint_of({"model": "m", "input": ["abcd", "efgh"]}) == "embeddings"
    assert estimate_tokens({"input": ["abcd", "efgh"]}) == 2


def test_render_lists_misses_and_the_reason_for_no_route() -> None:
    graph = build(routes=[{"name": "only-o3", "when": {"model": "o3"}, "use": "fast"}])
    ctx = RequestContext("chat", "gpt-4o", temperature=0.0)
    text = render(graph.explain(ctx), graph, ctx)
    assert "only-o3: model: 'gpt-4o' is not 'o3'" in text
    assert "route: (none matched; requested model)" in text
    assert "1. openai/gpt-4o (gpt-4o), 2 tries" in text
    assert "cache: ttl 1h, scope workspace" in text
    assert "sk-openai-secret" not in text


def test_render_rejection() -> None:
    graph = build(routes=[{"name": "no", "reject": {"status": 451, "message": "not here"}}])
    ctx = RequestContext("chat", "gpt-4o")
    text = render(graph.explain(ctx), graph, ctx)
    assert "route: no" in text and "rejected: 451 not here" in text
    assert "attempts" not in text


def test_render_shows_route_params_as_written() -> None:
    route = {
        "name": "capped",
        "use": "fast",
        "params": {"set": {"temperature": 0}, "max": {"max_tokens": 1024, "top_p": 0.5}},
    }
    graph = build(routes=[route])
    ctx = RequestContext("chat", "gpt-4o")
    text = render(graph.explain(ctx), graph, ctx)
    assert "params: set {temperature: 0}, max {max_tokens: 1024, top_p: 0.5}" in text
