"""What an adapter remembers of a server that refuses `stream_options`: only a refusal it got
past, only for the `stream_options` the gateway added, and only for its own spec (an Azure
api_version is part of it)."""

from __future__ import annotations

import pytest

from concord.engine.graph import ProviderSpec
from concord.providers.base import UpstreamRequest, UpstreamStatusError
from concord.providers.http import GatewayStreamOptions, HTTPProvider
from concord.providers.registry import build_provider
from tests.fakes.upstream import FakeUpstream, Fault

REFUSE = Fault(reject_stream_options=True)


def azure(up: FakeUpstream, version: str) -> HTTPProvider:
    spec = ProviderSpec(
        name="az", type="azure", base_url=up.url, api_version=version, api_keys=("k",)
    )
    provider = build_provider(spec)
    assert isinstance(provider, HTTPProvider)
    return provider


def request(options: dict[str, object]) -> UpstreamRequest:
    body = {"model": "dep", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    return UpstreamRequest("chat", {**body, "stream_options": options}, timeout=5)


async def drain(provider: HTTPProvider, options: dict[str, object]) -> int:
    stream = await provider.stream(request(options))
    return len([event async for event in stream])


async def test_a_failed_retry_is_not_remembered(upstream: FakeUpstream):
    provider = azure(upstream, "2024-02-01")
    upstream.script("dep", [REFUSE, Fault(status=503)])
    with pytest.raises(UpstreamStatusError) as caught:
        await drain(provider, GatewayStreamOptions(include_usage=True))
    assert caught.value.status == 503
    assert not provider.omits_stream_options
    upstream.script("dep", [REFUSE, REFUSE])
    assert await drain(provider, GatewayStreamOptions(include_usage=True))
    assert provider.omits_stream_options
    await provider.close()


async def test_the_clients_own_options_are_sent_even_once_refused(upstream: FakeUpstream):
    provider = azure(upstream, "2024-02-01")
    upstream.script("dep", [REFUSE, REFUSE, REFUSE])
    await drain(provider, GatewayStreamOptions(include_usage=True))
    with pytest.raises(UpstreamStatusError) as caught:
        await drain(provider, {"include_usage": True})  # a plain dict: the client's own
    assert caught.value.status == 400
    assert upstream.requests[-1].json["stream_options"] == {"include_usage": True}
    await provider.close()


async def test_a_new_api_version_asks_again(upstream: FakeUpstream):
    old, new = azure(upstream, "2024-02-01"), azure(upstream, "2024-10-21")
    upstream.script("dep", [REFUSE, REFUSE])
    await drain(old, GatewayStreamOptions(include_usage=True))
    upstream.reset()
    assert await drain(new, GatewayStreamOptions(include_usage=True))
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    assert upstream.requests[0].query["api-version"] == "2024-10-21"
    for provider in (old, new):
        await provider.close()
