"""SPEC §2.2 key cooldowns through the gateway, with the real SDKs: a 429 on one Azure deployment
leaves the provider's other deployments served; when cooling keys are all that stand in the way,
the client gets a 429 with Retry-After; a reload that edits `api_keys` keeps cooldowns."""

from __future__ import annotations

import math
import time
from pathlib import Path

import anthropic
import openai
import pytest

import tests.fakes.upstream as fake
from concord.config.load import load_graph
from tests.fakes.upstream import FakeUpstream, Fault
from tests.gateway.conftest import CLIENT_KEY_SHA, Gateway, MakeGateway, config_text

ADMIN_KEY = "adm-" + "c" * 40
AUTH = (
    "auth:\n  mode: keys\n"
    f'  admin_key: "{ADMIN_KEY}"\n'
    "  keys:\n"
    f"    - {{name: test-key, sha256: {CLIENT_KEY_SHA}, workspace: acme}}\n"
)
KEYS = ("az-key-one", "az-key-two")


def config(up: FakeUpstream, keys: tuple[str, ...] = KEYS) -> str:
    return f"""
    providers:
      az:
        type: azure
        base_url: "{up.url}"
        api_version: "2024-10-21"
        api_keys: [{", ".join(keys)}]
      spare: {{type: openai, base_url: "{up.openai_url}", api_keys: [spare-key]}}
    models:
      model-a: {{targets: [az/dep-a]}}
      model-b: {{targets: [az/dep-b]}}
      embed: {{targets: [az/emb]}}
      guarded: {{targets: [az/dep-a, spare/spare-model]}}
    defaults:
      timeout: 5s
      retry: {{attempts: 1}}
      key_cooldown: 5m
    """


def send_reset_header(monkeypatch: pytest.MonkeyPatch, value: str = "7s") -> None:
    """Every error answer of the fake carries `x-ratelimit-reset-requests: value`, and no
    Retry-After: how Azure words a deployment's rate limit."""
    original = fake._headers

    def with_reset(behaviour: Fault) -> dict[str, str]:
        return {**original(behaviour), "x-ratelimit-reset-requests": value}

    monkeypatch.setattr(fake, "_headers", with_reset)


async def chat(client: openai.AsyncOpenAI, model: str):
    return await client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )


