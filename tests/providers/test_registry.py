"""SPEC §2.2, §4: adapters and their pooled sessions survive reloads while their spec holds."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from concord.engine.decision import ProbeSettings
from concord.engine.graph import ProviderSpec
from concord.providers.anthropic import AnthropicProvider
from concord.providers.azure import AzureProvider
from concord.providers.base import UpstreamRequest
from concord.providers.mock import MockProvider
from concord.providers.openai import OpenAIProvider
from concord.providers.registry import ProviderPool, build_provider


def specs(**overrides):
    base = {
        "openai": ProviderSpec(name="openai", type="openai", api_keys=("k",), headers={"a": "1"}),
        "anthropic": ProviderSpec(name="anthropic", type="anthropic", api_keys=("k",)),
        "demo": ProviderSpec(name="demo", type="mock"),
    }
    base.update(overrides)
    return {name: spec for name, spec in base.items() if spec is not None}


@pytest.mark.parametrize(
    ("kind", "adapter"),
    [
        ("openai", OpenAIProvider),
        ("azure", AzureProvider),
        ("anthropic", AnthropicProvider),
        ("mock", MockProvider),
    ],
)
def test_build_provider_picks_the_adapter(kind, adapter):
    provider = build_provider(ProviderSpec(name="p", type=kind, base_url="http://x"))
    assert isinstance(provider, adapter) and provider.name == "p"


async def test_unchanged_specs_keep_the_same_adapter_and_session(upstream):
    pool = ProviderPool(
        specs(openai=ProviderSpec(name="openai", type="openai", base_url=upstream.openai_url))
    )
    first = pool.get("openai")
    await first.send(UpstreamRequest("chat", {"model": "m", "messages": []}, 5))
    session = first.session()
    # A reload compiles equal-but-new spec objects.
    pool.sync(
        specs(openai=ProviderSpec(name="openai", type="openai", base_url=upstream.openai_url))
    )
    assert pool.get("openai") is first
    assert first.session() is session and not session.closed
    await pool.close()
    assert session.closed


async def test_a_probe_change_keeps_the_adapter_its_pool_and_its_key_cooldowns():
    """SPEC §4: probes are run from the graph, so adding or retuning one rebuilds nothing."""
    pool = ProviderPool(specs(), grace=0.05)
    first = pool.get("openai")
    session = first.session()
    first.keys.cool_down("k", 60)
    probe = ProbeSettings(interval=30.0, model="gpt-4o-mini", timeout=5.0)
    base = specs()["openai"]
    pool.sync(specs(openai=replace(base, probe=probe)))
    assert pool.get("openai") is first
    assert not first.keys.available  # the cooling key stays cooling
    pool.sync(specs(openai=replace(base, probe=replace(probe, interval=10.0))))
    assert pool.get("openai") is first and not session.closed
    await pool.close()


async def test_changed_spec_replaces_the_adapter_and_drains_the_old_one():
    pool = ProviderPool(specs(), grace=0.05)
    old = pool.get("openai")
    session = old.session()
    kept = pool.get("anthropic")
    pool.sync(
        specs(
            openai=ProviderSpec(
                name="openai", type="openai", api_keys=("k", "k2"), headers={"a": "1"}
            )
        )
    )
    assert pool.get("openai") is not old
    assert pool.get("anthropic") is kept
    assert not session.closed  # requests on the previous graph may still use it
    await asyncio.sleep(0.1)
    assert session.closed
    await pool.close()


async def test_removed_provider_is_closed_after_grace_and_gone():
    pool = ProviderPool(specs(), grace=0.01)
    session = pool.get("anthropic").session()
    pool.sync(specs(anthropic=None))
    assert "anthropic" not in pool
    await asyncio.sleep(0.05)
    assert session.closed
    with pytest.raises(KeyError):
        pool.get("anthropic")
    await pool.close()


async def test_close_closes_retiring_adapters_at_once():
    pool = ProviderPool(specs(), grace=60)
    session = pool.get("openai").session()
    pool.sync(specs(openai=None))
    await pool.close()
    assert session.closed
    assert len(pool) == 0


def test_unavailable_lists_providers_without_usable_keys():
    pool = ProviderPool(specs(anthropic=ProviderSpec(name="anthropic", type="anthropic")))
    assert pool.unavailable() == {"anthropic"}


async def test_a_request_on_the_previous_graph_still_reaches_a_removed_provider() -> None:
    """SPEC §4: a retry after a reload that removed its provider runs on the retiring adapter."""
    from concord.engine.graph import ProviderSpec
    from concord.providers.registry import ProviderPool

    pool = ProviderPool({"old": ProviderSpec(name="old", type="mock")}, grace=30)
    before = pool.get("old")
    pool.sync({"new": ProviderSpec(name="new", type="mock")})
    assert "old" not in pool
    assert pool.get("old") is before
    await pool.close()
    with pytest.raises(KeyError):
        pool.get("old")
