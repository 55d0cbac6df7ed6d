"""Budgets through the running gateway (SPEC §2.6, §2.4.1 budget_used), on memory and Redis."""

from __future__ import annotations

import asyncio
import textwrap

import anthropic
import openai
import pytest

from concord.gateway.guards import StateGuards
from concord.gateway.tokens import estimate
from concord.state import worst_case_cost
from tests.gateway.conftest import Gateway
from tests.guards.conftest import MakeGateway

# $0.001 per token each way: a request's cost is easy to read from its usage.
MODELS = """
providers:
  demo: {type: mock}
  slow: {type: mock, latency: 100ms}
models:
  gpt-4o: {targets: [demo/gpt-4o], price: {input: 1000, output: 1000}}
  slow-model: {targets: [slow/x], price: {input: 1000, output: 1000}}
  cheap: {targets: [demo/cheap]}
  embed: {targets: [demo/embed], price: {input: 1000}}
"""

HELLO = [{"role": "user", "content": "hello"}]


async def spent(gw: Gateway, name: str, ident: str) -> float:
    guards = gw.state.guards
    assert isinstance(guards, StateGuards)
    rule = next(r for r in [*gw.state.graph.budgets, *_workspace_rules(gw)] if r.name == name)
    return await guards.keeper.spent(rule, ident)


def _workspace_rules(gw: Gateway) -> list:
    return [ws.budget for ws in gw.state.graph.workspaces.values() if ws.budget]


async def test_concurrent_requests_overshoot_by_at_most_one_reservation(
    make_gateway: MakeGateway, state_url: str
):
    limit = 0.2
    gw = make_gateway(
        MODELS + f"budgets:\n  - {{name: per-key, scope: key, limit_usd: {limit}, period: day}}\n",
        state_url,
    )
    client = gw.openai()
    body = {"model": "slow-model", "messages": HELLO, "max_tokens": 10}
    worst = worst_case_cost(gw.state.graph.models["slow-model"].price, estimate("chat", body), 10)

    async def one() -> int:
        try:
            await client.chat.completions.create(**body)
            return 200
        except openai.RateLimitError as exc:
            assert (exc.type, exc.code) == ("insufficient_quota", "budget_exceeded")
            return 429

    statuses = await asyncio.gather(*(one() for _ in range(100)))
    served = statuses.count(200)
    assert statuses.count(429) == 100 - served
    # every request reserved its worst case while all were in flight: that many, no fewer
    assert served >= int(limit // worst)
    total = await spent(gw, "per-key", "test-key")
    assert total <= limit + worst  # SPEC §2.6: overshoot bounded by the reservations in flight
    charged = sum(r.cost_usd for r in gw.recorder.records if r.status == 200)
    assert total == pytest.approx(charged)  # settled to actual cost: nothing lost
    assert all(r.cost_usd == 0 for r in gw.recorder.records if r.status == 429)


async def test_block_answers_429_budget_exceeded_in_both_wire_formats(
    make_gateway: MakeGateway, state_url: str
):
    gw = make_gateway(
        MODELS + "budgets:\n  - {name: tiny, scope: key, limit_usd: 0.001, on_exceed: block}\n",
        state_url,
    )
    await gw.openai().chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
    assert await spent(gw, "tiny", "test-key") > 0.001
    with pytest.raises(openai.RateLimitError) as blocked:
        await gw.openai().chat.completions.create(model="gpt-4o", messages=HELLO)
    assert blocked.value.status_code == 429
    assert (blocked.value.type, blocked.value.code) == ("insufficient_quota", "budget_exceeded")
    assert "tiny" in blocked.value.message
    with pytest.raises(anthropic.RateLimitError) as refused:
        await gw.anthropic().messages.create(model="gpt-4o", max_tokens=5, messages=HELLO)
    assert refused.value.status_code == 429
    # a blocked request is charged nothing
    assert gw.recorder.records[-1].cost_usd == 0


async def test_downgrade_serves_downgrade_to_and_says_so(make_gateway: MakeGateway, state_url: str):
    gw = make_gateway(
        MODELS
        + textwrap.dedent(
            """
        workspaces:
          acme:
            budget: {limit_usd: 0.001, period: month, on_exceed: downgrade, downgrade_to: cheap}
        """
        ),
        state_url,
    )
    first = await gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=5
    )
    assert first.headers["x-concord-model"] == "gpt-4o"
    assert "x-concord-downgraded" not in first.headers
    raw = await gw.openai().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=HELLO, max_tokens=5
    )
    assert raw.headers["x-concord-model"] == "cheap"
    assert raw.headers["x-concord-downgraded"] == "gpt-4o"
    assert raw.parse().model == "gpt-4o"  # the client still sees the name it asked for
    message = await gw.anthropic().messages.with_raw_response.create(
        model="gpt-4o", max_tokens=5, messages=HELLO
    )
    assert message.headers["x-concord-downgraded"] == "gpt-4o"
    assert (await message.parse()).content[0].text == "Echo: hello"  # type: ignore[union-attr]
    assert gw.recorder.records[-1].model == "cheap"
    # an embeddings request has no cheaper model to move to: it is served as asked
    embedded = await gw.openai().embeddings.with_raw_response.create(model="embed", input="hello")
    assert embedded.headers["x-concord-model"] == "embed"
    assert "x-concord-downgraded" not in embedded.headers


async def test_budget_used_condition_switches_routes_as_spend_grows(
    make_gateway: MakeGateway, state_url: str
):
    # each answer ("Echo: hello") costs 2 output tokens = $0.002; the limit is $0.006
    gw = make_gateway(
        MODELS.replace("price: {input: 1000, output: 1000}", "price: {input: 0, output: 1000}")
        + textwrap.dedent(
            """
        routes:
          - name: soft-budget
            when: {budget_used: {gte: 0.5}}
            use: cheap
          - name: default
            use: $requested
        budgets:
          - {name: team, scope: workspace, limit_usd: 0.006, period: day}
        """
        ),
        state_url,
    )
    routes = []
    for _ in range(4):
        raw = await gw.openai().chat.completions.with_raw_response.create(
            model="gpt-4o", messages=HELLO, max_tokens=5
        )
        routes.append((raw.headers["x-concord-route"], raw.headers["x-concord-model"]))
    assert [r.cost_usd for r in gw.recorder.records] == pytest.approx([0.002, 0.002, 0, 0])
    assert routes == [
        ("default", "gpt-4o"),
        ("default", "gpt-4o"),  # 0.002 / 0.006 = 0.33
        ("soft-budget", "cheap"),  # 0.004 / 0.006 = 0.67
        ("soft-budget", "cheap"),
    ]