async def provider_report(gw: Gateway, name: str = "az") -> dict:
    response = await gw.http.get(
        "/_admin/providers", headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 200
    for key in KEYS:
        assert key not in response.text
    (found,) = [p for p in response.json()["data"] if p["name"] == name]
    return found


async def rate_limit_dep_a(gw: Gateway, upstream: FakeUpstream) -> openai.APIStatusError:
    """Both keys answered 429 for deployment dep-a (which waits in its reset header)."""
    upstream.script("dep-a", [Fault(status=429), Fault(status=429)])
    with pytest.raises(openai.APIStatusError) as caught:
        await chat(gw.openai(), "model-a")
    assert [r.headers["api-key"] for r in upstream.requests] == list(KEYS)
    return caught.value


async def test_a_429_on_one_deployment_leaves_the_providers_other_models_served(
    make_gateway: MakeGateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    send_reset_header(monkeypatch)
    gw = make_gateway(config(upstream), auth=AUTH)
    await rate_limit_dep_a(gw, upstream)

    raw = await chat(gw.openai(), "model-b")
    assert raw.status_code == 200 and raw.headers["x-concord-provider"] == "az"
    assert upstream.requests[-1].path == "/openai/deployments/dep-b/chat/completions"
    assert upstream.requests[-1].headers["api-key"] == KEYS[0]
    embedded = await gw.openai().embeddings.create(model="embed", input="x")
    assert len(embedded.data) == 1
    assert upstream.requests[-1].path == "/openai/deployments/emb/embeddings"

    report = await provider_report(gw)
    assert report["available"] is True and report["state"] == "degraded"
    for key in report["keys"]:  # benched for dep-a, for what the upstream said: 7s, not 5m
        assert key["cooldown_until"] is None
        assert 5 < key["models"]["dep-a"] - time.time() <= 7
    targets = {t["target"]: t for t in report["targets"]}
    assert targets["az/dep-a"]["keys_cooling_until"] is not None
    assert targets["az/dep-b"]["keys_cooling_until"] is None


async def test_every_key_cooling_answers_429_with_retry_after_in_each_wire_format(
    make_gateway: MakeGateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    send_reset_header(monkeypatch)
    gw = make_gateway(config(upstream), auth=AUTH)
    first = await rate_limit_dep_a(gw, upstream)
    assert first.status_code == 429  # upstream 429s that cooled every key: the wait they gave
    assert first.response.headers["retry-after"] == "7"

    with pytest.raises(openai.RateLimitError) as caught:  # no upstream call this time
        await chat(gw.openai(), "model-a")
    error = caught.value
    assert len(upstream.requests) == 2
    assert error.status_code == 429
    assert error.response.headers["retry-after"] in ("6", "7")
    assert error.response.headers["x-concord-attempts"] == "0"
    body = error.response.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    assert "cooling down" in body["message"] and "'az'" in body["message"]
    assert not any(key in error.response.text for key in KEYS)

    with pytest.raises(anthropic.RateLimitError) as refused:
        await gw.anthropic().messages.create(
            model="model-a", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    answer = refused.value.response
    assert answer.headers["retry-after"] in ("6", "7")
    assert answer.json()["type"] == "error"
    assert answer.json()["error"]["type"] == "rate_limit_error"
    assert "cooling down" in answer.json()["error"]["message"]
    assert len(upstream.requests) == 2


async def test_a_target_every_key_is_cooling_for_is_skipped_for_the_next(
    make_gateway: MakeGateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    send_reset_header(monkeypatch, "1m0s")
    gw = make_gateway(config(upstream), auth=AUTH)
    await rate_limit_dep_a(gw, upstream)
    raw = await chat(gw.openai(), "guarded")
    assert raw.status_code == 200
    assert raw.headers["x-concord-provider"] == "spare"
    assert raw.headers["x-concord-attempts"] == "1"  # dep-a was left out, not tried
    assert [r.model for r in upstream.requests[2:]] == ["spare-model"]


async def test_revoked_keys_still_bench_the_provider_for_every_model(
    make_gateway: MakeGateway, upstream: FakeUpstream
):
    gw = make_gateway(config(upstream), auth=AUTH)
    upstream.script("dep-a", [Fault(status=401), Fault(status=403)])
    with pytest.raises(openai.InternalServerError) as caught:  # the gateway's keys are refused
        await chat(gw.openai(), "model-a")
    assert caught.value.status_code == 502
    with pytest.raises(openai.RateLimitError) as benched:
        await chat(gw.openai(), "model-b")
    assert len(upstream.requests) == 2  # model B was not even tried
    assert 295 <= int(benched.value.response.headers["retry-after"]) <= 300
    report = await provider_report(gw)
    assert report["available"] is False and report["state"] == "unhealthy"
    raw = await chat(gw.openai(), "guarded")  # the fallback target still answers
    assert raw.headers["x-concord-provider"] == "spare"


async def test_an_upstream_failure_among_the_cooling_keys_is_still_a_502(
    make_gateway: MakeGateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
):
    send_reset_header(monkeypatch, "1m0s")
    gw = make_gateway(config(upstream), auth=AUTH)
    await rate_limit_dep_a(gw, upstream)
    upstream.script("spare-model", [Fault(status=500)])
    with pytest.raises(openai.InternalServerError) as caught:
        await chat(gw.openai(), "guarded")
    assert caught.value.status_code == 502
    assert "retry-after" not in caught.value.response.headers


async def test_a_reload_that_edits_api_keys_keeps_the_cooldowns_of_keys_still_listed(
    make_gateway: MakeGateway,
    upstream: FakeUpstream,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    send_reset_header(monkeypatch, "2m0s")
    gw = make_gateway(config(upstream), auth=AUTH)
    await rate_limit_dep_a(gw, upstream)
    path = tmp_path / "reloaded.yaml"
    path.write_text(config_text(config(upstream, (*KEYS, "az-key-three")), auth=AUTH))
    gw.state.set_graph(load_graph(str(path)))

    raw = await chat(gw.openai(), "model-a")  # the two benched keys stay benched
    assert raw.status_code == 200
    assert upstream.requests[-1].headers["api-key"] == "az-key-three"
    await chat(gw.openai(), "model-b")
    assert upstream.requests[-1].headers["api-key"] == KEYS[0]
    keys = (await provider_report(gw))["keys"]
    assert [math.ceil(k["models"]["dep-a"] - time.time()) for k in keys[:2]] == [120, 120]
    assert "models" not in keys[2]
