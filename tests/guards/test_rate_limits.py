"""Rate limits through the running gateway (SPEC §2.7), on memory and on Redis."""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest

from concord.config.load import load_graph
from tests.guards.conftest import MakeGateway, guards_config

MOCK = """
providers:
  demo: {type: mock}
  slow: {type: mock, latency: 300ms}
models:
  gpt-4o: {targets: [demo/gpt-4o]}
  slow-model: {targets: [slow/x]}
"""

RPM = (
    MOCK
    + """
rate_limits:
  - {name: per-key, per: key, rpm: 3}
"""
)

TPM = (
    MOCK
    + """
rate_limits:
  - {name: tokens, per: key, tpm: 100}
"""
)

HELLO = [{"role": "user", "content": "hello"}]


async def test_rpm_admits_exactly_n_then_429_with_retry_after_openai(
    make_gateway: MakeGateway, state_url: str
):
    client = make_gateway(RPM, state_url).openai()
    answered, refused = 0, []
    for _ in range(5):
        try:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
            answered += 1
        except openai.RateLimitError as exc:
            refused.append(exc)
    assert answered == 3
    assert len(refused) == 2
    for exc in refused:
        assert exc.status_code == 429
        assert (exc.type, exc.code) == ("rate_limit_error", "rate_limit_exceeded")
        assert int(exc.response.headers["retry-after"]) >= 1
        assert "per-key" in exc.message


async def test_rpm_admits_exactly_n_then_429_with_retry_after_anthropic(
    make_gateway: MakeGateway, state_url: str
):
    client = make_gateway(RPM, state_url).anthropic()
    results = []
    for _ in range(5):
        try:
            await client.messages.create(model="gpt-4o", max_tokens=20, messages=HELLO)
            results.append(200)
        except anthropic.RateLimitError as exc:
            assert exc.body["error"]["type"] == "rate_limit_error"
            assert int(exc.response.headers["retry-after"]) >= 1
            results.append(exc.status_code)
    assert results == [200, 200, 200, 429, 429]


async def test_rpm_counts_concurrent_requests_exactly(make_gateway: MakeGateway, state_url: str):
    client = make_gateway(RPM.replace("rpm: 3", "rpm: 10"), state_url).openai()

    async def one() -> int:
        try:
            await client.chat.completions.create(model="gpt-4o", messages=HELLO)
            return 200
        except openai.RateLimitError:
            return 429

    statuses = await asyncio.gather(*(one() for _ in range(30)))
    assert statuses.count(200) == 10
    assert statuses.count(429) == 20


async def test_tpm_reserves_the_estimate_while_in_flight_and_settles_to_usage(
    make_gateway: MakeGateway, state_url: str
):
    """100 tpm: a request reserves input + max_tokens (~65) while it runs, so a second one is
    refused; once the first settles to its actual usage (a few tokens), a third fits."""
    gw = make_gateway(TPM, state_url)
    client = gw.openai()

    def ask(model: str) -> asyncio.Task[object]:
        call = client.chat.completions.create(model=model, messages=HELLO, max_tokens=60)
        return asyncio.ensure_future(call)

    first = ask("slow-model")
    await asyncio.sleep(0.1)  # the first holds its reservation upstream
    with pytest.raises(openai.RateLimitError) as refused:
        await ask("gpt-4o")
    assert refused.value.code == "rate_limit_exceeded"
    assert "tokens per minute" in refused.value.message
    reply = await first
    usage = reply.usage  # type: ignore[attr-defined]
    assert usage.total_tokens < 20
    third = await ask("gpt-4o")  # fits only because the first was settled to its usage
    assert third.choices[0].message.content == "Echo: hello"  # type: ignore[attr-defined]


async def test_a_reload_applies_new_limits_at_once_and_keeps_the_count(
    make_gateway: MakeGateway, state_url: str, tmp_path
):
    """SPEC §4: a reload swaps the limits a key is held to from its next request on, while the
    requests it already made still count (the state survives; only the rule changed)."""
    gateway = make_gateway(RPM, state_url)
    client = gateway.openai()

    async def answered(requests: int) -> int:
        count = 0
        for _ in range(requests):
            try:
                await client.chat.completions.create(model="gpt-4o", messages=HELLO)
                count += 1
            except openai.RateLimitError:
                pass
        return count

    def reload_with_rpm(rpm: int) -> None:
        path = tmp_path / f"reloaded-{rpm}.yaml"
        body = RPM.replace("rpm: 3", f"rpm: {rpm}")
        path.write_text(guards_config(body, state_url), encoding="utf-8")
        gateway.state.set_graph(load_graph(str(path)))

    assert await answered(4) == 3  # the key's three requests of this minute are used
    reload_with_rpm(5)
    assert await answered(4) == 2  # five a minute now: two more, not five more
    reload_with_rpm(1)
    assert await answered(1) == 0
