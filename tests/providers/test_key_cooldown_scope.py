"""SPEC §2.2 key cooldowns: a 429 benches a key for one upstream model, a 401/403 for all; the
wait comes from Retry-After or OpenAI/Azure's `x-ratelimit-reset-*`; reloads keep cooldowns."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

import tests.fakes.upstream as fake
from concord.engine.graph import ProviderSpec
from concord.providers.base import UpstreamRequest, UpstreamStatusError
from concord.providers.http import HTTPProvider
from concord.providers.keys import KeyRing, cools_every_model, parse_duration, rate_limit_reset
from concord.providers.registry import ProviderPool, build_provider
from tests.fakes.upstream import Fault


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_reset_headers(monkeypatch: pytest.MonkeyPatch, headers: dict[str, str]) -> None:
    """Every error answer of the fake also carries `headers` (as OpenAI and Azure send them)."""
    original = fake._headers

    def with_rate_limit_headers(behaviour: Fault) -> dict[str, str]:
        return {**original(behaviour), **headers}

    monkeypatch.setattr(fake, "_headers", with_rate_limit_headers)


def chat(model: str) -> UpstreamRequest:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return UpstreamRequest("chat", body, timeout=5)


@pytest.fixture
async def azure(upstream):
    spec = ProviderSpec(
        name="az",
        type="azure",
        base_url=upstream.url,
        api_keys=("az-one", "az-two"),
        key_cooldown=300,
    )
    provider = build_provider(spec)
    assert isinstance(provider, HTTPProvider)
    yield provider
    await provider.close()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7s", 7.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        ("6m0s", 360.0),
        ("0.5s", 0.5),
        ("1h2m3s", 3723.0),
        ("12", 12.0),
        ("soon", None),
        ("7x", None),
        ("", None),
    ],
)
def test_reset_durations_are_read_as_openai_writes_them(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_the_reset_of_the_spent_limit_is_the_wait():
    assert rate_limit_reset({"x-ratelimit-reset-requests": "7s"}) == 7.0
    both = {"x-ratelimit-reset-requests": "2s", "x-ratelimit-reset-tokens": "1m0s"}
    assert rate_limit_reset(both) == 2.0  # which one was hit is not said: the shorter
    spent = {**both, "x-ratelimit-remaining-tokens": "0", "x-ratelimit-remaining-requests": "9"}
    assert rate_limit_reset(spent) == 60.0
    assert rate_limit_reset({"x-ratelimit-reset-requests": "later"}) is None
    assert rate_limit_reset({}) is None


def test_only_a_429_for_a_model_spares_the_keys_other_models():
    assert not cools_every_model(429, {"error": {"code": "rate_limit_exceeded"}})
    assert not cools_every_model(429, {"type": "error", "error": {"type": "rate_limit_error"}})
    assert cools_every_model(429, {"error": {"type": "insufficient_quota", "code": None}})
    assert cools_every_model(401, None) and cools_every_model(403, {})


def test_a_model_cooldown_benches_the_key_for_that_model_only():
    clock = Clock()
    ring = KeyRing(["k1", "k2"], 300, clock=clock)
    ring.cool_down("k1", 7, model="dep-a")
    assert ring.first_healthy(model="dep-a") == "k2"
    assert ring.first_healthy(model="dep-b") == "k1"
    assert ring.available and ring.cooling_models() == frozenset()
    ring.cool_down("k2", 9, model="dep-a")
    assert ring.first_healthy(model="dep-a") is None
    assert ring.soonest("dep-a") == ("k1", 7.0) and ring.wait("dep-a") == 7.0
    assert ring.first_healthy(model="dep-b") == "k1" and ring.available
    assert ring.cooling_models() == {"dep-a"}
    clock.now += 7
    assert ring.first_healthy(model="dep-a") == "k1" and ring.cooling_models() == frozenset()


def test_a_key_benched_for_every_model_is_out_for_each_one():
    clock = Clock()
    ring = KeyRing(["k1", "k2"], 300, clock=clock)
    ring.cool_down("k1")
    ring.cool_down("k2", 30, model="dep-a")
    assert ring.first_healthy(model="dep-a") is None and ring.first_healthy() == "k2"
    assert ring.wait("dep-a") == 30.0 and ring.cooling_models() == {"dep-a"}
    ring.cool_down("k2", 60)
    assert not ring.available and ring.wait() == 60.0
    status = ring.status()
    assert [entry["key"] for entry in status] == ["key#1", "key#2"]
    assert status[1]["cooldown_until"] is not None and "dep-a" in status[1]["models"]
    assert "k1" not in repr(status) and "k2" not in repr(status)


async def test_a_429_with_a_ratelimit_reset_header_benches_the_key_for_that_deployment(
    azure, upstream, monkeypatch
):
    """Azure limits each deployment: its 429 (waiting only in `x-ratelimit-reset-requests`)
    benches the key for that deployment, for that long, and no other."""
    send_reset_headers(monkeypatch, {"x-ratelimit-reset-requests": "7s"})
    upstream.script("dep-a", [Fault(status=429)])
    assert (await azure.send(chat("dep-a"))).status == 200
    assert [r.headers["api-key"] for r in upstream.requests] == ["az-one", "az-two"]
    first = azure.key_status()[0]
    assert first["cooldown_until"] is None
    assert set(first["models"]) == {"dep-a"}
    assert azure.keys.wait("dep-a") == 0.0  # the second key serves it
    assert 6 < first["models"]["dep-a"] - time.time() <= 7

    assert (await azure.send(chat("dep-b"))).status == 200
    assert upstream.requests[-1].headers["api-key"] == "az-one"  # still the first key there
    assert azure.available


async def test_every_key_429_for_a_deployment_leaves_the_others_served(
    azure, upstream, monkeypatch
):
    send_reset_headers(monkeypatch, {"x-ratelimit-reset-requests": "1m30s"})
    upstream.script("dep-a", [Fault(status=429), Fault(status=429)])
    with pytest.raises(UpstreamStatusError) as caught:
        await azure.send(chat("dep-a"))
    assert caught.value.status == 429 and caught.value.retry_after == 90.0
    assert azure.available and azure.keys.cooling_models() == {"dep-a"}
    with pytest.raises(UpstreamStatusError) as benched:  # no call: every key is cooling there
        await azure.send(chat("dep-a"))
    assert benched.value.status == 429 and 85 < benched.value.retry_after <= 90
    assert len(upstream.requests) == 2
    embeddings = UpstreamRequest("embeddings", {"model": "emb", "input": "x"}, timeout=5)
    assert (await azure.send(embeddings)).status == 200
    assert (await azure.send(chat("dep-b"))).status == 200


async def test_a_401_still_benches_the_key_for_every_model(azure, upstream):
    upstream.script("dep-a", [Fault(status=401), Fault(status=403)])
    with pytest.raises(UpstreamStatusError):
        await azure.send(chat("dep-a"))
    assert not azure.available
    with pytest.raises(UpstreamStatusError) as benched:
        await azure.send(chat("dep-b"))
    assert benched.value.status == 429 and benched.value.retry_after > 250
    assert len(upstream.requests) == 2


async def test_a_500_with_ratelimit_headers_keeps_its_own_backoff(azure, upstream, monkeypatch):
    send_reset_headers(monkeypatch, {"x-ratelimit-reset-requests": "7s"})
    upstream.script("dep-a", [Fault(status=500)])
    with pytest.raises(UpstreamStatusError) as caught:
        await azure.send(chat("dep-a"))
    assert caught.value.status == 500 and caught.value.retry_after is None


async def test_retry_after_outranks_the_ratelimit_reset_headers(azure, upstream, monkeypatch):
    send_reset_headers(monkeypatch, {"x-ratelimit-reset-requests": "7s"})
    upstream.script("dep-a", [Fault(status=429, retry_after=20), Fault(status=429)])
    with pytest.raises(UpstreamStatusError):
        await azure.send(chat("dep-a"))
    models = [entry["models"]["dep-a"] - time.time() for entry in azure.key_status()]
    assert 15 < models[0] <= 20 and 5 < models[1] <= 7


def test_a_reload_that_edits_api_keys_keeps_the_cooldowns_of_the_keys_kept():
    spec = ProviderSpec(name="up", type="openai", base_url="http://x/v1", api_keys=("k1", "k2"))
    pool = ProviderPool({"up": spec}, grace=0.05)
    before = pool.get("up")
    assert isinstance(before, HTTPProvider)
    before.keys.cool_down("k1", 120)
    before.keys.cool_down("k2", 60, model="gpt-4o")
    pool.sync({"up": replace(spec, api_keys=("k0", "k2", "k1"))})
    after = pool.get("up")
    assert after is not before and isinstance(after, HTTPProvider)
    assert after.keys.first_healthy() == "k0"
    assert after.keys.first_healthy(exclude=["k0"]) == "k2"
    assert after.keys.first_healthy(exclude=["k0"], model="gpt-4o") is None
    status = after.keys.status()
    assert status[0]["cooldown_until"] is None and "models" not in status[0]
    assert status[1]["cooldown_until"] is None
    assert 55 < status[1]["models"]["gpt-4o"] - time.time() <= 60
    assert 115 < status[2]["cooldown_until"] - time.time() <= 120


def test_a_reload_to_another_upstream_starts_with_fresh_keys():
    spec = ProviderSpec(name="up", type="openai", base_url="http://x/v1", api_keys=("k1",))
    pool = ProviderPool({"up": spec}, grace=0.05)
    pool.get("up").keys.cool_down("k1", 120)  # type: ignore[attr-defined]
    pool.sync({"up": replace(spec, base_url="http://y/v1", api_keys=("k1", "k2"))})
    assert pool.get("up").keys.first_healthy() == "k1"  # type: ignore[attr-defined]


def test_the_pool_names_targets_every_key_is_cooling_for():
    spec = ProviderSpec(name="az", type="azure", base_url="http://x", api_keys=("k1", "k2"))
    pool = ProviderPool({"az": spec, "other": replace(spec, name="other")})
    assert pool.unavailable() == frozenset() and pool.unavailable().targets == frozenset()
    ring = pool.get("az").keys  # type: ignore[attr-defined]
    ring.cool_down("k1", 60, model="dep-a")
    assert pool.unavailable().targets == frozenset()  # the second key still serves dep-a
    ring.cool_down("k2", 60, model="dep-a")
    assert pool.unavailable() == frozenset() and pool.unavailable().targets == {"az/dep-a"}
    ring.cool_down("k1", 60)
    ring.cool_down("k2", 60)
    assert pool.unavailable() == {"az"}
